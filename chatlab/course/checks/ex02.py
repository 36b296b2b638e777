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

from ...testing import CheckFailed
from ..harness import Context, check, diagnose, plural, short, where_they_differ

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


def _compare(ctx: Context, what: str, expected: bytes, got: Any, hint: str | None = None) -> None:
    if not isinstance(got, (bytes, bytearray)):
        raise ctx.fail(f"{what}: {plural(len(expected), 'byte')}", f"{type(got).__name__}: {short(got, 200)}",
                       "return the bytes themselves: bytes(received) if you collected them in a bytearray")
    if bytes(got) != expected:
        # Where do they first differ?  That says more than two hex dumps.
        raise ctx.fail(f"{what}: {plural(len(expected), 'byte')}",
                       f"{plural(len(got), 'byte')}; {where_they_differ(expected, bytes(got))}", hint)


def how_sends_went(spy: SpySocket) -> str | None:
    """A hint from the record of send() calls, when it shows the position lost (else None)."""
    for call, ((offered, taken), (next_offered, _)) in enumerate(zip(spy.sends, spy.sends[1:]), 1):
        if next_offered != offered - taken:
            return (f"send() call {call} was offered {offered:,} bytes and took {taken:,}, so {offered - taken:,} "
                    f"were left -- but call {call + 1} was offered {next_offered:,}: keep the position, and send "
                    "only what is left after the bytes already taken (left = left[sent:])")
    return None


def send_all_checked(ctx: Context, ex: Any, spy: SpySocket, data: bytes, what: str) -> None:
    """send_all(spy, data), with a hint from the record of its send() calls if it hangs."""
    try:
        ctx.call(what, ex.send_all, spy, data)
    except CheckFailed as exc:
        hint = how_sends_went(spy)
        if hint is None:
            raise
        raise ctx.fail(f"{what}: to finish within 5 s", "it was still running, sending", hint) from exc


DIAGNOSES = [
    diagnose(TimeoutError, "recv_exactly waited for bytes that never came: did it ask for more than were still "
             "missing, or go on after recv() returned b\"\" (the end of the stream: raise ConnectionError)?",
             where="recv_exactly"),
]


@check("send_all delivers every byte when send() takes only part", points=2,
       hint="send() returns how many bytes the kernel took; send the rest, from that point on, until none is left")
def partial_sends(ctx: Context) -> None:
    ex = ctx.load("ex02_reliable")
    pair = Pair(ctx, small_buffers=True)
    spy = SpySocket(ctx, pair.near)
    data = random.Random(3).randbytes(512 * 1024)
    reader, received = pair.drain()
    send_all_checked(ctx, ex, spy, data, f"send_all(sock, {len(data)} random bytes) while the other end reads")
    partial = sum(1 for offered, taken in spy.sends if taken < offered)
    ctx.step(f"send_all made {len(spy.sends)} send() calls; {partial} of them took only part of what was offered")
    pair.near.shutdown(socket.SHUT_WR)
    reader.join(5)
    ctx.step(f"the other end received {len(received)} bytes, then the end of the stream")
    _compare(ctx, "the other end to receive exactly the bytes sent", data, received, how_sends_went(spy))


@check("send_all picks up exactly where send() stopped", points=2,
       hint="keep the position: after send() took n bytes, the next send() starts at byte n of what was left")
def send_offsets(ctx: Context) -> None:
    ex = ctx.load("ex02_reliable")
    pair = Pair(ctx)
    spy = SpySocket(ctx, pair.near, max_send=1000)
    ctx.step("send() will take at most 1000 bytes per call")
    data = random.Random(4).randbytes(50_000)
    reader, received = pair.drain()
    send_all_checked(ctx, ex, spy, data, f"send_all(sock, {len(data)} bytes)")
    pair.near.shutdown(socket.SHUT_WR)
    reader.join(5)
    ctx.step(f"send_all made {len(spy.sends)} send() calls; the other end received {len(received)} bytes")
    _compare(ctx, "the other end to receive exactly the bytes sent", data, received, how_sends_went(spy))
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
    spy = SpySocket(ctx, pair.near, max_recv=6000)
    first, second = random.Random(6).randbytes(10_000), b"NEXT!"
    ctx.step("the other end sends 10000 bytes and then 5 more, b'NEXT!', in one send(): one TCP segment")
    pair.far.sendall(first + second)
    # Wait until every byte is in our receive buffer (peeking leaves them
    # there): a recv() that asks for too much can then take the next message.
    while len(pair.near.recv(len(first) + len(second), socket.MSG_PEEK)) < len(first) + len(second):
        pass
    ctx.step("all 10005 bytes are waiting in the receive buffer; recv() will return at most 6000 bytes per call")
    got = ctx.call("recv_exactly(sock, 10000)", ex.recv_exactly, spy, 10_000)
    have = 0
    for call, (asked, returned) in enumerate(spy.recvs, 1):
        if asked > 10_000 - have:
            raise ctx.fail(f"recv() call {call} to ask for at most the {10_000 - have:,} bytes still missing",
                           f"it asked for {asked:,} (and got {returned:,})",
                           f"recv() may hand back up to as many bytes as asked, and the next message was already "
                           f"waiting: on call {call}, {10_000 - have:,} bytes were missing -- ask for exactly "
                           "those (n - len(received)), never for n again")
        have += returned
    _compare(ctx, "recv_exactly to return the first 10000 bytes", first, got)
    got = ctx.call("recv_exactly(sock, 5)", ex.recv_exactly, pair.near, 5)
    _compare(ctx, "the next recv_exactly to return b'NEXT!'", second, got,
             "the first call took bytes of the next message: ask recv() only for the bytes still missing")


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
                   f"recv_exactly returned {short(got, 200)}")
