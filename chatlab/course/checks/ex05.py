"""Checks of exercise 5: the broadcast server, a thread per client, the shared list and its lock."""

from __future__ import annotations

from ..harness import Context, check
from .common import connect, finish, in_background, reset, server_threads

HINT_THREADS = "serve_forever starts one thread per client (self.handle); handle runs self.serve, and cleans up"


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
                        "and went: is self.clients walked without the lock?")
    ctx.step("bob got all 400 lines, in order")


@check("broadcast reads the shared list under self.lock", points=2,
       hint="with self.lock: take the snapshot of self.clients; without the lock, a client leaving mid-loop "
            "shifts the list and someone silently misses the line (the race in the docstring)")
def uses_the_lock(ctx: Context) -> None:
    ex = ctx.load("ex05_broadcast")
    server = ctx.start(ex.BroadcastServer())
    a, b = connect(ctx, server.address, "alice"), connect(ctx, server.address, "bob")
    ctx.step("the check takes server.lock, as another thread changing the list would")
    if not server.lock.acquire(timeout=5):
        raise ctx.fail("to take server.lock", "it stayed held for 5 s", "is the lock released after each use?")
    try:
        a.send_line("sent while the list is locked")
        # The one place a check waits for nothing to happen: while we hold
        # the lock, a broadcast that honours it cannot reach bob.
        try:
            early = b.recv_line(timeout=0.3)
        except AssertionError:
            ctx.step("nothing reached bob in 0.3 s: the broadcast waits for the lock")
        else:
            raise ctx.fail("no line for bob while the list is locked", f"{early!r} arrived: the broadcast "
                           "walked self.clients without taking self.lock")
    finally:
        ctx.step("the check releases server.lock")
        server.lock.release()
    ctx.expect_line(b, "sent while the list is locked", "the line, now that the lock is free")


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
