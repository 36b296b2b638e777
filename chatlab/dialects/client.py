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
from collections import deque
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

    Push bytes in with ``feed(data)`` and get every event they complete; or,
    like h11, ``receive_data(data)`` and then ``next_event()`` one at a time
    (None: more bytes are needed).  ``banner=False`` for a server that does
    not greet first (a student's echo server, say).  ``mode=None`` leaves the
    mode open until ``choose()`` (a test client that decides after the
    banner); until then, bytes after the banner wait undecoded.
    ``interpret=False`` hands lines back as they are (``{"type": "line"}``)
    instead of as the messages they render.
    """

    def __init__(self, mode: str | None = FRAMES, *, banner: bool = True, interpret: bool = True,
                 max_frame: int = 1 << 24, max_line: int = 1 << 20, max_send: int = MAX_FRAME):
        if mode not in (FRAMES, LINES, None):
            raise ValueError("mode is 'frames' or 'lines'")
        self.mode = mode
        self.expect_banner = banner
        self.interpret = interpret
        self.banner: str | None = None  # the server's greeting, once it has arrived
        self.max_send = max_send  # a well-behaved client never sends what the server must refuse
        self._raw = bytearray()  # received, not yet given to a decoder
        self._ready: deque[tuple[Message, int]] = deque()  # decoded, not yet handed out
        self._frames = FrameDecoder(max_frame)
        self._lines = LineDecoder(max_line)

    def choose(self, mode: str) -> None:
        """Fix the mode of a wire made with ``mode=None``."""
        if mode not in (FRAMES, LINES):
            raise ValueError("mode is 'frames' or 'lines'")
        self.mode = mode

    @property
    def pending(self) -> int:
        """Bytes held of a message (or the banner) that has not arrived completely."""
        return len(self._raw) + self._frames.pending + self._lines.pending

    def held(self) -> bytes:
        """The start of a line (lines mode) that came without its newline, and bytes not yet decoded."""
        return self._lines.held + bytes(self._raw)

    def receive_data(self, data: bytes) -> None:
        self._raw += data

    def take_raw(self) -> bytes:
        """Whatever was received and not decoded (a client reading raw bytes to the end)."""
        data = bytes(self._raw)
        self._raw.clear()
        return data

    def next_event(self) -> tuple[Message, int] | None:
        """The next event and its size in bytes, or None until more bytes arrive.

        Raises ``WireError`` when the server's bytes make no sense (no banner
        line in time, a frame that is not JSON): the connection is useless.
        """
        if self._ready:
            return self._ready.popleft()
        if self.expect_banner:
            return self._banner()
        if self.mode is None or not self._raw:
            return None
        data = self.take_raw()
        if self.mode == FRAMES:
            for payload in self._frames.feed(data):
                try:
                    msg = json.loads(payload)
                except ValueError as exc:
                    raise WireError(f"the server sent a frame that is not JSON ({exc}): {payload[:64]!r}") from None
                if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                    raise WireError(f"the server sent a frame that is not a message: {payload[:64]!r}")
                self._ready.append((msg, len(payload) + 4))
        else:
            for raw_line in self._lines.feed(data):
                line = raw_line.decode("utf-8", "replace")
                msg = parse_rendered(line) if self.interpret else {"type": "line", "text": line}
                self._ready.append((msg, len(raw_line) + 1))
        return self._ready.popleft() if self._ready else None

    def feed(self, data: bytes) -> list[tuple[Message, int]]:
        """Every event ``data`` completes, each with its size in bytes (may raise WireError)."""
        self.receive_data(data)
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def _banner(self) -> tuple[Message, int] | None:
        end = self._raw.find(b"\n")
        if end < 0:
            if len(self._raw) > BANNER_LIMIT:
                raise WireError(f"no banner line in the first {BANNER_LIMIT} bytes: is it a chatlab server?")
            return None
        self.banner = self._raw[:end].decode("utf-8", "replace").rstrip("\r")
        del self._raw[:end + 1]
        self.expect_banner = False
        refused = _REFUSAL.fullmatch(self.banner)
        if refused:
            return {"type": "refused", "reason": refused[1], "message": refused[2]}, end + 1
        return {"type": "banner", "text": self.banner}, end + 1

    def encode(self, msg: Message) -> bytes:
        """A client message in this wire's mode: a frame, or the line a person would type."""
        if self.mode == LINES:
            return (line_for(msg) + "\n").encode("utf-8")
        payload = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return encode_frame(payload, self.max_send)


def refusal_of(event: Message) -> str:
    """The words of a ``refused`` event, for an error message."""
    return f"{event['reason']}: {event['message']}"


