"""Frames: the dialect of programs -- length-prefixed frames of UTF-8 JSON.

Each message is one JSON object behind a 4-byte big-endian length
(docs/protocol.md, section 3).  The receiver knows a message's size before
it arrives, so it refuses an oversized one at its header, and a payload may
hold any byte.  This is what ``ChatClient``, the notebooks' bots and the
tests speak.
"""

from __future__ import annotations

from typing import ClassVar

from ..framing import FrameDecoder
from ..limits import Limits
from ..protocol import decode_message, encode_message
from .base import Framed, Message


class FramesDialect(Framed):
    name: ClassVar[str] = "frames"
    hears_own: ClassVar[bool] = True  # a program sees where its own message fell in the room's order
    keepalive: ClassVar[bool] = True  # ChatClient answers pings, so a silent laptop can be told from a dead one

    def __init__(self, limits: Limits):
        super().__init__(limits, FrameDecoder(limits.max_frame))

    def parse(self, unit: bytes) -> Message | None:
        return decode_message(unit)

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        return encode_message(msg)
