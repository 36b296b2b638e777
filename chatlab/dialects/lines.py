"""Lines: the dialect of people -- text lines typed into ``nc`` or ``telnet``.

A person needs no program to chat: each line they type ends in LF (or
CRLF), the first one is their name, and later ones are chat or ``/``
commands (docs/protocol.md, section 4).  Each line is turned into the very
message a frames client would have sent, so both kinds of client share every
rule in the chat core; and each server message is rendered as a line a
person can read.

What only a person needs lives here, not in the core: that the first line
is a name (until a ``welcome`` has been said), that the line after a
password prompt is the password, and how a message reads on a terminal.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, ClassVar

from ..framing import LineDecoder
from ..limits import Limits
from ..errors import ProtocolError
from ..protocol import AUTH_REQUIRED, BAD_FRAME, UNKNOWN_TYPE
from .base import Framed, Message

class LinesDialect(Framed):
    name: ClassVar[str] = "lines"
    hears_own: ClassVar[bool] = False  # the person has just seen what they typed
    keepalive: ClassVar[bool] = False  # a ping would only be noise on their screen

    def __init__(self, limits: Limits):
        super().__init__(limits, LineDecoder(limits.max_line))
        self.registered = False  # until the server has said welcome, a line is a name
        self.login: str | None = None  # the name whose password the next line is

    def parse(self, unit: bytes) -> Message | None:
        if self.login is not None:
            name, self.login = self.login, None
            try:
                password = unit.decode("utf-8")
            except UnicodeDecodeError:
                password = ""  # cannot be right; answered like any wrong password
            return {"type": "hello", "name": name, "password": password}
        return parse_line(unit, self.registered)

    def encode(self, msg: Message) -> bytes:
        # What is said to this one person also tells the dialect where it is:
        # after a welcome, lines are chat; after a password prompt, the next
        # line is the password.
        kind = msg["type"]
        if kind == "welcome":
            self.registered = True
        elif kind == "error" and msg.get("code") == AUTH_REQUIRED and "name" in msg:
            self.login = msg["name"]
            return (f"! type the password for {msg['name']} on the next line (it shows as you type; "
                    f"'chatlab chat' hides it)\n").encode()
        return self.encode_shared(msg)

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        return (render_line(msg) + "\n").encode("utf-8")


FILE_COMMANDS = ("/accept", "/decline", "/send")  # chatlab chat's; a file cannot travel as lines


def parse_line(line: bytes, registered: bool) -> Message | None:
    """Turn one typed line into the message a frames client would have sent.

    Returns None for a blank line, which is ignored.

    >>> parse_line(b"/msg bob hi there", registered=True)
    {'type': 'dm', 'to': 'bob', 'text': 'hi there'}
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(BAD_FRAME, f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    if not registered:
        return {"type": "hello", "name": text.strip()}
    if not text.strip():
        return None
    if text.startswith("//"):
        return {"type": "say", "text": text[1:]}  # "//path" sends the text "/path"
    if not text.startswith("/"):
        return {"type": "say", "text": text}
    command, _, rest = text.partition(" ")
    command, rest = command.lower(), rest.strip()
    if command == "/rooms" and rest:
        return {"type": "rooms", "after": rest}  # the next page of a long listing
    if command in ("/quit", "/rooms", "/ping", "/help"):
        return {"type": {"/quit": "bye"}.get(command, command[1:])}
    if command == "/who":
        return {"type": "who", "room": rest} if rest else {"type": "who"}
    if command == "/join" and rest:
        return {"type": "join", "room": rest}
    if command == "/leave":
        return {"type": "leave", "room": rest} if rest else {"type": "leave"}
    if command == "/msg" and len(rest.split(" ", 1)) == 2:
        to, words = rest.split(" ", 1)
        return {"type": "dm", "to": to, "text": words}
    if command == "/history":
        # isdecimal, not isdigit: "²" is a digit that int() refuses.
        if rest and not rest.isdecimal():
            raise ProtocolError(BAD_FRAME, "usage: /history [N]")
        return {"type": "history", "limit": int(rest)} if rest else {"type": "history"}
    if command in ("/join", "/msg"):
        raise ProtocolError(BAD_FRAME, f"usage: {command} {'ROOM' if command == '/join' else 'NAME TEXT'}")
    if command in FILE_COMMANDS:  # a frames client's commands: say so, rather than "unknown"
        raise ProtocolError(UNKNOWN_TYPE, f"{command} needs a chatlab client: files travel only to and from "
                            "'chatlab chat', which can send and accept them (nc cannot)")
    raise ProtocolError(UNKNOWN_TYPE, f"unknown command {command[:40]}; try /help")


def _in_room(msg: Message) -> str:
    """" in ROOM" for rooms other than the lobby, where most chat happens."""
    room = msg.get("room")
    return f" {room}" if room and room != "lobby" else ""


def _listed(msg: Message, field: str) -> str:
    """Names, and how many more there are when the server cut the list to fit ("count")."""
    more = msg.get("count", 0) - len(msg[field])
    return ", ".join(msg[field]) + (f" and {more:,} more" if more > 0 else "")


def _clock(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


#: Why someone left, in words (the ``closing`` reasons of protocol.md section 3.2).
REASON_WORDS = {
    "quit": "said goodbye",
    "disconnected": "lost the connection",
    "too_slow": "too slow to keep up",
    "flooding": "sent too much too fast",
    "idle": "silent too long",
    "register_timeout": "gave no name in time",
    "protocol_error": "sent something broken",
    "server_error": "a fault in the server",
    "shutdown": "the server stopped",
    "auth_failed": "wrong passwords",
    "server_lost": "their server was lost",
    "kicked": "was made to leave",
}
_REASONS = {words: reason for reason, words in REASON_WORDS.items()}


def render_line(msg: dict[str, Any]) -> str:
    """How a server message reads to a person.

    >>> render_line({"type": "message", "id": 7, "from": "ada", "text": "hi", "room": "lobby"})
    '<ada> hi'
    """
    kind = msg["type"]
    if kind == "message":
        if "to" in msg:
            return f"*{msg['from']}* (private) {msg['text']}"
        room = msg.get("room")
        prefix = f"[{room}] " if room and room != "lobby" else ""
        return f"{prefix}<{msg['from']}> {msg['text']}"
    if kind == "joined":
        if "members" in msg:  # the joiner's own confirmation
            return f"* You are in {msg['room']}: {_listed(msg, 'members')}"
        return f"* {msg['name']} joined{_in_room(msg)}"
    if kind == "left":
        if msg["reason"] == "left":  # left the room by choice: the words say it all
            return f"* {msg['name']} left{_in_room(msg) or ' the lobby'}"
        return f"* {msg['name']} left{_in_room(msg)} ({REASON_WORDS.get(msg['reason'], msg['reason'])})"
    if kind == "welcome":
        more = msg.get("count", 0) - len(msg["users"])  # a large lobby lists only those announced
        online = ", ".join(msg["users"]) + (f" and {more:,} more" if more > 0 else "")
        return (
            f"* Welcome, {msg['name']}! Online: {online}."
            " Type a message and press Enter; /help lists commands, /quit leaves."
        )
    if kind == "users":
        where = f"In {msg['room']}" if msg.get("room") else "Online"
        return f"* {where}: {_listed(msg, 'users')}"
    if kind == "rooms":
        listing = ", ".join(f"{r['name']} ({r.get('count', len(r['members']))})" for r in msg["rooms"])
        more = f"; more: /rooms {msg['rooms'][-1]['name']}" if msg.get("more") and msg["rooms"] else ""
        return f"* Rooms: {listing}{more}"
    if kind == "history":
        count = len(msg["messages"])
        lines = [f"--- history of {msg['room']}: {count} message{'' if count == 1 else 's'} ---"]
        lines += [f"[{_clock(m['ts'])}] <{m['from']}> {m['text']}" for m in msg["messages"]]
        end = "--- end of history (there is more than one answer holds) ---" if msg.get("more") else "--- end of history ---"
        return "\n".join(lines + [end])
    if kind == "help":
        return f"* {msg['text']}"
    if kind == "file_offer":
        return (f"* {msg['from']} offers the file {msg['name']} ({msg['size']:,} bytes, id {msg['file']});"
                " files travel only to a chatlab client: to take it, join with 'chatlab chat' (nc cannot)")
    if kind == "pong":
        return "* pong"
    if kind == "error":
        # Words for a person; the code (name_taken, ...) is for programs, in frames.
        return f"! {msg['message']}"
    if kind == "closing":
        return f"* Server closing the connection: {msg['message']}"
    if kind == "notice":
        return f"* {msg['message']}"
    return f"* {json.dumps(msg, ensure_ascii=False)}"


# ---------------------------------------------------------- the client's side
#
# The same dialect seen from the other end: what a person types for each
# message (the inverse of ``parse_line``), and what a rendered line means
# (the inverse of ``render_line``).  Bots that play people, and the
# recorder that reads their screens, use these.


def line_for(msg: Message) -> str:
    """The line a person would type to send ``msg``.

    >>> line_for({"type": "say", "text": "/not a command"}), line_for({"type": "who", "room": "games"})
    ('//not a command', '/who games')
    """
    kind = msg["type"]
    if kind == "hello":
        return str(msg["name"])
    if kind == "say":
        text = str(msg["text"])
        return "/" + text if text.startswith("/") else text
    if kind == "dm":
        return f"/msg {msg['to']} {msg['text']}"
    if kind in ("join", "who", "leave", "rooms") and (msg.get("room") or msg.get("after")):
        return f"/{kind} {msg.get('room') or msg.get('after')}"
    if kind in ("join", "who", "leave"):
        return f"/{kind} {msg['room']}" if msg.get("room") else f"/{kind}"
    if kind == "history":
        return f"/history {msg['limit']}" if "limit" in msg else "/history"
    if kind in ("rooms", "ping", "help"):
        return f"/{kind}"
    if kind == "bye":
        return "/quit"
    raise ValueError(f"a person cannot type a {kind!r} message")


def parse_rendered(line: str) -> Message:
    """A line from the server, in the shape of the matching frame (the inverse of ``render_line``).

    >>> parse_rendered("<ada> hi there")
    {'type': 'message', 'from': 'ada', 'text': 'hi there'}
    """
    if m := re.fullmatch(r"(?:\[([^\]]*)\] )?<([^>]*)> (.*)", line):
        return {"type": "message", "from": m[2], "text": m[3], **({"room": m[1]} if m[1] else {})}
    if m := re.fullmatch(r"\*([^*]+)\* \(private\) (.*)", line):
        return {"type": "message", "from": m[1], "text": m[2], "private": True}
    if m := re.fullmatch(r"\* (\S+) joined(?: (\S+))?", line):
        return {"type": "joined", "name": m[1], **({"room": m[2]} if m[2] else {})}
    if m := re.fullmatch(r"\* (\S+) left(?: (\S+))? \(([^)]*)\)", line):
        reason = _REASONS.get(m[3], m[3])  # words back to the reason ("(quit)" from a course server stays)
        return {"type": "left", "name": m[1], "reason": reason, **({"room": m[2]} if m[2] else {})}
    if m := re.fullmatch(r"\* (\S+) left (the lobby|\S+)", line):  # left by choice (reason "left")
        return {"type": "left", "name": m[1], "reason": "left", **({"room": m[2]} if m[2] != "the lobby" else {})}
    if m := re.match(r"\* Welcome, ([^!]+)!", line):
        return {"type": "welcome", "name": m[1]}
    if m := re.fullmatch(r"\* Online: (.*)", line):
        return {"type": "users", "users": [u for u in m[1].split(", ") if u]}
    if line == "* pong":
        return {"type": "pong"}
    if m := re.fullmatch(r"! (.*?)(?: \((\w+)\))?", line):  # a course server may add "(code)"
        return {"type": "error", "code": m[2] or "error", "message": m[1]}
    if m := re.fullmatch(r"\* Server closing the connection: (.*)", line):
        return {"type": "closing", "message": m[1]}
    return {"type": "line", "text": line}
