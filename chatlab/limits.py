"""Every limit the server enforces, in one place.

A server that accepts bytes from strangers must bound everything it keeps for
them: the size of a line or frame it is still assembling, the text it will
relay, the bytes it has queued for a client that reads slowly.  An unbounded
buffer is how one slow or hostile client takes the whole room down.

Each limit is a named field with a default that suits a classroom, listed
with the behaviour when it is crossed in ``docs/protocol.md``.  Where a limit
can be switched off, ``0`` means "no limit" (benchmarks use that).
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB

#: Longest text line, in bytes, not counting the LF or CRLF that ends it.
MAX_LINE = 4096
#: Largest length-prefixed frame payload, in bytes.  Because it is far below
#: 2**24, the first byte of every 4-byte length header is 0x00 -- which is how
#: the server tells a frames client from a person typing into ``nc``.
MAX_FRAME = 65536
#: Longest name, in characters.
MAX_NAME = 32
#: Longest chat message, in characters.
MAX_TEXT = 4096
#: Bytes queued for one client before it is disconnected as too slow.  Like
#: Redis's client-output-buffer-limit: generous enough that a healthy client
#: rides out a burst, small enough that a stalled one cannot eat the server.
OUTBOX_BYTES = 1 * MiB
#: Rooms on one server, the lobby included, and rooms one client may be in.
MAX_ROOMS = 100
MAX_ROOMS_PER_USER = 10
#: Messages of a room's history sent on joining it, and the most one history request returns.
HISTORY_ON_JOIN = 20
HISTORY_PAGE = 100
#: The largest file one may share, all the files the server holds at once, and
#: how long (seconds) it holds a file for its recipients to fetch.
MAX_FILE_BYTES = 8 * MiB
FILE_STORE_BYTES = 64 * MiB
FILE_TTL = 600


@dataclass(frozen=True)
class Limits:
    """The limits one server runs with.  ``0`` turns a switchable limit off."""

    max_line: int = MAX_LINE
    max_frame: int = MAX_FRAME
    max_name: int = MAX_NAME
    max_text: int = MAX_TEXT
    outbox_bytes: int = OUTBOX_BYTES
    max_rooms: int = MAX_ROOMS
    max_rooms_per_user: int = MAX_ROOMS_PER_USER
    history_on_join: int = HISTORY_ON_JOIN
    history_page: int = HISTORY_PAGE
    max_file_bytes: int = MAX_FILE_BYTES
    file_store_bytes: int = FILE_STORE_BYTES
    file_ttl: float = FILE_TTL

    def __post_init__(self) -> None:
        for field in ("max_line", "max_frame", "max_name", "max_text", "outbox_bytes"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be 0 (off) or positive")
        if self.max_frame >= 1 << 24:
            # The frames/lines detection relies on the header's first byte
            # being 0x00, so a frame must stay below 16 MiB.
            raise ValueError("max_frame must be below 16 MiB")
