"""The terminal chat client behind ``chatlab chat``.

Two things write to one terminal: the person typing, and the receive
thread printing what arrives.  Printed naively, an incoming message lands
in the middle of the half-typed line.  So, on a terminal, each incoming
message first clears the current line (``\\r`` and the ANSI "erase line"
sequence), prints itself, then redraws the prompt and whatever had been
typed so far (which ``readline`` knows).  Piped input (not a terminal)
gets plain output with no escape sequences.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from .client import ChatClient, ChatConnectionError, ChatError
from .protocol import render_line

try:  # line editing and history of what you typed; absent on Windows
    import readline
except ImportError:  # pragma: no cover - platform dependent
    readline = None  # type: ignore[assignment]

PROMPT = "> "
HELP = "Commands: /who lists who is here, /quit leaves (so does Ctrl+C or Ctrl+D), /help shows this."


def describe(event: dict[str, Any]) -> str:
    """One incoming event as a line for a person to read."""
    if event["type"] == "message":
        clock = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
        return f"[{clock}] <{event['from']}> {event['text']}"
    if event["type"] == "disconnected":
        return f"* {event['reason']}"
    return render_line(event)


class Terminal:
    """Prints incoming events without garbling the line being typed."""

    def __init__(self, out: TextIO = sys.stdout, interactive: bool | None = None):
        self.out = out
        self.interactive = out.isatty() and sys.stdin.isatty() if interactive is None else interactive
        self.lock = threading.Lock()

    def show(self, text: str) -> None:
        with self.lock:
            if self.interactive:
                typed = readline.get_line_buffer() if readline else ""
                self.out.write(f"\r\x1b[2K{text}\n{PROMPT}{typed}")
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def read(self) -> str:
        line = input(PROMPT if self.interactive else "")
        if self.interactive:
            # Erase the line just typed: the server's copy of the message,
            # in its place in the room's order, is printed instead.
            self.out.write("\x1b[1A\x1b[2K")
        return line


def run(host: str, port: int, name: str | None, terminal: Terminal | None = None) -> int:
    """Chat until /quit, Ctrl+C, end of input or the server going away.  Returns an exit status."""
    term = terminal or Terminal()
    try:
        client = ChatClient(host, port)
    except ChatConnectionError as exc:
        print(f"chatlab: {exc}", file=sys.stderr)
        return 1
    try:
        if not _register(client, name, term):
            return 1
        term.show(f"* Joined as {client.name}. {HELP}")
        printer = threading.Thread(target=_print_events, args=(client, term), daemon=True)
        printer.start()
        while printer.is_alive():
            try:
                line = term.read()
            except EOFError:
                break
            command = line.strip().lower()
            if command == "/quit":
                break
            if command == "/help":
                term.show(HELP)
            elif command == "/who":
                client.who()
            elif line.strip():
                client.say(line)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def _register(client: ChatClient, name: str | None, term: Terminal) -> bool:
    """Ask for a name until the server accepts one."""
    while True:
        if name is None:
            if not term.interactive:
                print("chatlab: give a name with --name", file=sys.stderr)
                return False
            try:
                name = input("Your name: ")
            except EOFError:
                return False
        try:
            client.register(name)
            return True
        except ChatError as exc:
            print(f"chatlab: {exc.message}", file=sys.stderr)
            if not term.interactive:
                return False
            name = None


def _print_events(client: ChatClient, term: Terminal) -> None:
    for event in client.events():
        term.show(describe(event))
        if event["type"] == "disconnected" and term.interactive:
            term.show("* Press Enter to exit.")
