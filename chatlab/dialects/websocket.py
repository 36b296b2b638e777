"""WebSocket: the dialect of browsers -- one JSON message per WebSocket text message.

A web page cannot open a TCP connection; it can open a WebSocket (RFC
6455): an HTTP request that asks to "upgrade" (``web.py`` answers it),
after which the same TCP connection carries *frames* in both directions.
Each chat message is one text message holding the JSON object of frames
mode (docs/protocol.md, section 3): the same schema, the same errors, ids
and order.  Only the envelope differs:

* a 2- to 14-byte header instead of a 4-byte length: a FIN bit and an
  opcode (text, binary, close, ping, pong), a 7-bit length that grows to
  16 or 64 bits for longer payloads, and a mask bit;
* a browser *masks* what it sends: 4 random bytes XORed over the payload,
  so that a hostile page cannot make its bytes look like some other
  protocol to a proxy on the path.  A server's frames are never masked;
* control frames: ``close`` carries a code and a reason (``CLOSE_CODES``
  below), ``ping`` asks for a ``pong``.  The server's keep-alive is a real
  WebSocket ping, which a browser answers by itself -- even in a
  background tab whose scripts are paused.

The framing itself is wsproto's, a well-kept sans-IO implementation: we
never hand-write RFC 6455 on the server (notebook 13 takes a frame apart
byte by byte instead).  What is ours is the limit on a message's size,
checked as its bytes arrive, and what each close means.

Broadcasts stay cheap: a server's frames are unmasked and, since no
compression is ever negotiated (permessage-deflate would make each
connection's bytes depend on its own compression history), one message
is the same bytes for every browser: ``encode_shared``.
"""

from __future__ import annotations

import json
from typing import ClassVar

from wsproto import ConnectionState, WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason, FrameProtocol

from ..errors import FramingError
from ..limits import Limits
from ..protocol import BAD_FRAME, TOO_LARGE, decode_message
from .base import Dialect, Message, Reply, Unit

#: The close code a ``closing`` reason is sent with (RFC 6455, section 7.4.1);
#: the close frame's reason text is the chatlab reason itself.
CLOSE_CODES: dict[str, int] = {
    "quit": CloseReason.NORMAL_CLOSURE,  # 1000: the client said bye (or closed)
    "shutdown": CloseReason.GOING_AWAY,  # 1001: the server is stopping
    "protocol_error": CloseReason.PROTOCOL_ERROR,  # 1002 (1007 bad UTF-8, 1009 too big: see feed)
    "register_timeout": CloseReason.POLICY_VIOLATION,  # 1008: a rule of the chat was broken
    "idle": CloseReason.POLICY_VIOLATION,
    "flooding": CloseReason.POLICY_VIOLATION,
    "auth_failed": CloseReason.POLICY_VIOLATION,
    "server_error": CloseReason.INTERNAL_ERROR,  # 1011: a bug in the server
}

#: What a client's Close frame means: the same as a ``bye``.
BYE = b'{"type":"bye"}'

def message_text(msg: Message) -> str:
    """A message as the compact JSON text of one WebSocket message (as in a frame's payload)."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))


class WebSocketDialect(Dialect):
    """One browser's WebSocket, after ``web.WebPort`` accepted its upgrade."""

    name: ClassVar[str] = "websocket"
    hears_own: ClassVar[bool] = True  # the page shows a message once the server has given it its id
    keepalive: ClassVar[bool] = True  # a WebSocket ping, answered by the browser itself

    def __init__(self, limits: Limits, ws: WSConnection):
        super().__init__(limits)
        self._ws = ws  # its opening handshake done: state OPEN
        self._parts: list[bytes] = []  # a message that has not arrived whole
        self._size = 0  # bytes in _parts
        self._failure = CloseReason.PROTOCOL_ERROR  # the close code if the stream breaks

    @property
    def pending(self) -> int:
        return self._size

    def feed(self, data: bytes) -> list[Unit]:
        if self._ws.state is ConnectionState.CLOSED:
            return []  # both closes are done; late bytes mean nothing
        self._ws.receive_data(data)
        units: list[Unit] = []
        for event in self._ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                # wsproto hands over a message in pieces, as its bytes arrive:
                # the limit is checked on each piece, so a frame that claims
                # to be 4 GB is refused after the first 64 KiB, not buffered.
                piece = event.data.encode("utf-8") if isinstance(event, TextMessage) else bytes(event.data)
                self._size += len(piece)
                if self.limits.max_frame and self._size > self.limits.max_frame:
                    self._failure = CloseReason.MESSAGE_TOO_BIG  # 1009
                    raise FramingError(f"a WebSocket message over {self.limits.max_frame} bytes", units,
                                       code=TOO_LARGE)
                self._parts.append(piece)
                if event.message_finished:
                    units.append(b"".join(self._parts))
                    self._parts, self._size = [], 0
            elif isinstance(event, Ping):
                if self._ws.state is ConnectionState.OPEN:
                    units.append(Reply(self._ws.send(event.response())))  # a pong, costing a token like any unit
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    units.append(BYE)  # the browser closed (a tab shut, a page left): it said bye
                    break
                # wsproto found the stream broken (an unmasked frame, bad
                # UTF-8 in a text message...): answer, then close.
                self._failure = CloseReason(event.code)
                raise FramingError(f"broken WebSocket stream: {event.reason}", units, code=BAD_FRAME)
            # A Pong: hearing it was the point (the core noted the time).
        return units

    def parse(self, unit: bytes) -> Message | None:
        # A binary message is read like a text one: its bytes must be UTF-8 JSON.
        return decode_message(unit)

    def encode(self, msg: Message) -> bytes:
        state = self._ws.state
        if msg["type"] == "ping":  # the server's keep-alive: a WebSocket ping, which the browser answers
            return self._ws.send(Ping(payload=b"keepalive")) if state is ConnectionState.OPEN else b""
        if msg["type"] == "closing":
            # The reason in JSON first (for the page to show), then the close
            # frame, whose code a program can act on without parsing JSON.
            data = self.encode_shared(msg) if state is ConnectionState.OPEN else b""
            if state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                reason = str(msg.get("reason", "quit"))
                code = self._failure if reason == "protocol_error" else CLOSE_CODES.get(reason, 1000)
                data += self._ws.send(CloseConnection(code=code, reason=reason))
            return data
        return self.encode_shared(msg) if state is ConnectionState.OPEN else b""

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        # A server's frames are not masked and no extension is negotiated, so
        # a frame depends on its payload alone: any connection may be sent it.
        return bytes(FrameProtocol(client=False, extensions=[]).send_data(message_text(msg), fin=True))
