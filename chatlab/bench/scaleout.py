"""``chatlab bench --scale-out``: one chatlab server against two and three sharing one chat on Redis.

What does a second server buy?  Each run is one room, ``receivers``
listeners spread evenly over the nodes and one sender on the first, which
says ``messages`` messages (never more than ``window`` ahead of the slowest
listener, as in the fan-out scenario).  Four set-ups, each started fresh:

* ``1 node``          -- one server alone, no Redis: the baseline;
* ``1 node + Redis``  -- the same server on Redis: the price of the backplane;
* ``2 nodes + Redis``, ``3 nodes + Redis`` -- the chat spread out.

Reported: delivered messages a second, and the CPU every server process
*and Redis* spent per delivery (``/proc``, all processes counted: moving
work to another process does not hide it).  Redis runs as a classroom should
run it: append-only file, ``appendfsync everysec``.

On one small machine a second node cannot add cores that are not there:
what the figures show is the cost of sharing, which a second *machine*
would then pay for.  docs/performance.md has the figures and says so.

The load generator is ``loadgen.LoadGenerator`` (lines mode), run in a child
process (``python -m chatlab.bench.scaleout``: the run as JSON on stdin).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Callable

from .loadgen import LoadGenerator, windowed
from .procstat import cpu_seconds, own_cpu_seconds, raise_fd_limit

SETUPS = (("1 node", 1, False), ("1 node + Redis", 1, True), ("2 nodes + Redis", 2, True),
          ("3 nodes + Redis", 3, True))
SERVE_OFF = ("--rate-limit", "0", "--flood-limit", "0", "--accept-rate", "0", "--max-per-address", "0",
             "--max-clients", "0", "--outbox-bytes", "0", "--register-timeout", "0", "--idle-timeout", "0",
             "--ping-interval", "0", "--max-text", "0", "--relay-rate", "0")


def run_scale_out(receivers: int = 100, messages: int = 2000, model: str = "selectors", window: int = 1000,
                  deadline: float = 60.0, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every set-up once; return one record per set-up (what ``--json`` writes)."""
    from ..lab.redis import NodeProcess, RedisServer, redis_available

    missing = redis_available()
    records = []
    for label, count, shared in SETUPS:
        if shared and missing:
            records.append({"setup": label, "skipped": missing})
            continue
        redis_server = RedisServer(persist=True, fsync="everysec") if shared else None
        nodes: list[Any] = []
        try:
            url = redis_server.url if redis_server is not None else None
            nodes = [NodeProcess(url, model, args=SERVE_OFF) for _ in range(count)]
            pids = [n.pid for n in nodes] + ([redis_server.proc.pid] if redis_server and redis_server.proc else [])
            spec = {"addresses": [list(n.address) for n in nodes], "receivers": receivers, "messages": messages,
                    "window": window, "deadline": deadline, "pids": pids}
            child = subprocess.run([sys.executable, "-m", "chatlab.bench.scaleout"], input=json.dumps(spec),
                                   capture_output=True, text=True, timeout=deadline + 60)
            try:
                record = json.loads(child.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                record = {"completed": False, "error": child.stderr.strip()[-400:] or "no result"}
        finally:
            for node in nodes:
                node.stop()
            if redis_server is not None:
                redis_server.stop()
        record.update(setup=label, nodes=count, redis=shared, model=model)
        records.append(record)
        if progress is not None:
            progress(record)
    return {"receivers": receivers, "messages": messages, "model": model, "records": records}


def text_report(result: dict[str, Any]) -> str:
    lines = [f"Scale-out: one room, {result['receivers']} receivers spread over the nodes, one sender, "
             f"{result['messages']} messages ({result['model']} nodes)",
             f"{'set-up':<18} {'delivered/s':>12} {'CPU/delivery':>13} {'servers+Redis CPU':>18}  note"]
    for r in result["records"]:
        if "skipped" in r:
            lines.append(f"{r['setup']:<18} {'-':>12} {'-':>13} {'-':>18}  {r['skipped']}")
            continue
        if "rate" not in r:
            lines.append(f"{r['setup']:<18} {'-':>12} {'-':>13} {'-':>18}  failed: {r.get('error')}")
            continue
        per = f"{r['cpu_per_delivery_us']:.2f} us" if r.get("cpu_per_delivery_us") else "-"
        note = "" if r["completed"] else f"INCOMPLETE: {r['delivered']:,} of {r['expected']:,} in the deadline"
        lines.append(f"{r['setup']:<18} {r['rate']:>12,.0f} {per:>13} {r['cpu_s']:>17.2f}s  {note}")
    return "\n".join(lines)


# --------------------------------------------------------------- the child


def _fanout(spec: dict[str, Any]) -> dict[str, Any]:
    addresses = [tuple(a) for a in spec["addresses"]]
    receivers, messages, window = spec["receivers"], spec["messages"], spec["window"]
    gen = LoadGenerator(addresses[0][0], addresses[0][1], "lines", spec["deadline"])
    raise_fd_limit(receivers + 100)
    # Receivers round-robin over the nodes; the sender on the first.
    for i in range(receivers):
        gen.address = addresses[i % len(addresses)]
        gen.open(f"r{i}", "receiver")
    gen.address = addresses[0]
    sender = gen.open("sender", "sender")
    gen.run_until(lambda: not gen.joining)
    readers = [c for c in gen.conns if c.role == "receiver"]
    step = windowed(gen, sender, readers, messages, window)

    def cpu() -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in spec["pids"])

    cpu0, own0, t0 = cpu(), own_cpu_seconds(), time.perf_counter()
    completed = gen.run_until(lambda: gen.unfinished == 0, step)
    t1 = gen.last_delivery if completed and gen.last_delivery else time.perf_counter()
    cpu1, own1 = cpu(), own_cpu_seconds()
    delivered = sum(c.count for c in readers)
    gen.close()
    seconds = max(t1 - t0, 1e-9)
    return {"completed": completed, "delivered": delivered, "expected": receivers * messages, "seconds": seconds,
            "rate": delivered / seconds, "cpu_s": cpu1 - cpu0,
            "cpu_per_delivery_us": (cpu1 - cpu0) / delivered * 1e6 if delivered else None,
            "generator_cpu_s": own1 - own0}


def main() -> None:
    print(json.dumps(_fanout(json.loads(sys.stdin.read()))), flush=True)


if __name__ == "__main__":
    main()
