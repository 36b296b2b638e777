"""Exercise 3 -- line framing: a decoder that turns any chunks into lines.

What you will learn
    TCP delivers bytes, not messages, so a protocol must mark where each
    message ends.  The simplest mark is a delimiter: a newline.  A decoder
    keeps the start of a line until its end arrives, in however many pieces
    -- and it must bound what it keeps: a peer that never sends a newline
    would otherwise fill the server's memory.  The decoder is "sans-IO": it
    never touches a socket, it is *fed* bytes, so you can test it one byte
    at a time with no server at all.

Read first
    notebooks/02_byte_stream.ipynb (delimiters, and what a limit is for);
    docs/protocol.md, section 2.1 (lines).

Check it
    chatlab check 3

The rules: a line ends with LF (b"\\n"); a CR directly before the LF is
dropped, so CRLF works too.  A line is at most ``max_length`` bytes, not
counting its ending; a longer one raises LineTooLong as soon as it is known
to be too long -- not after buffering all of it.
"""

from __future__ import annotations

MAX_LINE = 4096  # bytes in one line, not counting the LF or CRLF


class LineTooLong(ValueError):
    """A line passed the limit: the stream cannot be trusted any more, so close it."""


class LineDecoder:
    """Split a byte stream into lines.

    >>> d = LineDecoder()
    >>> d.feed(b"hel"), d.feed(b"lo\\r\\nwor"), d.feed(b"ld\\n")
    ([], [b'hello'], [b'world'])
    """

    def __init__(self, max_length: int = MAX_LINE):
        self.max_length = max_length
        self.partial = bytearray()  # the start of a line whose end has not arrived yet

    def feed(self, data: bytes) -> list[bytes]:
        """The lines that ``data`` completes (without their endings), in order."""
        # TODO: 1. for each b"\n" in data: the line is self.partial + the bytes before it;
        # TODO:    drop a final b"\r", check the limit, collect it, and empty self.partial
        # TODO: 2. the bytes after the last b"\n" start the next line: if keeping them would pass
        # TODO:    max_length (allow 1 more byte: it may be the \r of a \r\n), raise LineTooLong;
        # TODO:    otherwise keep them in self.partial
        raise NotImplementedError(
            "find each b\"\\n\" in data: self.partial + the bytes before it is a whole line (drop a "
            "final b\"\\r\"); keep what follows the last b\"\\n\" in self.partial, but raise "
            "LineTooLong first if that passes the limit"
        )
