"""What one change bought: the same benchmark run against servers built from several source trees.

``chatlab bench`` compares servers; this compares *versions* of one server.
Export each version of the code into a folder of its own (``git archive
COMMIT chatlab | tar -x -C /tmp/before``), then::

    python benchmarks/compare_trees.py --model selectors --scenario fanout --receivers 100 \\
        --messages 40000 --repeats 5 before=/tmp/before after=. [redis]

Each run starts ``python -m chatlab.bench.serve MODEL`` from that tree (its
code, limits off, quiet log) and drives it with this tree's load generator
(``chatlab.bench.loadgen``), so only the server differs.  The trees take
turns, run by run, as in ``chatlab bench``; each figure is the median of the
repeats, every run is kept (``--json``).  ``redis`` in the list adds Redis
as a yardstick.  ``--server-arg`` passes options to every server's command
(``--server-arg=--limit=large_room=0``); ``--args-for NAME=ARGS`` to one
tree's only, so that one tree can be measured several ways::

    python benchmarks/compare_trees.py quiet=. log=. nomsg=. \
        --args-for "log=--log /tmp/serve.log" --args-for "nomsg=--log /tmp/serve.log --no-message-log"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from chatlab.bench.procstat import raise_fd_limit  # noqa: E402
from chatlab.bench.scenarios import run_loadgen  # noqa: E402
from chatlab.bench.targets import Running, Target, all_targets  # noqa: E402

FIELDS = ("rate", "server_cpu_per_delivery_us", "p50_ms", "p99_ms", "seconds", "bytes_per_connection", "server_cpu_s")


def start(tree: str, path: str, model: str, server_args: list[str], clients: int) -> Running:
    if tree == "redis":
        return next(t for t in all_targets() if t.name == "redis").start(clients=clients)
    root = str(Path(path).resolve())
    proc = subprocess.Popen([sys.executable, "-m", "chatlab.bench.serve", model, *server_args], cwd=root,
                            env={**os.environ, "PYTHONPATH": root}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    server = Running(Target(model, "chatlab", "lines"), proc)
    try:
        server.wait_listening(0)
    except BaseException:
        server.stop()
        raise
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", help="NAME=PATH of a source tree, or redis")
    parser.add_argument("--model", default="selectors")
    parser.add_argument("--scenario", default="fanout", choices=["fanout", "many", "latency", "scale"])
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--connections", type=int, default=10_000, help="scale: idle clients")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency: messages a second")
    parser.add_argument("--duration", type=float, default=3.0, help="latency: seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-arg", action="append", default=[])
    parser.add_argument("--args-for", action="append", default=[], metavar="NAME=ARGS",
                        help="more options for one tree's server (split as a shell would)")
    parser.add_argument("--json", help="write every run to this file")
    args = parser.parse_args()
    trees = [t.partition("=")[::2] if "=" in t else (t, "") for t in args.trees]
    own = {name: shlex.split(extra) for name, _, extra in (a.partition("=") for a in args.args_for)}
    raise_fd_limit(args.connections + 1000)
    runs: dict[str, list[dict]] = {name: [] for name, _ in trees}
    for repeat in range(args.repeats):
        for name, path in trees:
            clients = args.connections if args.scenario == "scale" else args.receivers
            with start(name, path, args.model, args.server_arg + own.get(name, []), clients) as server:
                spec = {"scenario": args.scenario, "host": server.host, "port": server.port,
                        "dialect": "redis" if name == "redis" else "lines", "server_pid": server.pid,
                        "receivers": args.receivers, "messages": args.messages, "window": 1000,
                        "connections": args.connections, "rate": args.rate, "duration": args.duration,
                        "deadline": 120.0}
                result = run_loadgen(spec, timeout=240)
            result.pop("timeline_ms", None)
            result["load"] = os.getloadavg()[0]
            runs[name].append(result)
            shown = {k: round(result[k], 3) for k in FIELDS if isinstance(result.get(k), float)}
            print(f"{name:<12} run {repeat + 1}: {shown} load {result['load']:.1f}", flush=True)
    print("medians:")
    summary = {}
    for name, results in runs.items():
        summary[name] = {k: statistics.median(r[k] for r in results if r.get(k) is not None)
                         for k in FIELDS if any(r.get(k) is not None for r in results)}
        print(f"  {name:<12} " + ", ".join(f"{k} {v:.4g}" for k, v in summary[name].items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "medians": summary, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
