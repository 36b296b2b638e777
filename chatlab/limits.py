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

from dataclasses import dataclass, fields
from typing import Any

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

# The defences (chatlab/guard.py; docs/security.md explains each choice).
#: Seconds a new connection has to register (say hello) before it is closed.
#: Long enough for a person to read the banner and type a name into nc.
REGISTER_TIMEOUT = 60
#: Seconds of silence after which a connection is closed as idle.  A person
#: in nc who only reads is timed out after this; ChatClient never is, as it
#: answers the keep-alive pings.
IDLE_TIMEOUT = 15 * 60
#: Seconds of silence after which the server pings a frames client.
PING_INTERVAL = 30
#: Open connections, in all (registered or not), and from one address.
MAX_CLIENTS = 256
MAX_PER_ADDRESS = 32
#: New connections a second from one address, after a burst of ACCEPT_BURST.
ACCEPT_RATE = 10
ACCEPT_BURST = 32
#: Messages a second from one client, after a burst of RATE_BURST.  A person
#: types far slower; a pasted paragraph fits in the burst.
RATE_LIMIT = 5
RATE_BURST = 20
#: Bytes of text (UTF-8, after cleaning) that all the connections from one
#: address may have relayed, a second, after a burst.  The message rate is per
#: connection, so 32 connections from one address could each send their 20
#: long messages at once -- 10 MB into every member's 1 MiB outbox.  Counted
#: per address and in bytes, a burst costs each reader at most RELAY_BURST.
RELAY_RATE = 64 * KiB
RELAY_BURST = 256 * KiB
#: Messages refused for rate, in one flood, before the client is disconnected.
FLOOD_LIMIT = 50
#: Seconds before a wrong password is answered, and wrong passwords allowed
#: on one connection before it is closed.
AUTH_DELAY = 1.0
AUTH_TRIES = 3
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
#: Seconds an upload may wait for its next chunk before it is dropped (a
#: sender that stopped answering holds nothing for long), and uploads one
#: client may have unfinished at once.  A client's offers, finished or not,
#: may also add up to at most a quarter of the store (or one largest file).
UPLOAD_TIMEOUT = 30
UPLOADS_PER_USER = 2
#: Members a room holds before it counts as large: someone who joins a large
#: room is announced ("joined") only when they first speak in it, as in IRC's
#: delayed-join channels.  Announcing every join to every member costs N
#: squared notices for N joins (50 million at 10,000 users).
LARGE_ROOM = 100


@dataclass(frozen=True)
class Limits:
    """The limits one server runs with.  ``0`` turns a switchable limit off."""

    max_line: int = MAX_LINE
    max_frame: int = MAX_FRAME
    max_name: int = MAX_NAME
    max_text: int = MAX_TEXT
    outbox_bytes: int = OUTBOX_BYTES
    register_timeout: float = REGISTER_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    ping_interval: float = PING_INTERVAL
    max_clients: int = MAX_CLIENTS
    max_per_address: int = MAX_PER_ADDRESS
    accept_rate: float = ACCEPT_RATE
    accept_burst: int = ACCEPT_BURST
    rate_limit: float = RATE_LIMIT
    rate_burst: int = RATE_BURST
    relay_rate: float = RELAY_RATE
    relay_burst: int = RELAY_BURST
    flood_limit: int = FLOOD_LIMIT
    auth_delay: float = AUTH_DELAY
    auth_tries: int = AUTH_TRIES
    max_rooms: int = MAX_ROOMS
    max_rooms_per_user: int = MAX_ROOMS_PER_USER
    history_on_join: int = HISTORY_ON_JOIN
    history_page: int = HISTORY_PAGE
    max_file_bytes: int = MAX_FILE_BYTES
    file_store_bytes: int = FILE_STORE_BYTES
    file_ttl: float = FILE_TTL
    upload_timeout: float = UPLOAD_TIMEOUT
    uploads_per_user: int = UPLOADS_PER_USER
    large_room: int = LARGE_ROOM

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name} must be 0 (off) or positive")
        for rate, burst in (("rate_limit", "rate_burst"), ("accept_rate", "accept_burst"),
                            ("relay_rate", "relay_burst")):
            if getattr(self, rate) and getattr(self, burst) < 1:
                raise ValueError(f"with a {rate}, {burst} must be at least 1")
        if self.max_frame >= 1 << 24:
            # The frames/lines detection relies on the header's first byte
            # being 0x00, so a frame must stay below 16 MiB.
            raise ValueError("max_frame must be below 16 MiB")

    @classmethod
    def off(cls, **keep: float) -> "Limits":
        """Every defence off, for benchmarks and throughput tests (``keep``: any to leave on).

        The framing limits stay: a decoder cannot work without one.
        """
        switches = ("max_name", "max_text", "outbox_bytes", "register_timeout", "idle_timeout",
                    "ping_interval", "max_clients", "max_per_address", "accept_rate", "rate_limit",
                    "relay_rate", "flood_limit", "auth_delay", "auth_tries")
        fields_: dict[str, Any] = {**{name: 0 for name in switches}, **keep}
        return cls(**fields_)
