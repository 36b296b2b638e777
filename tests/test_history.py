"""Message history, sans-IO: batches, the order they reach the database in, and pages meanwhile."""

from __future__ import annotations

import sqlite3

import pytest

from chatlab.history import BATCH, ROWS_PER_INSERT, History
from chatlab.limits import Limits
from chatlab.testing import CoreDriver


def message(i: int, room: str = "lobby") -> dict:
    return {"type": "message", "id": i, "ts": 1_700_000_000.0 + i, "from": "ada", "text": f"m{i}", "room": room}


def said(history: History, ids: range, room: str = "lobby") -> None:
    for i in ids:
        history.append(room, message(i, room))


def ids(page: list[dict]) -> list[int]:
    return [m["id"] for m in page]


def test_a_burst_is_written_a_batch_at_a_time_not_only_at_the_tick():
    # Half a second of a busy room is many thousand messages: written at
    # the tick alone, one long write would hold the interpreter's lock
    # from the chat's thread (history.py).
    room = CoreDriver(limits=Limits.off())
    room.register("ada", "ada")
    for i in range(BATCH - 1):
        room.send_msg("ada", {"type": "say", "text": f"m{i}"})
    assert "writing history" not in room.work
    room.send_msg("ada", {"type": "say", "text": "the last of a batch"})
    assert room.work.count("writing history") == 1
    assert ids(room.core.history.page("lobby", 2)) == [BATCH - 1, BATCH]


def test_a_quiet_room_is_written_at_the_tick():
    room = CoreDriver()
    room.register("ada", "ada")
    room.send_msg("ada", {"type": "say", "text": "hello"})
    assert "writing history" not in room.work
    room.tick(0.5)
    assert room.work == ["writing history"]
    assert room.core.history.db.execute("SELECT text FROM messages").fetchall() == [("hello",)]


def test_every_row_is_stored_across_inserts_of_many_rows():
    history = History()
    count = 2 * ROWS_PER_INSERT + 7  # two full INSERTs and a short one
    said(history, range(1, count + 1))
    job = history.flush_job()
    assert job is not None and job() == count
    rows = history.db.execute("SELECT id, room, room_name, sender, text FROM messages ORDER BY id").fetchall()
    assert rows == [(i, "lobby", "lobby", "ada", f"m{i}") for i in range(1, count + 1)]


def test_jobs_run_out_of_order_still_commit_oldest_first_and_pages_stay_whole():
    # Two worker threads may take two jobs in either order.  The database
    # must only grow at its newest end: a page since an id is the committed
    # rows followed by those still waiting.
    history = History()
    said(history, range(1, 4))
    first = history.flush_job()
    said(history, range(4, 7))
    second = history.flush_job()
    said(history, range(7, 9))  # not yet handed over
    assert first is not None and second is not None
    second()  # the later job runs first
    assert ids(history.page("lobby", 100, since=0)) == list(range(1, 9))
    assert ids(history.page("lobby", 3, since=0)) == [1, 2, 3]
    assert ids(history.page("lobby", 3)) == [6, 7, 8]
    assert first() == 0  # its batch went with the other
    committed = [i for (i,) in history.db.execute("SELECT id FROM messages ORDER BY rowid")]
    assert committed == list(range(1, 7))


def test_a_write_that_fails_leaves_no_half_batch_behind():
    history = History()
    said(history, range(1, 3))
    job = history.flush_job()
    assert job is not None and job() == 2
    said(history, range(3, ROWS_PER_INSERT + 10))
    history.append("lobby", message(1))  # an id already stored: this batch's last INSERT fails
    job = history.flush_job()
    assert job is not None
    with pytest.raises(sqlite3.IntegrityError):
        job()
    said(history, range(ROWS_PER_INSERT + 10, ROWS_PER_INSERT + 12))
    job = history.flush_job()
    assert job is not None and job() == 2
    committed = [i for (i,) in history.db.execute("SELECT id FROM messages ORDER BY id")]
    assert committed == [1, 2, ROWS_PER_INSERT + 10, ROWS_PER_INSERT + 11]
