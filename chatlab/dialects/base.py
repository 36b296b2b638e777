"""What a wire dialect is: bytes in, messages out; messages in, bytes out.

The chat core speaks *messages*: Python dicts such as ``{"type": "say",
"text": "hi"}`` (docs/protocol.md lists them all).  How a message looks on
the wire is the business of a dialect -- length-prefixed JSON frames for
programs, lines of text for a person at ``nc``, and more can be added
(WebSocket for a browser, IRC for real IRC clients) without the core or any
server model noticing.  Like h11 and wsproto, a dialect never touches a
socket: it is fed the bytes that arrived, hands back what they complete,
and turns the core's messages into bytes for the server to send.

One ``Dialect`` object serves one connection, because decoding has state
(half a frame, half a line, whether the person has given a name yet).  A
broadcast, though, must not be encoded once per listener: ``encode_shared``
is a class method, giving bytes that every connection of the dialect can be
sent as they are.

Receiving happens in two steps, so that the core can apply its rules (a
rate limit on every message, good or bad) between them:

1. ``feed(data)`` cuts the stream into *units* -- a frame's payload, a line
   -- and raises a fatal ``FramingError`` when the stream breaks its
   framing.  A unit may also be a ``Reply``: bytes the dialect answers by
   itself, without the chat (a web page, an IRC capability list).
2. ``parse(unit)`` turns one unit into a client message (or None: nothing
   to do), raising ``ProtocolError`` for one that is refused.  It may also
   return a ``Reply``, when what to answer depends on what the units before
   it did: ``feed`` has cut a whole packet into units before the first is
   handled, so only ``parse`` knows, say, whether an IRC client has
   registered by the time its ``JOIN`` comes.

The core handles one connection's units one at a time, and answers each
while handling it: every message it sends a client in answer to a unit is
encoded (``encode``) after that unit's ``parse`` and before the next one's
-- even when a slow check runs in between (a password), since the units
after it wait.  So a dialect may remember what was last parsed to know
what an answer answers (IRC shows the core's list of users as a WHO reply
or a WHOIS reply, depending on which was asked).

After ``feed``, ``upgraded`` may name the dialect that takes over the
connection from now on: the main port starts with a dialect that only waits
for the first byte to choose between frames and lines, and an HTTP
connection may upgrade to WebSocket.

Generic hooks, for a dialect that needs one (the core and the guard read
them; no dialect is special-cased there):

* ``register_timeout``: a deadline of the dialect's own, shorter than the
  server's, for a connection to register or be upgraded to another
  dialect.  A browser's HTTP request must arrive whole within seconds (a
  "slowloris" client trickling one header a minute would otherwise hold a
  connection for the server's whole registration timeout); once upgraded
  to WebSocket, the connection is a chat client like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Union

from ..limits import Limits

Message = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """Bytes a dialect answers by itself, in order with the chat's answers.

    ``close``: a reason to close the connection once they are sent.
    """

    data: bytes
    close: str | None = None


Unit = Union[bytes, Reply]


class Dialect:
    """One connection's wire dialect, on the server's side.  Subclasses fill in the rest."""

    #: The dialect's name, as registered in ``chatlab.dialects.DIALECTS``.
    name: ClassVar[str] = "?"
    #: Whether someone who says something in a room gets it back.  A program
    #: wants its own message, to see where it fell in the room's one order; a
    #: person at a terminal has just seen it typed.
    hears_own: ClassVar[bool] = True
    #: Whether the server may send keep-alive pings (the dialect can say them,
    #: and its clients answer).
    keepalive: ClassVar[bool] = False
    #: Seconds, from the connection, within which it must register or be
    #: upgraded to another dialect; None: the server's register timeout
    #: alone.  The shorter of the two applies (the server's 0 turns both off).
    register_timeout: ClassVar[float | None] = None

    def __init__(self, limits: Limits):
        self.limits = limits
        self.upgraded: Dialect | None = None

    @property
    def pending(self) -> int:
        """Bytes held of a unit that has not arrived completely."""
        return 0

    def greeting(self) -> bytes:
        """What the server says first, before the client says anything (nothing, unless the dialect speaks first)."""
        return b""

    def refusal(self, reason: str, message: str) -> bytes:
        """What a connection refused at the door gets, before it is closed."""
        return f"{reason}: {message}\n".encode()

    def feed(self, data: bytes) -> list[Unit]:
        """The units ``data`` completes (may raise FramingError, carrying the units before the problem)."""
        raise NotImplementedError

    def parse(self, unit: bytes) -> Message | Reply | None:
        """One unit as a client message, or a Reply the dialect gives itself; None if there is nothing to do
        (may raise ProtocolError)."""
        raise NotImplementedError

    def encode(self, msg: Message) -> bytes:
        """A server message for this connection."""
        return self.encode_shared(msg)

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        """A server message as bytes that every connection of this dialect may be sent (broadcasts)."""
        raise NotImplementedError


class Decoder(Protocol):
    """What ``chatlab.framing``'s decoders offer: ``feed(data) -> units`` and ``pending``."""

    @property
    def pending(self) -> int: ...

    def feed(self, data: bytes) -> list[bytes]: ...


class Framed(Dialect):
    """A dialect whose units are cut by one of ``chatlab.framing``'s decoders (frames, lines)."""

    def __init__(self, limits: Limits, decoder: Decoder):
        super().__init__(limits)
        self.decoder = decoder

    @property
    def pending(self) -> int:
        return self.decoder.pending

    def feed(self, data: bytes) -> list[Unit]:
        return list(self.decoder.feed(data))
