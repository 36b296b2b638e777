"""Message history in an embedded SQLite database.

Each room's messages are kept so that someone who joins sees what was said
just before, and anyone can page back further with a history request.
SQLite comes with Python, keeps the whole database in one file (``--db
FILE``), or in memory when no file is given, and survives a restart.

Why writes never hold up the chat: a message is only *inserted* when it
is said -- into SQLite's page cache, inside an open transaction, which
takes microseconds.  The transaction is committed once per server tick
(about twice a second), a batch at a time.  In a file database, the
write-ahead log (``journal_mode=WAL``) with ``synchronous=NORMAL`` makes
each commit an append to the log, with no wait for the disk (fsync) until
a checkpoint.  The price: if the machine loses power, the last half second
of messages may be lost.  A crash of the server process alone loses only
the uncommitted batch.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,      -- the server-wide message id
    room TEXT NOT NULL,          -- the room's key (its case-folded name)
    room_name TEXT NOT NULL,     -- the room's name as shown
    ts REAL NOT NULL,            -- seconds since the Unix epoch
    sender TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
"""

#: Messages an in-memory database keeps, in all rooms, before forgetting the oldest.
MEMORY_KEEP = 100_000


class History:
    """The messages said in rooms, oldest first, in one SQLite database."""

    def __init__(self, path: str = ":memory:"):
        self.path = path
        # The core is called from one thread at a time (under the threaded
        # server's lock, or on an event loop's thread), so one connection
        # serves every thread.
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()
        self.unsaved = 0

    def last_id(self) -> int:
        """The highest message id stored, so that ids keep growing across restarts."""
        return self.db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]

    def append(self, room: str, message: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO messages (id, room, room_name, ts, sender, text) VALUES (?, ?, ?, ?, ?, ?)",
            (message["id"], room, message["room"], message["ts"], message["from"], message["text"]),
        )
        self.unsaved += 1

    def flush(self) -> None:
        """Commit the batch of messages said since the last flush."""
        if not self.unsaved:
            return
        if self.path == ":memory:":
            self.db.execute("DELETE FROM messages WHERE id <= (SELECT MAX(id) FROM messages) - ?", (MEMORY_KEEP,))
        self.db.commit()
        self.unsaved = 0

    def page(self, room: str, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a room, older than id ``before`` if given; oldest first."""
        rows = self.db.execute(
            "SELECT id, ts, sender, text, room_name FROM messages"
            " WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?",
            # SQLite integers are 64-bit: a client's "before" of 2**100 is
            # simply "everything", not an overflow that could crash the server.
            (room, 1 << 62 if before is None else max(-(1 << 62), min(before, 1 << 62)), limit),
        ).fetchall()
        return [
            {"type": "message", "id": i, "ts": ts, "from": sender, "text": text, "room": room_name}
            for i, ts, sender, text, room_name in reversed(rows)
        ]

    def close(self) -> None:
        self.flush()
        self.db.close()
