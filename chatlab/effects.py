"""Effects: what the chat core asks a server to do, since it does nothing itself.

The core never touches a socket, a thread or a clock.  Each event it is
told of (a connection, some bytes, a tick of time) it answers with a list
of effects, and the server's shell performs them in that order:

* ``Send``: queue these bytes for these clients.  A broadcast is one
  ``Send`` with many recipients, encoded once for all of them.
* ``Close``: close this connection, once what is queued for it has gone.
* ``Work``: run this slow job (hashing a password, committing to disk)
  *away from* the chat, then hand its result back with
  ``core.finished(work, result, now)``.  An event loop that ran a 40 ms
  password hash itself would stop every other client for 40 ms; so the
  event-loop shells run it on a worker thread, and the thread-per-client
  shell on the client's own thread, outside the lock that serialises the
  room.  The core stays single-threaded: ``finished`` is called like any
  other event.  Work marked ``ordered`` runs one job at a time, in the
  order the core gave it (a shared chat's writes to Redis: a client's
  messages must reach the room in the order it sent them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Union

ClientId = Hashable


@dataclass(frozen=True)
class Send:
    """Queue ``data`` for each client in ``to``."""

    to: tuple[ClientId, ...]
    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the connection once what is queued for it has been sent."""

    client: ClientId
    reason: str


@dataclass(frozen=True, eq=False)
class Work:
    """Run ``job()`` off the chat's thread; then ``core.finished(self, result, now)``.

    ``then`` is the core's own continuation: it receives the job's result
    and the time, and returns more effects.  A job must not touch the
    core: it gets what it needs when it is made.
    """

    job: Callable[[], Any]
    then: Callable[[Any, float], list["Effect"]]
    what: str = "work"  # for the log: what is being done
    ordered: bool = False  # run after every ordered job given before it, never beside one


Effect = Union[Send, Close, Work]
