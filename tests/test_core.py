"""The protocol rules and the chat core, sans-IO: no sockets, no threads, no clock."""

from __future__ import annotations


import pytest

from chatlab.protocol import (
    BANNER,
    ProtocolError,
    check_name,
    clean_text,
    decode_message,
    encode_message,
    name_key,
    normalise_name,
)
from chatlab.testing import CoreDriver


# ----------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a", "ada", "Ada_Lovelace", "x-1.2", "é", "名前", "a" * 32])
def test_good_names(name):
    assert check_name(normalise_name(name)) is None


@pytest.mark.parametrize("name", ["", "a b", "a" * 33, "semi;colon", "tab\t", "new\nline", "\u202eevil"])
def test_bad_names(name):
    assert check_name(normalise_name(name))


def test_names_that_look_alike_are_the_same_name():
    assert name_key("Bob") == name_key("BOB") == name_key("bob")
    assert name_key("ｂｏｂ") == name_key("bob")  # fullwidth forms fold under NFKC
    assert name_key("STRASSE") == name_key("straße")  # casefold, not lower
    assert normalise_name("ｂｏｂ") == "bob"


# ------------------------------------------------------------------ text


def test_escape_sequences_are_made_visible():
    assert clean_text("\x1b[2Jgone") == "^[[2Jgone"
    assert clean_text("\x1b]0;title\x07") == "^[]0;title^G"
    assert clean_text("a\nb\rc\x00") == "a^Jb^Mc^@"
    assert clean_text("\x9b31m") == "<U+009B>31m"  # a C1 CSI


def test_invisible_and_bidi_characters_are_removed():
    assert clean_text("pay\u202eexe.txt") == "payexe.txt"
    assert clean_text("zero\u200bwidth\ufeff") == "zerowidth"


def test_ordinary_text_is_untouched():
    text = "héllo, wörld! 你好 🎉 <b>&amp;"
    assert clean_text(text) == text


# -------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\xff\xfe", "bad_frame"),
        (b"not json", "bad_frame"),
        (b"[1, 2]", "bad_frame"),
        (b'{"name": "x"}', "bad_frame"),
        (b'{"type": 3}', "bad_frame"),
        (b'{"type": "say"}', "bad_frame"),
        (b'{"type": "say", "text": 5}', "bad_frame"),
        (b'{"type": "hello", "name": null}', "bad_frame"),
        (b'{"type": "dance"}', "unknown_type"),
        (b"[" * 100000, "bad_frame"),
    ],
)
def test_bad_messages_are_refused_with_a_code(payload, code):
    with pytest.raises(ProtocolError) as info:
        decode_message(payload)
    assert info.value.code == code


def test_extra_fields_are_allowed():
    assert decode_message(b'{"type": "say", "text": "hi", "colour": "red"}')["text"] == "hi"


# ------------------------------------------------------------------ core


class Room(CoreDriver):
    """A ChatCore driven by hand (chatlab.testing), whose clients all start with the banner."""

    def connect(self, cid, peer=None, dialect=None):
        assert super().connect(cid, peer, dialect) == BANNER
        return b""


def hello(name):
    return encode_message({"type": "hello", "name": name})


def say(text):
    return encode_message({"type": "say", "text": text})


def test_register_welcome_and_join_notice():
    room = Room()
    room.connect(1)
    room.send(1, hello("ada"))
    assert room.frames(1) == [{"type": "welcome", "name": "ada", "users": ["ada"], "room": "lobby"}]
    room.connect(2)
    room.send(2, hello("bob"))
    assert room.frames(2) == [{"type": "welcome", "name": "bob", "users": ["ada", "bob"], "room": "lobby"}]
    assert room.frames(1) == [{"type": "joined", "name": "bob", "room": "lobby"}]


def test_messages_get_server_wide_ids_and_the_given_time():
    room = Room()
    for cid, name in [(1, "ada"), (2, "bob")]:
        room.connect(cid)
        room.send(cid, hello(name))
    room.frames(1), room.frames(2)
    room.wall = 1234.5
    room.send(1, say("one"))
    room.wall = 1236.25
    room.send(2, say("two"))
    for cid in (1, 2):
        got = room.frames(cid)
        assert [(m["id"], m["from"], m["text"]) for m in got] == [(1, "ada", "one"), (2, "bob", "two")]
        # The core reads no clock of its own: a message says the wall-clock
        # time it is given, whatever its monotonic "now" is.
        assert [m["ts"] for m in got] == [1234.5, 1236.25]


def test_a_taken_name_can_be_retried_on_the_same_connection():
    room = Room()
    room.connect(1)
    room.send(1, hello("ada"))
    room.connect(2)
    room.send(2, hello("ADA"))
    assert room.frames(2)[0]["code"] == "name_taken"
    room.send(2, hello("ada2"))
    assert room.frames(2)[0]["type"] == "welcome"


def test_leave_is_announced_exactly_once():
    room = Room()
    for cid, name in [(1, "ada"), (2, "bob")]:
        room.connect(cid)
        room.send(cid, hello(name))
    room.frames(1)
    room.send(2, encode_message({"type": "bye"}))
    assert room.closed == {2: "quit"}
    room.apply(room.core.disconnect(2, "disconnected", room.now))  # the socket then closes
    assert room.frames(1) == [{"type": "left", "name": "bob", "room": "lobby", "reason": "quit"}]


def test_a_farewell_text_rides_on_left_cleaned_and_checked():
    room = CoreDriver()
    for cid, name in [(1, "ada"), (2, "bob"), (3, "cy")]:
        room.register(cid, name)
    room.send_msg(2, {"type": "join", "room": "games"})
    room.send_msg(1, {"type": "join", "room": "games"})
    room.frames(1), room.frames(2)
    room.send_msg(2, {"type": "leave", "room": "games", "text": "back \x1b[31min five"})
    farewell = {"type": "left", "name": "bob", "room": "games", "reason": "left", "text": "back ^[[31min five"}
    assert room.frames(1) == [farewell] and room.frames(2) == [farewell]  # the room, and the leaver's confirmation
    room.send_msg(1, {"type": "leave", "room": "games", "text": "x" * 5000})
    assert room.frames(1) == [{"type": "error", "code": "too_large",  # a farewell is a text like any other
                               "message": "text has 5000 characters; the limit is 4096"}]
    room.send_msg(3, {"type": "bye", "text": "   "})  # blank: no text at all
    assert room.frames(1) == [{"type": "left", "name": "cy", "room": "lobby", "reason": "quit"}]
    room.send_msg(2, {"type": "bye", "text": "see you tomorrow"})
    assert room.frames(1) == [{"type": "left", "name": "bob", "room": "lobby", "reason": "quit",
                               "text": "see you tomorrow"}]


def test_lines_mode_gets_no_echo_and_frames_mode_does():
    room = Room()
    room.connect(1)
    room.send(1, b"ada\n")
    room.connect(2)
    room.send(2, hello("bob"))
    room.lines(1), room.frames(2)
    room.send(1, b"hi from nc\r\n")
    assert room.lines(1) == []
    assert room.frames(2)[0]["text"] == "hi from nc"
    room.send(2, say("hi from bob"))
    assert room.lines(1) == ["<bob> hi from bob"]
    assert room.frames(2)[0]["text"] == "hi from bob"


def test_oversized_frame_closes_only_that_client_after_the_good_frames():
    room = Room()
    for cid, name in [(1, "ada"), (2, "bob")]:
        room.connect(cid)
        room.send(cid, hello(name))
    room.frames(1), room.frames(2)
    room.send(2, say("last words") + b"\xff\xff\xff\xff")
    assert [m["type"] for m in room.frames(2)] == ["message", "error", "closing"]
    assert room.closed == {2: "protocol_error"}
    assert [m["type"] for m in room.frames(1)] == ["message", "left"]


def test_shutdown_tells_everyone():
    room = Room()
    room.connect(1)
    room.connect(2)
    room.send(2, hello("bob"))
    room.frames(2)
    room.apply(room.core.shutdown(room.now))
    assert room.closed == {1: "shutdown", 2: "shutdown"}
    assert room.frames(2) == [{"type": "closing", "reason": "shutdown", "message": "the server is shutting down"}]
    assert room.core.clients == {}


def test_bytes_after_close_are_ignored():
    room = Room()
    room.connect(1)
    room.send(1, encode_message({"type": "bye"}))
    room.send(1, hello("ghost"))  # must not raise, must not send
    assert room.core.users == []
