"""``RedisServer``: a real redis-server on a free loopback port, for tests and notebooks, always stopped again.

Several chatlab servers share one chat through Redis (``chatlab serve
--redis URL``, docs/scaling.md).  A lesson or a test needs a Redis of its
own: this starts Debian's ``redis-server`` in a temporary folder, on a
port no one else uses, with its append-only file on (``appendfsync
always``: every write is on disk before Redis answers), so that a Redis
killed and started again has lost nothing it acknowledged.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

from .registry import Instrument

START_TIMEOUT = 10.0  # seconds for redis-server to answer PING


def redis_available() -> str | None:
    """None if redis-server and redis-py are installed, else what is missing (a skip reason)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'chatlab[redis]')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


class RedisServer(Instrument):
    """``with RedisServer() as r: r.url`` -- a private redis-server; ``kill()``/``start()`` to restart it."""

    def __init__(self, persist: bool = True, fsync: str = "always"):
        self.persist, self.fsync = persist, fsync
        self.folder = Path(tempfile.mkdtemp(prefix="chatlab-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self.start()
        self._register()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start (or start again, on the same port and files) and wait until it answers."""
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                "--save", "", "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"]
        args += ["--appendonly", "yes", "--appendfsync", self.fsync] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._finalizer = weakref.finalize(self, _stop, self.proc)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        """Does it answer PING now?"""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: no goodbye, no last save (what it acknowledged is in its append-only file)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self._unregister()
        if self.proc is not None:
            self.resume()
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url}>"


class NodeProcess(Instrument):
    """``chatlab serve --redis URL`` in a child process: one node of a shared chat, to kill -9 or pause.

    ``args`` go to ``chatlab serve`` as they are (``["--rate-limit", "0"]``).
    The node's log goes to ``log_file`` (default: nowhere).
    """

    def __init__(self, url: str | None, model: str = "selectors", mode: str = "streams", args: tuple[str, ...] = (),
                 log_file: str | None = None):
        import sys

        self.url, self.model, self.mode = url, model, mode
        self._log = open(log_file or os.devnull, "w")
        shared = ["--redis", url, "--redis-mode", mode] if url else []  # None: a server alone, for comparison
        command = [sys.executable, "-m", "chatlab", "serve", "--port", "0", "--model", model, *shared, *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self._finalizer = weakref.finalize(self, _stop, self.proc)
        self._register()
        self.address: tuple[str, int] = ("", 0)
        self.node = ""
        deadline = time.monotonic() + START_TIMEOUT * 2
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the child prints where it listens, then which node it is
            if " listening on " in line:
                host, _, port = line.rsplit(" ", 1)[1].strip().rpartition(":")
                self.address = (host.strip("[]"), int(port))
                if not url:
                    self.node = "alone"
                    break
            if "this is node " in line:
                self.node = line.split("this is node ", 1)[1].split(",")[0]
                break
            if time.monotonic() > deadline:
                break
        if not self.node:
            self.stop()
            raise RuntimeError(f"the chatlab node did not start (see {log_file or 'its log'})")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """kill -9: the node dies with no goodbye; the others notice its heartbeat stop."""
        if self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: frozen, sockets open, heartbeat silent."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """A graceful stop (SIGTERM: its users are announced as leaving), else kill."""
        self._unregister()
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __repr__(self) -> str:
        return f"<NodeProcess {self.model} {self.node} pid {self.proc.pid}>"
