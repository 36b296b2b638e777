"""What clients did and saw, on one clock: the ``Recorder`` and its events.

Every bot writes into a recorder; tables and plots (``chatlab.plots``) read
from it.  One monotonic clock for everybody is what makes latencies
measured across threads comparable, with no clock to synchronise.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from .registry import TIMEOUT, clock


# The kinds of event a recorder holds, in the order a connection lives them.
CONNECT_STARTED = "connect_started"
CONNECTED = "connected"
REGISTERED = "registered"
SENT = "frame_sent"
RECEIVED = "frame_received"
CLOSED = "closed"
KINDS = (CONNECT_STARTED, CONNECTED, REGISTERED, SENT, RECEIVED, CLOSED)


@dataclass(frozen=True)
class Event:
    t: float  # seconds since the recorder started
    client: str
    kind: str  # one of KINDS
    msg: dict[str, Any] | None = None  # the frame, or the line parsed into the same shape
    size: int = 0  # bytes on the wire


class Recorder:
    """A thread-safe log of what every client did and saw, on one clock.

    The time is read *under the lock* that appends the event, so the list is
    always in time order, whichever thread records.
    """

    def __init__(self) -> None:
        self.t0 = clock()
        self._events: list[Event] = []
        self._changed = threading.Condition()

    def record(self, client: str, kind: str, msg: dict[str, Any] | None = None, size: int = 0) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
        with self._changed:
            event = Event(clock() - self.t0, client, kind, msg, size)
            self._events.append(event)
            self._changed.notify_all()
        return event

    @property
    def events(self) -> list[Event]:
        with self._changed:
            return list(self._events)

    def wait_for(self, test: Callable[[list[Event]], bool], timeout: float = TIMEOUT, what: str = "") -> None:
        """Block until ``test(events)`` is true: synchronise on what happened, never on sleep."""
        with self._changed:
            if not self._changed.wait_for(lambda: test(self._events), timeout):
                raise TimeoutError(f"waited {timeout:g} s for {what or 'an event'}; it did not happen")

    def clients(self) -> list[str]:
        """Every client, in the order it first appeared."""
        return list(dict.fromkeys(e.client for e in self.events))

    def rows(self, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
        """The events as table rows (time in ms), for printing or plotting."""
        return [
            {"t_ms": round(e.t * 1000, 3), "client": e.client, "event": e.kind,
             "what": describe(e.msg), "bytes": e.size}
            for e in self.events if e.kind in kinds
        ]

    def table(self, kinds: tuple[str, ...] = KINDS, limit: int = 40) -> str:
        return format_table(self.rows(kinds), limit)

    def deliveries(self) -> list[dict[str, Any]]:
        """Each chat message matched from its sender's send to each arrival.

        A message is known by (sender, text), so bots give every message a
        unique text.  The latency is from the moment the sender's bytes went
        into its socket to the moment a receiver decoded the message --
        both on this process's clock, so no clock sync is needed.
        """
        sent: dict[tuple[str, str], float] = {}
        out = []
        for e in self.events:
            if e.kind == SENT and e.msg and e.msg.get("type") == "say":
                sent.setdefault((e.client, e.msg["text"]), e.t)
            elif e.kind == RECEIVED and e.msg and e.msg.get("type") == "message":
                key = (e.msg.get("from"), e.msg.get("text"))
                if key in sent:
                    out.append({"from": key[0], "to": e.client, "text": key[1],
                                "sent": sent[key], "received": e.t, "latency": e.t - sent[key]})
        return out

    def latencies(self, include_self: bool = False) -> list[float]:
        """Seconds from send to arrival, for every delivery (see ``deliveries``).

        A frames client gets its own messages back too; those are left out
        unless ``include_self``.
        """
        return [d["latency"] for d in self.deliveries() if include_self or d["from"] != d["to"]]


def describe(msg: dict[str, Any] | None, width: int = 60) -> str:
    """A short human summary of a message, for tables, plot labels and errors."""
    text = _describe(msg)
    return text if len(text) <= width else text[: width - 3] + "..."


def _describe(msg: dict[str, Any] | None) -> str:
    if not msg:
        return ""
    kind = msg.get("type", "?")
    if kind == "message":
        return f"<{msg.get('from')}> {msg.get('text')}"
    if kind in ("say", "line", "banner"):
        return f"{kind} {msg.get('text', '')!r}"
    if kind in ("hello", "joined"):
        return f"{kind} {msg.get('name')}"
    if kind == "left":
        return f"left {msg.get('name')} ({msg.get('reason')})"
    if kind == "error":
        return f"error {msg.get('code')}"
    if kind == "closing":
        return f"closing ({msg.get('reason')})"
    if kind == "raw":
        return f"raw {msg.get('note') or msg.get('hex', '')}"
    return kind


def format_table(rows: list[dict[str, Any]], limit: int = 40) -> str:
    """Rows of dicts as a plain-text table (no pandas needed)."""
    if not rows:
        return "(no rows)"
    shown = rows[:limit]
    columns = list(shown[0])
    text = [[str(row.get(c, "")) for c in columns] for row in shown]
    widths = [min(60, max(len(c), *(len(r[i]) for r in text))) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v[:w].ljust(w) for v, w in zip(r, widths)) for r in text]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows")
    return "\n".join(lines)
