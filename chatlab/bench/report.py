"""Turning the benchmark's records into tables, ratios and verdicts.

Absolute figures change from machine to machine; ratios measured in one
run on one machine travel better.  So the headline compares every chatlab
model with the naive tutorial server and with Redis, and each target of
issue 7 is judged on the ratio it names.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Callable

Record = dict[str, Any]


# ---------------------------------------------------------------- numbers


def rate_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


def num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "load_average": load,  # 1, 5, 15 minutes: others' work shares the machine
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------- lookups


def find(records: list[Record], **match: Any) -> list[Record]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def one(records: list[Record], **match: Any) -> Record | None:
    found = find(records, **match)
    return found[0] if found else None


def targets_in(records: list[Record]) -> list[str]:
    return list(dict.fromkeys(r["target"] for r in records))


def chatlab_models(records: list[Record]) -> list[str]:
    return [t for t in targets_in(records) if t not in ("relay", "naive", "redis")]


def ok(record: Record | None, field: str) -> float | None:
    """A measured value, only from a run that completed."""
    if record is None or not record.get("completed") or record.get(field) is None:
        return None
    return record[field]


# ---------------------------------------------------------------- ratios


def headline(records: list[Record], receivers: int | None = None) -> list[Record]:
    """Each chatlab model against naive and Redis: fan-out at R=100 (else the largest R run), one sender."""
    measured = {r["receivers"] for r in find(records, scenario="fanout")}
    if not measured:
        return []
    if receivers is None:
        receivers = 100 if 100 in measured or not measured else max(measured)
    naive = one(records, target="naive", scenario="fanout", receivers=receivers)
    redis = one(records, target="redis", scenario="fanout", receivers=receivers)
    rows = []
    for model in chatlab_models(records):
        mine = one(records, target=model, scenario="fanout", receivers=receivers)
        cpu, rate = ok(mine, "server_cpu_per_delivery_us"), ok(mine, "rate")
        row: Record = {"target": model, "receivers": receivers, "cpu_us": cpu, "rate": rate}
        for name, other in (("naive", naive), ("redis", redis)):
            other_cpu, other_rate = ok(other, "server_cpu_per_delivery_us"), ok(other, "rate")
            row[f"cpu_vs_{name}"] = cpu / other_cpu if cpu and other_cpu else None
            row[f"rate_vs_{name}"] = rate / other_rate if rate and other_rate else None
        rows.append(row)
    return rows


def verdicts(records: list[Record]) -> list[Record]:
    """Issue 7's targets, each met, not met, or not measured (None), with its figures."""
    out: list[Record] = []
    models = chatlab_models(records)

    def verdict(target: str, met: bool | None, detail: str) -> None:
        out.append({"target": target, "met": met, "detail": detail})

    def best(scenario: str, field: str, lowest: bool, **match: Any) -> tuple[str | None, float | None]:
        values = [(ok(one(records, target=m, scenario=scenario, **match), field), m) for m in models]
        values = [(v, m) for v, m in values if v is not None]
        if not values:
            return None, None
        v, m = (min if lowest else max)(values)
        return m, v

    # Efficiency: server CPU per delivered message, fan-out, R = 100.
    model, cpu = best("fanout", "server_cpu_per_delivery_us", True, receivers=100)
    redis = ok(one(records, target="redis", scenario="fanout", receivers=100), "server_cpu_per_delivery_us")
    naive = ok(one(records, target="naive", scenario="fanout", receivers=100), "server_cpu_per_delivery_us")
    if cpu is None or redis is None:
        verdict("efficiency", None, "needs fan-out at R=100 for a chatlab model and for Redis")
    else:
        extra = f"; naive {naive:.2f} µs = {naive / redis:.1f}x Redis" if naive else ""
        verdict("efficiency", cpu <= 2 * redis,
                f"{model} {cpu:.2f} µs of server CPU per delivery = {cpu / redis:.1f}x Redis's {redis:.2f} µs "
                f"(target: at most 2x){extra}")

    # Throughput: at least naive's, one sender and R senders, R = 100.
    for scenario, what in (("fanout", "one sender"), ("many", "100 senders at once")):
        model, rate = best(scenario, "rate", False, receivers=100)
        naive_rate = ok(one(records, target="naive", scenario=scenario, receivers=100), "rate")
        if rate is None or naive_rate is None:
            verdict(f"throughput ({what})", None, f"needs {scenario} at R=100 for a chatlab model and naive")
        else:
            verdict(f"throughput ({what})", rate >= naive_rate,
                    f"{model} {rate_text(rate)}/s = {rate / naive_rate:.1f}x naive's {rate_text(naive_rate)}/s")

    # A stalled reader: the fastest model keeps >= 90 % of its throughput.
    fastest, _ = best("fanout", "rate", False, receivers=100)
    if fastest is None:  # no fan-out run: the fastest in the stalled runs' own "without"
        fastest, _ = best("stalled", "rate_without", False)
    stalled = [r for r in find(records, scenario="stalled") if r["target"] == fastest]
    if not stalled or stalled[0].get("kept") is None:
        verdict("stalled reader", None, "needs the stalled scenario for the fastest model")
    elif not stalled[0].get("fills_buffers"):
        verdict("stalled reader", None, "the stalled runs were too small to fill the socket buffers (size tiny)")
    else:
        kept = stalled[0]["kept"]
        naive_stall = one(records, target="naive", scenario="stalled")
        extra = ""
        if naive_stall:
            extra = ("; naive stalled entirely" if naive_stall.get("stalled_everyone")
                     else f"; naive kept {100 * (naive_stall.get('kept') or 0):.0f}%")
        verdict("stalled reader", kept >= 0.9,
                f"{fastest} kept {100 * kept:.0f}% of its throughput with one client that never reads "
                f"(target: 90%){extra}")

    # Latency: p99 at R = 100, 200 messages a second, no worse than Redis.
    model, p99 = best("latency", "p99_ms", True, receivers=100)
    redis_p99 = ok(one(records, target="redis", scenario="latency", receivers=100), "p99_ms")
    if p99 is None or redis_p99 is None:
        verdict("latency", None, "needs latency at R=100 for a chatlab model and for Redis")
    else:
        verdict("latency", p99 <= redis_p99,
                f"{model} p99 {p99:.2f} ms against Redis's {redis_p99:.2f} ms")

    # Scale: 10,000 idle clients on an event-loop model in < 3 s at <= 10 KB each; 1,000 on threads.
    loops = [r for r in find(records, scenario="scale") if r["target"] in models and r["target"] != "threads"]
    loops = [r for r in loops if r.get("completed")]
    if not loops:
        verdict("scale (event loop)", None, "needs the scale scenario for an event-loop model")
    else:
        # The run of 10,000 (the target's size) if there is one, else the largest.
        r = min(loops, key=lambda r: (r["connections"] != 10_000, -r["connections"], r["seconds"]))
        per = r.get("bytes_per_connection")
        met = r["seconds"] < 3 and per is not None and per <= 10 * 1024
        verdict("scale (event loop)", met if r["connections"] >= 10_000 else None,
                f"{r['target']}: {r['connections']:,} registered in {r['seconds']:.2f} s, "
                f"{num(per and per / 1024, '{:.1f}')} KB per connection (target: 10,000 in < 3 s, <= 10 KB)")
    threads = one(records, target="threads", scenario="scale")
    if threads is None:
        verdict("scale (threads)", None, "needs the scale scenario for the threads model")
    else:
        met = bool(threads.get("completed"))
        verdict("scale (threads)", met if threads["connections"] >= 1000 else None,
                f"threads: {threads['connections']:,} registered in {num(threads.get('seconds'))} s, "
                f"{num(threads.get('bytes_per_connection') and threads['bytes_per_connection'] / 1024, '{:.1f}')}"
                " KB per connection (target: 1,000)")
    return out


def verdicts_17(records: list[Record]) -> list[Record]:
    """Issue 17's targets: each met, not met, or not measured (None), with its figures."""
    out: list[Record] = []

    def verdict(target: str, met: bool | None, detail: str) -> None:
        out.append({"target": target, "met": met, "detail": detail})

    def value(target: str, scenario: str, field: str, **match: Any) -> float | None:
        return ok(one(records, target=target, scenario=scenario, **match), field)

    # Server CPU per delivery against Redis's, fan-out at R = 100.
    redis_cpu = value("redis", "fanout", "server_cpu_per_delivery_us", receivers=100)
    for model, most in (("threads", 4.0), ("selectors", 1.3)):
        cpu = value(model, "fanout", "server_cpu_per_delivery_us", receivers=100)
        if cpu is None or redis_cpu is None:
            verdict(f"{model}: CPU per delivery", None, f"needs fan-out at R=100 for {model} and for Redis")
        else:
            verdict(f"{model}: CPU per delivery", cpu <= most * redis_cpu,
                    f"{cpu:.3f} µs = {cpu / redis_cpu:.2f}x Redis's {redis_cpu:.3f} µs at R=100 "
                    f"(target: at most {most:g}x)")

    # threads: at least naive's throughput at R = 1000 (one sender) and with 100 senders.
    for scenario, receivers, what in (("fanout", 1000, "one sender, R=1000"), ("many", 100, "100 senders")):
        rate = value("threads", scenario, "rate", receivers=receivers)
        naive = value("naive", scenario, "rate", receivers=receivers)
        if rate is None or naive is None:
            run = one(records, target="threads", scenario=scenario, receivers=receivers)
            cut = run is not None and not run.get("completed")
            verdict(f"threads: throughput ({what})", False if cut and naive else None,
                    "threads was cut short" if cut else f"needs {scenario} at R={receivers} for threads and naive")
        else:
            verdict(f"threads: throughput ({what})", rate >= naive,
                    f"{rate_text(rate)}/s = {rate / naive:.1f}x naive's {rate_text(naive)}/s")

    # Latency under load: p99 at most 2x Redis's at every load Redis sustains.
    loads = find(records, scenario="load")
    sustained = {r["offered"]: r for r in loads if r["target"] == "redis" and r.get("sustained")}
    for model in chatlab_models(records):
        own = {r["offered"]: r for r in loads if r["target"] == model}
        if not sustained or not own:
            verdict(f"{model}: latency under load", None, "needs the load scenario for this model and Redis")
            continue
        parts, met = [], True
        for offered, redis in sorted(sustained.items()):
            r = own.get(offered)
            p99, redis_p99 = (r or {}).get("p99_ms"), redis["p99_ms"]
            if r is None or p99 is None or not r.get("completed"):
                parts.append(f"{rate_text(offered)}/s: no result")
                met = False
                continue
            met = met and bool(p99 <= 2 * redis_p99)
            parts.append(f"{rate_text(offered)}/s: {p99:.1f} ms = {p99 / redis_p99:.1f}x")
        receivers = next(iter(own.values()))["receivers"]
        verdict(f"{model}: latency under load", met if receivers >= 100 else None,
                f"p99 against Redis's at R={receivers}, at each load Redis sustained (target: at most 2x, "
                "R=100): " + "; ".join(parts))

    # Memory: asyncio at most 10 KB per idle registered client, at every size measured.
    scale = [r for r in find(records, scenario="scale") if r.get("completed")]
    aio = sorted((r for r in scale if r["target"] == "asyncio"), key=lambda r: r["connections"])
    if not aio:
        verdict("asyncio: memory per idle client", None, "needs the scale scenario for asyncio")
    else:
        each = [r.get("bytes_per_connection") or 0 for r in aio]
        # Below a thousand clients, what the server holds anyway dominates the figure.
        verdict("asyncio: memory per idle client", max(each) <= 10 * 1024 if aio[-1]["connections"] >= 1000 else None,
                ", ".join(f"{r['connections']:,}: {b / 1024:.1f} KB" for r, b in zip(aio, each))
                + " (target: at most 10 KB)")

    # Scale: 19,000 idle clients on selectors in at most 1.5x Redis's time, at most 3 KB each.
    biggest = max((r["connections"] for r in scale if r["target"] == "selectors"), default=None)
    sel = one(scale, target="selectors", connections=biggest) if biggest else None
    red = one(scale, target="redis", connections=biggest) if biggest else None
    if biggest is None or sel is None or red is None:
        verdict("selectors: scale", None, "needs the scale scenario for selectors and Redis")
    else:
        per = sel.get("bytes_per_connection") or 0
        met = sel["seconds"] <= 1.5 * red["seconds"] and per <= 3 * 1024
        verdict("selectors: scale", met if biggest >= 19_000 else None,
                f"{biggest:,} registered in {sel['seconds']:.2f} s = {sel['seconds'] / red['seconds']:.2f}x Redis's "
                f"{red['seconds']:.2f} s, {per / 1024:.1f} KB each (target: 19,000, at most 1.5x, at most 3 KB)")

    # And the cost per client stays flat from the smallest size to the largest.
    for model in ("selectors", "asyncio"):
        runs = sorted((r for r in scale if r["target"] == model), key=lambda r: r["connections"])
        if len(runs) < 2:
            verdict(f"{model}: flat cost per client", None, "needs the scale scenario at two sizes or more")
            continue
        small, large = runs[0], runs[-1]
        time_ratio = (large["seconds"] / large["connections"]) / (small["seconds"] / small["connections"])
        memory_ratio = (large.get("bytes_per_connection") or 0) / max(1.0, small.get("bytes_per_connection") or 0)
        span = small["connections"] <= 1000 and large["connections"] >= 19_000
        verdict(f"{model}: flat cost per client", time_ratio <= 1.5 and memory_ratio <= 1.5 if span else None,
                f"from {small['connections']:,} to {large['connections']:,}: time per client x{time_ratio:.2f}, "
                f"memory per client x{memory_ratio:.2f} (flat: each at most x1.5, from 1,000 to 19,000)")
    return out


# ---------------------------------------------------------------- the table


def _latency_rows(records: list[Record], names: list[str], scenario: str, column: str, values: list[Any],
                  cell: Callable[[Record], str]) -> list[list[str]]:
    """A latency table's rows: one per target, a cell per ``column`` value ("failed" without a p50); empty rows left out."""
    rows = []
    for t in names:
        row = [_label(t)]
        for value in values:
            r = one(records, target=t, scenario=scenario, **{column: value})
            row.append("" if r is None else "failed" if r.get("p50_ms") is None else cell(r))
        if any(row[1:]):
            rows.append(row)
    return rows


def _grid(title: str, header: list[str], rows: list[list[str]], note: str = "") -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["", title]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    if note:
        lines.append("  " + note)
    return lines


def _label(target: str) -> str:
    return "relay*" if target == "relay" else target


def text_report(result: Record) -> str:
    records: list[Record] = result["records"]
    m = result["machine"]
    lines = [f"chatlab bench, size {result['size']}: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}",
             "server and load generator in separate processes; the generator is one selectors loop"]
    if m.get("load_average"):
        after = m.get("load_average_after") or m["load_average"]
        peak = f", up to {m['load_average_max']:.1f} during the run" if m.get("load_average_max") else ""
        lines.append(f"load average (1 min) {m['load_average'][0]:.1f} before, {after[0]:.1f} after{peak}: "
                     "other work on the machine makes every figure noisier")
    names = targets_in(records)
    star = "* relay: a trivial relay, so the load generator's own ceiling" if "relay" in names else ""

    for scenario, title in (("fanout", "Fan-out: one sender, R receivers, ~100-byte messages"),
                            ("many", "Many senders: R clients all sending at once")):
        rs = sorted({r["receivers"] for r in find(records, scenario=scenario)})
        if not rs:
            continue
        rows = []
        for t in names:
            row = [_label(t)]
            for n in rs:
                r = one(records, target=t, scenario=scenario, receivers=n)
                if r is None:
                    row.append("")
                elif not r.get("completed"):
                    row.append("failed" if r.get("error") else
                               f"cut short: {rate_text(r.get('rate'))}/s {num(r.get('server_cpu_per_delivery_us'))} µs")
                else:
                    row.append(f"{rate_text(r['rate'])}/s {num(r.get('server_cpu_per_delivery_us'))} µs")
            if any(row[1:]):
                rows.append(row)
        lines += _grid(f"{title}: delivered messages/s, server CPU µs per delivery",
                       ["target", *[f"R={n}" for n in rs]], rows, star)

    rs = sorted({r["receivers"] for r in find(records, scenario="latency")})
    if rs:
        def latency(r: Record) -> str:
            lost = f" lost {r['lost']}" if r.get("lost") else ""
            return f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.1f}{lost}"

        rows = _latency_rows(records, names, "latency", "receivers", rs, latency)
        rate = find(records, scenario="latency")[0].get("rate")
        lines += _grid(f"Latency at {num(rate, '{:.0f}')} messages/s: p50 / p99 / max, ms",
                       ["target", *[f"R={n}" for n in rs]], rows)

    loads = find(records, scenario="load")
    if loads:
        offered = sorted({r["offered"] for r in loads})
        def under_load(r: Record) -> str:
            share = num(r.get("server_cpu_share") and 100 * r["server_cpu_share"], "{:.0f}%")
            mark = "" if r.get("sustained") else " (fell behind)"
            return f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms, {share}{mark}"

        rows = _latency_rows(records, names, "load", "offered", offered, under_load)
        lines += _grid(f"Latency under load, R={loads[0]['receivers']}, open loop: p50 / p99, server CPU "
                       "(% of one core), at each offered load (deliveries/s)",
                       ["target", *[f"{rate_text(n)}/s" for n in offered]], rows)

    stalled = find(records, scenario="stalled")
    if stalled:
        rows = [[r["target"], str(r["receivers"]), f"{rate_text(r.get('rate_without'))}/s",
                 f"{rate_text(r.get('rate_with'))}/s",
                 "-" if r.get("kept") is None else f"{100 * r['kept']:.0f}%",
                 "STALLED: cut short at the deadline" if r.get("stalled_everyone") else "kept going"]
                for r in stalled]
        lines += _grid("A stalled reader: the fan-out again, plus one registered client that never reads",
                       ["target", "R", "without", "with", "kept", ""], rows)

    scale = find(records, scenario="scale")
    if scale:
        rows = [[_label(r["target"]), f"{r['connections']:,}",
                 f"{r['seconds']:.2f} s" if r.get("completed") else "failed",
                 f"{r['seconds'] / r['connections'] * 1e6:.0f} µs" if r.get("completed") else "",
                 num(r.get("bytes_per_connection") and r["bytes_per_connection"] / 1024, "{:.1f} KB"),
                 r.get("error", "")] for r in scale]
        lines += _grid("Scale: idle registered connections: time to register them all, server memory each",
                       ["target", "N", "time", "per client", "memory/conn", ""], rows)

    joins = find(records, scenario="joins")
    if joins:
        ns = sorted({r["connections"] for r in joins})
        rows = []
        for key in dict.fromkeys((r["target"], r.get("notices")) for r in joins):
            row = [key[0] + (f" (notices: {key[1]})" if key[1] else "")]
            for n in ns:
                r = one(records, scenario="joins", target=key[0], notices=key[1], connections=n)
                row.append("" if r is None else f"{r['seconds']:.2f} s" if r.get("completed")
                           else "skipped" if r.get("skipped") else "failed")
            rows.append(row)
        lines += _grid("Registration time with join notices to everyone (all) and above the large-room "
                       "threshold (default)", ["target", *[f"N={n:,}" for n in ns]], rows)

    heads = result.get("headline") or []
    if heads:
        rows = [[h["target"], num(h["cpu_us"]) + " µs", num(h["cpu_vs_naive"], "{:.2f}x"),
                 num(h["cpu_vs_redis"], "{:.2f}x"), rate_text(h["rate"]) + "/s",
                 num(h["rate_vs_naive"], "{:.2f}x"), num(h["rate_vs_redis"], "{:.2f}x")] for h in heads]
        lines += _grid(f"Headline: fan-out at R={heads[0]['receivers']}, ratios measured in this run",
                       ["model", "CPU/delivery", "vs naive", "vs Redis", "delivered", "vs naive", "vs Redis"],
                       rows)

    for issue, field in ((7, "verdicts"), (17, "verdicts_17")):
        checks = result.get(field) or []
        if checks:
            lines += ["", f"Targets (issue {issue}):"]
            for v in checks:
                mark = {True: "met    ", False: "NOT MET", None: "n/a    "}[v["met"]]
                lines.append(f"  {mark} {v['target']}: {v['detail']}")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
