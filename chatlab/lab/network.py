"""The network in between: a relay that re-cuts the byte stream, and the smallest servers.

``Relay`` sits between a client and a server and forwards every byte in
order -- all TCP promises -- but in pieces of its own choosing, and can keep
a copy of what passed (what anyone on the path could read).  ``EchoServer``,
``echo_once``, ``send_all`` and ``recv_exactly`` are the first exercises'
reference answers.
"""

from __future__ import annotations

import itertools
import random
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..servers import DEFAULT_HOST
from .registry import CAPTURE_LIMIT, RECV_SIZE, TIMEOUT, Instrument, clock


class _Acceptor:
    """A listening socket and the thread that accepts on it, stoppable from any thread."""

    def __init__(self, host: str, port: int, handle: Callable[[socket.socket], None], name: str):
        from ..servers import open_listener

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


def _cut_off(lock, socks: list[socket.socket], threads: list[threading.Thread]) -> list[socket.socket]:
    """Shut every connection both ways, which wakes the threads blocked on them, and join those threads.

    Returns the sockets, for a caller whose threads do not close their own.
    """
    with lock:
        socks, threads = list(socks), list(threads)
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by its thread
    for t in threads:
        t.join(TIMEOUT)
    return socks


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
        self.upstream: tuple[str, int] = (upstream[0], upstream[1])
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
        for s in _cut_off(self._lock, self._socks, self._threads):
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
        _cut_off(self._lock, self._socks, self._threads)  # each serving thread closes its socket


def echo_once(address: tuple[str, int], data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Connect, send ``data``, read the same number of bytes back, close."""
    with socket.create_connection((address[0], address[1]), timeout=timeout) as sock:
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
