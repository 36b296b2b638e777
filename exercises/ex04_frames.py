"""Exercise 4 -- length-prefixed framing: say how long a message is, first.

What you will learn
    The Python Socket HOWTO sums up how to mark message boundaries: "fixed
    length (yuck), delimited (shrug), or indicate how long they are (much
    better)".  A 4-byte header carries the payload's length as a big-endian
    ("network byte order") unsigned integer; the payload may then hold any
    byte, newlines and zeros included.  Because the receiver learns the size
    *before* the data, it can refuse an oversized message at the header,
    without buffering a byte of it: a peer that announces 4 GB gets nothing.

Read first
    notebooks/02_byte_stream.ipynb (length prefixes); docs/protocol.md,
    section 2.2 (frames, with a hex dump of one); the ``struct`` module.

Check it
    chatlab check 4

On the wire, the frame for b"hi" is the 6 bytes 00 00 00 02 68 69.
"""

from __future__ import annotations

import struct

MAX_FRAME = 65536  # bytes in one payload
HEADER = struct.Struct(">I")  # 4 bytes: ">" big-endian, "I" unsigned 32-bit


class FrameTooLarge(ValueError):
    """A frame over the limit: refuse it, and close the connection."""


def encode_frame(payload: bytes, max_size: int = MAX_FRAME) -> bytes:
    """The 4-byte length header followed by ``payload``."""
    # TODO: raise FrameTooLarge if len(payload) > max_size; else return HEADER.pack(len(payload)) + payload
    raise NotImplementedError(
        "raise FrameTooLarge if len(payload) > max_size; else return HEADER.pack(len(payload)) + "
        "payload"
    )


class FrameDecoder:
    """Split a byte stream into length-prefixed frames.

    >>> d = FrameDecoder()
    >>> d.feed(b"\\x00\\x00\\x00\\x02hi\\x00"), d.feed(b"\\x00\\x00\\x01!")
    ([b'hi'], [b'!'])
    """

    def __init__(self, max_size: int = MAX_FRAME):
        self.max_size = max_size
        self.buffer = bytearray()  # bytes received, not yet a whole frame
        self.length: int | None = None  # the payload size, once its header is complete

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads of the frames that ``data`` completes, in order."""
        # TODO: 1. append data to self.buffer
        # TODO: 2. loop: if self.length is None and the 4 header bytes are in: unpack them, and raise
        # TODO:    FrameTooLarge now if the length is over self.max_size (before waiting for the payload)
        # TODO: 3. once self.length payload bytes are in: cut them out, collect them, reset self.length
        # TODO: 4. stop when the buffer holds too little for the next step; return the payloads
        raise NotImplementedError(
            "add data to self.buffer, then loop: with no length yet and 4 bytes in, (length,) = "
            "HEADER.unpack_from(buffer), raise FrameTooLarge at once if length > self.max_size; "
            "with length bytes in, cut out one payload"
        )
