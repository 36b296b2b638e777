"""The client's side of the main port, sans-IO: the banner, then frames or lines.

The server's dialects turn a client's bytes into messages; ``ClientWire``
is their counterpart at the other end (as h11 has one ``Connection`` for
both roles).  Every chatlab client reads the server through it -- the
``ChatClient``, the test suite's ``RawClient``, the notebooks' bots -- so
the banner, the refusal line and the frames are parsed in one place:

>>> wire = ClientWire("frames")
>>> wire.feed(b"chatlab/1 Welcome!\\n\\x00\\x00\\x00\\x0f{\\"type\\":\\"pong\\"}")
[({'type': 'banner', 'text': 'chatlab/1 Welcome!'}, 19), ({'type': 'pong'}, 19)]
>>> ClientWire().feed(b"chatlab/1 closing server_full: try later\\n")[0][0]
{'type': 'refused', 'reason': 'server_full', 'message': 'try later'}

Each event comes with its size on the wire, for instruments that count
bytes.  Besides the server's own messages there are two events the wire
makes itself: ``banner`` (the server's greeting) and ``refused`` (the line a
server sends in place of its banner when it turns a connection away).
Lines mode hands back each line as the message it renders (``parse_rendered``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import WireError
from ..framing import FrameDecoder, LineDecoder, encode_frame
from ..limits import MAX_FRAME
from .lines import line_for, parse_rendered

Message = dict[str, Any]

FRAMES, LINES = "frames", "lines"
BANNER_LIMIT = 4096  # a greeting longer than this is not a chatlab banner
_REFUSAL = re.compile(r"chatlab/\d+ closing (\S+?): (.*)")


class ClientWire:
    """One client connection's bytes, both ways.  ``mode``: ``"frames"`` or ``"lines"``.

    ``banner=False`` for a server that does not greet first (a student's
    echo server, say): then every byte is a frame or a line from the start.
    ``mode=None`` leaves the mode open until ``choose()`` is called (a test
    client that decides after the banner).
    """

    def __init__(self, mode: str | None = FRAMES, *, banner: bool = True,
                 max_frame: int = 1 << 24, max_line: int = 1 << 20, max_send: int = MAX_FRAME):
        if mode not in (FRAMES, LINES, None):
            raise ValueError("mode is 'frames' or 'lines'")
        self.mode = mode
        self.banner: str | None = None  # the server's greeting, once it has arrived
        self._head: bytearray | None = bytearray() if banner else None  # the banner, until its newline
        self._frames = FrameDecoder(max_frame)
        self._lines = LineDecoder(max_line)
        self._held = b""  # bytes after the banner, while the mode is still open
        self.max_send = max_send  # a well-behaved client never sends what the server must refuse

    def choose(self, mode: str) -> None:
        """Fix the mode of a wire made with ``mode=None``."""
        if mode not in (FRAMES, LINES):
            raise ValueError("mode is 'frames' or 'lines'")
        self.mode = mode

    @property
    def pending(self) -> int:
        """Bytes held of a message (or the banner) that has not arrived completely."""
        return (len(self._head) if self._head is not None else 0) + len(self._held) + \
            self._frames.pending + self._lines.pending

    def feed(self, data: bytes) -> list[tuple[Message, int]]:
        """The events ``data`` completes, each with its size in bytes.

        Raises ``WireError`` when the server's bytes make no sense (no banner
        line in time, a frame that is not JSON): the connection is useless.
        """
        events: list[tuple[Message, int]] = []
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\n")
            if end < 0:
                if len(self._head) > BANNER_LIMIT:
                    raise WireError(f"no banner line in the first {BANNER_LIMIT} bytes: is it a chatlab server?")
                return events
            line = bytes(self._head[:end])
            data = bytes(self._head[end + 1:])
            self._head = None
            self.banner = line.decode("utf-8", "replace").rstrip("\r")
            refused = _REFUSAL.fullmatch(self.banner)
            if refused:
                events.append(({"type": "refused", "reason": refused[1], "message": refused[2]}, end + 1))
            else:
                events.append(({"type": "banner", "text": self.banner}, end + 1))
        if self.mode is None:
            self._held += data
            return events
        if self._held:
            data, self._held = self._held + data, b""
        if self.mode == FRAMES:
            for payload in self._frames.feed(data):
                try:
                    msg = json.loads(payload)
                except ValueError as exc:
                    raise WireError(f"the server sent a frame that is not JSON: {exc}") from None
                if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                    raise WireError("the server sent a frame that is not a message")
                events.append((msg, len(payload) + 4))
        else:
            for line in self._lines.feed(data):
                events.append((parse_rendered(line.decode("utf-8", "replace")), len(line) + 1))
        return events

    def encode(self, msg: Message) -> bytes:
        """A client message in this wire's mode: a frame, or the line a person would type."""
        if self.mode == LINES:
            return (line_for(msg) + "\n").encode("utf-8")
        payload = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return encode_frame(payload, self.max_send)


def refusal_of(event: Message) -> str:
    """The words of a ``refused`` event, for an error message."""
    return f"{event['reason']}: {event['message']}"


