"""Message history in an embedded SQLite database.

Each room's messages are kept so that someone who joins sees what was said
just before, and anyone can page back further with a history request.
SQLite comes with Python, keeps the whole database in one file (``--db
FILE``), or in memory when no file is given, and survives a restart.

Why writing never holds up the chat: when a message is said, it is only
added to a list in memory.  Once per server tick (about twice a second), or
as soon as ``BATCH`` messages are waiting, the core asks for the batch to be
written as *work* (``effects.Work``): the server's shell runs the INSERTs
and the COMMIT on another thread, while the chat goes on.  Until a batch is
committed, a page of history includes it from memory, so nobody misses a
message that is on its way to the disk.

"Another thread" is not free in Python: only the thread holding the
interpreter's lock (the GIL) runs Python, and the chat's thread lets it go
at every system call.  Two things keep the writer from getting in the
chat's way (docs/performance.md measured both): a batch is never long --
a burst is written a thousand messages at a time, not half a second's worth
at once -- and each INSERT carries ``ROWS_PER_INSERT`` rows.
``executemany()`` would run its statement once per row, giving the lock
away and taking it back around each run: with the chat's thread busy,
every row would be a hand-over of the lock between the two threads.
In a file database, the write-ahead log (``journal_mode=WAL``) with
``synchronous=NORMAL`` makes each commit an append to the log, with no wait
for the disk (fsync) until a checkpoint.  The price: if the machine loses
power, the last half second of messages may be lost.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from typing import Any, Callable

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
#: Messages waiting to be written that make a batch: written at once, not at the tick.
BATCH = 1000
#: Rows in one INSERT: 6 values each, under the 999 values a statement
#: could hold before SQLite 3.32.
ROWS_PER_INSERT = 160

_INSERT = "INSERT INTO messages (id, room, room_name, ts, sender, text) VALUES "

Row = tuple[int, str, str, float, str, str]  # id, room key, room name, ts, sender, text


class History:
    """The messages said in rooms, oldest first, in one SQLite database."""

    def __init__(self, path: str = ":memory:"):
        self.path = path
        # The database is used from the chat's thread (reading pages) and a
        # worker thread (writing batches): one connection, and a lock held
        # while it is used.  The lists of what is not yet written have a
        # lock of their own, held only for a moment: handing a batch over
        # never waits for a write to finish.
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        self._lock = threading.Lock()
        self._lists = threading.Lock()
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()
        self._said: list[Row] = []  # said since the last batch was handed over (the chat's thread only)
        # Rooms where anything was ever said: a join to a room that has no
        # history (every new room, a benchmark's lobby) costs no query.
        self._spoken: set[str] = {room for (room,) in self.db.execute("SELECT DISTINCT room FROM messages")}
        self._writing: list[list[Row]] = []  # batches handed to a writer, not yet committed, oldest first

    def last_id(self) -> int:
        """The highest message id stored, so that ids keep growing across restarts."""
        with self._lock:
            return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0])

    def append(self, room: str, message: dict[str, Any]) -> bool:
        """Keep a message said; True when a batch is waiting that should be written now."""
        self._said.append((message["id"], room, message["room"], message["ts"], message["from"], message["text"]))
        self._spoken.add(room)
        return len(self._said) >= BATCH

    def flush_job(self) -> Callable[[], int] | None:
        """The messages said since the last flush, as a job that writes them (None: nothing to write)."""
        if not self._said:
            return None
        batch, self._said = self._said, []
        with self._lists:
            self._writing.append(batch)
        return self._write

    def _write(self) -> int:
        """Commit every batch handed over, oldest first.

        Jobs may run on several worker threads, in any order: whichever runs
        first writes every waiting batch, so the database only ever grows
        at its newest end -- what page() relies on -- and a later job finds
        its batch written already.
        """
        with self._lock:
            with self._lists:
                batches = list(self._writing)
            rows = list(itertools.chain.from_iterable(batches))
            try:
                for start in range(0, len(rows), ROWS_PER_INSERT):
                    chunk = rows[start:start + ROWS_PER_INSERT]
                    # One statement, one run: flattened in C, no Python loop.
                    self.db.execute(_INSERT + ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)),
                                    list(itertools.chain.from_iterable(chunk)))
                if rows and self.path == ":memory:":
                    self.db.execute("DELETE FROM messages WHERE id <= ? - ?", (rows[-1][0], MEMORY_KEEP))
                self.db.commit()
            except BaseException:
                self.db.rollback()  # no half-written batch left for the next commit to make permanent
                raise
            finally:
                with self._lists:  # written, or lost with a clear error: no longer waiting either way
                    del self._writing[:len(batches)]
        return len(rows)

    def flush(self) -> None:
        """Write what was said since the last flush, now, on this thread (the server is stopping)."""
        job = self.flush_job()
        if job is not None:
            job()

    def page(self, room: str, limit: int, before: int | None = None, since: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a room with ids between ``since`` and ``before`` (both
        excluded, each optional); oldest first.

        Without ``since``: the newest such messages (what was said just
        before, paging back).  With it: the oldest (what someone missed since
        the last message they saw, paging forward).
        """
        # SQLite integers are 64-bit: a client's "before" of 2**100 is simply
        # "everything", not an overflow that could crash the server.
        below = 1 << 62 if before is None else max(-(1 << 62), min(before, 1 << 62))
        above = -(1 << 62) if since is None else max(-(1 << 62), min(since, 1 << 62))
        if limit <= 0 or room not in self._spoken:
            return []
        query = ("SELECT id, room, room_name, ts, sender, text FROM messages WHERE room = ? AND id < ? AND id > ?"
                 f" ORDER BY id {'ASC' if since is not None else 'DESC'} LIMIT ?")
        with self._lock:  # no write runs meanwhile: each row is either committed or in a list
            with self._lists:
                waiting = [*self._writing, self._said]
            # Not yet committed: newer than anything in the database.
            recent: list[Row] = [row for batch in waiting for row in batch
                                 if row[1] == room and above < row[0] < below]
            if since is not None:
                rows = (self.db.execute(query, (room, below, above, limit)).fetchall() + recent)[:limit]
            else:
                rows = recent[-limit:]
                if len(rows) < limit:
                    rows = self.db.execute(query, (room, below, above, limit - len(rows))).fetchall()[::-1] + rows
        return [
            {"type": "message", "id": i, "ts": ts, "from": sender, "text": text, "room": room_name}
            for i, _, room_name, ts, sender, text in rows
        ]

    def close(self) -> None:
        self.flush()
        with self._lock:
            self.db.close()
