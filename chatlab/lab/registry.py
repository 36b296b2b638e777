"""The clock every instrument reads, and the register of everything started.

An *instrument* is anything here that holds a socket or a thread.  Each one
registers itself when it starts and unregisters when it stops, so that
``stop_all()`` -- and the interpreter's exit, when a kernel shuts down or
restarts -- can stop whatever a notebook left running.  This module is the
only place that register (and the atexit hook that empties it) exists.
It also holds the named limits the instruments share.
"""

from __future__ import annotations

import atexit
import itertools
import sys
import time
import weakref

from ..testing import chatlab_threads


#: How long any single wait in an instrument may last before it gives up, in seconds.
TIMEOUT = 5.0
#: Most bytes a Relay keeps a copy of; past it, it still forwards but stops copying.
CAPTURE_LIMIT = 1 << 20
#: Most server log lines a live server keeps.
LOG_LINES = 2000
#: Bytes asked of one recv().
RECV_SIZE = 65536

# ======================================================================= clock


def clock() -> float:
    """Seconds on a monotonic, high-resolution clock.

    Wall-clock time (``time.time()``) can jump when the system clock is
    corrected; intervals measured with it can even come out negative.  A
    monotonic clock only moves forward, so every duration is honest.  Its
    zero means nothing: only differences between two readings do.
    """
    return time.perf_counter()


# =================================================================== registry

# Everything started and not yet stopped.  A WeakSet: it never keeps an
# instrument alive by itself (running ones are kept alive by their threads).
_live: "weakref.WeakSet[Instrument]" = weakref.WeakSet()
_started = itertools.count()


class Instrument:
    """Something that holds sockets or threads: started, then always stopped."""

    _order = 0

    def _register(self) -> None:
        self._order = next(_started)
        _live.add(self)

    def _unregister(self) -> None:
        _live.discard(self)

    def stop(self) -> object:  # pragma: no cover - every instrument defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def running() -> list[Instrument]:
    """The instruments started and not yet stopped, oldest first."""
    return sorted(_live, key=lambda i: i._order)


def stop_all() -> int:
    """Stop everything this process started here, newest first; return how many.

    Newest first, so that clients leave before the servers they talk to stop.
    """
    stopped = 0
    for instrument in reversed(running()):
        try:
            instrument.stop()
        except Exception as exc:  # keep going: the rest must still be stopped
            print(f"chatlab.lab: stopping {instrument!r} failed: {exc}", file=sys.stderr)
        stopped += 1
    return stopped


def leftover_threads() -> list[str]:
    """Names of chatlab threads still running (a notebook ends with none)."""
    return sorted(t.name for t in chatlab_threads())


# When the kernel shuts down or restarts, the interpreter exits: stop
# everything first, so clients are told and sockets closed properly.
atexit.register(stop_all)
