"""The server's log: every connection, registration, message, disconnection and error, timestamped.

``chatlab serve`` writes it to stderr (and to a file with ``--log FILE``).
Two loggers feed it:

* ``chatlab`` (``chatlab.core``, ``chatlab.server``, ...): connections,
  registrations, disconnections, refusals, errors -- a few lines per
  connection;
* ``chatlab.messages``, the **message log**: one line per chat message
  (``message 7 from ada in lobby: hi``; a private message names only its
  two parties).  It is the one that grows with the traffic, so it can be
  switched off on its own: ``chatlab serve --no-message-log``.

A log line costs more than it looks.  Python's ``logging`` makes a record
for each one (looking up the caller's file and line, the time, the thread),
formats it, and a ``StreamHandler`` then writes and flushes it: a system
call per line.  That was about 15 µs per chat message: with a hundred
members in the room, as much as the whole broadcast, and half the server's
time (docs/performance.md).  So, cheaply:

* the chat core logs the messages of one burst (all that one ``recv()``
  brought) as *one* record, a line each (``ChatCore._log_said``), and the
  formatter here gives every line of a record its timestamp and level;
* the handler writes in batches: each record is formatted when it is made
  (its timestamp is the event's), kept, and written with the others at most
  ``FLUSH_EVERY`` seconds later, in one write.  A warning or an error is
  written at once, with whatever was waiting before it.

Used as a library (a notebook's ``make_server``), chatlab configures no
logging at all: Python then shows warnings and errors only, and an INFO
line costs one level check.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

MESSAGES = "chatlab.messages"  # the message log's logger
FLUSH_EVERY = 0.2  # seconds a line may wait to be written with others
FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


class EveryLine(logging.Formatter):
    """A formatter that puts the timestamp and level on every line of a record, not only on its first."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        if "\n" not in record.message:
            return text
        head = text[: len(text) - len(record.message)]  # FORMAT ends with the message
        return text.replace("\n", "\n" + head)


class BatchedHandler(logging.StreamHandler):
    """A ``StreamHandler`` that writes its lines in batches: one write per FLUSH_EVERY, not one per line."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self._lines: list[str] = []
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_now_and_then, name="chatlab-log", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle), as flush() is.
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()  # the lock is re-entrant

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
            if lines and self.stream is not None:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()

    def _write_now_and_then(self) -> None:
        while not self._stopping.wait(FLUSH_EVERY):
            try:
                self.flush()
            except (OSError, ValueError):  # the stream is gone (closed at exit)
                return


def setup(log_file: str | None = None, verbose: bool = False, messages: bool = True) -> None:
    """Log to stderr, and to ``log_file`` if given, as ``chatlab serve`` does.

    ``messages=False`` switches the message log off (the rest stays on).
    """
    # These lines name no thread or process: do not look them up for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = EveryLine(FORMAT)
    handlers: list[logging.Handler] = [BatchedHandler(sys.stderr)]
    if log_file:
        handlers.append(BatchedHandler(open(log_file, "a", encoding="utf-8")))
    root = logging.getLogger("chatlab")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    logging.getLogger(MESSAGES).setLevel(logging.NOTSET if messages else logging.WARNING)
