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

import getpass
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from .client import ChatClient, ChatConnectionError, ChatError
from .dialects.lines import render_line
from .protocol import REASON_WORDS

try:  # line editing and history of what you typed; absent on Windows
    import readline
except ImportError:  # pragma: no cover - platform dependent
    readline = None  # type: ignore[assignment]

PROMPT = "> "
HELP = (
    "Type to talk in your current room. /join ROOM, /leave, /rooms, /who [ROOM], "
    "/msg NAME TEXT (private), /history [N], /send NAME|#ROOM FILE, /accept ID, /decline ID, "
    "/quit (or Ctrl+C, Ctrl+D), /help."
)


def describe(event: dict[str, Any]) -> str:
    """One incoming event as text for a person to read."""
    kind = event["type"]
    if kind == "message":
        clock = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
        if "to" in event:  # private: set apart from room chatter
            return f"[{clock}] *{event['from']} -> {event['to']}* {event['text']}"
        room = event.get("room", "lobby")
        where = "" if room == "lobby" else f"[{room}] "
        return f"[{clock}] {where}<{event['from']}> {event['text']}"
    if kind == "disconnected":
        return f"* {event['reason']}"
    if kind == "reconnecting":
        return f"* Connection lost ({event['reason']}); reconnecting in {event['delay']:.1f} s (try {event['attempt']})..."
    if kind == "resumed":
        caught = f"{event['missed']} message{'s' if event['missed'] != 1 else ''} you missed follow" \
            if event["missed"] else "you missed nothing"
        return f"* Reconnected to {event['address']}: {caught}."
    if kind == "file_offer":
        return (f"* {event['from']} offers {event['name']} ({event['size']:,} bytes): "
                f"/accept {event['file']} or /decline {event['file']}")
    if kind == "file_sent":
        return f"* file {event['file']} is ready for: {', '.join(event['recipients']) or 'nobody'}"
    if kind in ("file_accepted", "file_declined"):
        return f"* {event['by']} {kind[5:]} file {event['file']}"
    # For a person, words: the codes (unknown_type, not_in_room, left) are for programs.
    if kind == "error":
        return f"! {event['message']}"
    if kind == "left":
        room = event.get("room")
        where = f" {room}" if room and room != "lobby" else (" the lobby" if event["reason"] == "left" else "")
        if event["reason"] == "left":
            return f"* {event['name']} left{where}"
        return f"* {event['name']} left{where}: {REASON_WORDS.get(event['reason'], event['reason'])}"
    return render_line(event)


#: Bytes a file name may have on disk (ext4, APFS and most others): longer
#: ones are cut, keeping the extension, rather than refused by the system.
NAME_BYTES = 255


def _fit(stem: str, suffix: str, room: int = NAME_BYTES) -> str:
    """``stem + suffix`` cut (at a character boundary) to ``room`` bytes of UTF-8."""
    if len(suffix.encode()) > room // 2:
        suffix = ""  # a "suffix" that long is no extension
    cut = stem.encode()[:room - len(suffix.encode())].decode("utf-8", "ignore")
    return cut + suffix


def save_file(event: dict[str, Any], folder: Path) -> str:
    """Write a received file into ``folder`` under a name that overwrites nothing.

    Returns what to tell the person -- never raises for a file it cannot
    save: this runs on the thread that prints everything else, which must
    carry on whatever one file does (a name too long, a full disk).
    """
    if not event["ok"]:
        return f"! file {event['file']} arrived damaged (SHA-256 mismatch): not saved"
    name = Path(event["name"] or event["file"]).name or event["file"]  # never a path from the network
    stem, suffix = Path(name).stem, Path(name).suffix
    try:
        target, n = folder / _fit(stem, suffix), 1
        while target.exists():
            target = folder / _fit(stem, f" ({n}){suffix}")
            n += 1
        target.write_bytes(event["data"])
    except OSError as exc:
        return f"! could not save {name} from {event['from']}: {exc.strerror or exc}"
    return f"* saved {name} from {event['from']} ({len(event['data']):,} bytes, SHA-256 checked) as {target}"


class Terminal:
    """Prints incoming events without garbling the line being typed."""

    def __init__(self, out: TextIO = sys.stdout, interactive: bool | None = None):
        self.out = out
        self.interactive = out.isatty() and sys.stdin.isatty() if interactive is None else interactive
        self.lock = threading.Lock()
        self.reading = False  # the prompt is on screen, input() waiting: redraw it after a message
        self.quitting = False  # the person asked to leave: nothing more to wait for

    def show(self, text: str) -> None:
        with self.lock:
            if self.interactive and self.reading:
                # Clear the half-typed line, print the message, redraw the prompt and what was typed.
                typed = readline.get_line_buffer() if readline else ""
                self.out.write(f"\r\x1b[2K{text}\n{PROMPT}{typed}")
            else:
                # No prompt on screen (before the first, or after /quit): a plain line, so
                # that no stray prompt is left glued to the shell's.
                self.out.write(text + "\n")
            self.out.flush()

    def read(self) -> str:
        with self.lock:
            self.reading = True
        try:
            line = input(PROMPT if self.interactive else "")
        finally:
            with self.lock:
                self.reading = False
        if self.interactive:
            # Erase the line just typed: the server's copy of the message,
            # in its place in the room's order, is printed instead.
            self.out.write("\x1b[1A\x1b[2K")
        return line


def run(host: str, port: int, name: str | None, terminal: Terminal | None = None,
        downloads: Path | None = None, tls: bool = False, cafile: str | None = None,
        also: tuple[tuple[str, int], ...] = ()) -> int:
    """Chat until /quit, Ctrl+C, end of input or the server going away.  Returns an exit status."""
    term = terminal or Terminal()
    printer: threading.Thread | None = None
    try:
        # A dropped connection, a restarted server: the client comes back by itself, and catches up.
        client = ChatClient(host, port, tls=tls, cafile=cafile, resume=True, also=also)
    except ChatConnectionError as exc:
        print(f"chatlab: {exc}", file=sys.stderr)
        return 1
    try:
        if not _register(client, name, term):
            return 1
        term.show(f"* Joined as {client.name}. {HELP}")
        room = {"current": "lobby"}  # where plain lines go; shared with the printer
        printer = threading.Thread(target=_print_events, args=(client, term, room, downloads or Path.cwd()),
                                   daemon=True)
        printer.start()
        while printer.is_alive():
            try:
                line = term.read()
            except EOFError:
                break
            if line.strip().lower() == "/quit":
                term.quitting = True
                break
            try:
                _command(client, line, room, term)
            except ValueError as exc:
                term.show(f"! {exc}")
            except OSError as exc:  # the connection, mostly: its words, not "[Errno 32]"
                term.show(f"! {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        if printer is not None:
            # What the server still had on its way (its answers to a script's
            # last lines, its goodbye) has come in by now: close() waits for
            # the server's FIN, and a TCP stream delivers everything before
            # it.  The printer stops by itself after the "disconnected" that
            # follows; wait for it, or the process exits with answers unshown.
            printer.join(timeout=5.0)
    return 0


def _command(client: ChatClient, line: str, room: dict[str, str], term: Terminal) -> None:
    """Carry out one typed line: a command, or text for the current room."""
    words = line.split(" ", 2) if line.startswith("/") and not line.startswith("//") else []
    command = words[0].lower() if words else ""
    args = [w for w in words[1:] if w]
    if not command:
        if line.strip():
            client.send({"type": "say", "text": line[1:] if line.startswith("//") else line,
                         "room": room["current"]})
    elif command == "/help":
        term.show(HELP)
    elif command in ("/who", "/rooms", "/history"):
        msg: dict[str, Any] = {"type": command[1:]}
        if command == "/who" and args:
            msg["room"] = args[0]
        if command == "/history":
            msg.update(room=room["current"], limit=int(args[0]) if args else 20)
        client.send(msg)
    elif command == "/join" and args:
        client.send({"type": "join", "room": args[0]})
        room["current"] = args[0].lstrip("#")  # the next line goes there, even if typed at once
    elif command == "/leave":
        client.send({"type": "leave", "room": args[0] if args else room["current"]})
    elif command == "/msg" and len(args) == 2:
        client.send({"type": "dm", "to": args[0], "text": args[1]})
    elif command == "/send" and len(args) == 2:
        target, path = args[0], Path(args[1]).expanduser()
        data = _read_file(path)
        # Nothing is said here: the server answers, either that the file is
        # ready for its recipients (file_sent) or why it is not (nobody of
        # that name, too large...), and that answer is what is shown.
        if target.startswith("#"):
            client.send_file(data, path.name, room=target[1:])
        else:
            client.send_file(data, path.name, to=target)
    elif command == "/accept" and args:
        client.accept_file(args[0], wait=False)
    elif command == "/decline" and args:
        client.decline_file(args[0])
    else:
        raise ValueError(f"not understood: {line.strip()[:40]} (try /help)")


def _read_file(path: Path) -> bytes:
    """The bytes of a file to send, or a ValueError that says plainly what is wrong."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"there is no file {path} (from the folder {Path.cwd()})") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder: /send sends one file") from None
    except PermissionError:
        raise ValueError(f"you may not read {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


def _register(client: ChatClient, name: str | None, term: Terminal) -> bool:
    """Ask for a name (and, where it has an account, its password) until the server accepts one."""
    password: str | None = None
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
            client.register(name, password=password)
            return True
        except ChatError as exc:
            if exc.code == "auth_required" and password is None:
                password = _ask_password(name, term)
                if password is None:
                    return False
                continue  # the same name again, with its password
            print(f"chatlab: {exc.message}", file=sys.stderr)
            if not term.interactive:
                return False
            name, password = None, None


def _ask_password(name: str, term: Terminal) -> str | None:
    """The password for ``name``: typed without echo, or from CHATLAB_PASSWORD in scripts."""
    if not term.interactive:
        if "CHATLAB_PASSWORD" in os.environ:
            return os.environ["CHATLAB_PASSWORD"]
        print(f"chatlab: {name} needs a password on this server: run chatlab chat in a terminal, "
              "or set CHATLAB_PASSWORD", file=sys.stderr)
        return None
    try:
        return getpass.getpass(f"Password for {name}: ")
    except EOFError:
        return None


def _print_events(client: ChatClient, term: Terminal, room: dict[str, str], downloads: Path) -> None:
    for event in client.events():
        kind = event["type"]
        if kind == "joined" and event.get("name") == client.name and "members" in event:
            room["current"] = event["room"]  # we joined a room: our lines go there now
        elif kind == "left" and event.get("name") == client.name and event.get("room") == room["current"]:
            room["current"] = "lobby"
        if kind == "file_received":
            try:
                term.show(save_file(event, downloads))
            except Exception as exc:  # whatever one file does, the next events are still shown
                term.show(f"! could not save file {event.get('file')}: {exc}")
            continue
        if kind == "disconnected" and term.quitting:
            continue  # the person left: the shell's prompt comes next, nothing more to say
        term.show(describe(event))
        if kind == "disconnected" and term.interactive:
            term.show("* The connection has ended: press Enter to exit.")
