"""Checks of exercise 5: the broadcast server, a thread per client, the shared list and its lock."""

from __future__ import annotations

import select
import socket
import time

from ..harness import Context, check, diagnose
from .common import connect, finish, in_background, reset, server_threads

HINT_THREADS = "serve_forever starts one thread per client (self.handle); handle runs self.serve, and cleans up"
HINT_SNAPSHOT = ("with self.lock: take the snapshot of self.clients; without the lock, a client leaving mid-loop "
                 "shifts the list and someone silently misses the line (the race in the docstring)")

DIAGNOSES = [
    diagnose(OSError, "a client that vanishes (a reset is ConnectionResetError, an OSError) must end only its own "
             "thread: handle() catches OSError, and in a finally removes the peer and closes its socket",
             where=("handle", "serve", "read_lines")),
]


@check("the banner comes first; a line goes to every other client", points=2,
       hint="serve(): send BANNER, then for each line from read_lines(): self.broadcast(line + b\"\\n\", exclude=peer)")
def relays(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    a, b, c = (connect(ctx, server.address, label) for label in ("alice", "bob", "carol"))
    a.send_line("hello from alice")
    ctx.expect_line(b, "hello from alice")
    ctx.expect_line(c, "hello from alice")


@check("the sender does not get its own line back", points=1,
       hint="broadcast to everyone but the sender: exclude=peer")
def no_echo(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    a, b = connect(ctx, server.address, "alice"), connect(ctx, server.address, "bob")
    a.send_line("one")
    ctx.expect_line(b, "one")
    ctx.step("bob answers: alice's next line must be bob's, not her own 'one'")
    b.send_line("two")
    ctx.expect_line(a, "two", "'two' (bob's line), not an echo of her own")


@check("eight clients at once: each line reaches the seven others, in order", points=2, hint=HINT_THREADS)
def many(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    clients = [connect(ctx, server.address, f"c{i}") for i in range(8)]
    ctx.step("all eight connected; each sends 5 lines, in turn")
    for k in range(5):
        for i, client in enumerate(clients):
            client.send_line(f"c{i} line {k}")
    for i, client in enumerate(clients):
        got = [ctx.recv_line(client, "the 35 lines of the 7 others") for _ in range(35)]
        mine = [line for line in got if line.startswith(f"c{i} ")]
        if mine:
            raise ctx.fail(f"c{i} receives only the others' lines", f"its own {mine[0]!r} too")
        for j in range(8):
            if j != i:
                theirs = [line for line in got if line.startswith(f"c{j} ")]
                wanted = [f"c{j} line {k}" for k in range(5)]
                if theirs != wanted:
                    raise ctx.fail(f"c{i} receives c{j}'s lines, in order: {wanted}", repr(theirs))
    ctx.step("every client got the 35 lines of the 7 others, each sender's in order")


@check("a client that leaves (or resets) is dropped from the list; the others carry on", points=2,
       hint="handle(): catch OSError (a reset is ConnectionResetError), and in a finally: remove the peer "
            "from self.clients, holding self.lock, and close its socket")
def leaving(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    a, b, c, d = (connect(ctx, server.address, label) for label in ("alice", "bob", "carol", "dave"))
    ctx.wait_until(lambda: len(server.clients) == 4, "server.clients holds the 4 clients")
    ctx.step("alice closes her connection")
    a.close()
    ctx.wait_until(lambda: len(server.clients) == 3, "server.clients holds 3 clients")
    reset(ctx, d)
    ctx.wait_until(lambda: len(server.clients) == 2, "server.clients holds the 2 clients left")
    b.send_line("still here?")
    ctx.expect_line(c, "still here?")
    c.send_line("yes")
    ctx.expect_line(b, "yes")


@check("clients coming and going during a burst: nobody still connected misses a line", points=1,
       hint="broadcast must not walk self.clients while other threads add and remove: copy it under the lock "
            "(a snapshot), then send outside the lock")
def churn(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    a = connect(ctx, server.address, "alice")
    # Visitors ahead of bob in the list: each one that leaves moves bob one
    # place down -- under the feet of a broadcast loop walking the live list.
    visitors = [connect(ctx, server.address, f"visitor{i}") for i in range(40)]
    b = connect(ctx, server.address, "bob")

    def come_and_go() -> None:
        for i, visitor in enumerate(visitors):
            visitor.close()
            newcomer = ctx.client(server.address, f"newcomer{i}")
            newcomer.recv_banner()
            newcomer.close()

    ctx.step("the 40 visitors leave and 40 newcomers come and go, while alice sends 400 lines")
    churning = in_background(ctx, "churn", come_and_go)
    for k in range(400):
        a.send_line(f"burst {k}")
    finish(ctx, churning, "the visitors' comings and goings")
    for k in range(400):
        ctx.expect_line(b, f"burst {k}", hint="a line went missing or came out of order while clients came "
                        "and went: is self.clients walked without the lock? Take a snapshot of it under self.lock, "
                        "then send to the snapshot")
    ctx.step("bob got all 400 lines, in order")


@check("every use of the shared list holds self.lock: broadcast, adding, removing", points=2, hint=HINT_SNAPSHOT)
def uses_the_lock(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    a, b, c = (connect(ctx, server.address, label) for label in ("alice", "bob", "carol"))
    ctx.wait_until(lambda: len(server.clients) == 3, "server.clients holds the 3 clients")
    ctx.step("the check takes server.lock, as another thread using the list would")
    if not server.lock.acquire(timeout=5):
        raise ctx.fail("to take server.lock", "it stayed held for 5 s", "is the lock released after each use?")
    try:
        # Three things that each need the list.  While we hold the lock, a
        # server that honours it can do none of them, so nothing may arrive.
        a.send_line("sent while the list is locked")
        newcomer = ctx.client(server.address, "newcomer")
        ctx.step("carol: shutdown(SHUT_WR) -- she leaves, and her thread must remove her from the list")
        c.sock.shutdown(socket.SHUT_WR)
        socks = {b.sock: "bob", newcomer.sock: "newcomer", c.sock: "carol"}
        ready, _, _ = select.select(list(socks), [], [], 0.5)
        seen = sorted(socks[sock] for sock in ready)
        ctx.step(f"in 0.5 s with the lock held, readable: {', '.join(seen) or 'nothing'}")
        if "bob" in seen:
            raise ctx.fail("no line for bob while the list is locked", "alice's line arrived: the broadcast "
                           "walked self.clients without taking self.lock", HINT_SNAPSHOT)
        if "newcomer" in seen:
            raise ctx.fail("no banner for the newcomer while the list is locked (it is not in the list yet)",
                           "the banner arrived: the newcomer was added without taking self.lock",
                           "serve_forever must append the new peer to self.clients holding self.lock: two "
                           "threads changing a list at once can lose one of the changes")
        if "carol" in seen:
            raise ctx.fail("carol's connection to stay open while the list is locked (her thread waits for the "
                           "lock to remove her)", "it was closed: she was removed without taking self.lock",
                           "handle()'s finally must remove the peer from self.clients holding self.lock, then "
                           "close its socket")
    finally:
        ctx.step("the check releases server.lock")
        server.lock.release()
    ctx.expect_line(b, "sent while the list is locked", "the line, now that the lock is free")
    newcomer.recv_banner()
    c.expect_closed()
    ctx.wait_until(lambda: len(server.clients) == 3, "server.clients holds alice, bob and the newcomer")


FLOOD_LIMIT = 64 * 1024 * 1024  # bytes bob may send before the check gives up waiting for his sends to block


@check("a client that stops reading holds up its own lines, never the list: newcomers still get in", points=1,
       hint="broadcast must send outside the lock: copy the list under self.lock, release it, then send")
def stalled_reader(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    connect(ctx, server.address, "stalled", rcvbuf=4096)  # it reads the banner, then nothing, ever
    bob = connect(ctx, server.address, "bob")
    ctx.wait_until(lambda: len(server.clients) == 2, "server.clients holds the 2 clients")
    ctx.step("bob sends lines of 1000 bytes for stalled, who never reads, until bob's own sends block: then "
             "bob's thread in the server is stuck sending to stalled")
    line = b"x" * 999 + b"\n"
    chunk, sent, started = line * 64, 0, time.monotonic()
    bob.sock.settimeout(1.0)
    while sent < FLOOD_LIMIT and time.monotonic() - started < 20:
        try:
            sent += bob.sock.send(chunk)
        except TimeoutError:
            break
    else:
        raise ctx.fail("bob's sends to block once stalled's buffers were full",
                       f"{sent:,} bytes went through in {time.monotonic() - started:.1f} s",
                       "does broadcast send to every other client? stalled, who never reads, should hold it up")
    ctx.step(f"after {sent:,} bytes, bob's send() waited 1 s without taking anything: the server stopped reading him")
    newcomer = ctx.client(server.address, "newcomer")
    try:
        newcomer.recv_banner()
    except AssertionError:
        raise ctx.fail("the newcomer to get its banner: serve_forever adds it to self.clients, its thread greets it",
                       "no banner within 5 s: serve_forever could not take self.lock",
                       "bob's broadcast holds self.lock while it is stuck in sendall() to a client that does not "
                       "read, so every thread that needs the list waits for ever: take the snapshot under the "
                       "lock, and send outside it") from None
    ctx.step("the newcomer got its banner: the list is free while bob's thread waits for stalled")


@check("a line over 4096 bytes drops that client alone", points=1,
       hint="read_lines raises LineTooLong (from exercise 3): handle() must end that client, not the server")
def too_long(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    a, b, c = (connect(ctx, server.address, label) for label in ("alice", "bob", "carol"))
    a.send(b"x" * 5000, "5000 bytes with no newline")
    a.expect_closed()
    b.send_line("after the flood")
    ctx.expect_line(c, "after the flood")


@check("stop() cuts every client off and ends every thread", points=1,
       hint="stop(): the accept loop ends, every client's socket is shut down, every thread joined")
def stopping(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    clients = [connect(ctx, server.address, f"c{i}") for i in range(3)]
    ctx.call("stop()", server.stop)
    for client in clients:
        client.expect_closed()
    left = server_threads(ctx)
    if left:
        raise ctx.fail("no thread of the server left after stop()", ", ".join(repr(t.name) for t in left))
