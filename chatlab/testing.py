"""Tools for tests and self-checks that explain their failures.

When a network test fails, a bare ``AssertionError`` or a timeout says
nothing about *what happened on the wire*.  ``RawClient`` records every
step -- connect, bytes sent, bytes received, what it waited for -- in a
shared ``Transcript``.  A failure prints the numbered transcript up to the
step that failed, what was expected and what arrived instead (with a hex
dump where bytes matter), in the manner of Stanford CS144's test harness.

Every wait has a timeout, and a timeout names the step it happened in.

``CoreDriver`` drives the chat core with no sockets at all: the clock is
a number the test moves by hand, and what each client would have
received is kept in an inbox.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable

from .core import ChatCore
from .dialects import Dialect
from .dialects.client import FRAMES, LINES, ClientWire
from .effects import Close, Effect, Send, Work
from .errors import WireError
from .framing import FrameDecoder, encode_frame
from .limits import MAX_FRAME
from .protocol import encode_message


def hexdump(data: bytes, limit: int = 64) -> str:
    """``data`` as hex and printable ASCII, like ``xxd``, cut after ``limit`` bytes."""
    rows = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append(f"    {offset:04x}  {hexes:<47}  {text}")
    if len(data) > limit:
        rows.append(f"    ... {len(data) - limit} more bytes")
    return "\n".join(rows)


WAIT_SLICE = 0.1  # seconds: how often a waiting RawClient looks for a crashed server thread


class CheckFailed(AssertionError):
    """A failed expectation, carrying the transcript that led to it."""


class Transcript:
    """A numbered record of what the test did and saw.

    ``on_step`` is called with each step as it is added: the course checker
    streams steps to its parent process, so that a check killed for hanging
    can still say which step it hung in.

    The code under test may run threads of its own (a student's server).  An
    exception that ends one of them is recorded with ``thread_failed`` (for
    example from ``threading.excepthook``), and every wait in ``RawClient``
    re-raises it at once: a crashed server thread fails the check with its
    own error, instead of a timeout that says nothing.
    """

    def __init__(self, on_step: Callable[[str], None] | None = None) -> None:
        self.steps: list[str] = []
        self.started = time.monotonic()
        self.on_step = on_step
        self.thread_errors: list[tuple[str, BaseException]] = []

    def add(self, text: str) -> None:
        step = f"{time.monotonic() - self.started:7.3f}s  {text}"
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def thread_failed(self, thread_name: str, exc: BaseException) -> None:
        """A background thread of the code under test died of ``exc``."""
        self.add(f"thread {thread_name!r} ended with {type(exc).__name__}: {exc}")
        self.thread_errors.append((thread_name, exc))

    def raise_thread_error(self) -> None:
        """Re-raise, in the waiting thread, the first exception a background thread died of."""
        if self.thread_errors:
            raise self.thread_errors[0][1]

    def fail(self, expected: str, got: str, hint: str = "") -> CheckFailed:
        lines = ["Transcript (most recent last):"]
        shown = self.steps[-40:]
        lines += [f"  {i:3d}. {step}" for i, step in enumerate(shown, len(self.steps) - len(shown) + 1)]
        lines.append(f"Expected: {expected}")
        lines.append(f"But got:  {got}")
        if hint:
            lines.append(f"Hint:     {hint}")
        return CheckFailed("\n".join(lines))


def _short(data: bytes) -> str:
    text = repr(data)
    return text if len(text) <= 120 else text[:117] + "..."


class RawClient:
    """A test client that speaks raw bytes, records them, and never waits forever."""

    def __init__(
        self,
        address: tuple[str, int],
        label: str = "client",
        transcript: Transcript | None = None,
        timeout: float = 5.0,
        rcvbuf: int | None = None,
        accepted: socket.socket | None = None,
        source: str | None = None,
    ):
        """Connect to ``address`` (from the local address ``source``, if given: on Linux
        every 127.x.y.z is the loopback) -- or, given ``accepted``, play the *server's*
        end of a connection the test accepted from ``address`` (to check a client)."""
        self.label = label
        self.timeout = timeout
        self.log = transcript or Transcript()
        if accepted is not None:
            self.log.add(f"{label}: accepted a connection from {address[0]}:{address[1]}")
            self.sock = accepted
        else:
            self.log.add(f"{label}: connect to {address[0]}:{address[1]}")
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            if rcvbuf:
                # Set before connecting, so the TCP window is small from the start.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        if accepted is None:
            try:
                self.sock.connect(address)
            except OSError as exc:
                self.sock.close()
                raise self.log.fail("a connection", f"{type(exc).__name__}: {exc}",
                                    "is the server listening on that address?") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The server's side of the conversation, decoded by the one client
        # wire every chatlab client uses; the mode is chosen by the first
        # recv_line() or recv_frame(), lines are handed back as they are.
        self.wire = ClientWire(None, banner=False, interpret=False, max_frame=MAX_FRAME, max_line=1 << 20)
        self.eof = False

    # -------------------------------------------------------------- sending

    def send(self, data: bytes, note: str = "") -> None:
        self.log.add(f"{self.label}: send {len(data)} bytes {note or _short(data)}")
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self.log.fail(f"to send {len(data)} bytes", f"{type(exc).__name__}: {exc}") from None

    def send_frame(self, msg: Any) -> None:
        payload = json.dumps(msg).encode() if not isinstance(msg, bytes) else msg
        self.send(encode_frame(payload, 1 << 31), f"frame {payload[:100]!r}")

    def send_line(self, text: str) -> None:
        self.send(text.encode() + b"\n")

    # ------------------------------------------------------------ receiving

    def _recv_some(self, deadline: float, what: str) -> bytes:
        """One recv() before ``deadline``; b"" at the end of the stream."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                got = "the connection closed" if self.eof else "nothing more (timed out)"
                raise self.log.fail(f"{self.label} receives {what}", got)
            # Wait in short slices, to notice a crashed server thread at once.
            self.sock.settimeout(min(remaining, WAIT_SLICE))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                self.log.raise_thread_error()
                continue
            except ConnectionResetError:
                self.log.add(f"{self.label}: connection reset by the server")
                data = b""
            except OSError as exc:
                raise self.log.fail(f"{self.label} receives {what}", f"{type(exc).__name__}: {exc}") from None
            if data:
                self.log.add(f"{self.label}: recv {len(data)} bytes {_short(data)}")
            else:
                self.eof = True
                self.log.add(f"{self.label}: end of stream (server closed)")
            return data

    def _next(self, mode: str | None, what: str, timeout: float | None) -> dict[str, Any]:
        """The next event of the wire (in ``mode``), reading as much as it takes."""
        deadline = time.monotonic() + (timeout or self.timeout)
        if mode is not None and self.wire.mode != mode:
            self.wire.choose(mode)
        while True:
            try:
                event = self.wire.next_event()
            except WireError as exc:
                raise self.log.fail(what, str(exc)) from None
            if event is not None:
                return event[0]
            self.wire.receive_data(self._recv_some(deadline, what))

    def recv_banner(self) -> str:
        """The server's first line.  Bytes after it are kept for the next reader."""
        self.wire.expect_banner = True
        self._next(None, "the banner line", None)
        return self.wire.banner or ""

    def held(self) -> bytes:
        """What arrived after the last complete line: a line still without its newline."""
        return self.wire.held()

    def recv_line(self, timeout: float | None = None) -> str:
        return str(self._next(LINES, "a line", timeout)["text"])

    def recv_frame(self, timeout: float | None = None) -> dict[str, Any]:
        return self._next(FRAMES, "a JSON frame", timeout)

    def expect(self, kind: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """The next frame must be of type ``kind`` with these field values."""
        msg = self.recv_frame(timeout)
        wanted = {"type": kind, **fields}
        if any(msg.get(k) != v for k, v in wanted.items()):
            raise self.log.fail(f"{self.label} receives {wanted}", repr(msg))
        return msg

    def wait_frame(self, test: Callable[[dict[str, Any]], bool], what: str,
                   timeout: float | None = None) -> list[dict[str, Any]]:
        """Frames up to and including the first that passes ``test``."""
        seen = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msg = self.recv_frame(max(0.01, deadline - time.monotonic()))
            seen.append(msg)
            if test(msg):
                return seen
            if time.monotonic() > deadline:
                raise self.log.fail(f"{self.label} receives {what}", f"{len(seen)} other frames")

    def sync(self) -> list[dict[str, Any]]:
        """Every frame the server sent before answering a ping (a barrier: no sleeping)."""
        marker = f"sync-{time.monotonic_ns()}"
        self.send_frame({"type": "ping", "id": marker})
        return self.wait_frame(lambda m: m.get("type") == "pong" and m.get("id") == marker,
                               f"the pong {marker}")[:-1]

    def expect_closed(self, timeout: float | None = None) -> bytes:
        """Read until the server closes; return what arrived meanwhile."""
        deadline = time.monotonic() + (timeout or self.timeout)
        received = self.wire.take_raw()
        while not self.eof:
            try:
                received += self._recv_some(deadline, "the end of the stream")
            except CheckFailed:
                raise self.log.fail(f"the server closes {self.label}'s connection", "it stayed open") from None
        return received

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def frames_client(address: tuple[str, int], name: str | None = None, transcript: Transcript | None = None,
                  **kwargs: Any) -> RawClient:
    """A RawClient past the banner and, given ``name``, registered."""
    client = RawClient(address, name or "client", transcript, **kwargs)
    client.recv_banner()
    if name is not None:
        client.send_frame({"type": "hello", "name": name})
        client.expect("welcome", name=name)
    return client


def chatlab_threads() -> set[threading.Thread]:
    """The threads chatlab servers and clients are running now (they are all named chatlab-...)."""
    return {t for t in threading.enumerate() if t.name.startswith("chatlab")}


def talk_until_dropped(talker: Any, sleeper: str = "sleeper", rounds: int = 500) -> dict[str, Any]:
    """Have ``talker`` (a ChatClient) say 4 KB messages until ``sleeper``, who never reads, leaves the room.

    Returns the ``left`` the talker was told.  Bounded: at most ``rounds``
    x 8 messages; the talker hears its own messages, so it is never held up.
    """
    left: dict[str, Any] | None = None
    for _ in range(rounds):
        for _ in range(8):
            talker.say("x" * 4000)
        echoed = 0
        while echoed < 8:
            event = talker.wait_for(lambda e: e["type"] in ("message", "left"))
            if event["type"] == "left" and event.get("name") == sleeper:
                left = event
            elif event["type"] == "message":
                echoed += 1
        if left:
            return left
    raise AssertionError(f"{sleeper} was never dropped: {rounds} x 8 messages of 4 KB went to it")


def race_for_name(racers: list[RawClient], name: str) -> list[dict[str, Any]]:
    """Let every racer say hello with the same ``name`` at the same moment; return each one's answer.

    A barrier releases all the threads together, so the hellos reach the
    server as close to simultaneously as the machine allows: the race on a
    shared client list that a lock (or a single-threaded loop) must win.
    """
    start = threading.Barrier(len(racers))

    def race(client: RawClient) -> None:
        start.wait(5)
        client.send_frame({"type": "hello", "name": name})

    threads = [threading.Thread(target=race, args=(c,)) for c in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return [c.wait_frame(lambda m: m["type"] in ("welcome", "error"), "welcome or error")[-1] for c in racers]


# ------------------------------------------------------------- sans-IO core


class CoreDriver:
    """A ChatCore driven by hand: connections, bytes in, ticks, and what each client got.

    ``now`` is the core's (monotonic) clock and ``wall`` the wall clock its
    messages are stamped with; the test moves both by hand.  ``Work`` is run
    at once, on the test's thread, as the thread-per-client server would.

    >>> room = CoreDriver()
    >>> room.connect(1)[:9]
    b'chatlab/1'
    >>> room.send_msg(1, {"type": "hello", "name": "ada"}); room.frames(1)[0]["type"]
    'welcome'
    """

    def __init__(self, core: ChatCore | None = None, now: float = 1000.0, **options: Any):
        self.now = now
        self.wall = 1_700_000_000.0  # what the messages' "ts" say
        self.core = core if core is not None else ChatCore(wallclock=lambda: self.wall, **options)
        self.inbox: dict[Any, bytearray] = {}
        self.closed: dict[Any, str] = {}
        self.work: list[str] = []  # what each Work effect was, in order
        self._peers = 0  # addresses given out to connections that named none

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                for cid in effect.to:
                    assert cid not in self.closed, f"data for {cid} after its Close"
                    self.inbox.setdefault(cid, bytearray()).extend(effect.data)
            elif isinstance(effect, Close):
                self.closed[effect.client] = effect.reason
            else:
                assert isinstance(effect, Work)
                self.work.append(effect.what)
                try:
                    result: Any = effect.job()
                except Exception as exc:
                    result = exc
                self.apply(self.core.finished(effect, result, self.now))

    def connect(self, cid: Any, peer: str | None = None, dialect: Dialect | None = None) -> bytes:
        """A new connection (by default from an address of its own); returns what the server said first."""
        self.inbox[cid] = bytearray()
        if peer is None:
            self._peers += 1
            peer = f"10.{self._peers >> 16 & 255}.{self._peers >> 8 & 255}.{self._peers & 255}:40000"
        self.apply(self.core.connect(cid, peer, self.now, dialect))
        return self.take(cid)

    def send(self, cid: Any, data: bytes) -> None:
        self.apply(self.core.receive(cid, data, self.now))

    def send_msg(self, cid: Any, msg: dict[str, Any]) -> None:
        self.apply(self.core.receive(cid, encode_message(msg), self.now))

    def disconnect(self, cid: Any, reason: str = "disconnected") -> None:
        self.apply(self.core.disconnect(cid, reason, self.now))

    def tick(self, seconds: float = 0.0) -> None:
        self.now += seconds
        self.wall += seconds
        self.apply(self.core.tick(self.now))

    def take(self, cid: Any) -> bytes:
        """Everything client ``cid`` has received since the last look."""
        data = bytes(self.inbox.get(cid, b""))
        self.inbox.setdefault(cid, bytearray()).clear()
        return data

    def frames(self, cid: Any) -> list[dict[str, Any]]:
        return [json.loads(p) for p in FrameDecoder(1 << 30).feed(self.take(cid))]

    def lines(self, cid: Any) -> list[str]:
        return self.take(cid).decode().splitlines()

    def register(self, cid: Any, name: str, peer: str | None = None, **hello: Any) -> list[dict[str, Any]]:
        """Connect, say hello as ``name`` (frames mode); return what came back, the welcome first."""
        self.connect(cid, peer)
        self.send_msg(cid, {"type": "hello", "name": name, **hello})
        got = self.frames(cid)
        assert got and got[0]["type"] == "welcome", got
        return got
