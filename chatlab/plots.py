"""Plots of what the lab instruments measured (matplotlib).

Every plot answers "what was measured, on what, in which unit": each
helper takes a ``title`` (what was measured) and ``on`` (where: the server
model, loopback, the machine -- ``chatlab.lab.where()`` writes it), and
labels its axes with units.  Each returns the matplotlib ``Figure``; in a
notebook it is shown at the end of the cell.  A figure drawn with matplotlib
directly gets the same two-line title from ``titled(fig, title, on)``.

A plot of nothing is not a measurement: every helper refuses an empty
series, or a value that is NaN, with a ``NoData`` error that names it --
so an experiment that measured nothing fails loudly instead of drawing an
empty axis (or a bar of "nan") that a reader would take for a result.

This is the only chatlab module that imports matplotlib, so the server,
the client and the tests of the core run without it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, TypeVar

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogFormatter, LogLocator, MaxNLocator, NullFormatter

from .lab import CLOSED, CONNECT_STARTED, CONNECTED, RECEIVED, REGISTERED, SENT, Recorder, describe, percentile

T = TypeVar("T")

# One colour per meaning, the same in every plot.
COLOURS = {"sent": "tab:blue", "received": "tab:orange", "link": "0.75", "registered": "tab:green",
           "closed": "tab:red", "p50": "tab:green", "p99": "tab:red"}


class NoData(ValueError):
    """A plot was asked to draw a series that holds nothing, or a value that is NaN."""


def measured(values: Sequence[T], what: str) -> list[T]:
    """``values`` as a list, refused if empty or if any is NaN (``what`` names it in the error)."""
    values = list(values)
    if not values:
        raise NoData(f"nothing to plot for {what}: the series is empty (did the experiment measure anything?)")
    bad = [v for v in values if isinstance(v, float) and math.isnan(v)]
    if bad:
        raise NoData(f"{len(bad)} of the {len(values)} values of {what} are NaN: not a measurement")
    return values


def titled(fig: Figure, title: str, on: str) -> Figure:
    """Give ``fig`` the two-line title every plot has: what was measured, then on what."""
    fig.suptitle(f"{title}\n{on}" if on else title, fontsize=11)
    fig.tight_layout()
    return fig


_titled = titled  # the old, private name, for notebooks written before ``titled`` was public


def whole_numbers(axis: Any) -> None:
    """Ticks at whole numbers only, on an axis of things that come whole (messages, segments)."""
    axis.set_major_locator(MaxNLocator(integer=True))


# ------------------------------------------------------------------ timeline


def timeline(recorder: Recorder, title: str = "Connection timeline", on: str = "") -> Figure:
    """One row per client, a bar from ``connect()`` to close, with its messages on it.

    ``|`` marks registration; ``▲`` a frame the client sent, ``•`` one it received.
    """
    clients = measured(recorder.clients(), "the timeline's clients")
    events = recorder.events
    fig, ax = plt.subplots(figsize=(10, max(2.6, 1.4 + 0.45 * len(clients))))
    end = max((e.t for e in events), default=0.0)
    labelled: set[str] = set()

    def mark(xs: list[float], y: float, label: str, **style: Any) -> None:
        """Markers on one row; each kind labelled once in the legend, an empty row drawn not at all."""
        if xs:
            ax.scatter(xs, [y] * len(xs), zorder=3, label=None if label in labelled else label, **style)
            labelled.add(label)

    for row, client in enumerate(clients):
        mine = [e for e in events if e.client == client]
        start = next((e.t for e in mine if e.kind in (CONNECT_STARTED, CONNECTED)), mine[0].t)
        stop = next((e.t for e in mine if e.kind == CLOSED), end)
        ax.plot([start * 1000, stop * 1000], [row, row], color=COLOURS["link"], linewidth=7,
                solid_capstyle="butt", zorder=1)
        sent = [e.t * 1000 for e in mine if e.kind == SENT]
        got = [e.t * 1000 for e in mine if e.kind == RECEIVED]
        reg = [e.t * 1000 for e in mine if e.kind == REGISTERED]
        mark(sent, row + 0.12, "frame sent", marker="^", s=28, color=COLOURS["sent"])
        mark(got, row - 0.12, "frame received", marker="o", s=14, color=COLOURS["received"])
        mark(reg, row, "registered", marker="|", s=260, color=COLOURS["registered"])
        if any(e.kind == CLOSED for e in mine):
            mark([stop * 1000], row, "closed", marker="x", s=40, color=COLOURS["closed"])
    ax.set_yticks(range(len(clients)), clients)
    ax.set_ylim(len(clients) - 0.5, -0.5)  # first client on top
    ax.set_xlabel("time since the recorder started (ms, monotonic clock)")
    ax.set_ylabel("client")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return titled(fig, title, on)


# ------------------------------------------------------------------- latency


#: A histogram whose largest sample passes this many times the median is drawn
#: on a logarithmic axis: one 2 ms outlier among 0.2 ms round trips would
#: otherwise squash every other bar into the left edge.  A log axis keeps
#: every sample in view, the bulk and the tail.
LONG_TAIL = 5.0


def latency(seconds: Sequence[float], title: str = "Latency", on: str = "", bins: int = 40,
            what: str = "latency") -> Figure:
    """A histogram and a cumulative distribution (CDF), with p50 and p99 marked (ms).

    When the slowest samples lie far out (beyond ``LONG_TAIL`` times the
    median), both are drawn on a logarithmic time axis, with bins of equal
    width on it, and the axis says so.
    """
    values = [s * 1000 for s in measured(seconds, what)]
    p50, p99 = percentile(values, 50), percentile(values, 99)
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 3.6))
    low, top = min(values), max(values)
    log = low > 0 and top > LONG_TAIL * p50
    if log:
        edges = [low * (top / low) ** (i / bins) for i in range(bins + 1)]
        hist.hist(values, bins=edges, color=COLOURS["sent"], alpha=0.8)
    else:
        hist.hist(values, bins=bins, color=COLOURS["sent"], alpha=0.8)
    unit = f"{what} (ms, log scale: a long tail)" if log else f"{what} (ms)"
    hist.set_xlabel(unit)
    hist.set_ylabel("samples in each bin")
    ordered = sorted(values)
    cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], color=COLOURS["sent"])
    cdf.set_xlabel(unit)
    cdf.set_ylabel("fraction of samples at or below")
    cdf.set_ylim(0, 1.02)
    for ax in (hist, cdf):
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 0.1, 0.2, 0.5, 1, 2 ... ms
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        for q, value in (("p50", p50), ("p99", p99)):
            ax.axvline(value, color=COLOURS[q], linestyle="--", linewidth=1,
                       label=f"{q} = {value:.3g} ms" if ax is hist else None)
        ax.grid(alpha=0.3)
    hist.legend(fontsize=8)
    cdf.set_title(f"n = {len(values)}, max = {top:.3g} ms", fontsize=9)
    return titled(fig, title, on)


# ---------------------------------------------------------------- throughput


def throughput(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str = "Throughput",
               on: str = "", xlabel: str = "number of clients", ylabel: str = "messages delivered per second",
               log_x: bool = False, ax: Any = None) -> Figure:
    """One line per label: a measured rate against the number of clients."""
    return lines(series, title, on, xlabel, ylabel, log_x=log_x, ax=ax)


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, on: str, xlabel: str,
          ylabel: str, log_x: bool = False, log_y: bool = False, ax: Any = None) -> Figure:
    """Measured points joined by lines, one series per label (memory, latency... against a size)."""
    if not series:
        raise NoData(f"nothing to plot for {title!r}: no series")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4))
    for label, (xs, ys) in series.items():
        ax.plot(measured(xs, f"{label!r} (x)"), measured(ys, repr(label)), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1 or any(series):
        ax.legend(fontsize=8)
    return titled(fig, title, on)


def bars(values: dict[str, float], title: str, on: str, ylabel: str, xlabel: str = "",
         annotate: str = "{:.3g}", log_y: bool = False) -> Figure:
    """One bar per label, each value written on its bar."""
    measured(list(values.values()), f"the bars of {title!r}")
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(values) + 2), 3.8))
    labels = list(values)
    drawn = ax.bar(labels, [values[k] for k in labels], color=COLOURS["sent"])
    for bar, label in zip(drawn, labels):
        ax.annotate(annotate.format(values[label]), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=20 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    return titled(fig, title, on)


#: A colour per server in the benchmark's plots: the yardsticks grey, red, green; each chatlab model its own.
BENCH_COLOURS = {"relay": "0.6", "naive": "tab:red", "redis": "tab:green", "threads": "tab:orange",
                 "selectors": "tab:blue", "asyncio": "tab:purple"}


def _rate(value: float) -> str:
    return f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k" if value >= 1e3 else f"{value:g}"


def latency_under_load(records: Sequence[dict[str, Any]], title: str = "Latency under load", on: str = "") -> Figure:
    """``chatlab bench``'s "load" records: p50 and p99 latency, and the server's CPU, against the offered load.

    One colour per server; a hollow marker where the server fell behind the
    offered load (its latency then grows for as long as the run lasts).
    """
    runs = measured([r for r in records if r.get("scenario") == "load" and r.get("p99_ms") is not None],
                    "the latency-under-load runs")
    spare = iter(["tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8))
    for target in dict.fromkeys(r["target"] for r in runs):
        own = sorted((r for r in runs if r["target"] == target), key=lambda r: r["offered"])
        colour = BENCH_COLOURS.get(target) or next(spare, "black")
        xs = [r["offered"] for r in own]
        ax1.plot(xs, measured([r["p99_ms"] for r in own], f"{target}'s p99"), "-", color=colour, label=target)
        ax1.plot(xs, measured([r["p50_ms"] for r in own], f"{target}'s p50"), ":", color=colour)
        for r in own:
            hollow = {} if r.get("sustained") else {"markerfacecolor": "white"}
            ax1.plot([r["offered"]], [r["p99_ms"]], "o", color=colour, **hollow)
        shares = [(r["offered"], 100 * r["server_cpu_share"]) for r in own if r.get("server_cpu_share") is not None]
        if shares:
            ax2.plot(*zip(*shares), "o-", color=colour, label=target)
    offered = sorted({r["offered"] for r in runs})
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks(offered, [_rate(x) for x in offered])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("offered load (deliveries per second, log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    # Milliseconds as plain numbers (2, 5, 10, 100), not as powers of ten.
    ax1.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    ax1.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    ax1.set_ylabel("latency, scheduled send to delivery (ms, log scale)")
    ax1.set_title("p99 (solid) and p50 (dotted); hollow marker: fell behind the load", fontsize=10)
    ax2.set_ylabel("server CPU (% of one core)")
    ax2.set_title("what the server spent at that load", fontsize=10)
    return titled(fig, title, on)


# ---------------------------------------------------------- sequence diagram


def sequence(recorder: Recorder, client: str, title: str = "Frames between client and server", on: str = "",
             limit: int = 30, server: str = "server") -> Figure:
    """A sequence diagram of one client's conversation: time runs down the page.

    Times are those the client saw (when it sent, when it decoded): the
    server's own clock is not known, so arrows are drawn level, each at the
    moment the client measured it.
    """
    events = [e for e in recorder.events if e.client == client][:limit]
    if not events:
        raise ValueError(f"no events for {client!r}")
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.34 * len(events)))
    t0 = events[0].t
    for x, name in ((0, client), (1, server)):
        ax.axvline(x, color="0.4", linewidth=1.2)
        ax.text(x, -0.9, name, ha="center", va="bottom", fontsize=10, fontweight="bold")
    for row, e in enumerate(events):
        ms = (e.t - t0) * 1000
        label = f"{describe(e.msg) or e.kind}"[:48]
        if e.kind == SENT:
            ax.annotate("", xy=(1, row), xytext=(0, row),
                        arrowprops={"arrowstyle": "->", "color": COLOURS["sent"]})
            ax.text(0.5, row - 0.12, f"{label} ({e.size} B)", ha="center", va="bottom", fontsize=8,
                    color=COLOURS["sent"])
        elif e.kind == RECEIVED:
            ax.annotate("", xy=(0, row), xytext=(1, row),
                        arrowprops={"arrowstyle": "->", "color": COLOURS["received"]})
            ax.text(0.5, row - 0.12, f"{label} ({e.size} B)", ha="center", va="bottom", fontsize=8,
                    color=COLOURS["received"])
        else:
            colour = COLOURS["closed"] if e.kind == CLOSED else COLOURS["registered"]
            ax.text(-0.04, row, e.kind.replace("_", " "), ha="right", va="center", fontsize=8, color=colour)
        ax.text(1.04, row, f"{ms:8.2f} ms", ha="left", va="center", fontsize=8, family="monospace")
    ax.set_xlim(-0.55, 1.4)
    ax.set_ylim(len(events) - 0.4, -1.2)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_ylabel("time at the client (ms, runs downwards)")
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    return titled(fig, title, on)


# --------------------------------------------------------------- byte stream


def stream_pieces(rows: dict[str, Sequence[int]], title: str = "How the byte stream was cut", on: str = "",
                  boundaries: Sequence[int] = ()) -> Figure:
    """Each row is one way of cutting the same stream: piece sizes, laid end to end.

    ``rows`` maps a label ("send() calls", "recv() results") to the sizes of
    its pieces; ``boundaries`` (byte offsets) marks where messages end.
    """
    for label, sizes in rows.items():
        measured(sizes, repr(label))
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.7 * len(rows)))
    palette = ["tab:blue", "tab:cyan"], ["tab:orange", "gold"], ["tab:green", "yellowgreen"], ["tab:purple", "plum"]
    for row, (label, sizes) in enumerate(rows.items()):
        offset = 0
        colours = palette[row % len(palette)]
        for i, size in enumerate(sizes):
            ax.barh(row, size, left=offset, height=0.6, color=colours[i % 2], edgecolor="white", linewidth=0.5)
            offset += size
    for b in boundaries:
        ax.axvline(b, color="black", linestyle=":", linewidth=1)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("offset in the byte stream (bytes)" + ("; dotted lines: message ends" if boundaries else ""))
    return titled(fig, title, on)


def heatmap(matrix: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str], title: str, on: str,
            xlabel: str, ylabel: str, unit: str = "") -> Figure:
    """A table of numbers as colours, each cell written out (e.g. messages from whom to whom).

    When every cell is a whole number (a count), the colour bar's ticks are
    whole numbers too: there is no such thing as half a message.
    """
    cells = measured([value for row in matrix for value in row], f"the cells of {title!r}")
    longest = max(len(str(label)) for label in rows)
    fig, ax = plt.subplots(figsize=(max(6.5, 2.5 + 0.07 * longest + 1.1 * len(columns)), max(3.2, 1.6 + 0.5 * len(rows))))
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    top = max((max(row) for row in matrix if len(row)), default=0) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=9,
                    color="white" if value > top / 2 else "black")
    ax.set_xticks(range(len(columns)), list(columns))
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    bar = fig.colorbar(image, ax=ax, label=unit)
    if all(float(value).is_integer() for value in cells):
        whole_numbers(bar.ax.yaxis)
    return titled(fig, title, on)


# --------------------------------------------------------------- the network lab


def _describe_impairment(impairment: Any) -> str:
    """``25 ms, 1 % loss, 2 Mbit/s`` -- the settings of one direction of a link that are not the defaults."""
    parts = []
    if impairment.delay:
        parts.append(f"{impairment.delay * 1000:g} ms")
    if impairment.jitter:
        parts.append(f"±{impairment.jitter * 1000:g} ms")
    if impairment.loss:
        bursts = f" (bursts of {impairment.burst:g})" if impairment.burst > 1 else ""
        parts.append(f"{impairment.loss * 100:g} % loss{bursts}")
    if impairment.duplicate:
        parts.append(f"{impairment.duplicate * 100:g} % duplicated")
    if impairment.reorder:
        parts.append(f"{impairment.reorder * 100:g} % reordered")
    if impairment.rate:
        parts.append(f"{impairment.rate / 1e6:g} Mbit/s, queue {impairment.queue}")
    return ", ".join(parts)


def network_map(network: Any, title: str = "The lab's network", on: str = "") -> Figure:
    """The router in the middle, every host around it with its addresses; each shaped path labelled.

    Every host's ``eth0`` is wired to the router (grey spokes); a link made
    with ``network.link(a, b, ...)`` is drawn as a dashed line between the
    two hosts with its settings, each way.
    """
    import math

    hosts = list(network.hosts.values())
    fig, ax = plt.subplots(figsize=(9, 6.2 if len(hosts) > 2 else 4.2))
    places = {}
    for i, host in enumerate(hosts):
        angle = math.pi / 2 - 2 * math.pi * i / max(len(hosts), 1) if len(hosts) > 2 else math.pi * i
        places[host.name] = (math.cos(angle), 0.8 * math.sin(angle))
    for host in hosts:
        x, y = places[host.name]
        ax.plot([0, x], [0, y], color=COLOURS["link"], linewidth=3, zorder=1)
        ax.text(x * 0.55, y * 0.55, "eth0", fontsize=7, color="0.4", ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"})
        ax.text(x, y, f"{host.name}\n{host.address}\n{host.address6}", ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.4", "facecolor": "#e8f0fb", "edgecolor": COLOURS["sent"]}, zorder=3)
    ax.text(0, 0, "router\n(chatlab.net.router)", ha="center", va="center", fontsize=9, fontweight="bold",
            bbox={"boxstyle": "round,pad=0.5", "facecolor": "#fdf0e0", "edgecolor": COLOURS["received"]}, zorder=3)
    for link in network.links.values():
        (xa, ya), (xb, yb) = places[link.a.name], places[link.b.name]
        ax.plot([xa, xb], [ya, yb], color=COLOURS["received"], linestyle="--", linewidth=1, zorder=0)
        ways = [(link.a.name, link.b.name), (link.b.name, link.a.name)]
        said = [_describe_impairment(link.impairments[w]) for w in ways]
        text = said[0] if said[0] == said[1] else \
            "\n".join(f"{a}→{b}: {s or 'as is'}" for (a, b), s in zip(ways, said))
        if text:
            ax.text((xa + xb) / 2, (ya + yb) / 2 + 0.08, text, fontsize=7.5, ha="center", va="bottom",
                    color="tab:brown", zorder=4,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.text(0, -1.12, "grey: each host's eth0, wired to the router; dashed: a path shaped with "
            "network.link() (one-way settings)", ha="center", va="bottom", fontsize=8, color="0.35")
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.15, 1.15)
    ax.set_axis_off()
    return titled(fig, title, on)


def packet_times(rows: dict[str, Sequence[tuple[float, str]]], title: str, on: str,
                 xlabel: str = "time since the first packet (s)") -> Figure:
    """One row per story, a marker per packet at the time it crossed the wire, labelled (SYN, RST, ...)."""
    markers = {"SYN": ("^", "tab:blue"), "SYN-ACK": ("v", "tab:green"), "RST": ("X", "tab:red"),
               "ACK": ("o", "0.5"), "FIN": ("s", "tab:purple")}
    fig, ax = plt.subplots(figsize=(10, 1.4 + 1.0 * len(rows)))
    shown: set[str] = set()
    span = max((t for events in rows.values() for t, _ in events), default=1.0) or 1.0
    for row, (label, events) in enumerate(rows.items()):
        ends = [t for t, _ in events] or [0.0]
        ax.plot([0, max(ends)], [row, row], color=COLOURS["link"], linewidth=5, solid_capstyle="butt", zorder=1)
        last, above = None, True
        for t, kind in events:
            marker, colour = markers.get(kind, ("D", "black"))
            ax.scatter([t], [row], marker=marker, s=90, color=colour, zorder=3,
                       label=kind if kind not in shown else None)
            shown.add(kind)
            above = not above if last is not None and t - last < 0.06 * span else True  # close: take turns
            ax.annotate(f"{kind}\n{t:.3g} s", (t, row), xytext=(0, 10 if above else -12), textcoords="offset points",
                        ha="center", va="bottom" if above else "top", fontsize=7.5)
            last = t
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_ylim(len(rows) - 0.4, -0.7)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return titled(fig, title, on)
