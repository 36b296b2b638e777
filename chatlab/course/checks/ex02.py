"""Checks of exercise 2: send_all and recv_exactly, over real TCP connections.

To make ``send()`` really send only part of the data, the first check uses
a connection with tiny kernel buffers and a socket timeout (Python then
calls send() once, without blocking, and reports what the kernel took).  The
others wrap a real socket in a ``SpySocket`` that hands the real send() or
recv() only a few bytes at a time -- what a busy network does anyway -- and
records every call.
"""

from __future__ import annotations

import random
import socket
import threading
from typing import Any

from ..harness import Context, check, show_bytes

SMALL_BUFFER = 4096  # bytes: SO_SNDBUF / SO_RCVBUF asked for, to force partial sends


class Pair:
    """A real TCP connection on 127.0.0.1: ``near`` (the student's end) and ``far`` (ours)."""

    def __init__(self, ctx: Context, small_buffers: bool = False):
        listener = socket.create_server(("127.0.0.1", 0))
        if small_buffers:
            # Set on the listener before accept(), so the accepted socket has
            # a small receive window from its first byte.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        self.near = socket.socket()
        if small_buffers:
            self.near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        self.near.connect(listener.getsockname())
        self.far, _ = listener.accept()
        listener.close()
        for sock in (self.near, self.far):
            sock.settimeout(5)
        ctx.on_cleanup("", self.close, quiet=True)
        ctx.step(f"a TCP connection on 127.0.0.1 port {self.far.getsockname()[1]}"
                 + (" with tiny buffers (SO_SNDBUF, SO_RCVBUF)" if small_buffers else ""))

    def drain(self) -> tuple[threading.Thread, bytearray]:
        """Read ``far`` until the end of the stream, in a thread; the bytes arrive in the bytearray."""
        received = bytearray()

        def read() -> None:
            try:
                while data := self.far.recv(65536):
                    received.extend(data)
            except OSError:
                pass

        thread = threading.Thread(target=read, name="check-drain", daemon=True)
        thread.start()
        return thread, received

    def close(self) -> None:
        self.near.close()
        self.far.close()


class SpySocket:
    """A real socket that records each send() and recv(), optionally giving it fewer bytes."""

    def __init__(self, ctx: Context, sock: socket.socket, max_send: int | None = None,
                 max_recv: int | None = None):
        self.ctx, self.sock = ctx, sock
        self.max_send, self.max_recv = max_send, max_recv
        self.sends: list[tuple[int, int]] = []  # (bytes offered, bytes taken)
        self.recvs: list[tuple[int, int]] = []  # (bytes asked for, bytes returned)

    def send(self, data: Any, flags: int = 0) -> int:
        offered = memoryview(data)
        piece = offered[: self.max_send] if self.max_send else offered
        taken = self.sock.send(piece, flags)
        self.sends.append((len(offered), taken))
        return taken

    def sendall(self, data: Any, flags: int = 0) -> None:
        raise self.ctx.fail("send_all to call sock.send() in a loop", "a call to sock.sendall()",
                            "sendall() is the loop you are writing: use send(), which returns how many bytes it took")

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = self.sock.recv(min(bufsize, self.max_recv) if self.max_recv else bufsize, flags)
        self.recvs.append((bufsize, len(data)))
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        size = nbytes or len(buffer)
        got = self.sock.recv_into(buffer, min(size, self.max_recv) if self.max_recv else size, flags)
        self.recvs.append((size, got))
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _compare(ctx: Context, what: str, expected: bytes, got: Any) -> None:
    if not isinstance(got, (bytes, bytearray)):
        raise ctx.fail(f"{what}: {len(expected)} bytes", f"{type(got).__name__}: {got!r:.200}")
    if bytes(got) != expected:
        # Where do they first differ?  That says more than two hex dumps.
        at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
        raise ctx.fail(f"{what}: {len(expected)} bytes", f"{len(got)} bytes, differing from byte {at} on:\n"
                       f"  expected from there: {show_bytes(expected[at:at + 32])}\n"
                       f"  got from there:      {show_bytes(bytes(got[at:at + 32]))}")


@check("send_all delivers every byte when send() takes only part", points=2,
       hint="send() returns how many bytes the kernel took; send the rest, from that point on, until none is left")
def partial_sends(ctx: Context) -> None:
    ex = ctx.load("ex02_reliable")
    pair = Pair(ctx, small_buffers=True)
    spy = SpySocket(ctx, pair.near)
    data = random.Random(3).randbytes(512 * 1024)
    reader, received = pair.drain()
    ctx.call(f"send_all(sock, {len(data)} random bytes) while the other end reads", ex.send_all, spy, data)
    partial = sum(1 for offered, taken in spy.sends if taken < offered)
    ctx.step(f"send_all made {len(spy.sends)} send() calls; {partial} of them took only part of what was offered")
    pair.near.shutdown(socket.SHUT_WR)
    reader.join(5)
    ctx.step(f"the other end received {len(received)} bytes, then the end of the stream")
    _compare(ctx, "the other end to receive exactly the bytes sent", data, received)


@check("send_all picks up exactly where send() stopped", points=2,
       hint="keep the position: after send() took n bytes, the next send() starts at byte n of what was left")
def send_offsets(ctx: Context) -> None:
    ex = ctx.load("ex02_reliable")
    pair = Pair(ctx)
    spy = SpySocket(ctx, pair.near, max_send=1000)
    ctx.step("send() will take at most 1000 bytes per call")
    data = random.Random(4).randbytes(50_000)
    reader, received = pair.drain()
    ctx.call(f"send_all(sock, {len(data)} bytes)", ex.send_all, spy, data)
    pair.near.shutdown(socket.SHUT_WR)
    reader.join(5)
    ctx.step(f"send_all made {len(spy.sends)} send() calls; the other end received {len(received)} bytes")
    _compare(ctx, "the other end to receive exactly the bytes sent", data, received)
    ctx.call("send_all(sock, b'') (nothing to send)", ex.send_all, spy, b"")


@check("recv_exactly assembles exactly n bytes from small pieces", points=2,
       hint="recv() may return fewer bytes than asked (here at most 3): loop, appending, until you have n")
def small_pieces(ctx: Context) -> None:
    ex = ctx.load("ex02_reliable")
    pair = Pair(ctx)
    spy = SpySocket(ctx, pair.near, max_recv=3)
    data = random.Random(5).randbytes(10_000)
    ctx.step("the other end sends 10000 bytes; recv() will return at most 3 bytes per call")
    pair.far.sendall(data)
    got = ctx.call("recv_exactly(sock, 10000)", ex.recv_exactly, spy, 10_000)
    _compare(ctx, "recv_exactly to return the 10000 bytes sent", data, got)
    ctx.step(f"recv_exactly made {len(spy.recvs)} recv() calls")


@check("recv_exactly never reads past n: the next message stays in the stream", points=1,
       hint="ask recv() for at most the bytes still missing (n - what you have), or you eat the next message")
def no_over_read(ctx: Context) -> None:
    ex = ctx.load("ex02_reliable")
    pair = Pair(ctx)
    first, second = random.Random(6).randbytes(10_000), b"NEXT!"
    ctx.step("the other end sends 10000 bytes and then 5 more, b'NEXT!', all at once")
    pair.far.sendall(first + second)
    # Wait until every byte is in our receive buffer, so that one recv()
    # could take both messages (peeking leaves them there).
    while len(pair.near.recv(len(first) + len(second), socket.MSG_PEEK)) < len(first) + len(second):
        pass
    got = ctx.call("recv_exactly(sock, 10000)", ex.recv_exactly, pair.near, 10_000)
    _compare(ctx, "recv_exactly to return the first 10000 bytes", first, got)
    got = ctx.call("recv_exactly(sock, 5)", ex.recv_exactly, pair.near, 5)
    _compare(ctx, "the next recv_exactly to return b'NEXT!'", second, got)


@check("recv_exactly raises ConnectionError when the stream ends early", points=1,
       hint="recv() returns b\"\" forever once the other side has closed: raise ConnectionError then")
def early_end(ctx: Context) -> None:
    ex = ctx.load("ex02_reliable")
    pair = Pair(ctx)
    ctx.step("the other end sends 5 bytes, then closes")
    pair.far.sendall(b"12345")
    pair.far.close()
    try:
        got = ctx.call("recv_exactly(sock, 10)", ex.recv_exactly, pair.near, 10)
    except ConnectionError as exc:
        ctx.step(f"recv_exactly raised {type(exc).__name__}: {exc}")
        return
    raise ctx.fail("ConnectionError: only 5 of the 10 bytes before the end of the stream",
                   f"recv_exactly returned {got!r:.200}")
