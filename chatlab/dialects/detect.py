"""The main port: the server greets first, then the client's first byte picks its dialect.

One TCP port serves programs and people alike (docs/protocol.md, section
1).  The server speaks first, with a one-line banner that a person at
``nc`` can read.  The client's first byte then decides the rest of the
connection:

* ``0x00`` -- frames.  It is simply the first byte of the first frame's
  4-byte length, which always starts with 0x00 because frames are far
  smaller than 16 MiB;
* anything else -- lines: a person typing their name.

This dialect only waits for that byte; then it hands the connection over
(``upgraded``) to the one it chose, which decodes everything from that
first byte on.
"""

from __future__ import annotations

from typing import ClassVar

from ..limits import Limits
from ..protocol import BANNER, refusal_line
from .base import Dialect, Message, Unit
from .frames import FramesDialect
from .lines import LinesDialect


class MainPort(Dialect):
    """Greets with the banner; becomes frames or lines at the client's first byte."""

    name: ClassVar[str] = "detecting"  # no dialect yet: nothing can be said to it but the banner

    def __init__(self, limits: Limits, banner: bytes = BANNER):
        super().__init__(limits)
        self.banner = banner

    def greeting(self) -> bytes:
        return self.banner

    def refusal(self, reason: str, message: str) -> bytes:
        # Refused before the client's mode is known (the server is full, a
        # flood): one line in place of the banner, readable by a person and
        # a program alike.
        return refusal_line(reason, message)

    def feed(self, data: bytes) -> list[Unit]:
        if not data:
            return []
        chosen: Dialect = FramesDialect(self.limits) if data[0] == 0x00 else LinesDialect(self.limits)
        self.upgraded = chosen
        return chosen.feed(data)

    def parse(self, unit: bytes) -> Message | None:  # pragma: no cover - units come from the chosen dialect
        raise AssertionError("the main port hands its units to the dialect it chose")

    def encode(self, msg: Message) -> bytes:
        # Before the first byte only the core's "closing" notice can be due
        # (a timeout, a shutdown): a person is the likelier listener.
        return LinesDialect.encode_shared(msg)

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        return LinesDialect.encode_shared(msg)
