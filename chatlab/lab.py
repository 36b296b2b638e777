"""Lab instruments: what the notebooks use to start real servers, drive them and record what happens.

A notebook is a strange place to run a server.  A cell can be interrupted,
re-run, or the kernel restarted, and a server that survives any of those
keeps its port: the next ``start`` fails with "address already in use".
So everything here that opens a socket or a thread is an *instrument*:

* a context manager, so ``with`` always releases it, even when the body
  raises or the cell is interrupted (KeyboardInterrupt is an exception too);
* registered in one place, so that ``stop_all()`` stops whatever the
  notebook started, and so does the interpreter's exit (``atexit``) when
  the kernel shuts down or restarts;
* for a live server, watched by a ``weakref.finalize``: re-running
  ``server = start_server(...)`` drops the old handle, and dropping the last
  reference to it stops the old server instead of leaking its port.

The instruments, top to bottom:

* ``Recorder`` -- timestamped events on one monotonic clock, turned into
  tables and plots (``chatlab.plots``);
* live servers -- ``start_server`` / ``live_server`` for any server (a
  model name, a class, a factory), ``ServerProcess`` for one in a child
  process whose memory we can measure, and ``pick`` to choose between the
  student's exercise and the reference;
* clients -- ``Bot`` (frames or lines mode), ``run_plan`` (bots that join,
  chat and leave on a schedule), ``Crowd`` (hundreds of clients on one
  thread);
* the network in between -- ``Relay``, a man in the middle that cuts the
  byte stream into different pieces and can keep a copy of every byte;
  ``EchoServer``, the smallest server of all;
* measurements -- percentiles, ``tcp_info`` (what the kernel knows about a
  connection, Linux only), process memory, and ``where()`` for plot titles.

Everything listens on 127.0.0.1 and port 0 unless told otherwise.  This
module never imports matplotlib: the plots live in ``chatlab.plots``.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import inspect
import itertools
import json
import os
import platform
import queue
import random
import re
import select
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .framing import FrameDecoder, LineDecoder, encode_frame, encode_line
from .limits import Limits
from .servers import MODELS, DEFAULT_HOST, format_address, make_server
from .testing import chatlab_threads

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


# ==================================================================== recorder

# The kinds of event a recorder holds, in the order a connection lives them.
CONNECT_STARTED = "connect_started"
CONNECTED = "connected"
REGISTERED = "registered"
SENT = "frame_sent"
RECEIVED = "frame_received"
CLOSED = "closed"
KINDS = (CONNECT_STARTED, CONNECTED, REGISTERED, SENT, RECEIVED, CLOSED)


@dataclass(frozen=True)
class Event:
    t: float  # seconds since the recorder started
    client: str
    kind: str  # one of KINDS
    msg: dict[str, Any] | None = None  # the frame, or the line parsed into the same shape
    size: int = 0  # bytes on the wire


class Recorder:
    """A thread-safe log of what every client did and saw, on one clock.

    The time is read *under the lock* that appends the event, so the list is
    always in time order, whichever thread records.
    """

    def __init__(self) -> None:
        self.t0 = clock()
        self._events: list[Event] = []
        self._changed = threading.Condition()

    def record(self, client: str, kind: str, msg: dict[str, Any] | None = None, size: int = 0) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
        with self._changed:
            event = Event(clock() - self.t0, client, kind, msg, size)
            self._events.append(event)
            self._changed.notify_all()
        return event

    @property
    def events(self) -> list[Event]:
        with self._changed:
            return list(self._events)

    def wait_for(self, test: Callable[[list[Event]], bool], timeout: float = TIMEOUT, what: str = "") -> None:
        """Block until ``test(events)`` is true: synchronise on what happened, never on sleep."""
        with self._changed:
            if not self._changed.wait_for(lambda: test(self._events), timeout):
                raise TimeoutError(f"waited {timeout:g} s for {what or 'an event'}; it did not happen")

    def clients(self) -> list[str]:
        """Every client, in the order it first appeared."""
        return list(dict.fromkeys(e.client for e in self.events))

    def rows(self, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
        """The events as table rows (time in ms), for printing or plotting."""
        return [
            {"t_ms": round(e.t * 1000, 3), "client": e.client, "event": e.kind,
             "what": describe(e.msg), "bytes": e.size}
            for e in self.events if e.kind in kinds
        ]

    def table(self, kinds: tuple[str, ...] = KINDS, limit: int = 40) -> str:
        return format_table(self.rows(kinds), limit)

    def deliveries(self) -> list[dict[str, Any]]:
        """Each chat message matched from its sender's send to each arrival.

        A message is known by (sender, text), so bots give every message a
        unique text.  The latency is from the moment the sender's bytes went
        into its socket to the moment a receiver decoded the message --
        both on this process's clock, so no clock sync is needed.
        """
        sent: dict[tuple[str, str], float] = {}
        out = []
        for e in self.events:
            if e.kind == SENT and e.msg and e.msg.get("type") == "say":
                sent.setdefault((e.client, e.msg["text"]), e.t)
            elif e.kind == RECEIVED and e.msg and e.msg.get("type") == "message":
                key = (e.msg.get("from"), e.msg.get("text"))
                if key in sent:
                    out.append({"from": key[0], "to": e.client, "text": key[1],
                                "sent": sent[key], "received": e.t, "latency": e.t - sent[key]})
        return out

    def latencies(self, include_self: bool = False) -> list[float]:
        """Seconds from send to arrival, for every delivery (see ``deliveries``).

        A frames client gets its own messages back too; those are left out
        unless ``include_self``.
        """
        return [d["latency"] for d in self.deliveries() if include_self or d["from"] != d["to"]]


def describe(msg: dict[str, Any] | None, width: int = 60) -> str:
    """A short human summary of a message, for tables, plot labels and errors."""
    text = _describe(msg)
    return text if len(text) <= width else text[: width - 3] + "..."


def _describe(msg: dict[str, Any] | None) -> str:
    if not msg:
        return ""
    kind = msg.get("type", "?")
    if kind == "message":
        return f"<{msg.get('from')}> {msg.get('text')}"
    if kind in ("say", "line", "banner"):
        return f"{kind} {msg.get('text', '')!r}"
    if kind in ("hello", "joined"):
        return f"{kind} {msg.get('name')}"
    if kind == "left":
        return f"left {msg.get('name')} ({msg.get('reason')})"
    if kind == "error":
        return f"error {msg.get('code')}"
    if kind == "closing":
        return f"closing ({msg.get('reason')})"
    if kind == "raw":
        return f"raw {msg.get('note') or msg.get('hex', '')}"
    return kind


def format_table(rows: list[dict[str, Any]], limit: int = 40) -> str:
    """Rows of dicts as a plain-text table (no pandas needed)."""
    if not rows:
        return "(no rows)"
    shown = rows[:limit]
    columns = list(shown[0])
    text = [[str(row.get(c, "")) for c in columns] for row in shown]
    widths = [min(60, max(len(c), *(len(r[i]) for r in text))) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v[:w].ljust(w) for v, w in zip(r, widths)) for r in text]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows")
    return "\n".join(lines)


def parse_server_line(line: str) -> dict[str, Any]:
    """A lines-mode line from the server, in the shape of the matching frame.

    The inverse of ``protocol.render_line``, so that recorders, tables and
    plots treat a lines client and a frames client alike.
    """
    if m := re.fullmatch(r"<([^>]*)> (.*)", line):
        return {"type": "message", "from": m[1], "text": m[2]}
    if m := re.fullmatch(r"\* (\S+) joined", line):
        return {"type": "joined", "name": m[1]}
    if m := re.fullmatch(r"\* (\S+) left \(([^)]*)\)", line):
        return {"type": "left", "name": m[1], "reason": m[2]}
    if m := re.match(r"\* Welcome, ([^!]+)!", line):
        return {"type": "welcome", "name": m[1]}
    if m := re.fullmatch(r"\* Online: (.*)", line):
        return {"type": "users", "users": [u for u in m[1].split(", ") if u]}
    if line == "* pong":
        return {"type": "pong"}
    if m := re.fullmatch(r"! (.*?)(?: \((\w+)\))?", line):
        return {"type": "error", "code": m[2] or "error", "message": m[1]}
    if m := re.fullmatch(r"\* Server closing the connection: (.*)", line):
        return {"type": "closing", "message": m[1]}
    return {"type": "line", "text": line}


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

    def stop(self) -> None:  # pragma: no cover - every instrument defines it
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


# ================================================================ live servers


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
        return tuple(self.server.address)[:2]  # type: ignore[return-value]

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


# ============================================================ choosing an implementation

COURSE_FOLDERS = ("exercises", "solutions")


def course_folder(kind: str = "exercises") -> Path | None:
    """The ``exercises/`` (or ``solutions/``) folder: near the current directory, or the repository's."""
    here = Path.cwd().resolve()
    for base in (here, *here.parents, Path(__file__).resolve().parent.parent):
        if (base / kind).is_dir():
            return base / kind
    return None


def _use_folder(folder: Path) -> None:
    """Put ``folder`` first on sys.path, forgetting exercise modules loaded from elsewhere."""
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if re.fullmatch(r"ex\d\d_\w+", name) and Path(origin).parent != folder:
            del sys.modules[name]
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))


def _probe_server(cls: Any) -> None:
    """Start the class on port 0, connect, and expect a first line within 2 s."""
    server = _resolve(cls, DEFAULT_HOST, 0, None)
    server.start()
    try:
        with socket.create_connection(tuple(server.address)[:2], timeout=2) as sock:
            if not sock.recv(1024):
                raise ConnectionError("it closed the connection without a word")
    except TimeoutError:
        raise TimeoutError("it accepted a connection but sent no banner within 2 s") from None
    finally:
        server.stop()


def _probe_echo_once(fn: Callable) -> None:
    with EchoServer() as echo:
        got = fn(echo.address, b"ping")
    if got != b"ping":
        raise ValueError(f"echo_once returned {got!r}, not b'ping'")


def _probe_reliable(sender: Callable, receiver: Callable) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(2)
        b.settimeout(2)
        sender(a, b"hello")
        got = receiver(b, 5)
    if got != b"hello":
        raise ValueError(f"send_all then recv_exactly gave {got!r}, not b'hello'")


def _probe_lines(cls: Any) -> None:
    if cls().feed(b"he") != [] or cls().feed(b"a\nb") != [b"a"]:
        raise ValueError("LineDecoder.feed(b'a\\nb') should give [b'a']")


def _probe_frames(cls: Any) -> None:
    if cls().feed(b"\x00\x00\x00\x02hi\x00") != [b"hi"]:
        raise ValueError("FrameDecoder.feed(b'\\x00\\x00\\x00\\x02hi') should give [b'hi']")


def _probe_encode_frame(fn: Callable) -> None:
    if fn(b"hi") != b"\x00\x00\x00\x02hi":
        raise ValueError("encode_frame(b'hi') should give b'\\x00\\x00\\x00\\x02hi'")


def _reference(module: str, name: str) -> tuple[Any, Callable[[Any], None] | None]:
    """chatlab's own version of an exercise, and a quick test of the student's."""
    from . import framing
    from .servers import ThreadedServer

    selector_model = MODELS.get("selectors", ThreadedServer)
    table: dict[tuple[str, str], tuple[Any, Callable[[Any], None] | None]] = {
        ("ex01_echo", "EchoServer"): (EchoServer, _probe_server_echo),
        ("ex01_echo", "echo_once"): (echo_once, _probe_echo_once),
        ("ex02_reliable", "send_all"): (send_all, lambda f: _probe_reliable(f, recv_exactly)),
        ("ex02_reliable", "recv_exactly"): (recv_exactly, lambda f: _probe_reliable(send_all, f)),
        ("ex03_lines", "LineDecoder"): (framing.LineDecoder, _probe_lines),
        ("ex03_lines", "LineTooLong"): (framing.LineTooLong, None),
        ("ex04_frames", "FrameDecoder"): (framing.FrameDecoder, _probe_frames),
        ("ex04_frames", "encode_frame"): (framing.encode_frame, _probe_encode_frame),
        ("ex04_frames", "FrameTooLarge"): (framing.FrameTooLarge, None),
        ("ex05_broadcast", "BroadcastServer"): (ThreadedServer, _probe_server),
        ("ex06_names", "ChatServer"): (ThreadedServer, _probe_server),
        ("ex07_client", "Client"): (None, _probe_client),  # chatlab's ChatClient speaks frames: no stand-in
        ("ex08_selectors", "SelectorChatServer"): (selector_model, _probe_server),
        ("ex09_slow_clients", "OutboxChatServer"): (ThreadedServer, _probe_server),
    }
    if (module, name) not in table:
        raise KeyError(f"no reference for {module}.{name}")
    return table[(module, name)]


def _probe_client(cls: Any) -> None:
    """Join a chatlab server as ``probe`` and expect the banner on ``received``."""
    from .servers import ThreadedServer

    with ThreadedServer(port=0) as server:
        client = cls(*server.address, "probe")
        try:
            first = client.received.get(timeout=2)
            if not first or not str(first).startswith("chatlab/"):
                raise ValueError(f"the first line received should be the banner, not {first!r}")
        finally:
            client.close()


def _probe_server_echo(cls: Any) -> None:
    server = _resolve(cls, DEFAULT_HOST, 0, None)
    server.start()
    try:
        if echo_once(tuple(server.address)[:2], b"ping") != b"ping":
            raise ValueError("the echo server did not send b'ping' back")
    finally:
        server.stop()


def pick(implementation: str, module: str, name: str, probe: Callable[[Any], None] | None = None,
         reference: Any = None, verbose: bool = True) -> Any:
    """The ``name`` a notebook should use: the reference, or the student's from ``module``.

    ``implementation`` is ``"reference"`` (chatlab's own code), ``"exercises"``
    (the student's, from ``exercises/``) or ``"solutions"`` (the course's
    reference solutions, for instructors).  The student's version is tried
    first (``probe``, or a quick built-in test); an exercise not done yet
    raises NotImplementedError, and then the notebook carries on with the
    reference and says so -- it never stops halfway.  ``reference`` replaces
    chatlab's own version (a notebook passes its MODEL name, for instance).
    """
    default_reference, default_probe = _reference(module, name)
    reference = default_reference if reference is None else reference
    if implementation == "reference":
        return reference
    if implementation not in COURSE_FOLDERS:
        raise ValueError(f"IMPLEMENTATION must be 'reference', 'exercises' or 'solutions', not {implementation!r}")
    number = int(module[2:4])
    label = "exercise" if implementation == "exercises" else "solution"
    folder = course_folder(implementation)
    try:
        if folder is None:
            raise FileNotFoundError(f"no {implementation}/ folder found")
        _use_folder(folder)
        found = getattr(importlib.import_module(module), name)
        test = probe or default_probe
        if test is not None:
            test(found)
    except NotImplementedError as exc:
        if verbose:
            hint = str(exc) if len(str(exc)) <= 150 else str(exc)[:147] + "..."
            print(f"{label} {number} not done yet ({module}.{name}): showing the reference"
                  + (f"\n    hint: {hint}" if hint else ""))
        return reference
    except ModuleNotFoundError as exc:
        if verbose:
            where_ = f"{folder.name}/{module}.py" if folder else f"{implementation}/"
            print(f"{label} {number} not found ({where_}: {exc}): showing the reference")
        return reference
    except Exception as exc:  # a bug, a hang cut short: say so, carry on
        if verbose:
            print(f"{label} {number} is not usable yet ({module}.{name}: {type(exc).__name__}: {exc}): "
                  "showing the reference")
        return reference
    if verbose:
        whose = "your" if implementation == "exercises" else "the reference solution's"
        print(f"using {whose} {name} from {folder.name}/{module}.py")
    return found


# ===================================================================== clients


class Bot(Instrument):
    """A scripted chat client that records everything it does and sees.

    ``mode="frames"`` speaks JSON frames like ``ChatClient``; ``mode="lines"``
    speaks lines like a person with ``nc`` -- which is what the course's
    servers understand.  Sends happen on the caller's thread; one receive
    thread decodes what arrives and records it.
    """

    def __init__(self, address: tuple[str, int], name: str, recorder: Recorder | None = None,
                 mode: str = "frames", timeout: float = TIMEOUT, rcvbuf: int | None = None):
        if mode not in ("frames", "lines"):
            raise ValueError("mode is 'frames' or 'lines'")
        self.address, self.name, self.mode, self.timeout = tuple(address)[:2], name, mode, timeout
        self.recorder = recorder if recorder is not None else Recorder()
        self.rcvbuf = rcvbuf
        self.sock: socket.socket | None = None
        self.received: list[dict[str, Any]] = []
        self.registered = False
        self.closed = threading.Event()
        self._cursor = 0  # received messages already looked at by wait_for
        self._inbox = threading.Condition()
        self._send_lock = threading.Lock()
        self._receiver: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Bot {self.name} {self.mode}>"

    # ----------------------------------------------------------- connecting

    def connect(self) -> "Bot":
        rec = self.recorder
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if self.rcvbuf:  # before connect(), so the advertised window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(self.timeout)
        rec.record(self.name, CONNECT_STARTED)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            rec.record(self.name, CLOSED, {"type": "closed", "reason": "connect failed"})
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        rec.record(self.name, CONNECTED)
        self._register()
        self._receiver = threading.Thread(target=self._receive_loop, daemon=True,
                                          name=f"chatlab-bot-{self.name}")
        self._receiver.start()
        return self

    def register(self, name: str | None = None, confirm: bool = True) -> "Bot":
        """Send our name; with ``confirm``, wait for the server's answer (an error raises)."""
        name = name or self.name
        if self.mode == "frames":
            self.send({"type": "hello", "name": name})
        else:
            self._send_bytes(encode_line(name), {"type": "hello", "name": name})
        if confirm:
            # A welcome in frames mode; in lines mode the course's servers may
            # not send one, so the first line that is not an error will do.
            def answered(msg: dict[str, Any]) -> bool:
                return msg["type"] in ("welcome", "error") or (self.mode == "lines" and msg["type"] != "banner")
            reply = self.wait_for(answered, what=f"an answer to {name}'s hello")
            if reply["type"] == "error":
                raise RuntimeError(f"{name} was refused: {reply.get('message')} ({reply.get('code')})")
        self.registered = True
        self.recorder.record(self.name, REGISTERED)
        return self

    def join(self) -> "Bot":
        """Connect and register."""
        return self.connect().register()

    # -------------------------------------------------------------- sending

    def _send_bytes(self, data: bytes, msg: dict[str, Any]) -> None:
        if self.sock is None:
            raise RuntimeError(f"{self.name} is not connected")
        with self._send_lock:
            # Recorded just before the bytes go into the socket: the start of
            # every latency measured from here.
            self.recorder.record(self.name, SENT, msg, len(data))
            self.sock.sendall(data)

    def send(self, msg: dict[str, Any]) -> None:
        """Send one message: a frame, or (lines mode) the line that means it."""
        if self.mode == "frames":
            payload = json.dumps(msg, separators=(",", ":")).encode()
            self._send_bytes(encode_frame(payload), msg)
        else:
            lines = {"say": msg.get("text", ""), "who": "/who", "ping": "/ping", "bye": "/quit"}
            self._send_bytes(encode_line(lines[msg["type"]]), msg)

    def send_raw(self, data: bytes, note: str = "") -> None:
        """Bytes exactly as given: for showing what a server does with bad input."""
        self._send_bytes(data, {"type": "raw", "hex": data[:32].hex(" "), "note": note})

    def say(self, text: str) -> None:
        self.send({"type": "say", "text": text})

    def ping(self) -> float:
        """A round trip: ping, wait for the pong.  Also a barrier: every message
        the server sent us before the pong has arrived when this returns."""
        ping_id = f"{self.name}-{clock():.9f}"
        started = clock()
        self.send({"type": "ping", "id": ping_id})
        self.wait_for(lambda m: m["type"] == "pong" and m.get("id", ping_id) == ping_id, what="a pong")
        return clock() - started

    # ------------------------------------------------------------ receiving

    def _receive_loop(self) -> None:
        sock = self.sock
        assert sock is not None
        lines = LineDecoder(1 << 20)
        frames = FrameDecoder(1 << 24)
        head: bytearray | None = bytearray()  # the banner, until its newline arrives
        reason = "server closed"
        try:
            while True:
                try:
                    data = sock.recv(RECV_SIZE)
                except TimeoutError:
                    if self.closed.is_set():
                        break
                    continue  # an idle bot is fine; the timeout only bounds sends
                if not data:
                    break
                if head is not None:
                    # The banner is a line, even for a frames client.
                    head += data
                    if b"\n" not in head:
                        if len(head) > 4096:
                            raise ValueError("no banner line in the first 4096 bytes")
                        continue
                    banner, _, data = bytes(head).partition(b"\n")
                    head = None
                    self._deliver({"type": "banner", "text": banner.decode("utf-8", "replace").rstrip("\r")},
                                  len(banner) + 1)
                if self.mode == "frames":
                    for payload in frames.feed(data):
                        self._deliver(json.loads(payload), len(payload) + 4)
                else:
                    for line in lines.feed(data):
                        self._deliver(parse_server_line(line.decode("utf-8", "replace")), len(line) + 1)
        except (OSError, ValueError) as exc:
            reason = f"connection lost: {exc}"
        if self.closed.is_set():
            reason = "closed by us"
        self.recorder.record(self.name, CLOSED, {"type": "closed", "reason": reason})
        with self._inbox:
            self.received.append({"type": "disconnected", "reason": reason})
            self.closed.set()
            self._inbox.notify_all()

    def _deliver(self, msg: dict[str, Any], size: int) -> None:
        self.recorder.record(self.name, RECEIVED, msg, size)
        with self._inbox:
            self.received.append(msg)
            self._inbox.notify_all()

    def wait_for(self, test: str | Callable[[dict[str, Any]], bool], timeout: float | None = None,
                 what: str = "") -> dict[str, Any]:
        """Skip received messages until one passes ``test`` (a type name or a function); return it."""
        check = (lambda m: m["type"] == test) if isinstance(test, str) else test
        started = clock()
        deadline = started + (self.timeout if timeout is None else timeout)
        with self._inbox:
            while True:
                while self._cursor < len(self.received):
                    msg = self.received[self._cursor]
                    self._cursor += 1
                    if check(msg):
                        return msg
                    if msg["type"] == "disconnected":
                        raise ConnectionError(f"{self.name} was disconnected ({msg['reason']}) "
                                              f"while waiting for {what or test}")
                remaining = deadline - clock()
                if remaining <= 0 or not self._inbox.wait(remaining):
                    if self._cursor >= len(self.received):
                        last = describe(self.received[-1]) if self.received else "nothing"
                        raise TimeoutError(f"{self.name} waited {deadline - started:g} s for "
                                           f"{what or test}; last received: {last}")

    def messages(self) -> list[dict[str, Any]]:
        """The chat messages received so far."""
        with self._inbox:
            return [m for m in self.received if m["type"] == "message"]

    # -------------------------------------------------------------- leaving

    def leave(self) -> None:
        """Say goodbye and wait (bounded) for the server to close; then close."""
        if self.sock is not None and not self.closed.is_set():
            try:
                self.send({"type": "bye"})
                self.closed.wait(self.timeout)
            except OSError:
                pass
        self.stop()

    def stop(self) -> None:
        """Close at once (no goodbye); join the receive thread."""
        self._unregister()
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self.closed.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._receiver is not None and self._receiver is not threading.current_thread():
            self._receiver.join(self.timeout)
        sock.close()


# ---------------------------------------------------------------- schedules


@dataclass
class Plan:
    """One bot's script: join at ``join_at``, say each text at its time, leave at ``leave_at`` (seconds)."""

    name: str
    join_at: float
    says: list[tuple[float, str]] = field(default_factory=list)
    leave_at: float = 1.0


def chat_plan(bots: int = 3, messages: int = 3, gap: float = 0.05, stagger: float = 0.05) -> list[Plan]:
    """Bots that join one after another, chat in turn, and leave one after another."""
    plans = []
    talk_start = stagger * bots
    talk_end = talk_start + gap * messages * bots
    for i in range(bots):
        name = f"bot{i + 1}"
        says = [(talk_start + gap * (k * bots + i), f"{name} #{k + 1}") for k in range(messages)]
        plans.append(Plan(name, stagger * i, says, talk_end + gap + stagger * i))
    return plans


def run_plan(address: tuple[str, int], plans: list[Plan], recorder: Recorder | None = None,
             mode: str = "frames", timeout: float = TIMEOUT) -> list[Bot]:
    """Run every plan, one thread per bot, on a shared clock; return the (closed) bots.

    The times are a schedule, but on a busy machine a bot may fall behind
    it -- and a message said before a late bot has registered is one that
    bot never hears.  So the plan's *order* is kept whatever the clock says:
    a bot says something at ``t`` only once every bot due before ``t`` has
    joined, and leaves at ``leave_at`` only once every message due before
    then has been handled by the server (frames mode: the sender has its
    own copy back; lines mode: the message was sent).  Before leaving it also waits until it has heard
    them: in frames mode with a ping (a barrier), in lines mode by waiting
    for the texts themselves.  Every wait is bounded by ``timeout``.
    """
    recorder = recorder if recorder is not None else Recorder()
    bots = [Bot(address, p.name, recorder, mode, timeout) for p in plans]
    errors: list[BaseException] = []
    done: set[Any] = set()  # plan names that have joined, and (name, text) said (or given up)
    progress = threading.Condition()
    t0 = clock()

    def until(t: float) -> None:
        delay = t0 + t - clock()
        if delay > 0:
            time.sleep(delay)  # the schedule: bots act at chosen times, not before

    def happened(*things: Any) -> None:
        with progress:
            done.update(things)
            progress.notify_all()

    def after(things: set[Any], what: str) -> None:
        with progress:
            if not progress.wait_for(lambda: things <= done, timeout):
                raise TimeoutError(f"waited {timeout:g} s for {what}: {sorted(map(str, things - done))[:3]}")

    def expected_for(plan: Plan) -> set[tuple[str, str]]:
        """Messages from others said while ``plan``'s bot is in the room."""
        return {(p.name, text) for p in plans if p is not plan
                for t, text in p.says if plan.join_at < t < plan.leave_at}

    def act(bot: Bot, plan: Plan) -> None:
        try:
            until(plan.join_at)
            bot.join()
            happened(plan.name)
            for t, text in plan.says:
                until(t)
                after({p.name for p in plans if p.join_at < t}, "the bots due to join first")
                bot.say(text)
                if mode == "frames":
                    # Sent is not yet handled: the server has broadcast it once
                    # our own copy is back (a frames client gets its own messages).
                    bot.wait_for(lambda m: m["type"] == "message" and m["from"] == bot.name and m["text"] == text,
                                 what="our own message back")
                happened((plan.name, text))
            until(plan.leave_at)
            after(expected_for(plan), "the messages due before leaving")
            if mode == "frames":
                bot.ping()  # a barrier: everything sent to us before it has arrived
            else:
                _await_texts(bot, expected_for(plan), timeout)
            bot.leave()
        except BaseException as exc:
            errors.append(exc)
            bot.stop()
        finally:  # never leave the others waiting for what this bot will not do
            happened(plan.name, *((plan.name, text) for _, text in plan.says))

    threads = [threading.Thread(target=act, args=(b, p), name=f"chatlab-plan-{p.name}", daemon=True)
               for b, p in zip(bots, plans)]
    for t in threads:
        t.start()
    deadline = clock() + max(p.leave_at for p in plans) + 4 * timeout
    try:
        for t in threads:
            t.join(max(0.0, deadline - clock()))
    finally:
        for b in bots:
            b.stop()
        for t in threads:
            t.join(timeout)
    if errors:
        raise errors[0]
    return bots


def _await_texts(bot: Bot, wanted: set[tuple[str, str]], timeout: float) -> None:
    """Wait until ``bot`` heard these (sender, text) messages, or ``timeout`` passed.

    Lines mode has no barrier every server understands (the course's servers
    may not answer ``/ping``), so this is best effort: whatever never arrived
    is simply missing from the record, where a table or plot will show it.
    """
    missing = set(wanted)

    def heard(msg: dict[str, Any]) -> bool:
        missing.discard((msg.get("from"), msg.get("text")))
        return not missing

    if missing:
        try:
            bot.wait_for(heard, timeout, what="the others' messages")
        except TimeoutError:
            pass


# -------------------------------------------------------------------- crowd


class Crowd(Instrument):
    """Many lines-mode clients on one thread: a room full of people who only listen.

    A thread per client would measure our own limits, not the server's, so
    one ``selectors`` loop reads for all of them.  It keeps, for each chat
    line, who got it and when -- enough to measure how long one message takes
    to reach everyone, and how many messages per second the server delivers.
    """

    def __init__(self, address: tuple[str, int], prefix: str = "c", welcome: bytes = b"* Welcome"):
        self.address, self.prefix, self.welcome = tuple(address)[:2], prefix, welcome
        self.members: list[socket.socket] = []
        self._welcomed: set[socket.socket] = set()
        self.arrivals: dict[str, list[float]] = {}  # text -> arrival times
        self.delivered = 0
        self._decoders: dict[socket.socket, LineDecoder] = {}
        self._changed = threading.Condition()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._new: list[socket.socket] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"chatlab-crowd-{prefix}")
        self._register()
        self._thread.start()

    def __len__(self) -> int:
        return len(self.members)

    def grow(self, size: int, timeout: float = 60.0) -> None:
        """Connect and register members until there are ``size``.

        Returns once each new member has been welcomed, so that a message
        sent afterwards is one every member must receive.
        """
        new = []
        while len(self.members) + len(new) < size:
            sock = socket.create_connection(self.address, timeout=TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(encode_line(f"{self.prefix}{len(self.members) + len(new) + 1}"))
            sock.setblocking(False)
            new.append(sock)
        with self._changed:
            self._new.extend(new)
            self.members.extend(new)
        self._wake_w.send(b"x")
        with self._changed:
            if not self._changed.wait_for(lambda: all(s in self._welcomed for s in new), timeout):
                missing = sum(s not in self._welcomed for s in new)
                raise TimeoutError(f"{missing} of {len(new)} new crowd members got no welcome line "
                                   f"({self.welcome!r}...) within {timeout:g} s")

    def _loop(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    self._wake_r.recv(1024)
                    with self._changed:
                        for s in self._new:
                            self._decoders[s] = LineDecoder(1 << 20)
                            self._selector.register(s, selectors.EVENT_READ)
                        self._new.clear()
                    continue
                try:
                    data = sock.recv(RECV_SIZE)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(sock)
                    continue
                now = clock()
                lines = self._decoders[sock].feed(data)  # type: ignore[index]
                if sock not in self._welcomed and any(line.startswith(self.welcome) for line in lines):
                    with self._changed:
                        self._welcomed.add(sock)  # type: ignore[arg-type]
                        self._changed.notify_all()
                chats = [line for line in lines if line.startswith(b"<")]
                if chats:
                    with self._changed:
                        for line in chats:
                            text = line.partition(b"> ")[2].decode("utf-8", "replace")
                            self.arrivals.setdefault(text, []).append(now)
                        self.delivered += len(chats)
                        self._changed.notify_all()

    def wait_all(self, text: str, timeout: float = 30.0) -> list[float]:
        """Block until every member received the message ``text``; their arrival times."""
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.arrivals.get(text, ())) >= len(self.members), timeout)
            got = list(self.arrivals.get(text, ()))
        if not ok:
            raise TimeoutError(f"{len(got)} of {len(self.members)} crowd members got {text!r} in {timeout:g} s")
        return got

    def wait_delivered(self, total: int, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.delivered >= total, timeout):
                raise TimeoutError(f"{self.delivered} of {total} deliveries in {timeout:g} s")

    def stop(self) -> None:
        self._unregister()
        if self._stopping:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(TIMEOUT)
        for sock in self.members:
            sock.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


# ========================================================== the network in between


class _Acceptor:
    """A listening socket and the thread that accepts on it, stoppable from any thread."""

    def __init__(self, host: str, port: int, handle: Callable[[socket.socket], None], name: str):
        from .servers import open_listener

        self.listener = open_listener(host, port)
        self.handle = handle
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def _loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        sock, _ = self.listener.accept()
                    except OSError:
                        continue
                    sock.setblocking(True)
                    self.handle(sock)

    def stop(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(TIMEOUT)
        for s in (self.listener, self._wake_r, self._wake_w):
            s.close()


@dataclass(frozen=True)
class Chunk:
    t: float  # seconds since the relay or server started
    direction: str  # "c2s" (client to server) or "s2c"; for EchoServer: "recv"
    data: bytes
    conn: int = 1


class Relay(Instrument):
    """A TCP man in the middle: clients connect to it, it connects on to ``upstream``.

    Every byte is forwarded unchanged and in order -- that is all TCP
    promises -- but cut into pieces of random size (``min_piece`` to
    ``max_piece`` bytes), each sent on its own after a short ``pause``.  What
    the sender wrote as one message may arrive in several ``recv()`` calls,
    and the end of one message may arrive together with the start of the
    next.  A receiver that assumes "one recv() = one message" breaks; one
    that frames its messages does not.

    With ``capture=True`` it keeps what it forwarded (up to CAPTURE_LIMIT
    bytes), which is exactly what anyone on the path could read.
    """

    def __init__(self, upstream: tuple[str, int], min_piece: int = 1, max_piece: int = 16,
                 pause: float = 0.001, hold: float = 0.01, seed: int = 0, capture: bool = True,
                 directions: tuple[str, ...] = ("c2s", "s2c")):
        if not 1 <= min_piece <= max_piece:
            raise ValueError("need 1 <= min_piece <= max_piece")
        self.upstream = tuple(upstream)[:2]
        self.min_piece, self.max_piece, self.pause, self.hold = min_piece, max_piece, pause, hold
        self.seed, self.capture, self.directions = seed, capture, directions
        self.chunks: list[Chunk] = []
        self.captured_bytes = 0
        self.truncated = False
        self.t0 = clock()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._conns = itertools.count(1)
        self._acceptor = _Acceptor(DEFAULT_HOST, 0, self._accepted, "chatlab-relay-accept")
        self._register()

    @property
    def address(self) -> tuple[str, int]:
        return self._acceptor.address

    def _accepted(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=TIMEOUT)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        conn = next(self._conns)
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one piece, one segment
        pumps = [threading.Thread(target=self._pump, args=(client, server, "c2s", conn), daemon=True,
                                  name=f"chatlab-relay-{conn}-c2s"),
                 threading.Thread(target=self._pump, args=(server, client, "s2c", conn), daemon=True,
                                  name=f"chatlab-relay-{conn}-s2c")]
        with self._lock:
            self._socks += [client, server]
            self._threads += pumps
        for p in pumps:
            p.start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str, conn: int) -> None:
        cut = direction in self.directions
        rng = random.Random(f"{self.seed}/{conn}/{direction}")
        buffer = bytearray()
        eof = False
        try:
            while True:
                want = rng.randint(self.min_piece, self.max_piece) if cut else RECV_SIZE
                # Gather `want` bytes, unless the sender goes quiet for `hold`
                # seconds: then send what we have (a relay must not sit on data).
                while not eof and len(buffer) < want:
                    if buffer and not _readable(src, self.hold):
                        break
                    data = src.recv(RECV_SIZE)
                    eof = not data
                    buffer += data
                if not buffer:
                    break
                piece = bytes(buffer[:want])
                del buffer[:want]
                self._keep(Chunk(clock() - self.t0, direction, piece, conn))
                dst.sendall(piece)
                if cut and self.pause:
                    time.sleep(self.pause)  # so each piece travels, and is received, on its own
            dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _keep(self, chunk: Chunk) -> None:
        with self._lock:
            if not self.capture:
                chunk = Chunk(chunk.t, chunk.direction, b"", chunk.conn)
            elif self.captured_bytes + len(chunk.data) > CAPTURE_LIMIT:
                self.truncated = True
                chunk = Chunk(chunk.t, chunk.direction, b"", chunk.conn)
            self.captured_bytes += len(chunk.data)
            self.chunks.append(chunk)

    def stream(self, direction: str = "c2s", conn: int | None = None) -> bytes:
        """Every captured byte that went one way, in order: what an eavesdropper saw."""
        with self._lock:
            return b"".join(c.data for c in self.chunks
                            if c.direction == direction and (conn is None or c.conn == conn))

    def stop(self) -> None:
        self._unregister()
        if self._acceptor is None:
            return
        self._acceptor.stop()
        self._acceptor = None  # type: ignore[assignment]
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(TIMEOUT)
        for s in socks:
            s.close()


def _readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


class EchoServer(Instrument):
    """The smallest server: a thread per connection, sending back what it receives.

    It also records every ``recv()`` result in ``chunks``, to show how the
    byte stream was cut on arrival.  ``echo=False`` makes it a silent sink;
    ``message_size=N`` waits for whole N-byte requests and answers each with
    one write (a request/response server, for timing experiments).
    """

    model = "echo"

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0, echo: bool = True,
                 message_size: int | None = None, record: bool = True, nodelay: bool = True):
        self.host, self.port = host, port
        self.echo, self.message_size, self.record, self.nodelay = echo, message_size, record, nodelay
        self.chunks: list[Chunk] = []
        self.received_bytes = 0
        self._lock = threading.Condition()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._conns = itertools.count(1)
        self._acceptor: _Acceptor | None = None
        self.t0 = clock()
        self.start()

    def start(self) -> "EchoServer":
        if self._acceptor is None:
            self._acceptor = _Acceptor(self.host, self.port, self._accepted, "chatlab-echo-accept")
            self._register()
        return self

    @property
    def address(self) -> tuple[str, int]:
        if self._acceptor is None:
            raise RuntimeError("the server is not started")
        return self._acceptor.address

    def _accepted(self, sock: socket.socket) -> None:
        if self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = next(self._conns)
        thread = threading.Thread(target=self._serve, args=(sock, conn), daemon=True, name=f"chatlab-echo-{conn}")
        with self._lock:
            self._socks.append(sock)
            self._threads.append(thread)
        thread.start()

    def _serve(self, sock: socket.socket, conn: int) -> None:
        pending = bytearray()
        try:
            while data := sock.recv(RECV_SIZE):
                with self._lock:
                    if self.record and len(self.chunks) < 100_000:
                        self.chunks.append(Chunk(clock() - self.t0, "recv", data if self.received_bytes < CAPTURE_LIMIT else b"", conn))
                    self.received_bytes += len(data)
                    self._lock.notify_all()
                if not self.echo:
                    continue
                if self.message_size is None:
                    sock.sendall(data)
                    continue
                pending += data
                while len(pending) >= self.message_size:
                    sock.sendall(bytes(pending[: self.message_size]))
                    del pending[: self.message_size]
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.close()

    def wait_bytes(self, total: int, timeout: float = TIMEOUT) -> None:
        """Block until ``total`` bytes have been received, over all connections."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.received_bytes >= total, timeout):
                raise TimeoutError(f"received {self.received_bytes} of {total} bytes in {timeout:g} s")

    def stop(self) -> None:
        self._unregister()
        if self._acceptor is None:
            return
        self._acceptor.stop()
        self._acceptor = None
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(TIMEOUT)


def echo_once(address: tuple[str, int], data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Connect, send ``data``, read the same number of bytes back, close."""
    with socket.create_connection(tuple(address)[:2], timeout=timeout) as sock:
        sock.sendall(data)
        return recv_exactly(sock, len(data))


def send_all(sock: socket.socket, data: bytes) -> None:
    """``send()`` may take only part of the data (the kernel buffer was nearly
    full): loop until all of it is taken.  (``sock.sendall`` does the same.)"""
    view = memoryview(data)
    while view:
        sent = sock.send(view)
        view = view[sent:]


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``recv()`` may return any piece of the stream: loop until exactly ``n`` bytes arrived."""
    data = bytearray()
    while len(data) < n:
        piece = sock.recv(n - len(data))
        if not piece:
            raise ConnectionError(f"the peer closed the connection after {len(data)} of {n} bytes")
        data += piece
    return bytes(data)


# ================================================================ measurements


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank: a value that was really measured."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def summary(seconds: list[float]) -> dict[str, float]:
    """Count, p50, p99, max and mean, in milliseconds."""
    return {"n": len(seconds), "p50_ms": percentile(seconds, 50) * 1000, "p99_ms": percentile(seconds, 99) * 1000,
            "max_ms": max(seconds) * 1000, "mean_ms": sum(seconds) / len(seconds) * 1000}


# Linux's struct tcp_info, as far as we read it (linux/tcp.h): 8 one-byte
# fields, 24 unsigned 32-bit ones, then 64-bit counters.  Other systems have
# their own (macOS: TCP_CONNECTION_INFO), or none.
_TCP_INFO = struct.Struct("=8B24I4Q2I")
_TCP_INFO_FIELDS = (
    "state", "ca_state", "retransmits", "probes", "backoff", "options", "wscale", "rate_flags",
    "rto_us", "ato_us", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets",
    "last_data_sent_ms", "last_ack_sent_ms", "last_data_recv_ms", "last_ack_recv_ms",
    "pmtu", "rcv_ssthresh", "rtt_us", "rttvar_us", "snd_ssthresh", "snd_cwnd", "advmss", "reordering",
    "rcv_rtt_us", "rcv_space", "total_retrans",
    "pacing_rate", "max_pacing_rate", "bytes_acked", "bytes_received", "segs_out", "segs_in",
)
HAS_TCP_INFO = sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")


def tcp_info(sock: socket.socket) -> dict[str, int] | None:
    """What the kernel knows about a TCP connection: RTT, congestion window, retransmissions.

    Linux only (None elsewhere).  ``rtt_us`` is the kernel's smoothed RTT
    estimate in microseconds; ``snd_cwnd`` the congestion window in segments.
    """
    if not HAS_TCP_INFO:
        return None
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(raw) < _TCP_INFO.size:
        raw = raw + bytes(_TCP_INFO.size - len(raw))
    return dict(zip(_TCP_INFO_FIELDS, _TCP_INFO.unpack_from(raw)))


def process_memory(pid: int | None = None) -> int | None:
    """Resident memory (RSS) of a process in bytes, or None where it cannot be read."""
    pid = pid or os.getpid()
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil  # type: ignore[import-not-found]  # optional: macOS and Windows

        return psutil.Process(pid).memory_info().rss
    except Exception:
        pass
    if sys.platform != "win32":
        try:
            out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
            return int(out.stdout.strip()) * 1024
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return None


def process_threads(pid: int | None = None) -> int | None:
    """Number of threads of a process, or None where it cannot be read."""
    pid = pid or os.getpid()
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    try:
        import psutil  # type: ignore[import-not-found]

        return psutil.Process(pid).num_threads()
    except Exception:
        return None


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` where allowed; return the limit."""
    try:
        import resource
    except ImportError:  # Windows: no such limit for sockets
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else wanted


def load_average() -> str:
    """The system's 1-minute load average against its CPUs ("3.2 on 2 CPUs"), where known.

    A measurement on a busy machine measures the machine too: say so.
    """
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except (AttributeError, OSError):  # Windows
        return "unknown"


def where(model: str | None = None) -> str:
    """What a measurement ran on, for plot titles: model, loopback, OS, CPUs, Python."""
    parts = [f"{model} server" if model else None, "loopback 127.0.0.1",
             f"{platform.system()} {platform.machine()}", f"{os.cpu_count()} CPUs",
             f"Python {platform.python_version()}"]
    return ", ".join(p for p in parts if p)


def setup_report() -> list[tuple[str, str]]:
    """What the welcome notebook checks: versions, models, folders."""
    from . import __version__

    rows = [("Python", sys.version.split()[0] + (" (3.10+ needed)" if sys.version_info < (3, 10) else " ok")),
            ("chatlab", __version__), ("server models", ", ".join(sorted(MODELS))),
            ("platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
            ("CPUs", str(os.cpu_count())), ("IPv6", "yes" if socket.has_ipv6 else "no"),
            ("TCP_INFO", "yes (Linux)" if HAS_TCP_INFO else "no (Linux only)")]
    for kind in COURSE_FOLDERS:
        folder = course_folder(kind)
        rows.append((f"{kind}/", str(folder) if folder else "not found"))
    try:  # asked of the installed package, not imported: lab.py never imports matplotlib
        from importlib.metadata import version

        rows.append(("matplotlib", version("matplotlib")))
    except ImportError:
        rows.append(("matplotlib", "MISSING: pip install -e '.[lab]'"))
    return rows


if __name__ == "__main__":  # python -m chatlab.lab serve SPEC (used by ServerProcess)
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        sys.exit(_serve_child(sys.argv[2:]))
    print("usage: python -m chatlab.lab serve MODEL|FOLDER:module:Class [--limits JSON]", file=sys.stderr)
    sys.exit(2)
