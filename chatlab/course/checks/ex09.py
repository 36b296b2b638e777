"""Checks of exercise 9: a bounded outbox and a writer thread per client."""

from __future__ import annotations

from typing import Any

from ..harness import Context, check
from . import ex06, ex08
from .common import expect, join, server_threads

MODULE, SERVER = "ex09_slow_clients", "OutboxChatServer"


def start(ctx: Context, **kwargs: Any) -> Any:
    ctx.banner_hint = ("nothing arrived, not even the banner: send() only puts it in the outbox -- it must also "
                       "wake the writer (self.ready.notify()), which then sends it")
    ctx.stop_hint = ("stop() waits for every reader and writer thread, and a writer ends only once its outbox is "
                     "closed: when a conversation ends, serve() must close the outbox (and join the writer)")
    return ex06.start(ctx, MODULE, SERVER, **kwargs)


@check("a client that stops reading does not stall the others, and is dropped as too slow", points=3,
       hint="send() only appends to the client's outbox and returns; past outbox_limit, too_slow(peer): "
            "the room is told '* NAME left (too_slow)' and the client is cut off")
def slow_reader(ctx: Context) -> None:
    server = start(ctx, outbox_limit=256 * 1024)
    ctx.step("the server runs with outbox_limit = 256 KiB")
    ex08.flood_past_a_slow_reader(ctx, server)


@check("every client gets a writer thread; a burst reaches a slow-but-reading client whole", points=2,
       hint="new_peer starts the writer; write_loop takes everything queued, and sends it with sendall "
            "outside the lock")
def writers(ctx: Context) -> None:
    server = start(ctx)
    ada = join(ctx, server.address, "ada")
    bob = join(ctx, server.address, "bob", rcvbuf=4096)
    expect(ctx, ada, "* bob joined")
    threads = server_threads(ctx)
    ctx.step(f"threads the server runs with 2 clients: {[t.name for t in threads]}")
    if len(threads) < 5:
        raise ctx.fail("at least 5 threads: the accept loop, and a reader and a writer per client",
                       f"{len(threads)}: {[t.name for t in threads]}")
    ex08.burst_to_a_slow_reader(ctx, ada, bob)


@check("the chat of exercise 6 still works: names, notices, messages", points=1,
       hint="only how bytes leave changed: the rules are exercise 6's")
def same_rules(ctx: Context) -> None:
    ex06.chat(ctx, start)


@check("/quit: the goodbye still arrives; leaving is announced once", points=2,
       hint="serve(): when the conversation ends, close the outbox and join the writer, so that what is "
            "queued is sent before the socket is closed")
def leaving(ctx: Context) -> None:
    ex06.leaving_once(ctx, start)


@check("stop() ends every reader and writer thread", points=1,
       hint="a reader ending closes its client's outbox, which ends the writer; stop() joins them all")
def stopping(ctx: Context) -> None:
    server = start(ctx)
    clients = [join(ctx, server.address, name) for name in ("ada", "bob")]
    ctx.call("stop()", server.stop)
    for client in clients:
        client.expect_closed()
    left = server_threads(ctx)
    if left:
        raise ctx.fail("no thread of the server left after stop()", ", ".join(repr(t.name) for t in left))
