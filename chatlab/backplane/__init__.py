"""The backplane: how a chat core shares its rooms with other servers -- or with none.

One server holds the whole chat in its core: the names, the rooms, the
order of messages.  Several servers (``chatlab serve --redis URL``, one
per classroom section, or behind a load balancer) must agree on all of
that, so something outside every one of them has to keep it: a
*backplane* between the cores, as in a rack of network switches.  No
server model knows of it: it is a component the core owns, like the
history or the file store.

* ``LocalBackplane`` (this module) is the chat as it always was: nothing
  is shared, the core's own rooms are the whole chat.  It takes over
  nothing, and every message type is answered by the core itself.
* ``shared.SharedRooms`` shares everything through Redis (``store.py``):
  a stream per room gives every server the same order and the same ids,
  a hash of names makes a name unique across servers, and a heartbeat with
  a time to live tells the others when a server has died.  It answers the
  message types that concern more than one server (``handlers``) and
  takes over registration and departure.

The core asks the backplane three things, on the chat's thread, never
waiting: the handlers it answers instead of the core, whether it takes
over a registration (``register``) and a departure (``gone``).  Whatever
needs Redis is handed back as ``Work``; what Redis tells a server later
(a message from another server) arrives through ``post`` (servers/shell.py),
on the core's thread too.  docs/scaling.md is the design, with every key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..effects import Effect
from ..session import Client, Out

if TYPE_CHECKING:
    from ..core import ChatCore, Handler

Post = Callable[[Callable[[float], list[Effect]]], None]  # the shell's post(): an event onto the core's thread


class Unavailable(Exception):
    """What is shared cannot be reached (Redis is down): nothing can be said, joined or looked up until it is back.

    Defined here, not in store.py, so that a server without ``--redis`` never
    imports the redis package: the core needs only the standard library.
    """


class Backplane:
    """What a chat core asks of whatever shares (or does not share) its rooms."""

    #: True when other servers take part: names, rooms and ids live outside this process.
    shared = False

    def attach(self, core: "ChatCore") -> dict[str, "Handler"]:
        """The core that owns this backplane; returns the message handlers the backplane answers instead."""
        return {}

    def register(self, client: Client, name: str, key: str, out: Out) -> bool:
        """A client may take ``name`` as far as this server knows: True if the backplane registers it itself."""
        return False

    def gone(self, client: Client, reason: str, out: Out) -> bool:
        """A registered client has gone: True if the backplane tells its rooms itself."""
        return False

    def connect(self) -> None:
        """The server is starting: reach what is shared (raise if it cannot be reached)."""

    def start(self, post: Post) -> None:
        """The server is running: events may now be posted to the core."""

    def stop(self) -> None:
        """The server is stopping (its clients have been told)."""

    def status(self) -> dict[str, Any]:
        """What a notebook or a test may look at: counters, the state of the connection."""
        return {"shared": self.shared}


class LocalBackplane(Backplane):
    """One server alone: its core's rooms are the whole chat, and nothing is taken over."""


def make_backplane(redis: str | None = None, mode: str = "streams") -> Backplane:
    """The backplane ``chatlab serve --redis URL`` uses: Redis if a URL is given, else none at all.

    ``mode="pubsub"`` delivers with Redis pub/sub instead of streams: for the
    lesson of notebook 14 (a server that was away misses what was said).
    """
    if not redis:
        return LocalBackplane()
    from .shared import SharedRooms
    from .store import RedisStore

    return SharedRooms(RedisStore(redis, mode=mode))


__all__ = ["Backplane", "LocalBackplane", "Post", "Unavailable", "make_backplane"]
