"""Network namespaces: a machine's worth of network, made, entered and removed.

A *network namespace* is Linux's way of giving a group of processes a
network stack of their own: their own interfaces, addresses, routing table,
firewall and port numbers.  Two programs in two namespaces may both listen
on port 5050; a server on 127.0.0.1 in one cannot be reached from another,
because each has its own loopback.  That is exactly what a second machine
looks like from a socket's point of view, so the lab makes its hosts this
way (``ip netns add NAME`` creates one, ``ip netns exec NAME CMD`` runs a
command in it: you can type both yourself).

This module holds the plumbing the rest of ``chatlab.net`` stands on:

* ``problem()`` / ``require()``: can this process build networks at all?
  (Linux, root or CAP_NET_ADMIN + CAP_SYS_ADMIN, ``/dev/net/tun``, ``ip``);
* ``ip(...)``: run one ``ip`` command, with its error in the exception;
* ``open_tun()``: a TUN device, the file through which a program reads and
  writes the IP packets of one network interface;
* ``call_in(namespace, fn)``: run a Python function inside a namespace, so
  the sockets it creates live there;
* ownership records and ``clean()``: every namespace a network makes is
  written down first (in ``/run/chatlab-net``, with the owner's PID), so
  the leftovers of a run that crashed or was killed can be found and removed.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

#: Every namespace the lab makes is called ``chl-<token>-<host>``.
PREFIX = "chl-"
#: Where the ownership records live.  /run is a tmpfs, emptied at boot -- as are the namespaces themselves.
RECORDS = Path("/run/chatlab-net")
#: Seconds any one ``ip`` or ``nft`` command may take.
COMMAND_TIMEOUT = 10.0

# From <linux/sched.h> and <linux/if_tun.h>.
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001  # IP packets, no Ethernet header (IFF_TAP would give Ethernet frames)
IFF_NO_PI = 0x1000  # no 4-byte "packet information" header in front of each packet
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


class NetworkUnavailable(RuntimeError):
    """This machine or this process cannot build the lab's networks; the message says what is needed."""


# ================================================================ can we?

CONTAINER = "a Linux container started with --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun"
ELSEWHERE = ("On macOS or Windows, run the lab in a Linux virtual machine (Multipass or UTM; WSL 2 on Windows), "
             f"as root, or in {CONTAINER} (or --privileged).")


def _capabilities() -> int:
    """This process's effective capabilities, as the bit mask in /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def problem() -> str | None:
    """Why this process cannot build networks (a sentence saying what is needed), or None if it can."""
    if not sys.platform.startswith("linux"):
        return (f"The network lab needs Linux (network namespaces and TUN devices); this is {sys.platform}. "
                + ELSEWHERE)
    caps = _capabilities()
    missing = [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
               if not caps >> bit & 1]
    if missing:
        return ("The network lab needs root (precisely " + " and ".join(missing) + ", to make network "
                "namespaces and devices), which this process does not have. Run Jupyter or pytest as root "
                f"(sudo), or in {CONTAINER}.")
    if not os.path.exists("/dev/net/tun"):
        return ("The network lab needs the TUN device /dev/net/tun, and this machine has none "
                "(modprobe tun; in a container: --device /dev/net/tun).")
    if not shutil.which("ip"):
        return "The network lab needs the 'ip' command (Debian and Ubuntu: apt-get install iproute2)."
    return None


def require() -> None:
    """Raise NetworkUnavailable, with what is needed, unless this process can build networks."""
    why = problem()
    if why:
        raise NetworkUnavailable(why)


# ================================================================ commands


def run(*command: str, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a command; return its output.  A failure raises with the command and what it printed."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def ip(*args: str, namespace: str | None = None, check: bool = True) -> str:
    """``ip ARGS`` -- in ``namespace`` when given (``ip -n NAME ARGS``)."""
    return run("ip", *(("-n", namespace) if namespace else ()), *args, check=check)


def namespaces() -> list[str]:
    """The names of every network namespace on this machine (``ip netns list``)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def open_tun(name: str = "chl%d") -> tuple[int, str]:
    """Open a new TUN device; return its file descriptor and the name the kernel gave it.

    Every IP packet the kernel sends out of the interface can then be read
    from the descriptor, one ``read()`` per packet, and every packet written
    to it arrives at the interface as if from a wire.  ``%d`` in the name asks
    the kernel for the first free number, so two networks made at the same
    moment never pick the same name.  The device lives as long as the
    descriptor stays open, also after it is moved into another namespace.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
        answer = fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError:
        os.close(fd)
        raise
    return fd, answer[:16].rstrip(b"\0").decode()


# ================================================================ inside a namespace

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def enter(namespace: str) -> None:
    """Move the *calling thread* into a network namespace (Python 3.11 has no ``os.setns``; libc has).

    Only this thread moves; the rest of the process stays where it was.
    Threads it starts from now on are born in the namespace too.
    """
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc is None or _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno() if _libc else errno.ENOSYS
            raise OSError(code, f"cannot enter the network namespace {namespace}: {os.strerror(code)}")
    finally:
        os.close(fd)


def call_in(namespace: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` inside ``namespace``; return what it returns (or raise what it raised).

    A socket belongs to the namespace in which it was *created*, for the
    rest of its life, whichever thread uses it later.  So a function run
    here can create sockets (a listening server, a client connection) that
    are on that host, and hand them back to the notebook, which uses them
    like any other.  The function runs in a fresh thread that enters the
    namespace and ends with it: the notebook's own threads never move.
    """
    outcome: dict[str, Any] = {}

    def inside() -> None:
        try:
            enter(namespace)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller, who raises it
            outcome["error"] = exc

    thread = threading.Thread(target=inside, name=f"chatlab-netns-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# ================================================================ ownership and leftovers


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is no such process.

    A PID alone does not name a process for ever: after it dies, the number
    is given to the next one.  PID and start time together do.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counting from the one after the name


def alive(pid: int, started: str | None) -> bool:
    return _start_time(pid) is not None and (started is None or _start_time(pid) == started)


class Record:
    """The ownership record of one network: who made it, its namespaces, its router, its captures.

    Written before each namespace is created, so that a crash at any moment
    leaves nothing that is not written down.
    """

    def __init__(self, token: str, **fields: Any):
        self.token = token
        self.path = RECORDS / f"{token}.json"
        self.data: dict[str, Any] = {"owner": os.getpid(), "started": _start_time(os.getpid()),
                                     "namespaces": [], "router": None, "captures": None, **fields}

    def save(self) -> None:
        RECORDS.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data))
        temporary.replace(self.path)  # atomic: a reader sees the old record or the new one

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> "Record | None":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        record = cls(path.stem)
        record.data = data
        return record


def kill_processes_in(namespace: str) -> None:
    """Stop every process still running inside a namespace (``ip netns pids``): TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in ip("netns", "pids", namespace, check=False).split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(_start_time(pid) for pid in pids):
            time.sleep(0.02)  # no event to wait on for another process's death


def delete(namespace: str) -> None:
    """Remove a namespace and whatever still runs in it."""
    if os.path.exists(f"/var/run/netns/{namespace}"):
        kill_processes_in(namespace)
        ip("netns", "delete", namespace, check=False)


def _stop_router(pid: int | None, started: str | None) -> None:
    if pid and alive(pid, started):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def clean(everything: bool = False, only: list[str] | None = None) -> list[str]:
    """Remove what crashed or killed networks left behind; return what was removed (for a message).

    A network whose owner process is still alive is left alone: it may be
    another notebook's or another test's, running right now.  With
    ``everything=True`` (``chatlab net clean --all``), lab namespaces that no
    live network owns are removed too (just those named in ``only``, if given):
    a namespace someone made by hand a moment ago, for instance.
    """
    removed: list[str] = []
    recorded: set[str] = set()
    for path in sorted(RECORDS.glob("*.json")) if RECORDS.exists() else []:
        record = Record.load(path)
        if record is None:
            continue
        names = record.data.get("namespaces", [])
        if alive(record.data.get("owner", 0), record.data.get("started")):
            recorded.update(names)
            continue
        _stop_router(record.data.get("router"), record.data.get("router_started"))
        for name in names:
            if name in namespaces():
                delete(name)
                removed.append(name)
        captures = record.data.get("captures")
        if captures and record.data.get("temporary"):
            shutil.rmtree(captures, ignore_errors=True)
        record.remove()
    if everything:
        for name in namespaces():
            if name.startswith(PREFIX) and name not in recorded and (only is None or name in only):
                delete(name)
                removed.append(name)
    return removed


def unrecorded() -> list[str]:
    """Lab namespaces that no live network owns (what ``clean(everything=True)`` would remove)."""
    owned: set[str] = set()
    for path in RECORDS.glob("*.json") if RECORDS.exists() else []:
        record = Record.load(path)
        if record and alive(record.data.get("owner", 0), record.data.get("started")):
            owned.update(record.data.get("namespaces", []))
    return [name for name in namespaces() if name.startswith(PREFIX) and name not in owned]
