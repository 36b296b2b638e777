"""Checks of exercise 6: names, and join and leave notices said exactly once.

The same checks serve exercise 8 (``SERVER`` names the class to test): the
rules of the room do not change when the I/O shell does.
"""

from __future__ import annotations

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
    expect(ctx, bob, lambda line: line.startswith("* Welcome, bob! Online: ada, bob"),
                    "'* Welcome, bob! Online: ada, bob. ...' (everyone online, in the order they joined)")
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
    nameless.close()
    ctx.step("a client that never gave a name came and went: nobody is told")
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
    ada, bob, carol = room(ctx, server.address, "ada", "bob", "carol")
    carol.send_line("/who")
    expect(ctx, carol, "* Online: ada, bob, carol")
    carol.send_line("/nope")
    expect(ctx, carol, error_line("unknown_type"), "'! unknown command /nope; ... (unknown_type)'")
    carol.send_line("   ")
    ctx.step("a blank line is ignored")
    carol.send_line("//slashes are text")
    expect(ctx, ada, "<carol> /slashes are text", "'<carol> /slashes are text' ('//' is an escaped '/')")
    expect(ctx, bob, "<carol> /slashes are text")


def racing(ctx: Context, start: Callable[[Context], Any]) -> None:
    server = start(ctx)
    ctx.step("10 rounds: two clients send the same name (in different cases) at the same moment")
    for round_ in range(10):
        a, b = connect(ctx, server.address, f"a{round_}"), connect(ctx, server.address, f"b{round_}")
        a.send_line(f"racer{round_}")
        b.send_line(f"RACER{round_}")
        answers = [ctx.recv_line(a, "an answer to its name"), ctx.recv_line(b, "an answer to its name")]
        wins = sum(line.startswith("* Welcome") for line in answers)
        taken = sum(error_line("name_taken")(line) for line in answers)
        if (wins, taken) != (1, 1):
            raise ctx.fail("one welcome and one name_taken", repr(answers),
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
