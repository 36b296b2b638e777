"""What a process has cost: CPU time and resident memory, read from ``/proc``.

The benchmark's headline figure is the *server's* CPU time per delivered
message.  Wall-clock throughput depends on who else uses the machine -- the
load generator shares the same two cores -- but the CPU seconds the server
process spent, user plus system, are its own.  Linux keeps them per thread
in ``/proc/PID/task/TID/schedstat`` (nanoseconds on a CPU; a thread that
ends during a run takes its share with it, which no scenario here does) and
for the whole process in ``/proc/PID/stat`` (10 ms clock ticks), and the
resident memory in ``/proc/PID/status`` (``VmRSS``).

Elsewhere (macOS, Windows) there is no ``/proc``: the functions return
None and the report leaves those columns empty.
"""

from __future__ import annotations

import os
import time

try:
    import resource  # Unix only
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # usually 100: 10 ms resolution


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far, or None if unknown.

    Summed over the process's threads from ``/proc/PID/task/*/schedstat``
    (nanoseconds), so that a short run is measured as well as a long one;
    ``/proc/PID/stat`` (in 10 ms clock ticks) where schedstat is missing.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total, found = 0, False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
                found = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9 if found else _stat_seconds(pid)


def _stat_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces:
    # count the fields after the last ")".  utime and stime are fields 14, 15.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` (what it holds in RAM), or None if unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def own_cpu_seconds() -> float:
    """This process's user + system CPU time (portable)."""
    return time.process_time()


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted``, as far as allowed.

    Every socket is a file descriptor; the usual soft limit (1,024) stops a
    server at about a thousand clients.  The soft limit may be raised up to
    the hard limit without privileges; child processes inherit it.
    Returns the limit now in force.
    """
    if resource is None:  # pragma: no cover - Windows has no such limit to raise
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
