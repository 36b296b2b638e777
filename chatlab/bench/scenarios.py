"""What the benchmark runs: sizes, scenarios, and one run of each.

Each run is three processes: this one (the conductor), the server under
test (``targets``) and the load generator (``loadgen``), which is handed
the scenario as JSON and answers with what it measured.  The server is
started fresh for every run and stopped after it, whatever happens.

Every run is bounded in count (messages, connections) and in time (a
deadline after which the generator reports what it got so far and the run
is marked incomplete): a server that stalls -- the naive one does, on
purpose -- costs a few seconds, never the whole benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable

from .loadgen import MESSAGE_SIZE
from .procstat import raise_fd_limit
from .report import headline, machine, verdicts, verdicts_17
from .targets import Target, TargetError, all_targets

SCENARIOS = ("fanout", "latency", "load", "many", "stalled", "scale", "joins")
# The relay is a yardstick: it has no chat rules, so "stalled" and "joins"
# say nothing about it.
RELAY_SCENARIOS = ("fanout", "latency", "load", "many", "scale")
SUSTAINED = 0.95  # load: a target sustains an offered load if it delivers at least this share of it


@dataclasses.dataclass
class Size:
    """How much work each scenario does."""

    receivers: list[int]  # R, for fanout, latency and many
    fanout_deliveries: int  # about R x M per fan-out run
    many_deliveries: int  # about R x x M per many-senders run
    latency_seconds: float  # open loop, at `rate` messages a second
    stalled_receivers: list[int]
    scale_threads: list[int]  # idle connections for thread-per-client servers (a curve: cost per client)
    scale_event_loop: list[int]  # ... and for one-thread event-loop servers
    joins: list[int]  # registration-time curve, join notices on and off
    deadline: float  # seconds a run may take before it is cut short
    loads: list[int]  # latency under load: offered deliveries a second (open loop)
    load_receivers: int  # ... to this many receivers
    load_seconds: float  # ... for this long each
    rate: float = 200.0  # latency: messages a second
    window: int = 1000  # messages a sender may be ahead of the slowest receiver
    min_messages: int = 20
    stall_fill: bool = True  # stalled: send enough to overflow the socket buffers (stall_messages)
    repeats: int = 1  # fan-out, many, latency, load and scale runs: each reported as the median of this many


SIZES = {
    # Proves that everything works, in seconds: the test suite runs this.
    "tiny": Size(receivers=[10], fanout_deliveries=3_000, many_deliveries=3_000, latency_seconds=0.25,
                 stalled_receivers=[10], scale_threads=[50], scale_event_loop=[50, 100], joins=[25, 50],
                 deadline=20.0, loads=[2_000, 10_000], load_receivers=10, load_seconds=0.25, stall_fill=False),
    # A minute or two: the notebook's default.
    "small": Size(receivers=[10, 100], fanout_deliveries=400_000, many_deliveries=200_000, latency_seconds=1.0,
                  stalled_receivers=[100], scale_threads=[1_000], scale_event_loop=[1_000, 4_000],
                  joins=[100, 200, 400], deadline=60.0, loads=[30_000, 100_000, 300_000], load_receivers=100,
                  load_seconds=1.0),
    # The figures in docs/performance.md.  19,000 idle clients: the most one
    # process can hold here (a hard limit of 20,000 open files, root or not).
    "full": Size(receivers=[10, 100, 1000], fanout_deliveries=4_000_000, many_deliveries=2_000_000,
                 latency_seconds=3.0, stalled_receivers=[100], scale_threads=[1_000],
                 scale_event_loop=[1_000, 5_000, 10_000, 19_000], joins=[250, 500, 1000, 2000, 4000],
                 deadline=120.0, loads=[30_000, 100_000, 300_000, 1_000_000, 2_000_000], load_receivers=100,
                 load_seconds=3.0, repeats=3),
}

JOIN_CURVE_STOP = 20.0  # seconds: a longer registration ends that target's join curve


def stall_messages() -> int:
    """Messages that overflow every buffer between a server and a client that never reads.

    Linux lets a socket's send buffer grow to ``net.ipv4.tcp_wmem``'s maximum
    (4 MiB by default): until that and the reader's receive buffer are
    full, even a naive server does not notice that a client stopped reading.
    """
    wmem = 4 * 1024 * 1024
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return math.ceil(1.2 * (wmem + 1024 * 1024) / (MESSAGE_SIZE + 4))


def run_loadgen(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run the load generator in a process of its own, and read back its result."""
    proc = subprocess.Popen([sys.executable, "-m", "chatlab.bench.loadgen"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(json.dumps(spec), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"completed": False, "error": f"the load generator did not finish within {timeout:g} s"}
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"completed": False, "error": f"the load generator failed: {err.strip()[-500:]}"}


def measure(target: Target, scenario: str, spec: dict[str, Any], options: dict[str, int] | None = None,
            clients: int = 0) -> dict[str, Any]:
    """Start ``target``, run one load-generator scenario against it, stop it."""
    try:
        server = target.start(options, clients=clients)
    except TargetError as exc:
        return {"completed": False, "error": str(exc)}
    with server:
        spec = {"scenario": scenario, "host": server.host, "port": server.port, "dialect": target.dialect,
                "server_pid": server.pid, **spec}
        result = run_loadgen(spec, timeout=spec.get("deadline", 60.0) + 60.0)
        if server.proc.poll() is not None:
            result.setdefault("error", "the server died: " + " | ".join(server.output))
            result["completed"] = False
    return result


def plan(size: Size, targets: list[Target], scenarios: list[str],
         receivers: list[int] | None = None, messages: int | None = None) -> list[dict[str, Any]]:
    """Every run to do, in order: one dict per (scenario, parameters, repeat, target).

    The targets take turns, run by run, rather than one after another: on a
    machine where other work comes and goes, each then meets much the same
    conditions as the others, and the ratios between them stay fair.
    """
    runs: list[dict[str, Any]] = []
    rs = receivers or size.receivers

    def each(scenario: str, repeats: int = 1, **params: Any) -> None:
        for repeat in range(repeats):
            for target in targets:
                if target.kind == "relay" and scenario not in RELAY_SCENARIOS:
                    continue
                if scenario == "joins" and target.kind == "chatlab":
                    for notices in ("all", "default"):
                        runs.append(dict(target=target, scenario=scenario, repeat=repeat, notices=notices, **params))
                elif scenario == "scale":
                    for n in size.scale_event_loop if target.event_loop else size.scale_threads:
                        runs.append(dict(target=target, scenario=scenario, repeat=repeat, connections=n))
                else:
                    runs.append(dict(target=target, scenario=scenario, repeat=repeat, **params))

    for scenario in scenarios:
        if scenario == "fanout":
            for r in rs:
                each("fanout", size.repeats, receivers=r,
                     messages=messages or max(size.min_messages, size.fanout_deliveries // r))
        elif scenario == "many":
            for r in (r for r in rs if r >= 2):
                each("many", size.repeats, receivers=r,
                     messages=messages or max(2, size.many_deliveries // (r * (r - 1))))
        elif scenario == "latency":
            for r in rs:
                each("latency", size.repeats, receivers=r)
        elif scenario == "load":
            for offered in size.loads:
                each("load", size.repeats, receivers=size.load_receivers, offered=offered)
        elif scenario == "stalled":
            for r in (receivers or size.stalled_receivers):
                m = max(size.min_messages, size.fanout_deliveries // r)
                each("stalled", size.repeats, receivers=r,
                     messages=messages or (stall_messages() if size.stall_fill else m))
        elif scenario == "scale":
            each("scale", size.repeats)
        elif scenario == "joins":
            for n in size.joins:
                each("joins", connections=n)
    return runs


KEY = ("target", "scenario", "receivers", "connections", "notices", "offered")


def _key(record: dict[str, Any]) -> tuple:
    return tuple(record.get(k) for k in KEY)


def execute(run: dict[str, Any], size: Size, previous: list[dict[str, Any]]) -> dict[str, Any]:
    """Do one planned run; return its record (the plan's fields plus what was measured)."""
    target: Target = run["target"]
    scenario = run["scenario"]
    record = {k: v for k, v in run.items() if k != "target"}
    record["target"] = target.name
    base = {"window": size.window, "deadline": size.deadline}
    same = [p for p in previous if _key(p) == _key(record)]
    if same and (not same[-1].get("completed") or same[-1].get("stalled_everyone")):
        # Cut short (or stalled) once: another try would only take as long again.
        record.update(completed=False, skipped="an earlier repeat was cut short")
        return record
    if scenario in ("fanout", "many"):
        result = measure(target, scenario, {**base, "receivers": run["receivers"], "messages": run["messages"]})
    elif scenario == "latency":
        result = measure(target, "latency", {**base, "receivers": run["receivers"], "rate": size.rate,
                                             "duration": size.latency_seconds})
    elif scenario == "load":
        # The latency scenario again, at a fixed offered load: messages a
        # second = deliveries a second / receivers, sent on schedule whatever
        # the server does (an open loop), so a server that cannot keep up
        # shows it as latency growing through the run.
        offered = run["offered"]
        result = measure(target, "latency", {**base, "receivers": run["receivers"], "rate": offered / run["receivers"],
                                             "duration": size.load_seconds, "grace": 2 + size.load_seconds})
        result["rate"] = offered / run["receivers"]  # messages a second, as sent
        if result.get("achieved") is not None:
            result["sustained"] = bool(result.get("completed")) and result["achieved"] >= SUSTAINED * offered
        if result.get("server_cpu_s") is not None and result.get("seconds"):
            result["server_cpu_share"] = result["server_cpu_s"] / result["seconds"]  # of one core
    elif scenario == "stalled":
        spec = {**base, "receivers": run["receivers"], "messages": run["messages"]}
        without = measure(target, "fanout", spec)
        # The run with a stalled client gets a few times as long as the run
        # without: a server that keeps going finishes well within it.
        seconds = without.get("seconds") or size.deadline
        with_stall = measure(target, "stalled", {**spec, "deadline": min(size.deadline, max(3.0, 3 * seconds + 2))})
        result = _stalled(without, with_stall)
        # Fewer messages than the buffers hold prove nothing about stalling.
        result["fills_buffers"] = run["messages"] >= stall_messages()
    elif scenario == "scale":
        result = measure(target, "scale", {**base, "connections": run["connections"]},
                         clients=run["connections"])
    elif scenario == "joins":
        options = {"large_room": 0} if run.get("notices") == "all" else {}
        earlier = [p for p in previous if p["scenario"] == "joins" and p["target"] == target.name
                   and p.get("notices") == run.get("notices")]
        if earlier and (not earlier[-1].get("completed") or earlier[-1].get("seconds", 0) > JOIN_CURVE_STOP):
            result = {"completed": False,
                      "skipped": f"the previous size failed or took over {JOIN_CURVE_STOP:g} s"}
        else:
            result = measure(target, "scale", {**base, "connections": run["connections"]}, options,
                             clients=run["connections"])
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    record.update(result)
    record["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return record


def _stalled(without: dict[str, Any], with_stall: dict[str, Any]) -> dict[str, Any]:
    return {
        "completed": without.get("completed", False),
        "without": without,
        "with": with_stall,
        "rate_without": without.get("rate"),
        "rate_with": with_stall.get("rate"),
        "kept": (with_stall["rate"] / without["rate"]) if without.get("rate") and with_stall.get("rate")
        is not None else None,
        "stalled_everyone": not with_stall.get("completed", False),
    }


def _median(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for repeated runs: the median run, with every run's figures kept in ``runs``.

    Two cores shared by a server, a generator and anything else the
    machine does: one run can be unlucky.  The median is the fair middle.
    """
    done = [r for r in records if not r.get("skipped")]
    if len(done) <= 1:
        return dict(done[0] if done else records[0])
    scenario = done[0]["scenario"]
    if scenario == "stalled":
        withouts = sorted((r["without"] for r in done), key=lambda r: (bool(r.get("completed")), r.get("rate") or 0))
        withs = sorted((r["with"] for r in done), key=lambda r: (bool(r.get("completed")), r.get("rate") or 0))
        median = {**done[0], **_stalled(withouts[len(withouts) // 2], withs[len(withs) // 2])}
        median["runs"] = {"without": [r.get("rate") for r in withouts], "with": [r.get("rate") for r in withs]}
        return median
    fields: tuple[str, ...]
    if scenario in ("latency", "load"):
        ordered = sorted(done, key=lambda r: (r.get("p99_ms") is None, r.get("p99_ms") or 0))
        fields = ("completed", "p50_ms", "p99_ms", "max_ms", "lost", "load")
        if scenario == "load":
            fields += ("achieved", "sustained", "server_cpu_share")
    elif scenario in ("scale", "joins"):
        ordered = sorted(done, key=lambda r: (not r.get("completed"), r.get("seconds") or 0))
        fields = ("completed", "seconds", "bytes_per_connection", "server_cpu_s", "load")
    else:
        ordered = sorted(done, key=lambda r: (bool(r.get("completed")), r.get("rate") or 0))
        fields = ("completed", "rate", "server_cpu_per_delivery_us", "seconds", "load")
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [{k: r.get(k) for k in fields} for r in ordered]
    return median


def combine(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The raw runs, one record per (target, scenario, parameters): repeats become their median."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in raw:
        groups.setdefault(_key(record), []).append(record)
    combined = [_median(group) for group in groups.values()]
    for record in combined:
        record.pop("repeat", None)
    # Grouped by target, in the order the targets were given, for reading.
    order = list(dict.fromkeys(r["target"] for r in raw))
    return sorted(combined, key=lambda r: order.index(r["target"]))


def run_all(runs: list[dict[str, Any]], size: Size,
            progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    raw: list[dict[str, Any]] = []
    for run in runs:
        started = time.monotonic()
        record = execute(run, size, raw)
        record["wall_s"] = time.monotonic() - started
        raw.append(record)
        if progress:
            progress(record)
    return combine(raw)


def run_benchmark(
    size: str | Size = "tiny",
    targets: list[str] | None = None,
    scenarios: list[str] | None = None,
    receivers: list[int] | None = None,
    messages: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    repeats: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark; return everything measured (what ``--json`` writes).

    ``size`` is a name in SIZES, or a Size of one's own (a notebook may take
    ``dataclasses.replace(SIZES["tiny"], joins=[...])``).
    """
    if isinstance(size, Size):
        config, size = size, "custom"
    elif size in SIZES:
        config = SIZES[size]
    else:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    if repeats:
        config = dataclasses.replace(config, repeats=repeats)
    scenarios = list(scenarios or SCENARIOS)
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    known = {t.name: t for t in all_targets()}
    names = targets or list(known)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"unknown target(s) {', '.join(missing)}; choose from {', '.join(known)}")
    notes = []
    chosen = []
    for name in names:
        why = known[name].unavailable()
        if why:
            notes.append(why)
        else:
            chosen.append(known[name])
    # Every connection is a file descriptor, in the generator and in the
    # server: raise the limit as far as allowed (children inherit it).
    wanted = max(*config.scale_event_loop, *config.scale_threads, *config.joins) + 200
    limit = raise_fd_limit(wanted)
    if limit < wanted:
        notes.append(f"open-file limit {limit} (below the {wanted} wanted): the largest scale runs may fail")
    runs = plan(config, chosen, scenarios, receivers, messages)
    planned = getattr(progress, "planned", None)
    if planned is not None:  # a progress bar (progress.ProgressBar) wants to know how far it goes
        planned(len(runs))
    about = machine()
    started = time.monotonic()
    records = run_all(runs, config, progress)
    about["load_average_after"] = machine()["load_average"]
    loads = [r.get("load") for r in records]
    for r in records:
        runs_of = r.get("runs")
        loads += [run.get("load") for run in runs_of] if isinstance(runs_of, list) else []
    about["load_average_max"] = max((x for x in loads if x is not None), default=None)
    result = {
        "size": size,
        "machine": about,
        "seconds": time.monotonic() - started,
        "config": {"scenarios": scenarios, "targets": [t.name for t in chosen], "window": config.window,
                   "repeats": config.repeats, "rate": config.rate, "latency_seconds": config.latency_seconds,
                   "loads": config.loads, "load_receivers": config.load_receivers,
                   "load_seconds": config.load_seconds,
                   "message_bytes": 100, "generator": "one selectors loop, lines mode (Redis: RESP)"},
        "records": records,
        "notes": notes,
    }
    result["headline"] = headline(records)
    result["verdicts"] = verdicts(records)
    result["verdicts_17"] = verdicts_17(records)
    return result
