"""Fuzzing: arbitrary and mutated bytes against the decoders, the chat core and a live server.

Hypothesis generates the inputs and, when a test fails, shrinks them to the
smallest that still fails.  The properties:

* the decoders raise nothing but their documented errors (FramingError,
  ProtocolError), and never hold more than their limit;
* the chat core, fed any bytes from any number of clients at any times, never
  needs its safety net: no client is dropped for a ``server_error``, nothing
  is logged as an internal error, its tables stay consistent, and what it
  keeps per client stays within the limits;
* a live server of each model, sent random bytes and random valid-but-hostile
  frames on many connections, still lets two ordinary clients chat.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlab.client import ChatClient
from chatlab.core import ChatCore
from chatlab.dialects.lines import parse_line
from chatlab.effects import Close, Send, Work
from chatlab.framing import FrameDecoder, FramingError, LineDecoder, encode_frame
from chatlab.limits import Limits
from chatlab.protocol import (
    CLIENT_MESSAGES,
    ProtocolError,
    check_name,
    clean_text,
    decode_message,
    name_key,
    normalise_name,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ decoders


@st.composite
def framed_streams(draw):
    """A stream of valid frames (within ``limit``), maybe damaged, cut into chunks of any size.

    Random bytes alone would almost never make a frame: four random header
    bytes claim gigabytes.  So the stream is made of real frames, then some
    of its bytes may be flipped, and it is cut where TCP might cut it.
    """
    limit = draw(st.integers(1, 200))
    payloads = draw(st.lists(st.binary(max_size=limit), max_size=12))
    data = bytearray(b"".join(encode_frame(p, limit) for p in payloads))
    for _ in range(draw(st.integers(0, 2))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    chunks = [bytes(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)])]
    return limit, payloads, bytes(data), chunks


@FUZZ
@given(framed_streams())
def test_frame_decoder_takes_any_bytes(stream):
    limit, payloads, data, chunks = stream
    decoder = FrameDecoder(limit)
    decoded: list[bytes] = []
    try:
        for chunk in chunks:
            frames = decoder.feed(chunk)
            assert all(len(f) <= limit for f in frames)
            assert decoder.pending <= limit + 4  # never more than one frame's worth is held
            decoded += frames
    except FramingError as exc:
        decoded += exc.frames  # documented: the frames before the problem, then the caller closes
    # However the stream was cut, the frames come out as one decoder fed
    # everything at once makes them; undamaged, they are exactly what was sent.
    whole = FrameDecoder(limit)
    try:
        expected = whole.feed(data)
    except FramingError as exc:
        expected = exc.frames
    assert decoded == expected
    if data == b"".join(encode_frame(p, limit) for p in payloads):
        assert decoded == payloads


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(1, 200))
def test_line_decoder_takes_any_bytes(chunks, limit):
    decoder = LineDecoder(limit)
    for chunk in chunks:
        try:
            lines = decoder.feed(chunk)
        except FramingError:
            return
        assert all(len(line) <= limit for line in lines)
        assert decoder.pending <= limit + 1  # (a CR that may be half of a CRLF)


@FUZZ
@given(st.binary(max_size=500))
def test_decode_message_raises_only_protocol_errors(payload):
    try:
        msg = decode_message(payload)
    except ProtocolError:
        return
    assert isinstance(msg, dict) and isinstance(msg["type"], str)
    json.dumps(msg, ensure_ascii=False).encode("utf-8")  # whatever passes can be sent on


# Any character, and halves of UTF-16 surrogate pairs, which st.text() never
# makes: JSON can still carry them ("\ud800").
ANY_CHARACTER = st.characters() | st.characters(categories=["Cs"])


def any_text(max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.lists(ANY_CHARACTER, max_size=max_size).map("".join)


ANY_TEXT = any_text(20)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


FIELDS = ["name", "text", "to", "room", "id", "limit", "before", "file", "seq", "data", "size", "sha256", "password"]


@FUZZ
@given(st.sampled_from(sorted(CLIENT_MESSAGES)) | JSON_VALUES,
       st.dictionaries(st.sampled_from(FIELDS), ANY_TEXT | st.integers() | JSON_VALUES, max_size=6))
def test_decode_message_on_objects_with_any_fields(kind, fields):
    obj = {"type": kind, **fields}
    try:
        msg = decode_message(json.dumps(obj).encode())
    except ProtocolError:
        return
    json.dumps(msg, ensure_ascii=False).encode("utf-8")  # whatever passes can be sent on


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_parse_line_raises_only_protocol_errors(line, registered):
    try:
        parse_line(line, registered)
    except ProtocolError:
        pass


@FUZZ
@given(any_text())
def test_clean_text_leaves_nothing_a_terminal_would_obey(text):
    import unicodedata

    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned  # cleaning twice changes nothing
    cleaned.encode("utf-8")  # no lone surrogates
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in cleaned)


@FUZZ
@given(st.text(max_size=40))
def test_names_never_crash_and_accepted_names_are_stable(name):
    shown = normalise_name(name)
    if check_name(shown) is None:
        assert name_key(shown) == name_key(name_key(shown))
        assert check_name(normalise_name(shown)) is None


# ------------------------------------------------------------------ the core

# Valid messages with hostile contents: the raw material the mutations start from.
HOSTILE_TEXT = any_text(60) | st.sampled_from(
    ["\x1b[2J", "\x1b]0;pwned\x07", "\u202eexe.txt", "\ud800", "a" * 5000, "", "   ", "\x00", "//x", "/quit"])
NAMES = st.sampled_from(["ada", "ADA", "Ａｄａ", "bob", "p\u0430ypal", "x" * 40, "", "a b", "chatter0"]) | HOSTILE_TEXT
SAYS = st.builds(lambda t: {"type": "say", "text": t}, HOSTILE_TEXT | st.text(max_size=30))
MESSAGES = st.one_of(
    SAYS, SAYS, SAYS, SAYS,  # chat is what clients mostly send
    st.builds(lambda n: {"type": "hello", "name": n}, NAMES),
    st.builds(lambda n, p: {"type": "hello", "name": n, "password": p}, NAMES, HOSTILE_TEXT),
    st.builds(lambda t: {"type": "say", "text": t}, HOSTILE_TEXT),
    st.builds(lambda t, r: {"type": "say", "text": t, "room": r}, HOSTILE_TEXT, NAMES),
    st.builds(lambda n, t: {"type": "dm", "to": n, "text": t}, NAMES, HOSTILE_TEXT),
    st.builds(lambda r: {"type": "join", "room": r}, NAMES),
    st.builds(lambda r: {"type": "leave", "room": r}, NAMES),
    st.builds(lambda k, b: {"type": "history", "limit": k, "before": b}, st.integers(-5, 10**12), st.integers()),
    st.builds(lambda x: {"type": "ping", "id": x}, ANY_TEXT | JSON_VALUES),  # echoed back in the pong
    st.builds(lambda x: {"type": "pong", "id": x}, JSON_VALUES),
    st.builds(lambda n, s: {"type": "file_offer", "name": n, "size": s, "sha256": "0" * 64},
              HOSTILE_TEXT, st.integers(-1, 10**10)),
    st.builds(lambda f, s, d: {"type": "file_chunk", "file": f, "seq": s, "data": d},
              st.text(max_size=8), st.integers(-2, 5), st.text(max_size=20)),
    st.builds(lambda f, s: {"type": "file_get", "file": f, "seq": s}, st.text(max_size=8), st.integers(-2, 5)),
    st.sampled_from([{"type": "who"}, {"type": "rooms"}, {"type": "help"}, {"type": "bye"},
                     {"type": "teleport"}, {"type": 7}, {"text": "no type"}]),
)


GOOD_NAMES = st.sampled_from(["ada", "bob", "carol", "dan", "eve"])


@st.composite
def byte_streams(draw):
    """What one client sends: frames of hostile messages, or lines, then mutated.

    Most streams start with a good hello, so that the hostile messages after
    it reach the rules for registered clients, not only "say hello first".
    """
    if draw(st.booleans()):
        messages = draw(st.lists(MESSAGES, max_size=8))
        if draw(st.integers(0, 4)):
            messages.insert(0, {"type": "hello", "name": draw(GOOD_NAMES)})
        data = b"".join(encode_frame(json.dumps(m).encode(), 1 << 31) for m in messages)
    else:
        lines = draw(st.lists(HOSTILE_TEXT, max_size=8))
        if draw(st.integers(0, 4)):
            lines.insert(0, draw(GOOD_NAMES))
        data = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n"
    data = bytearray(data)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2, 4]))):  # mutations: flip, cut, insert, repeat
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[at:]
    return bytes(data) if draw(st.integers(0, 9)) else draw(st.binary(max_size=200))


@st.composite
def sessions(draw):
    """Up to four clients, each with its own byte stream, interleaved in chunks of any size,
    with the clock jumping and connections dropping in between."""
    n = draw(st.integers(1, 4))
    streams = [bytearray(draw(byte_streams())) for _ in range(n)]
    events = [("connect", i, draw(st.sampled_from(["10.0.0.1", "10.0.0.2", "::1"]))) for i in range(n)]
    while any(streams):
        i = draw(st.integers(0, n - 1))
        if not streams[i]:
            i = next(j for j in range(n) if streams[j])
        size = draw(st.integers(1, 256))
        events.append(("receive", i, bytes(streams[i][:size]), size))
        del streams[i][:size]
        after = draw(st.integers(0, 19))
        if after == 0:
            events.append(("tick", draw(st.floats(0, 120))))
        elif after == 1:
            events.append(("disconnect", i))
        elif after == 2:
            events.append(("connect", i, "10.0.0.1"))  # reconnects, if it was gone
    return events


EVENTS = sessions()


class Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@FUZZ
@given(EVENTS, st.booleans())
def test_the_core_survives_any_bytes_from_any_clients(events, accounts_on):
    from chatlab.accounts import Accounts, hash_password

    limits = Limits(max_frame=4096, max_line=512, max_clients=4, max_per_address=3, accept_burst=4,
                    register_timeout=60, idle_timeout=300, ping_interval=30, auth_delay=1)
    accounts = Accounts({name_key("ada"): ("ada", hash_password("pw", n=1 << 4))}, False) if accounts_on else None
    core = ChatCore(limits, accounts=accounts)
    errors = Errors()
    logging.getLogger("chatlab").addHandler(errors)
    now, closed, generation = 1000.0, {}, {}
    try:
        def apply(effects):
            for effect in effects:
                if isinstance(effect, Send):
                    assert isinstance(effect.data, bytes) and effect.to
                    for cid in effect.to:
                        assert cid not in closed, f"data for {cid} after its Close"
                elif isinstance(effect, Work):
                    apply(core.finished(effect, effect.job(), now))
                else:
                    assert isinstance(effect, Close) and effect.reason != "server_error"
                    closed[effect.client] = effect.reason

        for event in events:
            kind, slot = event[0], event[1] if len(event) > 1 else None
            if kind == "connect":
                if slot in generation and generation[slot] not in closed:
                    continue  # that slot is still connected
                generation[slot] = cid = (slot, len(generation) + len(closed))
                apply(core.connect(cid, f"{event[2]}:{5000 + slot}", now))
            elif kind == "receive" and slot in generation:
                data, piece = event[2], event[3]
                for start in range(0, len(data), piece):  # any segmentation TCP might choose
                    apply(core.receive(generation[slot], data[start:start + piece], now))
            elif kind == "tick":
                now += event[1]
                apply(core.tick(now))
            elif kind == "disconnect" and slot in generation:
                apply(core.disconnect(generation[slot], "disconnected", now))
                closed.setdefault(generation[slot], "disconnected")
        apply(core.tick(now + 1000))
        # The core's tables agree with each other...
        assert all(member.id in core.clients for member in core.members.values())
        assert core.guard.doorman.connections == len(core.clients)
        for cid, client in core.clients.items():
            assert cid not in closed
            # ... and what it holds per client is bounded by the limits.
            assert client.dialect.pending <= max(limits.max_frame + 4, limits.max_line + 1)
        assert len(core.guard.doorman.open) <= 3
        assert [r.getMessage() for r in errors.records] == []
    finally:
        logging.getLogger("chatlab").removeHandler(errors)


# ------------------------------------------------------------- a live server


def hostile_frames(rng: random.Random) -> bytes:
    """Valid frames with contents chosen to hurt: long, deep, odd, of the wrong type."""
    junk = "".join(rng.choice(string.printable + "\x00\x1b\u202e\u200b\ufeffé漢🎉") for _ in range(rng.randint(0, 300)))
    deep = "[" * 20000 + "]" * 20000
    choices = [
        {"type": "hello", "name": junk[:40]}, {"type": "hello", "name": "x" * 5000},
        {"type": "say", "text": junk}, {"type": "say", "text": "y" * 4097}, {"type": "say", "text": 12},
        {"type": "dm", "to": junk, "text": junk}, {"type": "join", "room": junk},
        {"type": "history", "limit": 10**18, "before": -1}, {"type": "ping", "id": {"a": [1, {"b": None}]}},
        {"type": "file_offer", "name": "../../etc/passwd", "size": 10**12, "sha256": "z"},
        {"type": "file_get", "file": junk, "seq": -1}, {"type": junk}, {"type": None}, [1, 2],
    ]
    payloads = [json.dumps(rng.choice(choices)).encode() for _ in range(rng.randint(1, 10))]
    if rng.random() < 0.2:
        payloads.append(deep.encode())
    return b"".join(encode_frame(p, 1 << 31) for p in payloads)


@pytest.mark.timeout(60)
@pytest.mark.limits(accept_rate=0)  # 40 connections in a second from one address is the point here
def test_a_live_server_survives_random_bytes_and_hostile_frames(server, caplog):
    rng = random.Random(20261125)  # fixed: a failure can be replayed exactly
    caplog.set_level(logging.WARNING, logger="chatlab")
    for i in range(40):  # bounded: 40 connections, at most ~100 KB each
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.recv(4096)  # the banner
            if i % 2:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000)))
            else:
                data = encode_frame(json.dumps({"type": "hello", "name": f"fuzz{i}"}).encode()) + hostile_frames(rng)
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):  # read the answers until the server closes
                    pass
            except OSError:
                pass  # the server may cut a bad connection short: that is allowed
    with ChatClient(*server.address, name="ada") as ada, ChatClient(*server.address, name="bob") as bob:
        ada.say("still working?")
        assert bob.wait_for("message")["text"] == "still working?"
    internal = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert internal == []  # nothing needed the safety net
