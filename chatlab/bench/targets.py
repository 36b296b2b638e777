"""The servers under test, each started in a process of its own.

A server measured in the same process as its load generator would share
its interpreter (and, in Python, its GIL) with it: neither figure would
mean anything.  So every target here is a child process, started fresh for
each run (a clean memory baseline, no state left from the last run), that
prints the address it listens on and is stopped when the run is over:

* a **chatlab model** (every name in ``chatlab.servers.MODELS``, looked up
  at run time): the server ``chatlab serve`` builds, through ``python -m chatlab.bench.serve
  MODEL``: limits off and a quiet log (see that module);
* the **naive** tutorial server, ``benchmarks/naive_server.py``;
* **redis**: Debian's ``redis-server`` on loopback, pub/sub, with no
  persistence and no output-buffer limits -- the compiled event-loop
  reference.  Skipped, with a note, when it is not installed;
* the **relay** (``chatlab.bench.relay``), the load generator's yardstick.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..servers import MODELS

ROOT = Path(__file__).resolve().parent.parent.parent
NAIVE_SERVER = ROOT / "benchmarks" / "naive_server.py"
LISTENING = re.compile(rb"listening on (?:TCP )?\[?([\w.:]+?)\]?:(\d+)")
START_TIMEOUT = 15.0  # seconds for a server to say it is listening

class TargetError(Exception):
    """A server under test would not start (the message says why)."""


@dataclasses.dataclass
class Target:
    """One kind of server the benchmark can measure."""

    name: str  # as shown in the table: "threads", "naive", "redis", "relay", ...
    kind: str  # "chatlab", "naive", "redis" or "relay"
    dialect: str  # what the load generator speaks to it: "lines" or "redis"
    event_loop: bool = False  # one thread waiting on every socket (scale runs go further)

    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None."""
        if self.kind == "redis" and shutil.which("redis-server") is None:
            return "redis-server is not installed (Debian: apt-get install redis-server); Redis rows skipped"
        if self.kind == "naive" and not NAIVE_SERVER.exists():
            return f"{NAIVE_SERVER} not found (it lives in the source tree); naive rows skipped"
        return None

    def command(self, port: int, options: dict[str, int], clients: int) -> list[str]:
        if self.kind == "chatlab":
            limits = [f"--limit={k}={v}" for k, v in options.items()]
            return [sys.executable, "-m", "chatlab.bench.serve", self.name, *limits]
        if self.kind == "naive":
            return [sys.executable, str(NAIVE_SERVER), "--port", "0"]
        if self.kind == "relay":
            return [sys.executable, "-m", "chatlab.bench.relay", "--port", "0"]
        return [
            "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", "", "--loglevel", "notice",
            # Protected mode lets in 127.0.0.1 only; the generator also connects
            # from 127.0.0.2 ... (loadgen.SOURCES).  Bound to loopback, it is
            # reachable from this machine only either way.
            "--protected-mode", "no",
            # No limit on what may queue for a subscriber: limits off, as for chatlab.
            "--client-output-buffer-limit", "pubsub 0 0 0",
            "--maxclients", str(max(10000, clients + 100)),
        ]

    def start(self, options: dict[str, int] | None = None, clients: int = 0) -> "Running":
        """Start this server in its own process; return once it listens."""
        port = _free_port() if self.kind == "redis" else 0
        proc = subprocess.Popen(
            self.command(port, options or {}, clients),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl+C at the terminal is the benchmark's to handle
        )
        running = Running(self, proc)
        try:
            running.wait_listening(port)
        except BaseException:
            running.stop()
            raise
        return running


class Running:
    """A started server process: its pid, its address, its last lines of output."""

    def __init__(self, target: Target, proc: subprocess.Popen):
        self.target, self.proc, self.pid = target, proc, proc.pid
        self.host, self.port = "127.0.0.1", 0
        self.output: collections.deque[str] = collections.deque(maxlen=30)
        self._drain: threading.Thread | None = None

    def wait_listening(self, port: int) -> None:
        """Read the server's output until it says where it listens (or fails)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + START_TIMEOUT
        pending = b""
        with selectors.DefaultSelector() as sel:
            # Raw reads of the pipe: a buffered readline() could keep a line
            # in Python's buffer while select() waits for the next one.
            sel.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise TargetError(f"{self.target.name} did not start within {START_TIMEOUT:g} s: "
                                      + " | ".join(self.output))
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise TargetError(f"{self.target.name} exited at start: " + " | ".join(self.output))
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self.output.append(line.decode(errors="replace").rstrip())
                    if self.target.kind == "redis":
                        if b"Ready to accept connections" in line:
                            self.port = port
                    elif match := LISTENING.search(line):
                        self.host, self.port = match.group(1).decode(), int(match.group(2))
                if self.port:
                    break
        # Keep reading its output (a full pipe would block the server), keeping the last lines.
        self._drain = threading.Thread(target=self._read_rest, name="bench-drain", daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self.output.extend(chunk.decode(errors="replace").splitlines())

    def stop(self) -> None:
        """Stop the server (politely, then not), and wait for the process to end."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._drain is not None:
            self._drain.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _free_port() -> int:
    """A loopback port nothing listens on (for Redis, which cannot pick one itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def all_targets() -> list[Target]:
    """Every target, the chatlab models as registered now."""
    models = [Target(name, "chatlab", "lines", event_loop=name != "threads") for name in MODELS]
    return [
        Target("relay", "relay", "lines", event_loop=True),
        *models,
        Target("naive", "naive", "lines"),
        Target("redis", "redis", "redis", event_loop=True),
    ]
