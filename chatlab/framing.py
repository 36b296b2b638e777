"""Framing: turning a TCP byte stream into messages, and messages into bytes.

TCP delivers a *stream* of bytes, not messages.  Two ``send()`` calls of 5
bytes each may arrive as one ``recv()`` of 10 bytes, or as 3 + 7, or one byte
at a time.  So every protocol on top of TCP must mark where one message ends
and the next begins.  The Python Socket HOWTO sums up the choices: messages of
a fixed length (yuck), delimited (shrug), or prefixed with their length (much
better).  chatlab speaks two of them:

* **lines**: UTF-8 text ending in LF (a CR before it is dropped), so a person
  can chat with ``nc`` or ``telnet``;
* **length-prefixed frames**: a 4-byte big-endian unsigned length, then that
  many bytes.  The receiver knows the size before the data arrives, so it can
  refuse an oversized frame at once, and the payload may contain any byte.

Nothing here touches a socket ("sans-IO"): a decoder is fed whatever bytes
arrived and hands back the complete messages, keeping the rest for later.
That makes it testable one byte at a time, and reusable by every server model.

A decoder never buffers more than its limit.  It raises as soon as a message
is *known* to be too big -- at the header for a frame, at the limit for a line
-- and the caller should then close the connection: once framing is lost, a
byte stream cannot be trusted to resynchronise.
"""

from __future__ import annotations

import struct

from .errors import FrameTooLarge, FramingError, LineTooLong
from .limits import MAX_FRAME, MAX_LINE

__all__ = ["HEADER", "LineDecoder", "FrameDecoder", "encode_line", "encode_frame",
           "FramingError", "LineTooLong", "FrameTooLarge"]

HEADER = struct.Struct(">I")  # 4 bytes, big-endian ("network byte order"), unsigned


# --------------------------------------------------------------------- lines


class LineDecoder:
    """Split a byte stream into lines ending in ``\\n`` (``\\r\\n`` also works).

    >>> d = LineDecoder()
    >>> d.feed(b"hel"), d.feed(b"lo\\r\\nwor"), d.feed(b"ld\\n")
    ([], [b'hello'], [b'world'])
    """

    def __init__(self, max_length: int = MAX_LINE):
        if max_length <= 0:
            raise ValueError("max_length must be positive")
        self.max_length = max_length
        self._partial = bytearray()  # the start of a line whose end has not arrived

    @property
    def pending(self) -> int:
        """Bytes held of a line that has not ended yet."""
        return len(self._partial)

    @property
    def held(self) -> bytes:
        """The start of a line whose end has not arrived (what a failed check shows)."""
        return bytes(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._keep(data[start:end], lines)
            line = bytes(self._partial)
            self._partial.clear()
            lines.append(line[:-1] if line.endswith(b"\r") else line)
            start = end + 1
        self._keep(data[start:], lines)  # the start of the next line
        return lines

    def _keep(self, piece: bytes, lines: list[bytes]) -> None:
        """Add ``piece`` to the line being assembled, if it stays within the limit."""
        size = len(self._partial) + len(piece)
        if (piece[-1:] or self._partial[-1:]) == b"\r":
            size -= 1  # a final CR may be half of a CRLF: it does not count
        if size > self.max_length:
            raise LineTooLong(
                f"line longer than {self.max_length} bytes (no newline in time)", lines
            )
        self._partial += piece


def encode_line(text: str) -> bytes:
    """One line of UTF-8 text, with its ``\\n``."""
    data = text.encode("utf-8")
    if b"\n" in data or b"\r" in data:
        raise ValueError("a line cannot contain CR or LF")
    return data + b"\n"


# -------------------------------------------------------------------- frames


class FrameDecoder:
    """Split a byte stream into length-prefixed frames.

    >>> d = FrameDecoder()
    >>> d.feed(b"\\x00\\x00\\x00\\x02hi\\x00"), d.feed(b"\\x00\\x00\\x01!")
    ([b'hi'], [b'!'])
    """

    def __init__(self, max_size: int = MAX_FRAME):
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self._buffer = bytearray()  # header bytes, then payload bytes
        self._length: int | None = None  # payload size, once the header is complete

    @property
    def pending(self) -> int:
        """Bytes held of a frame that has not arrived completely."""
        return len(self._buffer) + (HEADER.size if self._length is not None else 0)

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._length is None:
                # Still collecting the 4-byte header, maybe across calls.
                take = min(HEADER.size - len(self._buffer), end - pos)
                self._buffer += data[pos : pos + take]
                pos += take
                if len(self._buffer) < HEADER.size:
                    break
                (length,) = HEADER.unpack(self._buffer)
                self._buffer.clear()
                # Refuse at the header, before buffering a single payload
                # byte: a peer that claims 4 GB gets nothing from us.
                if length > self.max_size:
                    raise FrameTooLarge(
                        f"frame of {length} bytes announced; the limit is {self.max_size}",
                        frames,
                    )
                self._length = length
            take = min(self._length - len(self._buffer), end - pos)
            self._buffer += data[pos : pos + take]
            pos += take
            if len(self._buffer) == self._length:
                frames.append(bytes(self._buffer))
                self._buffer.clear()
                self._length = None
        return frames


def encode_frame(payload: bytes, max_size: int = MAX_FRAME) -> bytes:
    """The 4-byte length header followed by ``payload``."""
    if len(payload) > max_size:
        raise FrameTooLarge(f"payload of {len(payload)} bytes; the limit is {max_size}")
    return HEADER.pack(len(payload)) + payload
