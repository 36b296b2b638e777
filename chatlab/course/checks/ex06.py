"""Checks of exercise 6: names, and join and leave notices said exactly once.

The same checks serve exercise 8 (``SERVER`` names the class to test): the
rules of the room do not change when the I/O shell does.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

from ..harness import Context, check
from .common import connect, error_line, expect, join, reset, room, welcome

MODULE, SERVER = "ex06_names", "ChatServer"


def start(ctx: Context, module: str = MODULE, server: str = SERVER, **kwargs: Any) -> Any:
    ex = ctx.load(module)
    return ctx.start(getattr(ex, server)(**kwargs))


def welcome_and_online(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    ada = join(ctx, server.address, "ada")
    bob = connect(ctx, server.address, "bob")
    bob.send_line("bob")
    line = ctx.recv_line(bob, "the welcome")
    if line.startswith("* Welcome, bob! Online: ada.") or line.startswith("* Welcome, bob! Online: ada "):
        raise ctx.fail("'* Welcome, bob! Online: ada, bob. ...' (everyone online, in the order they joined)", line,
                       "the welcome's list leaves out the newcomer: note who is online *after* adding the name")
    if not line.startswith("* Welcome, bob! Online: ada, bob"):
        raise ctx.fail("'* Welcome, bob! Online: ada, bob. ...' (everyone online, in the order they joined)", line)
    expect(ctx, ada, "* bob joined")


def chat(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    ada, bob, carol = room(ctx, server.address, "ada", "bob", "carol")
    bob.send_line("hi all")
    expect(ctx, ada, "<bob> hi all")
    expect(ctx, carol, "<bob> hi all")
    ctx.step("ada answers: bob's next line must be ada's, not his own")
    ada.send_line("hi bob")
    expect(ctx, bob, "<ada> hi bob", "'<ada> hi bob' (and no echo of his own line before it)")
    expect(ctx, carol, "<ada> hi bob")


def unique_names(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    ada = join(ctx, server.address, "ada")
    other = connect(ctx, server.address, "newcomer")
    for attempt in ("ada", "ADA", "Ada"):
        other.send_line(attempt)
        expect(ctx, other, error_line("name_taken"), f"'! the name {attempt} is taken; ... (name_taken)'")
    other.send_line("ada2")
    welcome(ctx, other, "ada2")
    expect(ctx, ada, "* ada2 joined", "'* ada2 joined' -- and nothing about the names that were refused")


def bad_names(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    ada = join(ctx, server.address, "ada")
    bob = join(ctx, server.address, "bob")
    other = connect(ctx, server.address, "newcomer")
    for attempt in ("", "two words", "x" * 33, "ada!", "<ada>"):
        other.send_line(attempt)
        expect(ctx, other, error_line("bad_name"), f"for the name {attempt!r}: '! ... (bad_name)'")
    ctx.step("ada chats while the newcomer has no name yet: the newcomer must not hear it")
    ada.send_line("only for named people")
    expect(ctx, bob, "<ada> only for named people")
    other.send_line("ok_name")
    welcome(ctx, other, "ok_name")


def leaving_once(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    ada, bob, carol = room(ctx, server.address, "ada", "bob", "carol")
    bob.send_line("/quit")
    expect(ctx, bob, lambda line: line.startswith("* "), "a goodbye line ('* Server closing the connection: goodbye')")
    bob.expect_closed()
    expect(ctx, ada, "* bob left (quit)")
    carol.close()
    ctx.step("carol closed her connection without a word")
    expect(ctx, ada, "* carol left (disconnected)")
    nameless = connect(ctx, server.address, "nameless")
    # Half-close, then wait for the server to close its side: its thread has
    # then run on_close, so anything it wrongly announced reaches ada before
    # dave joins (a plain close() left that to a race between two threads).
    nameless.sock.shutdown(socket.SHUT_WR)
    ctx.step("a client that never gave a name came and went (its FIN; the server closed too): nobody is told")
    nameless.expect_closed()
    nameless.close()
    dave = join(ctx, server.address, "dave")
    reset(ctx, dave)
    expect(ctx, ada, "* dave joined",
                    "'* dave joined' -- no second notice for bob or carol, none for the nameless client")
    expect(ctx, ada, "* dave left (disconnected)", "'* dave left (disconnected)' after a reset")
    erin = join(ctx, server.address, "erin")
    expect(ctx, ada, "* erin joined", "'* erin joined' and nothing more about dave")
    erin.send_line("/who")
    expect(ctx, erin, "* Online: ada, erin", "'* Online: ada, erin' -- everyone who left is gone from the list")


def commands(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    zoe, ada, mia = room(ctx, server.address, "zoe", "ada", "mia")  # joined in an order that is not the alphabet's
    mia.send_line("/who")
    line = ctx.recv_line(mia, "'* Online: zoe, ada, mia' (in the order they joined)")
    if line == "* Online: ada, mia, zoe":
        raise ctx.fail("'* Online: zoe, ada, mia' (in the order they joined)", line,
                       "/who lists names in the order people joined (self.names keeps it: dicts keep their order), "
                       "not sorted")
    if line != "* Online: zoe, ada, mia":
        raise ctx.fail("'* Online: zoe, ada, mia' (in the order they joined)", line)
    mia.send_line("/nope")
    expect(ctx, mia, error_line("unknown_type"), "'! unknown command /nope; ... (unknown_type)'")
    mia.send_line("   ")
    ctx.step("a blank line is ignored")
    mia.send_line("//slashes are text")
    expect(ctx, zoe, "<mia> /slashes are text", "'<mia> /slashes are text' ('//' is an escaped '/')")
    expect(ctx, ada, "<mia> /slashes are text")


class SlowedLock:
    """``server.lock``, slowed: every release gives the other threads a moment to run first.

    A race between two holds of a lock needs another thread to run in the
    gap between them.  On an idle machine that gap is a few microseconds
    and almost never hit; a busy classroom server hits it.  Sleeping after
    each release makes the gap as wide as on a busy machine, every time.  A
    server that tests and inserts under ONE hold has no gap to widen.
    """

    GAP = 0.005  # seconds after each release

    def __init__(self, lock: Any):
        self.lock = lock

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self.lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self.lock.release()
        time.sleep(self.GAP)

    def __enter__(self) -> "SlowedLock":
        self.lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self.lock.locked()


def racing(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    if hasattr(server, "lock"):
        ctx.step(f"the check slows server.lock: after each release, the other threads get {SlowedLock.GAP * 1000:g} ms "
                 "to run first (as on a busy machine)")
        server.lock = SlowedLock(server.lock)
    rounds = 10
    ctx.step(f"{rounds} rounds: two clients send the same name (in different cases) at the same moment")
    for round_ in range(rounds):
        a, b = connect(ctx, server.address, f"a{round_}"), connect(ctx, server.address, f"b{round_}")
        together = threading.Barrier(2)

        def claim(client: Any, name: str) -> None:
            together.wait(5)
            client.sock.sendall(f"{name}\n".encode())

        racers = [threading.Thread(target=claim, args=(a, f"racer{round_}"), name="check-racer"),
                  threading.Thread(target=claim, args=(b, f"RACER{round_}"), name="check-racer")]
        for t in racers:
            t.start()
        for t in racers:
            t.join(5)
        answers = [ctx.recv_line(a, "an answer to its name"), ctx.recv_line(b, "an answer to its name")]
        wins = sum(line.startswith("* Welcome") for line in answers)
        taken = sum(error_line("name_taken")(line) for line in answers)
        if (wins, taken) != (1, 1):
            raise ctx.fail(f"round {round_ + 1}: one welcome and one name_taken", repr(answers),
                           "both won: test the name and insert it under ONE hold of self.lock -- between two "
                           "holds, the other thread can test the same name" if wins == 2 else
                           "test the name and insert it under ONE hold of self.lock")
        a.close()
        b.close()


def too_long(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    ada, bob = room(ctx, server.address, "ada", "bob")
    bob.send(b"x" * 5000, "5000 bytes with no newline")
    expect(ctx, bob, error_line("too_large"), "'! a line has at most 4096 bytes (too_large)'")
    bob.expect_closed()
    expect(ctx, ada, "* bob left (protocol_error)")


def _local(function: Callable[[Context, Callable[[Context], Any]], None]) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        function(ctx, start)
    return run


welcome_check = check("banner, name, welcome: the welcome says who is online, in join order", points=2,
                      hint="register(): after a good name, '* Welcome, NAME! Online: a, b. ...' to the newcomer "
                           "and '* NAME joined' to the others")(_local(welcome_and_online))
chat_check = check("'* bob joined' and '<bob> text' reach the others, never bob himself", points=2,
                   hint="chat: self.broadcast(f\"<{peer.name}> {text}\\n\".encode(), exclude=peer)")(_local(chat))
unique_check = check("names are unique ignoring case: ADA is taken when ada is here", points=2,
                     hint="keep names by name.casefold(); test and insert holding self.lock")(_local(unique_names))
bad_check = check("bad names are refused with a reason and another try; no chat before a name", points=1,
                  hint="check_name(name) gives the reason: answer '! REASON; try another name (bad_name)'")(_local(bad_names))
leave_check = check("leaving is announced exactly once: /quit, a close, a reset; never for the nameless", points=2,
                    hint="on_close(): remove the name under the lock only if it is there, and only then "
                         "announce '* NAME left (REASON)'")(_local(leaving_once))
commands_check = check("/who in join order, unknown commands, blank lines and //", points=2,
                       hint="'/who' -> '* Online: a, b'; another '/x' -> '! unknown command ... (unknown_type)'; "
                            "a blank line: nothing; '//x' is the text '/x'")(_local(commands))
race_check = check("two clients racing for one name: exactly one wins", points=1,
                   hint="the test (is the name taken?) and the insert must happen under one hold of self.lock")(_local(racing))
long_check = check("a line over 4096 bytes: an error line, the connection closed, the room told", points=1,
                   hint="serve() turns LineTooLong into '! ... (too_large)', and on_close(peer, 'protocol_error')")(_local(too_long))
