"""Helpers shared by the checks of the chat servers (exercises 5, 6, 8, 9): lines mode, as people speak it."""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
from typing import Any, Callable

from ...testing import RawClient
from ..harness import Context, short


def banner(ctx: Context, client: RawClient) -> str:
    # An exercise may know better why no banner came (exercise 8: the buffer never written).
    return ctx.expect_line(client, lambda line: line.startswith("chatlab/"),
                           "the banner line, 'chatlab/1 ...'",
                           ctx.banner_hint
                           or "the server speaks first: send BANNER as soon as the client is connected")


def connect(ctx: Context, address: tuple[str, int], label: str, **kwargs: Any) -> RawClient:
    """A lines-mode client past the banner."""
    client = ctx.client(address, label, **kwargs)
    banner(ctx, client)
    return client


def join(ctx: Context, address: tuple[str, int], name: str, **kwargs: Any) -> RawClient:
    """A lines-mode client, registered as ``name``."""
    rosters = ctx.__dict__.setdefault("rosters", {})
    roster = rosters.setdefault(tuple(address), [])
    client = connect(ctx, address, name, **kwargs)
    client.earlier = set(roster)  # type: ignore[attr-defined]
    client.send_line(name)
    welcome(ctx, client, name)
    roster.append(name)
    return client


def room(ctx: Context, address: tuple[str, int], *names: str, **kwargs: Any) -> list[RawClient]:
    """Clients joined one after another; before each next one, everyone present has heard
    "* X joined".  (With a thread per client, two join notices sent by two threads may
    arrive in either order: only one join at a time gives the checks an order to expect.)"""
    clients: list[RawClient] = []
    for name in names:
        client = join(ctx, address, name, **kwargs)
        for earlier in clients:
            expect(ctx, earlier, f"* {name} joined")
        clients.append(client)
    return clients


def expect(ctx: Context, client: RawClient, expected: str | Callable[[str], bool], what: str = "",
           hint: str | None = None) -> str:
    """The next line must be ``expected``.

    One thing may come first: "* X joined" about someone who registered
    *before* this client.  A server that picks who to tell in a second hold
    of its lock, after the insert, sends that notice late, once in a while;
    no check could catch it reliably, so none fails on it now and then.
    """
    test = expected if callable(expected) else (lambda line: line == expected)
    earlier: set[str] = getattr(client, "earlier", set())

    def late_notice(line: str) -> bool:
        match = JOINED.match(line)
        return match is not None and match.group(1) in earlier

    while True:
        line = ctx.recv_line(client, what or repr(expected), hint)
        if test(line):
            return line
        if late_notice(line):
            ctx.step(f"({client.label}: a late notice about someone who joined before it: allowed)")
            continue
        if line == f"* {client.label} joined":
            hint = (f"{client.label} was told '* {client.label} joined': note who else is there *before* adding "
                    "the newcomer to self.names -- the others hear the notice, the newcomer gets the welcome")
        raise ctx.fail(f"{client.label} receives {what or repr(expected)}", short(line, 200), hint)


def welcome(ctx: Context, client: RawClient, name: str) -> str:
    """The welcome line.  A notice that someone else joined may come first: the
    threads of two clients joining one after the other race, legitimately."""
    expected = f"* Welcome, {name}!"
    hint = "after a good name: the welcome line to the newcomer, '* Welcome, NAME! Online: ...'"
    while True:
        line = ctx.expect_line(client, lambda line: line.startswith(expected) or JOINED.match(line) is not None,
                               f"'{expected} Online: ...'", hint)
        if line.startswith(expected):
            return line


JOINED = re.compile(r"^\* (\S+) joined$")


def error_line(code: str) -> Callable[[str], bool]:
    return lambda line: line.startswith("!") and line.rstrip().endswith(f"({code})")


def reset(ctx: Context, client: RawClient) -> None:
    """Close with a TCP reset (RST) instead of a polite FIN: what a crashed program does."""
    ctx.step(f"{client.label}: close with a reset (SO_LINGER 0)")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("HH" if os.name == "nt" else "ii", 1, 0))
    client.close()


def in_background(ctx: Context, name: str, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` in a thread of the check; its failure is reported when joined with ``finish``."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"check-{name}", daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def finish(ctx: Context, thread: threading.Thread, what: str, timeout: float = 10.0) -> None:
    thread.join(timeout)
    if thread.is_alive():
        raise ctx.fail(f"{what} to finish within {timeout:g} s", "it was still running")
    if thread.errors:  # type: ignore[attr-defined]
        raise thread.errors[0]  # type: ignore[attr-defined]


def server_threads(ctx: Context) -> list[threading.Thread]:
    """Threads the student's code started and left running (the check's own are named check-...)."""
    return [t for t in ctx.new_threads() if not t.name.startswith("check-")]
