"""The chatlab wire protocol: names, text, messages and the two wire modes.

``docs/protocol.md`` is the specification; this module is its executable
form.  Like ``framing``, it never touches a socket.

One TCP port serves two kinds of client.  The server speaks first, with a
one-line banner.  The client's first byte then picks the mode for the rest
of the connection:

* ``0x00`` -- **frames** mode: length-prefixed frames, each one UTF-8 JSON
  object.  The 0x00 is simply the first byte of the first frame's 4-byte
  length header, which always starts with 0x00 because frames are small.
* anything else -- **lines** mode: a person typing into ``nc`` or ``telnet``.
  The first line is their name; later lines are chat, or ``/`` commands.
"""

from __future__ import annotations

import json
import time
import unicodedata
from typing import Any

from .framing import FrameDecoder, LineDecoder, encode_frame
from .limits import Limits

PROTOCOL_VERSION = 1
BANNER = (
    f"chatlab/{PROTOCOL_VERSION} Welcome! Type your name and press Enter."
    " (chatlab clients: send frames)\n"
).encode()


def refusal_line(reason: str, message: str) -> bytes:
    """What a refused connection gets in place of the banner, before it is closed.

    The server refuses before it knows the client's mode (the server is
    full, too many connections from one address...), so the refusal is one
    line that a person and a program can both read:
    ``chatlab/1 closing REASON: MESSAGE``.
    """
    return f"chatlab/{PROTOCOL_VERSION} closing {reason}: {message}\n".encode()

FRAMES = "frames"
LINES = "lines"

# Error codes (the "code" field of an error message).
NAME_TAKEN = "name_taken"  # someone registered that name (ignoring case) first
BAD_NAME = "bad_name"  # not 1-32 letters, digits, "_", "-" or "."
NOT_REGISTERED = "not_registered"  # chat before hello
ALREADY_REGISTERED = "already_registered"  # a second hello
BAD_FRAME = "bad_frame"  # not UTF-8, not JSON, not an object, fields missing or mistyped
TOO_LARGE = "too_large"  # a frame, line or text over its limit
UNKNOWN_TYPE = "unknown_type"  # a message type (or / command) the server does not know
BAD_TEXT = "bad_text"  # a message with no text left to show
UNKNOWN_USER = "unknown_user"  # a private message to a name nobody has
BAD_ROOM = "bad_room"  # a room name that breaks the rules for names
NOT_IN_ROOM = "not_in_room"  # speaking in, leaving or reading a room you are not in
TOO_MANY_ROOMS = "too_many_rooms"  # over the rooms-per-user or rooms-per-server limit
RATE_LIMITED = "rate_limited"  # over the message rate limit: that message was dropped
AUTH_REQUIRED = "auth_required"  # that name has an account: hello needs its password
AUTH_FAILED = "auth_failed"  # wrong name or password (one answer for both), after a delay

# Each client message: the fields it must carry, then the fields it may carry,
# with their JSON types.  Other fields are allowed (and ignored), so that
# newer clients can talk to older servers.
CLIENT_MESSAGES: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "hello": ({"name": str}, {"password": str}),  # a password only for a name with an account
    "say": ({"text": str}, {"room": str}),
    "dm": ({"to": str, "text": str}, {}),
    "join": ({"room": str}, {}),
    "leave": ({}, {"room": str}),  # without "room": the room your lines go to
    "rooms": ({}, {}),
    "who": ({}, {"room": str}),
    "history": ({}, {"room": str, "limit": int, "before": int}),
    "ping": ({}, {}),  # "id" may be any JSON value; it is echoed in the pong
    "pong": ({}, {}),  # the answer to the server's keep-alive ping
    "help": ({}, {}),
    "bye": ({}, {}),
    # File sharing (see chatlab/files.py): offered, pulled chunk by chunk, checked.
    "file_offer": ({"name": str, "size": int, "sha256": str}, {"to": str, "room": str}),
    "file_chunk": ({"file": str, "seq": int, "data": str}, {}),
    "file_accept": ({"file": str}, {}),
    "file_decline": ({"file": str}, {}),
    "file_get": ({"file": str, "seq": int}, {}),
}
JSON_TYPES = {str: "a string", int: "an integer"}


class ProtocolError(Exception):
    """A message the server must refuse, with the error code to answer."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------- names

NAME_PUNCTUATION = frozenset("_-.")


def normalise_name(name: str) -> str:
    """The form a name is shown in: Unicode NFKC.

    NFKC folds "compatibility" look-alikes into one form -- fullwidth
    ``ｂｏｂ`` becomes ``bob``, the ligature ``ﬁ`` becomes ``fi`` -- so they
    cannot pose as each other.
    """
    return unicodedata.normalize("NFKC", name)


def name_key(name: str) -> str:
    """What makes two names "the same": NFKC, then case folding (``Bob`` = ``BOB``)."""
    return unicodedata.normalize("NFKC", normalise_name(name).casefold())


def check_name(name: str, max_length: int = 32) -> str | None:
    """Why ``name`` (already normalised) is not allowed, or None if it is fine."""
    if not name:
        return "a name needs at least one character"
    if len(name) > max_length:
        return f"a name has at most {max_length} characters"
    for ch in name:
        if not (ch.isalnum() or ch in NAME_PUNCTUATION) or ch in _BLANK_LETTERS:
            return (
                f"a name may use only letters, digits, '_', '-' and '.', not {ch!r}"
            )
    scripts = {_script(ch) for ch in name if ch.isalpha()}
    if len(scripts) > 1:
        # "pаypal" with a Cyrillic "а" looks exactly like "paypal".  Mixing
        # alphabets in one name is almost only ever done to deceive.
        return f"a name may not mix alphabets ({', '.join(sorted(scripts)).lower()})"
    return None


# Letters that draw as nothing at all: a name made of them would be invisible.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
# Writing systems that are used together (Japanese mixes kana and kanji,
# Korean hangul and hanja): for the rule against mixing, they are one.
_EAST_ASIAN = frozenset({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL", "BOPOMOFO"})


def _script(ch: str) -> str:
    """A letter's writing system, near enough: the first word of its Unicode name
    (LATIN SMALL LETTER A, CYRILLIC SMALL LETTER A, GREEK ...)."""
    word = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
    return "EAST ASIAN" if word in _EAST_ASIAN else word


# ---------------------------------------------------------------------- text

# Characters that must never reach another person's terminal as they are.
# C0 and C1 control characters can move the cursor, clear the screen or, via
# escape sequences (ESC [ ... = CSI, ESC ] ... = OSC), retitle the window or
# fake a message from someone else.  They are made visible in caret notation
# (ESC becomes "^[", so "\x1b[2J" arrives as the harmless text "^[[2J").
# Format characters (Unicode category Cf) are invisible or change how the
# text around them is drawn: bidirectional overrides make "exe.txt" read
# "txt.exe", zero-width spaces and joiners hide inside words, tag characters
# can smuggle a whole invisible sentence.  They are removed, every one of
# them (the list is Unicode 15's Cf; a test checks it against Python's).
_FORMAT_CHARACTERS = [
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
]
_CLEAN_TABLE: dict[int, str | None] = {c: "^" + chr(c ^ 0x40) for c in range(0x20)}
_CLEAN_TABLE[0x09] = " "  # a tab is only white space
_CLEAN_TABLE[0x7F] = "^?"
_CLEAN_TABLE.update({c: f"<U+{c:04X}>" for c in range(0x80, 0xA0)})
_CLEAN_TABLE.update({0x2028: " ", 0x2029: " "})  # line and paragraph separators
_CLEAN_TABLE.update({c: None for first, last in _FORMAT_CHARACTERS for c in range(first, last + 1)})
# Half a UTF-16 surrogate pair is not a character and cannot be sent as UTF-8.
_CLEAN_TABLE.update({c: "\ufffd" for c in range(0xD800, 0xE000)})


def clean_text(text: str) -> str:
    """``text`` made safe to show on a terminal: controls visible, invisibles gone."""
    return text.translate(_CLEAN_TABLE)


# ------------------------------------------------------------------ messages


def decode_message(payload: bytes) -> dict[str, Any]:
    """Parse and check one frame's payload: a UTF-8 JSON object with a known type."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(BAD_FRAME, f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        msg = json.loads(text)
    except RecursionError:
        raise ProtocolError(BAD_FRAME, "frame is not JSON: nested too deeply")
    except ValueError as exc:
        raise ProtocolError(BAD_FRAME, f"frame is not JSON: {exc}")
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_FRAME, f"frame must be a JSON object, not {type(msg).__name__}")
    if "\\ud" in text or "\\uD" in text:
        # JSON can spell half of a UTF-16 surrogate pair on its own ("\ud800").
        # That is no character at all, and could never be encoded again as
        # UTF-8 for the others: refuse it here, where it came in.
        try:
            json.dumps(msg, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(BAD_FRAME, "frame holds half a UTF-16 surrogate pair (\\ud800-\\udfff) alone")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_FRAME, 'frame needs a "type" field holding a string')
    fields = CLIENT_MESSAGES.get(kind)
    if fields is None:
        known = ", ".join(CLIENT_MESSAGES)
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}; known types: {known}")
    required, optional = fields
    for field, wanted in [*required.items(), *optional.items()]:
        value = msg.get(field)
        if value is None and field in optional:
            continue
        # bool is a subclass of int in Python, but true is not a number in JSON.
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise ProtocolError(BAD_FRAME, f'"{kind}" needs a "{field}" field holding {JSON_TYPES[wanted]}')
    return msg


def encode_message(msg: dict[str, Any]) -> bytes:
    """One server message as a frame: compact UTF-8 JSON behind its length."""
    return encode_frame(json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode())


# ---------------------------------------------------------------- lines mode

LINES_HELP = (
    "/who [ROOM] lists users, /rooms lists rooms, /join ROOM, /leave [ROOM], "
    "/msg NAME TEXT sends a private message, /history [N] shows recent messages, "
    "/quit leaves, //text sends text starting with /"
)


def parse_line(line: bytes, registered: bool) -> dict[str, Any] | None:
    """Turn one typed line into the message a frames client would have sent.

    Both modes then share every rule in the chat core.  Returns None for a
    blank line, which is ignored.
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
        if rest and not rest.isdigit():
            raise ProtocolError(BAD_FRAME, "usage: /history [N]")
        return {"type": "history", "limit": int(rest)} if rest else {"type": "history"}
    if command in ("/join", "/msg"):
        raise ProtocolError(BAD_FRAME, f"usage: {command} {'ROOM' if command == '/join' else 'NAME TEXT'}")
    raise ProtocolError(UNKNOWN_TYPE, f"unknown command {command[:40]}; try /help")


def _in_room(msg: dict[str, Any]) -> str:
    """" in ROOM" for rooms other than the lobby, where most chat happens."""
    room = msg.get("room")
    return f" {room}" if room and room != "lobby" else ""


def _clock(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


def render_line(msg: dict[str, Any]) -> str:
    """How a server message reads to a person in lines mode."""
    kind = msg["type"]
    if kind == "message":
        if "to" in msg:
            return f"*{msg['from']}* (private) {msg['text']}"
        room = msg.get("room")
        prefix = f"[{room}] " if room and room != "lobby" else ""
        return f"{prefix}<{msg['from']}> {msg['text']}"
    if kind == "joined":
        if "members" in msg:  # the joiner's own confirmation
            return f"* You are in {msg['room']}: {', '.join(msg['members'])}"
        return f"* {msg['name']} joined{_in_room(msg)}"
    if kind == "left":
        return f"* {msg['name']} left{_in_room(msg)} ({msg['reason']})"
    if kind == "welcome":
        more = msg.get("count", 0) - len(msg["users"])  # a large lobby lists only those announced
        online = ", ".join(msg["users"]) + (f" and {more:,} more" if more > 0 else "")
        return (
            f"* Welcome, {msg['name']}! Online: {online}."
            " Type a message and press Enter; /help lists commands, /quit leaves."
        )
    if kind == "users":
        where = f"In {msg['room']}" if msg.get("room") else "Online"
        return f"* {where}: {', '.join(msg['users'])}"
    if kind == "rooms":
        listing = ", ".join(f"{r['name']} ({len(r['members'])})" for r in msg["rooms"])
        return f"* Rooms: {listing}"
    if kind == "history":
        lines = [f"--- history of {msg['room']}: {len(msg['messages'])} messages ---"]
        lines += [f"[{_clock(m['ts'])}] <{m['from']}> {m['text']}" for m in msg["messages"]]
        return "\n".join(lines + ["--- end of history ---"])
    if kind == "help":
        return f"* {msg['text']}"
    if kind == "file_offer":
        return (f"* {msg['from']} offers the file {msg['name']} ({msg['size']:,} bytes, id {msg['file']});"
                " a chatlab client can /accept it")
    if kind == "pong":
        return "* pong"
    if kind == "error":
        return f"! {msg['message']} ({msg['code']})"
    if kind == "closing":
        return f"* Server closing the connection: {msg['message']}"
    return f"* {json.dumps(msg, ensure_ascii=False)}"


def encode_for(mode: str | None, msg: dict[str, Any]) -> bytes:
    """A server message in the given wire mode."""
    if mode == FRAMES:
        return encode_message(msg)
    return (render_line(msg) + "\n").encode("utf-8")


# ---------------------------------------------------------------- one wire


class Wire:
    """One connection's framing, chosen by the first byte the client sends."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self.mode: str | None = None  # FRAMES or LINES once the first byte is in
        self._decoder: FrameDecoder | LineDecoder | None = None

    @property
    def pending(self) -> int:
        """Bytes held of a message that has not arrived completely."""
        return self._decoder.pending if self._decoder else 0

    def feed(self, data: bytes) -> list[bytes]:
        """Frame payloads or lines completed by ``data`` (may raise FramingError)."""
        if self._decoder is None:
            if not data:
                return []
            if data[0] == 0x00:
                self.mode, self._decoder = FRAMES, FrameDecoder(self.limits.max_frame)
            else:
                self.mode, self._decoder = LINES, LineDecoder(self.limits.max_line)
        return self._decoder.feed(data)

    def parse(self, item: bytes, registered: bool) -> dict[str, Any] | None:
        """One frame payload or line as a client message (may raise ProtocolError)."""
        if self.mode == FRAMES:
            return decode_message(item)
        return parse_line(item, registered)

    def encode(self, msg: dict[str, Any]) -> bytes:
        return encode_for(self.mode, msg)
