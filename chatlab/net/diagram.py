"""Sequence diagrams of real TCP conversations: one arrow per captured segment, time running down.

The client is on the left, the server on the right.  Each arrow is labelled
with the segment's flags, relative sequence and acknowledgement numbers and
payload length, and under it the chat message it carried.  Colours say what
a segment means: data, a pure ACK, the handshake and the close, a reset;
a retransmission is red, a lost segment stops half-way at a cross, a
duplicate ACK is orange, a delayed ACK says how long it waited.

By default each segment gets its own row (``spacing="rows"``), so that 60
segments stay readable whatever their timing, and the time of each is
written in the margin; ``spacing="time"`` puts them at their real times, to
see the gaps (a retransmission timeout, a delayed ACK) as distances.

matplotlib is imported only when a diagram is drawn.
"""

from __future__ import annotations

from typing import Any

from .conversation import CLIENT, Conversation, Segment

#: Most segments drawn in one diagram unless told otherwise: beyond about 60 the labels no longer fit.
MAX_SEGMENTS = 60

# What each kind of segment is drawn in (matplotlib colour names).
KINDS = {
    "handshake": "tab:green",  # SYN, SYN-ACK
    "data": "tab:blue",
    "ack": "0.45",  # a pure ACK
    "close": "tab:purple",  # FIN
    "reset": "tab:red",
    "retransmission": "tab:red",
    "duplicate ack": "tab:orange",
    "lost": "tab:red",
    "lost (inferred)": "tab:red",
}


def kind(segment: Segment) -> str:
    """Which colour of ``KINDS`` a segment is drawn in: what matters most about it comes first."""
    if segment.lost:
        return "lost"
    if segment.presumed_lost:
        return "lost (inferred)"
    if segment.retransmission:
        return "retransmission"
    if "RST" in segment.flags:
        return "reset"
    if "SYN" in segment.flags:
        return "handshake"
    if "FIN" in segment.flags:
        return "close"
    if segment.duplicate_ack:
        return "duplicate ack"
    return "data" if segment.length else "ack"


def sequence_diagram(conv: Conversation, title: str = "", on: str = "", start: int = 0,
                     limit: int = MAX_SEGMENTS, spacing: str = "rows", ax: Any = None):
    """Draw segments ``start`` to ``start + limit`` of ``conv``; return the matplotlib Figure.

    ``title`` (default: the two ends) says what was captured, ``on`` where
    (``chatlab.lab.where()``, or "captured on lo"), as in ``chatlab.plots``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ..plots import titled

    if spacing not in ("rows", "time"):
        raise ValueError(f"spacing is 'rows' or 'time', not {spacing!r}")
    segments = conv.segments[start:start + limit]
    if not segments:
        raise ValueError(f"no segments to draw (the conversation has {len(conv.segments)})")
    rows = len(segments)
    height = 1.6 + 0.42 * rows
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, height))
    else:
        fig = ax.figure
    # Where each arrow starts and ends, in rows (one row: the height of one label).
    spans: list[tuple[float, float]]
    if spacing == "rows":
        slant = 0.45  # how far down an arrow travels: a segment takes time to cross the network
        spans = [(i, i + slant) for i in range(rows)]
    else:
        # To scale.  The capture point saw each segment once; it left its sender half the round trip
        # from the capture point to that end earlier (measured in the handshake), and reached the other
        # end half of that end's round trip later.  The sides of the diagram are the two ends.
        half = [conv.rtt_to[CLIENT] / 2, conv.rtt_to[1 - CLIENT] / 2]
        times = [(s.t - half[s.direction], s.t + half[1 - s.direction]) for s in segments]
        t0, t1 = min(a for a, _ in times), max(b for _, b in times)
        per_row = (t1 - t0) / max(rows - 1, 1) or 1e-3  # seconds per row
        spans = [((a - t0) / per_row, (b - t0) / per_row) for a, b in times]
    bottom = max(end for _, end in spans) + 0.4

    left, right = conv.ends()
    for x, name, role in ((0, left, "client"), (1, right, "server")):
        ax.plot([x, x], [-0.6, bottom], color="0.3", linewidth=1.2, zorder=1)
        ax.text(x, -0.75, f"{role}\n{name}", ha="center", va="bottom", fontsize=9, fontweight="bold")

    last_label = -1.0
    for s, (y0, y1) in zip(segments, spans):
        colour = KINDS[kind(s)]
        x0, x1 = (0, 1) if s.direction == CLIENT else (1, 0)
        if s.lost or s.presumed_lost:  # it left, and never arrived: the arrow stops on the way, at a cross
            xm, ym = x0 + 0.8 * (x1 - x0), y0 + 0.8 * (y1 - y0)
            ax.annotate("", xy=(xm, ym), xytext=(x0, y0),
                        arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 1.4, "linestyle": "--"})
            ax.plot([xm], [ym], marker="x", markersize=11, markeredgewidth=2.5, color=colour, zorder=4)
        else:
            style = "--" if s.retransmission else "-"
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops={"arrowstyle": "-|>", "color": colour, "linewidth": 1.4 if s.length else 1.0,
                                    "linestyle": style, "shrinkA": 0, "shrinkB": 0})
        # The label sits on the arrow's middle, the message just under it; to scale, segments close in
        # time would write over each other, so a label moves down to the next free row, on a leader line.
        middle = (y0 + y1) / 2
        where = max(middle, last_label + 1.0) if spacing == "time" else middle
        last_label = where
        if where - middle > 0.3:
            ax.plot([0.5, 0.5], [middle, where - 0.3], color=colour, linewidth=0.5, linestyle=":", zorder=1)
        notes = ", ".join(s.notes)
        ax.text(0.5, where - 0.06, s.label() + (f"  ({notes})" if notes else ""), ha="center", va="bottom",
                fontsize=7.5, color=colour, family="monospace",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.4})
        says = s.says(72)
        if says:
            ax.text(0.5, where + 0.04, says, ha="center", va="top", fontsize=7.5, color="black", style="italic",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.3})
        if spacing == "rows":  # the time it was captured, on the sender's side
            ax.text(-0.03 if s.direction == CLIENT else 1.03, y0, f"{s.t * 1000:.2f} ms",
                    ha="right" if s.direction == CLIENT else "left", va="center", fontsize=7, color="0.3",
                    family="monospace")

    ax.set_xlim(-0.28, 1.28)
    ax.set_ylim(max(bottom, last_label + 0.8), -1.3)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if spacing == "rows":
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
        ax.set_ylabel("time runs downwards, one row per segment (ms since the first, at the capture point)",
                      fontsize=8)
    else:
        from matplotlib.ticker import MaxNLocator

        ticks = MaxNLocator(nbins=12).tick_values(0, (t1 - t0) * 1000)
        ticks = [t for t in ticks if 0 <= t <= (t1 - t0) * 1000]
        ax.set_yticks([t / 1000 / per_row for t in ticks], [f"{t:g}" for t in ticks], fontsize=7)
        ax.set_ylabel("time runs downwards, to scale (ms; each end's clock estimated from the handshake)",
                      fontsize=8)
    present: dict[str, list[str]] = {}  # colour -> the kinds drawn in it
    for name, colour in KINDS.items():
        if any(kind(s) == name for s in segments):
            present.setdefault(colour, []).append(name)
    ax.legend([Line2D([0], [0], color=colour, linewidth=2) for colour in present],
              [" / ".join(names) for names in present.values()],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(present) or 1, fontsize=8, frameon=False)
    shown = f"segments {start}-{start + rows - 1} of {len(conv.segments)}" if rows < len(conv.segments) else \
        f"{rows} segments"
    heading = title or f"TCP conversation {conv.name}"
    subtitle = ", ".join(filter(None, [on, f"{conv.mode} mode, {shown}"]))
    return titled(fig, heading, subtitle)
