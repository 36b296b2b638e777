"""The instructor's view of a running server: who is connected, in which dialect, and how busy the chat is.

``chatlab serve --web-port`` prints a second URL, ``/instructor?key=...``:
a page that shows, every two seconds, the connections by dialect (browsers,
``chatlab chat``, ``nc``, IRC, HTTP requests in flight), who is registered
and how, the rooms, and the messages per second.  The key is a random
secret made at start-up, so the URL itself is the permission (a
"capability URL"): give it to nobody you would not show the log to.

``StatusBoard`` reads the chat core; the web dialect calls it while it
handles the request, which is where the server serialises the core, so
the numbers are a consistent snapshot.  It does no I/O and keeps only a few
samples of the message counter, to turn it into a rate.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, deque
from typing import Any, Callable

RATE_WINDOW = 10.0  # seconds of samples the messages-per-second figure is measured over


class StatusBoard:
    """A snapshot of one server for the instructor view, and the key that guards it."""

    def __init__(self, core: Any = None, clock: Callable[[], float] = time.monotonic):
        self.core = core  # the server's ChatCore; may be attached after the server is made
        self.clock = clock
        self.key = secrets.token_urlsafe(12)
        self._samples: deque[tuple[float, int]] = deque()

    def _rate(self, now: float, last_id: int) -> float:
        """Messages a second over the last RATE_WINDOW seconds (ids are given out one per message)."""
        self._samples.append((now, last_id))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        then, first = self._samples[0]  # the first look measures nothing yet: 0
        return (last_id - first) / (now - then) if now > then else 0.0

    def status(self) -> dict[str, Any]:
        core, now = self.core, self.clock()
        clients = list(core.clients.values())
        return {
            "connections": dict(Counter(client.dialect.name for client in clients)),
            "users": [{"name": c.name, "dialect": c.dialect.name, "rooms": [r.name for r in c.rooms.values()]}
                      for c in clients if c.name is not None],
            "rooms": [{"name": room.name, "members": len(room.members)} for room in core.rooms.values()],
            "messages": core.last_message_id,
            "messages_per_second": round(self._rate(now, core.last_message_id), 2),
        }
