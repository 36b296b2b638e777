"""Checks of exercise 7: the client's two threads, and its clean goodbye.

Most checks play the server themselves (``Scripted``): they accept the
client's connection and see exactly what it sends, byte by byte, and when.
The last one joins chatlab's own server, as a student would.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from typing import Any

from ...testing import RawClient
from ..harness import STEP_TIMEOUT, Context, check, short
from .common import finish, in_background

BANNER = "chatlab/1 Welcome! Type your name and press Enter."


class Scripted:
    """A listening socket; ``accept()`` gives the server's end of the client's connection."""

    def __init__(self, ctx: Context, small_window: bool = False):
        self.ctx = ctx
        self.listener = socket.socket()
        if small_window:
            # Inherited by the accepted socket: the client can have only a
            # few kilobytes in flight before its sends must wait for us.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.address = self.listener.getsockname()[:2]
        ctx.on_cleanup("", self.listener.close, quiet=True)
        ctx.step(f"the check listens on {self.address[0]}:{self.address[1]}, playing the server")

    def accept(self) -> RawClient:
        self.listener.settimeout(STEP_TIMEOUT)
        try:
            sock, peer = self.listener.accept()
        except TimeoutError:
            raise self.ctx.fail("the client to connect", "no connection within 5 s") from None
        end = RawClient(peer, "server", self.ctx.log, accepted=sock)
        self.ctx.on_cleanup("", end.close, quiet=True)
        return end


def make_client(ctx: Context, ex: Any, address: tuple[str, int], name: str) -> Any:
    client = ctx.call(f"Client({address[0]!r}, {address[1]}, {name!r})", ex.Client, address[0], address[1], name)
    ctx.on_cleanup("close the client", client.close)
    for attribute in ("received", "sender", "receiver", "sock"):
        if not hasattr(client, attribute):
            raise ctx.fail(f"the client to have client.{attribute}", "no such attribute",
                           "keep the names the exercise file gives you")
    return client


def received(ctx: Context, client: Any, expected: Any, what: str = "", hint: str | None = None,
             timeout: float = STEP_TIMEOUT) -> Any:
    """The next item on ``client.received`` must be ``expected`` (a line, or None for the end)."""
    deadline = time.monotonic() + timeout
    while True:
        ctx.log.raise_thread_error()  # the student's receive thread may have crashed
        try:
            item = client.received.get(timeout=0.05)
            break
        except queue.Empty:
            if time.monotonic() > deadline:
                raise ctx.fail(f"client.received to give {what or repr(expected)}",
                               f"nothing within {timeout:g} s", hint) from None
    ctx.step(f"client.received.get() -> {item!r}")
    if item != expected:
        raise ctx.fail(f"client.received to give {what or repr(expected)}", repr(item), hint)
    return item


def greet(ctx: Context, client: Any, server: RawClient, name: str) -> None:
    server.send(f"{BANNER}\n".encode())
    ctx.expect_line(server, name, f"the name {name!r} as the client's first line",
                    "queue the name first: in lines mode the first line is the name")
    server.send(f"* Welcome, {name}! Online: {name}.\n".encode())
    received(ctx, client, BANNER, "the banner line (without its newline)",
             "the receive thread puts each line, decoded and without b\"\\n\", on client.received")
    received(ctx, client, f"* Welcome, {name}! Online: {name}.")


@check("the client connects, sends its name first, and receives whole lines", points=2,
       hint="connect, queue the name, start both threads; the receive thread decodes lines with a LineDecoder")
def connects(ctx: Context) -> None:
    ex = ctx.load("ex07_client")
    script = Scripted(ctx)
    client = make_client(ctx, ex, script.address, "ada")
    server = script.accept()
    greet(ctx, client, server, "ada")
    threads = [client.sender, client.receiver]
    if not all(isinstance(t, threading.Thread) and t.is_alive() for t in threads) or threads[0] is threads[1]:
        raise ctx.fail("client.sender and client.receiver: two running threads", repr(threads))
    server.send(b"one\ntwo\nthree\n", "three lines in one piece")
    for line in ("one", "two", "three"):
        received(ctx, client, line)


@check("lines cut across recv() calls, even inside a UTF-8 character, come out whole", points=1,
       hint="decode a line only once it is complete (the LineDecoder gives whole lines); a UTF-8 "
            "character may be cut between two recv() calls")
def pieces(ctx: Context) -> None:
    ex = ctx.load("ex07_client")
    script = Scripted(ctx)
    client = make_client(ctx, ex, script.address, "ada")
    server = script.accept()
    greet(ctx, client, server, "ada")
    server.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    text = "<bob> héllo wörld ✓"
    data = text.encode() + b"\n"
    cuts = [0, 8, 9, len(data) - 2, len(data)]  # inside 'é' (2 bytes) and inside '✓' (3 bytes)
    for start, end in zip(cuts, cuts[1:]):
        server.sock.sendall(data[start:end])
        # Wait until the client's receive thread has read this piece, so that
        # the next one comes in a recv() of its own -- as a slow network does.
        read_all(ctx, client.sock)
    ctx.step(f"server: sent {data!r} in {len(cuts) - 1} pieces, each read by the client before the next, "
             "cut inside 'é' and inside '✓'")
    received(ctx, client, text, hint="a line is complete only at its b\"\\n\", and a UTF-8 character may be cut "
             "between two recv() calls: feed every piece to a LineDecoder, and decode only the whole lines it gives")


def read_all(ctx: Context, sock: socket.socket, timeout: float = 2.0) -> None:
    """Wait until ``sock`` has no unread bytes (FIONREAD): its reader took them.  Where the
    operating system cannot say, wait a little instead."""
    try:
        import fcntl
        import termios
    except ImportError:  # pragma: no cover - Windows
        time.sleep(0.05)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waiting = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return  # closed: nothing more to wait for
        if not waiting:
            return
        time.sleep(0.001)


@check("say() returns at once: the send thread does the sending, the receive thread keeps receiving", points=2,
       hint="say() only puts the line on self.outgoing; the send thread takes it from there. A say() that "
            "sends itself blocks while the server is not reading")
def two_threads(ctx: Context) -> None:
    ex = ctx.load("ex07_client")
    script = Scripted(ctx, small_window=True)
    client = make_client(ctx, ex, script.address, "ada")
    server = script.accept()
    greet(ctx, client, server, "ada")
    filler = "x" * 1000
    ctx.step("the server stops reading; ada says 3000 lines of 1 KB (more than the kernel's buffers hold)")
    started = time.monotonic()

    def say_all() -> None:
        for k in range(3000):
            client.say(f"{k} {filler}")

    ctx.call("3000 calls of client.say(...)", say_all, timeout=3,
             hint="say() must not send: it queues, and returns at once")
    ctx.step(f"the 3000 say() calls returned in {time.monotonic() - started:.3f} s")
    server.send(b"<bob> are you there?\n", "a line, while the client's send thread is stuck sending")
    received(ctx, client, "<bob> are you there?", hint="the receive thread must keep receiving while the "
             "send thread waits for the server to read")
    ctx.step("the server reads the 3000 lines")
    for k in range(3000):
        line = ctx.recv_line(server, f"ada's line {k}")
        if line != f"{k} {filler}":
            raise ctx.fail(f"line {k} of ada's, in order", short(line, 60))
    ctx.step("all 3000 lines arrived, in order")


#: The hint when the connection ends before '/quit': whatever the check, that is what was seen.
QUIT_UNSENT = ("the connection closed before '/quit' came: close() closed the socket while the send thread still "
               "had '/quit' queued -- join the send thread (it sends what is queued, then shutdown(SHUT_WR)) "
               "before closing the socket")


def expect_quit(ctx: Context, server: RawClient) -> None:
    """'/quit' must reach the server before the client goes."""
    line = ctx.recv_line(server, "'/quit' before the client goes", hint=lambda: QUIT_UNSENT if server.eof else None)
    if line != "/quit":
        raise ctx.fail(f"{server.label} receives '/quit' before the client goes", short(line, 200))


@check("close() says /quit, half-closes, waits for the server to close, and joins both threads", points=2,
       hint="close(): queue '/quit' then None; the send thread sends it, then shutdown(SHUT_WR); the receive "
            "thread ends at b\"\"; join both (with timeouts), then close the socket")
def closing(ctx: Context) -> None:
    ex = ctx.load("ex07_client")
    script = Scripted(ctx)
    client = make_client(ctx, ex, script.address, "ada")
    server = script.accept()
    greet(ctx, client, server, "ada")
    ctx.step("client.close() starts, in a thread of the check")
    closer = in_background(ctx, "close", client.close)
    expect_quit(ctx, server)
    rest = server.expect_closed()
    if rest:
        raise ctx.fail("nothing after /quit, then the end of the client's stream (shutdown SHUT_WR)", repr(rest))
    ctx.step("the server says goodbye and closes its side")
    server.send(b"* Server closing the connection: goodbye\n")
    server.close()
    finish(ctx, closer, "close()", timeout=5)
    ctx.step("close() returned")
    for name in ("sender", "receiver"):
        thread = getattr(client, name)
        if thread.is_alive():
            raise ctx.fail(f"client.{name} to have ended (joined) when close() returns", "it is still running")
    if client.sock.fileno() != -1:
        raise ctx.fail("the client's socket closed when close() returns", "it is still open")
    received(ctx, client, "* Server closing the connection: goodbye")
    received(ctx, client, None, "None: the end of the lines", "put None on self.received when the connection ends")
    ctx.call("close() a second time", client.close, hint="a second close() must do nothing")


@check("when the server closes first, the receive thread ends by itself; close() is then quick", points=1,
       hint="the receive thread ends at b\"\" (and on OSError), putting None on self.received; close() must "
            "not wait for a server that is already gone")
def server_goes(ctx: Context) -> None:
    ex = ctx.load("ex07_client")
    script = Scripted(ctx)
    client = make_client(ctx, ex, script.address, "ada")
    server = script.accept()
    greet(ctx, client, server, "ada")
    server.send(b"* Server closing the connection: the server is shutting down\n")
    server.close()
    ctx.step("the server closed")
    received(ctx, client, "* Server closing the connection: the server is shutting down")
    received(ctx, client, None, "None: the end of the lines")
    ctx.wait_until(lambda: not client.receiver.is_alive(), "the receive thread has ended")
    ctx.call("client.close()", client.close, timeout=3)
    if client.sender.is_alive():
        # close() returned before its own send thread ended: it did not wait
        # for it (a race: the thread may or may not have finished by now).
        raise ctx.fail("client.sender to have ended when close() returns", "it is still running",
                       "close() must end the send thread and wait for it: put None on self.outgoing, then "
                       "self.sender.join(CLOSE_WAIT) -- and join the receive thread too -- before it returns")


@check("when the server never closes, close() still ends both threads, and soon", points=1,
       hint="if the receive thread is still in recv() after CLOSE_WAIT, shutdown(socket.SHUT_RDWR) wakes it: "
            "closing the socket alone does not")
def server_never_closes(ctx: Context) -> None:
    ex = ctx.load("ex07_client")
    script = Scripted(ctx)
    client = make_client(ctx, ex, script.address, "ada")
    server = script.accept()
    greet(ctx, client, server, "ada")
    ctx.step("client.close() starts; the server reads /quit and the end of the stream, and never closes")
    closer = in_background(ctx, "close", client.close)
    expect_quit(ctx, server)
    server.expect_closed()
    finish(ctx, closer, "close()", timeout=15)
    ctx.step("close() returned")
    if client.receiver.is_alive():
        raise ctx.fail("client.receiver to have ended when close() returns", "it is still waiting in recv()",
                       "a server that never closes leaves the receive thread in recv(): after CLOSE_WAIT, "
                       "shutdown(socket.SHUT_RDWR) the socket to wake it, then join it again")


@check("it chats with chatlab's own server", points=1,
       hint="the same client, against 'chatlab serve': lines mode, name first")
def with_chatlab(ctx: Context) -> None:
    from ...servers import ThreadedServer  # here: the other checks need none of the server's imports

    ex = ctx.load("ex07_client")
    server = ctx.start(ThreadedServer("127.0.0.1", 0), "start chatlab's server")
    host, port = server.address
    bob = ctx.client(server.address, "bob")
    bob.recv_banner()
    bob.send_line("bob")
    ctx.wait_line(bob, lambda line: line.startswith("* Welcome, bob!"), "bob's welcome")
    client = make_client(ctx, ex, (host, port), "ada")
    ctx.wait_line(bob, lambda line: line == "* ada joined", "'* ada joined'")
    client.say("hello bob, ça va?")
    ctx.wait_line(bob, lambda line: line == "<ada> hello bob, ça va?", "'<ada> hello bob, ça va?'")
    bob.send_line("très bien")
    seen = []
    deadline = time.monotonic() + STEP_TIMEOUT
    while "<bob> très bien" not in seen and None not in seen and time.monotonic() < deadline:
        try:
            seen.append(client.received.get(timeout=0.05))
        except queue.Empty:
            ctx.log.raise_thread_error()
    ctx.step(f"ada received {short(seen, 300)}")
    if "<bob> très bien" not in seen:
        raise ctx.fail("ada receives '<bob> très bien'", repr(seen[-5:]))
    ctx.call("client.close()", client.close)
    ctx.wait_line(bob, lambda line: line.startswith("* ada left"), "'* ada left (quit)'")
