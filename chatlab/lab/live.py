"""Live servers: real servers started from a notebook, always stopped again.

``start_server`` / ``live_server`` run any server (a model name, a class, a
factory) in this process; ``ServerProcess`` runs one in a child process, so
its memory and threads can be measured on their own.  A handle that is
forgotten (a cell re-run) stops its server, so no old server keeps a port.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..limits import Limits
from ..servers import MODELS, DEFAULT_HOST, format_address, make_server
from .measure import process_memory, process_threads
from .registry import LOG_LINES, TIMEOUT, Instrument, clock


def _resolve(server: Any, host: str, port: int, limits: Limits | None) -> Any:
    """A server object, not yet started, from a model name, a class or a factory."""
    if isinstance(server, str):
        if server not in MODELS:
            raise ValueError(f"unknown server model {server!r}; choose from {', '.join(sorted(MODELS))}")
        return make_server(server, host, port, limits)
    if isinstance(server, type):
        try:  # chatlab's servers take limits; the exercises' take host and port only
            return server(host=host, port=port, limits=limits) if limits is not None else server(host=host, port=port)
        except TypeError:
            return server(host=host, port=port)
    if callable(server):
        return server(host=host, port=port)
    raise TypeError(f"expected a model name, a server class or a factory, not {server!r}")


def _stop_server(server: Any) -> None:
    try:
        server.stop()
    except Exception as exc:
        print(f"chatlab.lab: stopping {server!r} failed: {exc}", file=sys.stderr)


class LiveServer(Instrument):
    """A started server and what we know about it; ``stop()`` releases its port.

    Keep this handle, not just ``.server``: when the last reference to the
    handle goes (a cell re-run rebinding the same variable), the server is
    stopped, so that an old server never keeps the port of a forgotten one.
    """

    def __init__(self, server: Any = "threads", host: str = DEFAULT_HOST, port: int = 0,
                 limits: Limits | None = None, log: bool = True):
        self.spec = server
        self.server = _resolve(server, host, port, limits)
        self.name = getattr(self.server, "model", None) or type(self.server).__name__
        self.log: list[str] = []
        self._log_handler = _LogCapture(self.log) if log else None
        if self._log_handler:
            self._log_handler.attach()
        try:
            self.server.start()
        except BaseException:
            if self._log_handler:
                self._log_handler.detach()
            raise
        self.started = clock()
        self._finalizer = weakref.finalize(self, _stop_server, self.server)
        self._register()

    @property
    def address(self) -> tuple[str, int]:
        return tuple(self.server.address)[:2]

    def stop(self) -> None:
        self._unregister()
        self._finalizer()  # stops the server once; later calls do nothing
        if self._log_handler:
            self._log_handler.detach()

    def __repr__(self) -> str:
        state = "stopped" if not self._finalizer.alive else format_address(self.address)
        return f"<LiveServer {self.name} {state}>"


def no_defences(**keep: Any) -> Limits:
    """Limits with the defences off (rate limits, connection caps, timeouts), for measuring.

    A classroom server refuses a client that sends hundreds of pings a
    second, or a thousand connections from one address -- exactly what a
    measurement does.  The framing limits stay on; ``keep`` sets any others
    (``no_defences(outbox_bytes=65536)``).
    """
    off = getattr(Limits, "off", None)
    return off(**keep) if off is not None else Limits(**keep)


def start_server(server: Any = "threads", host: str = DEFAULT_HOST, port: int = 0,
                 limits: Limits | None = None, log: bool = True) -> LiveServer:
    """Start a server (a model name from MODELS, a class, or a factory); stop it with ``.stop()``.

    ``host`` and ``port`` default to loopback and a free port chosen by the
    kernel.  ``log=True`` keeps the chatlab server log in ``.log``.
    """
    return LiveServer(server, host, port, limits, log)


@contextmanager
def live_server(server: Any = "threads", host: str = DEFAULT_HOST, port: int = 0,
                limits: Limits | None = None, log: bool = True) -> Iterator[LiveServer]:
    """``with live_server("threads") as srv:`` -- stopped when the block ends, however it ends."""
    handle = start_server(server, host, port, limits, log)
    try:
        yield handle
    finally:
        handle.stop()


class _LogCapture:
    """Keeps chatlab's server log lines (bounded) while a live server runs."""

    attached: list["_LogCapture"] = []  # all captures running now
    saved_level = 0

    def __init__(self, lines: list[str]):
        import logging

        self.logging = logging
        self.lines = lines
        self.handler = logging.Handler(logging.INFO)
        self.handler.emit = self._emit  # type: ignore[method-assign]
        self.logger = logging.getLogger("chatlab")
        self.started = time.time()

    def _emit(self, record: Any) -> None:
        if len(self.lines) < LOG_LINES:
            self.lines.append(f"{record.created - self.started:7.3f}s {record.levelname:<7} {record.getMessage()}")

    def attach(self) -> None:
        if not _LogCapture.attached:
            _LogCapture.saved_level = self.logger.level
            if self.logger.getEffectiveLevel() > self.logging.INFO:
                self.logger.setLevel(self.logging.INFO)  # the server logs connections at INFO
        _LogCapture.attached.append(self)
        self.logger.addHandler(self.handler)

    def detach(self) -> None:
        if self in _LogCapture.attached:
            _LogCapture.attached.remove(self)
            self.logger.removeHandler(self.handler)
            if not _LogCapture.attached:
                self.logger.setLevel(_LogCapture.saved_level)


# ------------------------------------------------------- a server in a child process


def _stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.close()  # type: ignore[union-attr]  # the child's signal to stop gracefully
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            pass


def _drain(stream: Any, lines: "queue.Queue[str]") -> None:
    try:
        for line in stream:
            lines.put(line.rstrip("\n"))
    except (OSError, ValueError):  # the pipe was closed under us: the child is gone
        pass
    lines.put("")


class ServerProcess(Instrument):
    """A server in its own process, so its memory and threads can be measured alone.

    ``spec`` is a model name (``"threads"``), a server class that can be
    imported from its file (a student's ``exercises/ex08_selectors.py``), or
    ``"FOLDER:module:Class"``.  The child stops gracefully when its standard
    input closes -- a signal that works the same on Linux, macOS and Windows.
    """

    def __init__(self, spec: Any = "threads", limits: Limits | None = None, log_file: str | None = None):
        if isinstance(spec, type):
            model = next((name for name, cls in MODELS.items() if cls is spec), None)
            spec = model or f"{Path(inspect.getfile(spec)).parent}:{spec.__module__}:{spec.__name__}"
        self.spec = spec
        self.name = spec if spec in MODELS else spec.rsplit(":", 1)[-1]
        args = [sys.executable, "-m", "chatlab.lab", "serve", spec]
        if limits is not None:
            args += ["--limits", json.dumps(dataclasses.asdict(limits))]
        self._log = open(log_file or os.devnull, "w")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True)
        self._finalizer = weakref.finalize(self, _stop_process, self.proc)
        self._register()
        self._lines: queue.Queue[str] = queue.Queue()
        self._drainer = threading.Thread(target=_drain, args=(self.proc.stdout, self._lines), daemon=True,
                                         name="chatlab-child-output")
        self._drainer.start()
        try:
            line = self._lines.get(timeout=15)
        except queue.Empty:
            line = ""
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the server process for {spec!r} did not start: {line or 'no output'}")
        _, host, port = line.split()
        self.address = (host, int(port))
        self.pid = self.proc.pid

    def memory(self) -> int | None:
        """The child's resident memory in bytes (None where it cannot be measured)."""
        return process_memory(self.pid)

    def threads(self) -> int | None:
        return process_threads(self.pid)

    def stop(self) -> None:
        self._unregister()
        self._finalizer()  # the child stops, so its output ends...
        self._drainer.join(TIMEOUT)  # ...and so does the thread reading it
        self._log.close()

    def __repr__(self) -> str:
        return f"<ServerProcess {self.spec} pid {self.proc.pid}>"


def _serve_child(argv: list[str]) -> int:
    """``python -m chatlab.lab serve SPEC``: the child side of ServerProcess."""
    spec = argv[0]
    limits = Limits(**json.loads(argv[argv.index("--limits") + 1])) if "--limits" in argv else None
    if spec in MODELS:
        server: Any = spec
    else:
        folder, module, name = spec.rsplit(":", 2)
        sys.path.insert(0, folder)
        server = getattr(importlib.import_module(module), name)
    handle = start_server(server, limits=limits, log=False)
    print("LISTENING", *handle.address, flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    handle.stop()
    return 0
