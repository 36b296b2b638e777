"""The chatlab wire protocol: names, text, the messages and their error codes.

``docs/protocol.md`` is the specification; this module is its executable
form.  Like ``framing``, it never touches a socket.  What is said here
holds for every wire dialect (``chatlab/dialects/``): a name, a text, a
message and an error code are the same whether they travel as a JSON
frame, a typed line or (later) a WebSocket message.  What a message looks
like in JSON frames -- the dialect of programs, and the reference form of
every message -- is here too.
"""

from __future__ import annotations

import functools
import json
import math
import unicodedata
from importlib import resources
from typing import Any

from .errors import ProtocolError
from .framing import encode_frame

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
LAST_ROOM = "last_room"  # leaving the only room one is in: one would be nowhere, hearing nothing
TOO_MANY_ROOMS = "too_many_rooms"  # over the rooms-per-user or rooms-per-server limit
RATE_LIMITED = "rate_limited"  # over the message rate limit: that message was dropped
AUTH_REQUIRED = "auth_required"  # that name has an account: hello needs its password
AUTH_FAILED = "auth_failed"  # wrong name or password (one answer for both), after a delay
# A chat shared by several servers (chatlab serve --redis; docs/scaling.md).
UNAVAILABLE = "unavailable"  # the servers' shared store (Redis) is unreachable: nothing was sent
OTHER_SERVER = "other_server"  # a file for someone connected to another server of the chat

# Why someone left, in words for people (``left`` and ``closing`` carry the
# code, for programs): what a person reads in ``chatlab chat``.
REASON_WORDS: dict[str, str] = {
    "left": "left the room",
    "quit": "said goodbye",
    "disconnected": "lost the connection",
    "shutdown": "the server stopped",
    "too_slow": "was not reading, so the server let go",
    "protocol_error": "sent something too long to be a message",
    "register_timeout": "never gave a name",
    "idle": "was silent too long",
    "flooding": "sent too many messages too fast",
    "auth_failed": "gave too many wrong passwords",
    "server_error": "met a fault in the server",
    "kicked": "was removed",
}


# Each client message: the fields it must carry, then the fields it may carry,
# with their JSON types.  Other fields are allowed (and ignored), so that
# newer clients can talk to older servers.
CLIENT_MESSAGES: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "hello": ({"name": str}, {"password": str}),  # a password only for a name with an account
    "say": ({"text": str}, {"room": str}),
    "dm": ({"to": str, "text": str}, {}),
    "join": ({"room": str}, {}),
    "leave": ({}, {"room": str, "text": str}),  # without "room": the room your lines go to; "text": a farewell
    "rooms": ({}, {"after": str}),  # "after": the next page of a listing that said "more"
    "who": ({}, {"room": str}),
    "history": ({}, {"room": str, "limit": int, "before": int, "since": int}),
    "ping": ({}, {}),  # "id" may be any JSON value; it is echoed in the pong
    "pong": ({}, {}),  # the answer to the server's keep-alive ping
    "help": ({}, {}),
    "bye": ({}, {"text": str}),  # "text": a farewell, told to the rooms in their "left"
    # File sharing (see chatlab/files.py): offered, pulled chunk by chunk, checked.
    "file_offer": ({"name": str, "size": int, "sha256": str}, {"to": str, "room": str}),
    "file_chunk": ({"file": str, "seq": int, "data": str}, {}),
    "file_accept": ({"file": str}, {}),
    "file_decline": ({"file": str}, {}),
    "file_get": ({"file": str, "seq": int}, {}),
}
JSON_TYPES = {str: "a string", int: "an integer"}


# --------------------------------------------------------------------- names

NAME_PUNCTUATION = frozenset("_-.")
_ASCII_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") | NAME_PUNCTUATION


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
    if name.isascii():
        # Most names, and the quick case: ASCII letters are all of one
        # alphabet, its digits are 0-9, and it has no phonetic or blank letters.
        bad = next((ch for ch in name if ch not in _ASCII_NAME_CHARACTERS), None)
        if bad is not None:
            return f"a name may use only letters, digits, '_', '-' and '.', not {bad!r}"
        if name.strip("_-.") == "":
            return "a name needs a letter or a digit: '.', '...' and '-' are punctuation"
        return None
    for ch in name:
        if not (ch.isalnum() or ch in NAME_PUNCTUATION) or ch in _BLANK_LETTERS:
            return (
                f"a name may use only letters, digits, '_', '-' and '.', not {ch!r}"
            )
        if any(first <= ord(ch) <= last for first, last in _PHONETIC):
            # Small capitals, click letters: for phonetics, not names -- "ᴀlice"
            # and "aǀice" pass for "alice" (UTS #39 restricts them in identifiers).
            return f"{ch!r} ({unicodedata.name(ch, '?').lower()}) is a letter for phonetics, not for names"
    if not any(ch.isalnum() for ch in name):
        return "a name needs a letter or a digit: '.', '...' and '-' are punctuation"
    scripts = {_script(ch) for ch in name if ch.isalpha()}
    if len(scripts) > 1:
        # "pаypal" with a Cyrillic "а" looks exactly like "paypal".  Mixing
        # alphabets in one name is almost only ever done to deceive.
        return f"a name may not mix alphabets ({', '.join(sorted(scripts)).lower()})"
    # Digits belong to scripts too: "alice१" (Devanagari one) and "alice١"
    # (Arabic-Indic one) read as "alice" with a mark.  One set of digits per
    # name: ASCII's, or those of the name's own script.
    systems = {chr(ord(ch) - unicodedata.decimal(ch)) for ch in name if ch.isdecimal()}
    foreign = systems - {"0"}
    if len(systems) > 1 or any(scripts and not any(s in unicodedata.name(zero, "") for s in scripts)
                               for zero in foreign):
        return "a name may use digits of one kind only: 0-9, or those of its own script"
    return None


# Blocks of letters for phonetic notation, restricted in identifiers by UTS #39:
# Latin clicks (U+01C0-U+01C3), Phonetic Extensions and its Supplement (small
# capitals like U+1D00 "ᴀ").
_PHONETIC = ((0x01C0, 0x01C3), (0x1D00, 0x1DBF))
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


# --------------------------------------------------- look-alikes (UTS #39)
#
# Names written in one script can still look alike: "ɑlice" (Latin alpha),
# "alıce" (dotless i), "aIice" (capital I), "a1ice".  Unicode's security
# mechanisms (UTS #39) give each such character a *prototype* it can be
# confused with, in the data file confusables.txt (shipped in chatlab/data,
# from Unicode 13.0); a string's *skeleton* maps every character to its
# prototype, and two strings that can pass for each other have the same
# skeleton.  chatlab compares names case-insensitively, so a name's
# look-alike forms are its skeleton taken with and without case folding
# first (so that both "ALICE" and "aIice" meet "alice").


@functools.cache
def _prototypes() -> dict[str, str]:
    """confusables.txt: each confusable character and the prototype it maps to.

    Read a line at a time, not whole: the file is 0.7 MB of mostly comments,
    and read whole it would pass through the server's memory as ~5 MB of
    strings, freed again between the table's entries -- room the server
    would keep, unused, for as long as it runs.
    """
    table: dict[str, str] = {}
    with resources.files("chatlab").joinpath("data/confusables.txt").open("r", encoding="utf-8-sig") as lines:
        for line in lines:
            fields = line.split("#", 1)[0].split(";")
            if len(fields) >= 2 and fields[0].strip():
                table[chr(int(fields[0], 16))] = "".join(chr(int(code, 16)) for code in fields[1].split())
    return table


def skeleton(text: str) -> str:
    """The UTS #39 skeleton of ``text``: NFD, each character to its prototype, NFD again.

    >>> skeleton("rn") == skeleton("m"), skeleton("paypal") == skeleton("pаypal")
    (True, True)
    """
    if text.isascii():
        # Most names: NFD leaves ASCII as it is, so one translate() does it.
        mapped = text.translate(_ascii_prototypes())
        return mapped if mapped.isascii() else unicodedata.normalize("NFD", mapped)
    table = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in decomposed))


@functools.cache
def _ascii_prototypes() -> dict[int, str]:
    """The prototypes of the ASCII characters, as a str.translate table."""
    return {ord(ch): proto for ch, proto in _prototypes().items() if ch.isascii()}


@functools.lru_cache(maxsize=256)  # a hello asks twice (reserved? taken?): the skeleton is the cost of a name
def look_alikes(name: str) -> frozenset[str]:
    """The forms that two names which could pass for each other have in common (one shared is enough)."""
    forms = set()
    for form in (name, name.casefold()):
        for _ in range(4):  # until stable: a prototype may case-fold to another confusable
            folded = skeleton(form).casefold()
            if folded == form:
                break
            form = folded
        forms.add(form)
    return frozenset(forms)


#: Names that could pass for the server itself, or for the people running it,
#: in a message ("<server> the lab closes in 5 minutes, log in at ...").
RESERVED_NAMES = ("server", "chatlab", "system", "admin", "administrator", "root", "operator", "moderator",
                  "sysop", "staff")
_RESERVED = frozenset(form for reserved in RESERVED_NAMES for form in look_alikes(reserved))


def reserved(name: str) -> bool:
    """Whether ``name`` is, or looks like, one the server keeps for itself."""
    return bool(look_alikes(name) & _RESERVED)


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


#: Arrays and objects one message may nest, itself included.  Python's
#: ``json`` parses about a thousand levels, but encoding the same value
#: again (echoing a ping's ``id``) recurses once per level and fails sooner:
#: what comes in must be something the server can always send back out.
MAX_DEPTH = 32


def _not_a_number(word: str) -> float:
    # Python's json reads NaN and Infinity, which RFC 8259 does not allow:
    # echoed back, they would be invalid JSON for every other client.
    raise ProtocolError(BAD_FRAME, f"frame is not JSON: {word} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 reads as infinity
        raise ProtocolError(BAD_FRAME, f"frame is not JSON: {text[:20]} is too large a number")
    return number


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (stops counting past MAX_DEPTH); no recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode_message(payload: bytes) -> dict[str, Any]:
    """Parse and check one frame's payload: a UTF-8 JSON object with a known type."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(BAD_FRAME, f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        msg = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        raise ProtocolError(BAD_FRAME, "frame is not JSON: nested too deeply")
    except ValueError as exc:
        raise ProtocolError(BAD_FRAME, f"frame is not JSON: {exc}")
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_FRAME, f"frame must be a JSON object, not {type(msg).__name__}")
    if _depth(msg) > MAX_DEPTH:
        raise ProtocolError(BAD_FRAME, f"frame nests arrays and objects more than {MAX_DEPTH} deep")
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


def json_size(value: Any) -> int:
    """Bytes ``value`` takes in a compact UTF-8 JSON frame: the measure of what fits in one."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def fit(items: list[Any], room: int) -> int:
    """How many of ``items``, from the first, fit in ``room`` bytes of a JSON array."""
    try:
        characters = len("".join(items))  # names (only strings join): their characters, counted at C speed
    except TypeError:
        characters = None  # not all strings: the rooms listing's entries
    if characters is not None and characters * 6 + 3 * len(items) <= room:
        return len(items)  # names, and short enough: no character takes more than 6 bytes of JSON (an escape)
    if json_size(items) - 2 <= room:  # all of them (the brackets are counted already): one encoding, not N
        return len(items)
    count = 0
    for item in items:
        room -= json_size(item) + (1 if count else 0)  # and a comma between two
        if room < 0:
            break
        count += 1
    return count


def encode_message(msg: dict[str, Any]) -> bytes:
    """One server message as a frame: compact UTF-8 JSON behind its length."""
    return encode_frame(json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode())


# ------------------------------------------------------------------- help

#: The chat's commands, as a person types them (lines mode, ``chatlab chat``):
#: the text of the ``help`` message.
LINES_HELP = (
    "/who [ROOM] lists users, /rooms lists rooms, /join ROOM, /leave [ROOM], "
    "/msg NAME TEXT sends a private message, /history [N] shows recent messages, "
    "/quit leaves, //text sends text starting with /"
)
