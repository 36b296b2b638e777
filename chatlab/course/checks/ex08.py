"""Checks of exercise 8: one thread, a selector, and an output buffer per client.

The rules are exercise 6's, so some of its checks run again here against
the event loop; the rest are about what only an event loop must get right.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from ..harness import Context, check, short
from . import ex06
from .common import expect, join, room, server_threads

SMALL_SNDBUF = 4096  # bytes: the kernel's send buffer for bob's connection, so that send() takes only part

MODULE, SERVER = "ex08_selectors", "SelectorChatServer"


def start(ctx: Context, **kwargs: Any) -> Any:
    ctx.banner_hint = ("nothing arrived, not even the banner: on_connect() only puts it in the client's output "
                       "buffer -- queue() must then watch the socket for EVENT_WRITE too, and write() send the buffer")
    return ex06.start(ctx, MODULE, SERVER, **kwargs)


@check("one thread serves every client", points=2,
       hint="the event loop runs in the one server thread: accept(), read() and write() are called from it, "
            "and start no threads of their own")
def one_thread(ctx: Context) -> None:
    server = start(ctx)
    before = server_threads(ctx)
    ctx.step(f"threads the server started: {[t.name for t in before]}")
    clients = [join(ctx, server.address, name) for name in ("ada", "bob", "carol", "dave", "erin")]
    clients[0].send_line("hello")
    for other in clients[1:]:
        ctx.wait_line(other, lambda line: line == "<ada> hello", "'<ada> hello'")
    after = server_threads(ctx)
    ctx.step(f"with 5 clients chatting: {[t.name for t in after]}")
    if len(after) != 1:
        raise ctx.fail("exactly one server thread, however many clients", f"{len(after)} threads: "
                       + ", ".join(repr(t.name) for t in after))


@check("the chat of exercise 6 works on the event loop: names, notices, messages", points=2,
       hint="read() hands each line to self.on_line; write() sends the buffered bytes; the rules are unchanged")
def same_rules(ctx: Context) -> None:
    ex06.chat(ctx, start)
    ctx.step("-- and names unique ignoring case --")
    ex06.unique_names(ctx, start)


@check("leaving: /quit sends the goodbye before closing; a close and a reset are noticed", points=2,
       hint="finish(): the goodbye is still in the output buffer -- close only once write() has sent it; "
            "recv() returning b\"\" (or an OSError) means the client is gone: self.close(peer, ...)")
def leaving(ctx: Context) -> None:
    ex06.leaving_once(ctx, start)


STALLED = ("bob, who reads everything, stopped getting ada's lines while slow read nothing: sending to one client "
           "must never wait for it -- only append to its own buffer or outbox, and drop it when that passes the limit")
CUT_OFF = ("bob reads everything, yet the server cut him off: count only the bytes still waiting for a client -- "
           "once the writer takes them, they no longer count against its limit")


def flood_past_a_slow_reader(ctx: Context, server: Any) -> None:
    """ada floods; bob reads; slow does not: bob gets it all, slow is dropped as too slow."""
    ada, bob = room(ctx, server.address, "ada", "bob")
    slow = join(ctx, server.address, "slow", rcvbuf=4096)  # registered, and it will never read again
    expect(ctx, ada, "* slow joined")
    expect(ctx, bob, "* slow joined")
    # How much it takes depends on the kernel's buffers (up to a few MB on
    # loopback) before the server's own buffer starts to fill: send in
    # batches until the notice comes, within a bound.  Small batches, each
    # read by bob before the next: bob is never the one falling behind.
    filler = "y" * 990
    batch, batches, dropped, k = 32, 320, False, 0
    ctx.step(f"slow never reads again; ada sends batches of {batch} lines of 1000 bytes (up to {batches} "
             "batches, 10 MB), and bob reads each batch")
    for _ in range(batches):
        ada.send(b"".join(f"{n:05d} {filler}\n".encode() for n in range(k, k + batch)),
                 f"lines {k} to {k + batch - 1}")
        for n in range(k, k + batch):
            line = ctx.recv_line(bob, f"ada's line {n}", lambda: CUT_OFF if bob.eof else STALLED)
            if line == "* slow left (too_slow)":
                dropped = True
                line = ctx.recv_line(bob, f"ada's line {n}")
            if line == "* bob left (too_slow)" or line.startswith("* Server closing"):
                raise ctx.fail(f"bob receives ada's line {n}, in order", short(line, 80), CUT_OFF)
            if line != f"<ada> {n:05d} {filler}":
                raise ctx.fail(f"bob receives ada's line {n}, in order", short(line, 80))
        k += batch
        if dropped:
            break
    ctx.step(f"bob got all {k} lines ({k // 1000} MB), in order, while slow read nothing")
    if not dropped:
        raise ctx.fail("'* slow left (too_slow)' once slow's buffer passed the limit",
                       f"no notice after {k} lines ({k // 1000} MB) that slow never read")
    ctx.expect_line(ada, "* slow left (too_slow)")
    ada.send_line("/who")
    ctx.expect_line(ada, "* Online: ada, bob")
    ctx.step("slow reads at last: what was already sent, then the end of its connection")
    try:
        slow.expect_closed(timeout=10)
    except AssertionError:
        raise ctx.fail("slow's connection closed by the server, once it was dropped as too slow", "it stayed open",
                       "telling the room is half of dropping a client: close its connection too (abort() the socket, "
                       "or close it), so that its threads or its place in the loop end") from None


def burst_to_a_slow_reader(ctx: Context, ada: Any, bob: Any) -> None:
    """300 lines of 2000 bytes from ada to bob, who has a 4 KB window: all whole, in order."""
    ada.send(b"".join(f"{k:03d} {chr(ord('a') + k % 26) * 1996}\n".encode() for k in range(300)),
             "300 lines of 2000 bytes, for bob, whose receive window is 4 KB")
    for k in range(300):
        ctx.expect_line(bob, f"<ada> {k:03d} " + chr(ord("a") + k % 26) * 1996, f"ada's line {k}, whole")
    ctx.step("all 300 lines arrived whole and in order")


@check("a client that stops reading does not stall the others, and is dropped as too slow", points=3,
       hint="queue() only appends to the client's own buffer; once it would pass outbuf_limit, "
            "close that client (too_slow) -- never wait for it")
def slow_reader(ctx: Context) -> None:
    server = start(ctx, outbuf_limit=256 * 1024)
    ctx.step("the server runs with outbuf_limit = 256 KiB")
    flood_past_a_slow_reader(ctx, server)


@check("a big burst reaches a slow-but-reading client whole: partial sends resume where they stopped", points=2,
       hint="send() on a non-blocking socket may take part of the buffer: delete exactly the bytes it took "
            "(del peer.outbuf[:sent]) and keep watching for EVENT_WRITE until the buffer is empty")
def partial_sends(ctx: Context) -> None:
    server = start(ctx)
    ada = join(ctx, server.address, "ada")
    bob = join(ctx, server.address, "bob", rcvbuf=4096)
    expect(ctx, ada, "* bob joined")
    shrink_send_buffer(ctx, server, "bob")
    burst_to_a_slow_reader(ctx, ada, bob)


def shrink_send_buffer(ctx: Context, server: Any, name: str) -> None:
    """Give the server's end of ``name``'s connection a tiny send buffer: then send() takes only part."""
    peers = [p for p in getattr(server, "clients", []) if getattr(p, "name", None) == name]
    if not peers:
        raise ctx.fail(f"{name} in server.clients, with peer.name set", "not there",
                       "keep every client in self.clients (under self.lock): the rules of exercise 6 read it")
    peers[0].sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_SNDBUF)
    ctx.step(f"the check gives the server's end of {name}'s connection a {SMALL_SNDBUF}-byte send buffer: each "
             "send() now takes only part of what is offered")


IDLE_CPU = 0.25  # seconds of CPU per second of waiting, at most, for a loop that sleeps in select()


@check("an idle event loop sleeps in select(): it does not spin", points=1,
       hint="watch a client for EVENT_WRITE only while its buffer holds something: an empty buffer is always "
            "writable, and select() then returns at once, for ever")
def no_spinning(ctx: Context) -> None:
    server = start(ctx)
    ada, bob = room(ctx, server.address, "ada", "bob")
    ada.send_line("hello")
    expect(ctx, bob, "<ada> hello")
    ctx.step("everything is sent; nobody speaks for 1 s, while the check measures this process's CPU time")
    wall, cpu = time.monotonic(), time.process_time()
    time.sleep(1.0)  # the measurement itself: CPU used over a second of silence
    used = (time.process_time() - cpu) / (time.monotonic() - wall)
    ctx.step(f"CPU time used while idle: {used * 100:.0f}% of one core")
    if used > IDLE_CPU:
        raise ctx.fail(f"an idle server to use (almost) no CPU: under {IDLE_CPU * 100:.0f}% of a core",
                       f"{used * 100:.0f}% of a core: the loop spins")


@check("a line over 4096 bytes: an error line, then that client alone is closed", points=1,
       hint="LineTooLong from the decoder: queue the error line, then finish(peer, 'protocol_error')")
def too_long(ctx: Context) -> None:
    ex06.too_long(ctx, start)


@check("stop() closes every client and ends the loop's thread", points=1,
       hint="the loop looks at the stop flag at least every ACCEPT_WAIT seconds; on the way out it closes "
            "every client and the selector")
def stopping(ctx: Context) -> None:
    quiet = start(ctx)
    ctx.call("stop() a server nobody has connected to", quiet.stop)
    left = server_threads(ctx)
    if left:
        raise ctx.fail("no thread of the server left after stop(), with no client to wake select()",
                       ", ".join(repr(t.name) for t in left),
                       "select() without a timeout waits until a socket is ready, for ever if none is: "
                       "select(timeout=ACCEPT_WAIT) lets the loop look at the stop flag")
    server = start(ctx)
    clients = [join(ctx, server.address, name) for name in ("ada", "bob")]
    ctx.call("stop()", server.stop)
    for client in clients:
        client.expect_closed()
    left = server_threads(ctx)
    if left:
        raise ctx.fail("no thread of the server left after stop()", ", ".join(repr(t.name) for t in left))


