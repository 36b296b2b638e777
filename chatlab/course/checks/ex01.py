"""Checks of exercise 1: the echo server and client, over real TCP on 127.0.0.1."""

from __future__ import annotations

import errno
import os
import random
import socket
import threading

from ..harness import Context, check, diagnose, show_bytes, short, where_they_differ

LOOPBACK = "127.0.0.1"
HINT_REUSEADDR = ("set SO_REUSEADDR before bind(): after stop(), the closed connection waits in TIME_WAIT "
                  "on the server's port, and without it a new server cannot bind there for a minute")

# What an exception from the student's code says, wherever it is raised.
DIAGNOSES = [
    diagnose((BrokenPipeError, ConnectionResetError), "handle() sent to a client that had already gone: once "
             "recv() returns b\"\" the client has closed its side -- return from handle() then (an empty recv() "
             "is the end of the stream, not an empty message)", where="handle"),
    diagnose(TimeoutError, "echo_once waited for an echo that never ended: the server echoes until it reads the "
             "end of your stream, so after sending, shutdown(socket.SHUT_WR) says you are done; then recv() "
             "until b\"\"", where="echo_once"),
    diagnose(OSError, HINT_REUSEADDR, where="start", says="address already in use"),
]


@check("start() listens on 127.0.0.1, on the port the kernel chose", points=1,
       hint="bind((self.host, self.port)) with port 0 picks a free port; address must ask the socket: getsockname()")
def listens(ctx: Context) -> None:
    ex = ctx.load("ex01_echo")
    server = ctx.start(ex.EchoServer())
    host, port = server.address
    if host != LOOPBACK:
        raise ctx.fail(f"the server on {LOOPBACK} (the default host)", f"{host}:{port}")
    ctx.client((host, port))
    ctx.step("connected: something listens at that address")


@check("the server echoes every byte back, binary data included", points=2,
       hint="handle() must send back what each recv() returned, with sendall, until recv() returns b\"\"")
def echoes(ctx: Context) -> None:
    ex = ctx.load("ex01_echo")
    server = ctx.start(ex.EchoServer())
    client = ctx.client(server.address)
    client.send(b"hello\n")
    ctx.expect_bytes(client, b"hello\n", "the echo of b'hello\\n'")
    every_byte = bytes(range(256))
    client.send(every_byte, "the 256 byte values 00 to ff")
    ctx.expect_bytes(client, every_byte, "the echo of bytes 00 to ff")
    big = random.Random(1).randbytes(64 * 1024)
    client.send(big, "64 KiB of random bytes (more than one recv() returns)")
    ctx.expect_bytes(client, big, "the echo of the 64 KiB")


@check("clients are served one after another; the end of the stream ends a conversation", points=1,
       hint="when recv() returns b\"\" the client has closed its side: return from handle(), "
            "close that connection, and accept() the next client")
def one_after_another(ctx: Context) -> None:
    ex = ctx.load("ex01_echo")
    server = ctx.start(ex.EchoServer())
    for label in ("first", "second", "third"):
        client = ctx.client(server.address, label)
        client.send(f"I am the {label}\n".encode())
        ctx.expect_bytes(client, f"I am the {label}\n".encode(), f"the echo to the {label} client")
        ctx.step(f"{label}: shutdown(SHUT_WR): no more data from this client")
        client.sock.shutdown(socket.SHUT_WR)
        rest = client.expect_closed()
        if rest:
            raise ctx.fail("nothing more, then the server closing the connection", repr(rest))
        client.close()


class ReferenceEchoServer:
    """The check's own echo server, so that echo_once is checked on its own."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.listener = socket.create_server((LOOPBACK, 0))
        self.address = self.listener.getsockname()
        self.received = b""
        self.thread = threading.Thread(target=self._serve, name="check-echo", daemon=True)
        self.thread.start()
        ctx.on_cleanup("", self.close, quiet=True)

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                while data := conn.recv(65536):
                    self.received += data
                    conn.sendall(data)
                self.ctx.step(f"reference server: end of stream after {len(self.received)} bytes; it closes")
            except OSError as exc:
                self.ctx.step(f"reference server: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.listener.close()


@check("echo_once sends the data, half-closes, and returns all that came back", points=2,
       hint="after sending, shutdown(socket.SHUT_WR) tells the server you are done; "
            "then recv() until b\"\", joining the pieces")
def client_side(ctx: Context) -> None:
    ex = ctx.load("ex01_echo")
    for data in (b"ping", random.Random(2).randbytes(100_000)):
        server = ReferenceEchoServer(ctx)
        what = repr(data) if len(data) < 10 else f"{len(data)} random bytes"
        got = ctx.call(f"echo_once({server.address}, {what})", ex.echo_once, server.address, data,
                       hint="did echo_once shutdown(SHUT_WR) after sending? The server echoes until "
                            "it reads the end of the stream, and only then closes")
        if not isinstance(got, bytes):
            raise ctx.fail(f"echo_once to return the {len(data)} bytes it sent, as bytes",
                           f"{type(got).__name__} {short(got, 200)}", "join the pieces recv() returned: "
                           "b\"\".join(pieces), or bytes(a_bytearray)")
        if got != data:
            stops = len(got) < len(data) and data.startswith(got)
            raise ctx.fail(f"echo_once to return the {len(data)} bytes it sent",
                           f"{show_bytes(got)}\n  {where_they_differ(data, got)}",
                           "one recv() returns whatever piece of the echo has arrived, not all of it: keep "
                           "calling recv() until it returns b\"\", joining the pieces" if stops else None)
        ctx.step(f"echo_once returned the {len(got)} bytes")


@check("stop() ends the server thread and frees the port at once (SO_REUSEADDR)", points=2,
       hint=HINT_REUSEADDR)
def stop_and_restart(ctx: Context) -> None:
    ex = ctx.load("ex01_echo")
    server = ctx.start(ex.EchoServer())
    address = server.address
    client = ctx.client(address)
    client.send(b"still here?\n")
    ctx.expect_bytes(client, b"still here?\n")
    ctx.call("stop the server while the client is still connected: stop()", server.stop,
             hint="stop() must wake the server thread: shut down the current connection, join the thread")
    try:
        client.expect_closed()
    except AssertionError:
        raise ctx.fail("the server to close the client's connection when it stops", "it stayed open",
                       "stop() must shut down the connection being served (self.current.shutdown(SHUT_RDWR)): "
                       "its recv() then returns b\"\" and the server thread can end") from None
    client.close()
    ctx.step("the server closed first, so its side of that connection waits in TIME_WAIT")
    running = ctx.new_threads()
    if running:
        raise ctx.fail("no thread of the server left running after stop()",
                       ", ".join(repr(t.name) for t in running),
                       "stop() must set the stop flag and join the server thread (with a timeout: STOP_WAIT)")
    ctx.step(f"connect to {address[0]}:{address[1]} again")
    probe = socket.socket()
    probe.settimeout(2)
    try:
        probe.connect(address)
    except ConnectionRefusedError:
        ctx.step("connection refused: nothing listens there any more")
    else:
        raise ctx.fail("connection refused after stop()", "a connection: the port is still listening",
                       "stop() must close the listening socket")
    finally:
        probe.close()
    again = ex.EchoServer(port=address[1])
    try:
        ctx.start(again, f"a new server on the same port {address[1]}")
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise ctx.fail(f"a new server to bind port {address[1]} at once",
                           f"{type(exc).__name__}: {exc}", HINT_REUSEADDR) from None
        raise
    echo = ctx.client(again.address, "client of the new server")
    echo.send(b"new\n")
    ctx.expect_bytes(echo, b"new\n")
    if os.name == "nt":
        ctx.step("(on Windows, chatlab leaves SO_REUSEADDR off: TIME_WAIT does not block a restart there)")
