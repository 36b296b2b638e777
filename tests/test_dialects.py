"""Wire dialects: each one sans-IO, and a new one added without touching the core or any server model.

The last test is the proof of the shape: a dialect written here, in the
test file, and registered with one line, serves a chat on every server
model next to the built-in dialects, with the same rules (names, rooms,
rate limits) applied to it by the same core.
"""

from __future__ import annotations

import json
import socket
from typing import ClassVar

import pytest

from chatlab.client import ChatClient
from chatlab.dialects import DIALECTS, Dialect, FramesDialect, LinesDialect, MainPort, Message, Unit, register
from chatlab.dialects.client import ClientWire
from chatlab.dialects.lines import line_for, parse_line, parse_rendered, render_line
from chatlab.errors import FramingError, ProtocolError, WireError
from chatlab.limits import Limits
from chatlab.protocol import BANNER, encode_message
from chatlab.servers import Listener
from chatlab.testing import CoreDriver

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------- the built-ins


def test_the_main_port_greets_then_hands_over_at_the_first_byte():
    port = MainPort(Limits())
    assert port.greeting() == BANNER
    assert port.refusal("server_full", "try later") == b"chatlab/1 closing server_full: try later\n"
    assert port.feed(b"ada\nhel") == [b"ada"]
    assert isinstance(port.upgraded, LinesDialect)
    frames = MainPort(Limits())
    assert frames.feed(encode_message({"type": "ping"})[:3]) == []  # 0x00: frames, even before a whole header
    assert isinstance(frames.upgraded, FramesDialect)


def test_the_lines_dialect_knows_a_name_a_password_and_a_command():
    lines = LinesDialect(Limits())
    assert lines.parse(b"ada") == {"type": "hello", "name": "ada"}  # before a welcome, a line is a name
    prompt = lines.encode({"type": "error", "code": "auth_required", "name": "ada", "message": "needs a password"})
    assert b"password for ada" in prompt and b"(auth_required)" not in prompt  # words, not the code
    assert lines.parse(b"s3cret") == {"type": "hello", "name": "ada", "password": "s3cret"}
    assert lines.parse(b"/who") == {"type": "hello", "name": "/who"}  # still not welcomed
    lines.encode({"type": "welcome", "name": "ada", "users": ["ada"]})
    assert lines.parse(b"/who") == {"type": "who"}
    assert lines.parse(b"  ") is None
    with pytest.raises(ProtocolError) as refused:
        lines.parse(b"/dance")
    assert refused.value.code == "unknown_type"


@pytest.mark.parametrize("msg", [
    {"type": "hello", "name": "ada"}, {"type": "say", "text": "hi there"}, {"type": "say", "text": "/not a command"},
    {"type": "dm", "to": "bob", "text": "psst"}, {"type": "join", "room": "games"}, {"type": "leave"},
    {"type": "who", "room": "games"}, {"type": "history", "limit": 5}, {"type": "rooms"}, {"type": "bye"},
])
def test_what_a_person_types_is_read_back_as_the_same_message(msg):
    registered = msg["type"] != "hello"
    assert parse_line(line_for(msg).encode(), registered) == msg


@pytest.mark.parametrize("msg", [
    {"type": "message", "from": "ada", "text": "hi <there>"},
    {"type": "message", "from": "ada", "text": "hi", "room": "games"},
    {"type": "joined", "name": "bob"}, {"type": "left", "name": "bob", "reason": "quit"},
    {"type": "left", "name": "bob", "reason": "too_slow", "room": "games"},
    {"type": "error", "code": "error", "message": "the name ada is taken"},  # a person is told words, no code
])
def test_what_the_server_renders_is_read_back_as_the_same_message(msg):
    assert parse_rendered(render_line(msg)) == msg


def test_the_client_wire_reads_a_banner_frames_and_a_refusal_in_any_pieces():
    stream = BANNER + encode_message({"type": "welcome", "name": "ada", "users": ["ada"]}) + encode_message(
        {"type": "pong", "id": 1})
    whole = ClientWire().feed(stream)
    wire, pieces = ClientWire(), []
    for i in range(len(stream)):  # one byte at a time: TCP may cut anywhere
        pieces += wire.feed(stream[i:i + 1])
    assert pieces == whole
    assert [m["type"] for m, _ in whole] == ["banner", "welcome", "pong"]
    assert sum(size for _, size in whole) == len(stream)
    line = b"chatlab/1 closing too_many_connections: close one first\n"
    refused = ClientWire().feed(line)
    assert refused == [({"type": "refused", "reason": "too_many_connections", "message": "close one first"}, len(line))]
    with pytest.raises(WireError):
        ClientWire().feed(b"x" * 5000)  # no banner line in sight: not a chatlab server
    with pytest.raises(WireError):
        ClientWire(banner=False).feed(b"\x00\x00\x00\x03abc")  # a frame that is not JSON


def test_one_error_family_carries_the_wire_code():
    assert issubclass(FramingError, WireError) and issubclass(ProtocolError, WireError)
    assert FramingError("x").fatal and not ProtocolError("bad_name", "x").fatal
    assert ProtocolError("bad_name", "no").code == "bad_name"


def test_every_message_type_has_a_handler_in_the_core():
    from chatlab.core import ChatCore
    from chatlab.protocol import CLIENT_MESSAGES

    assert set(ChatCore().handlers) == set(CLIENT_MESSAGES)


# ---------------------------------------------------------- a new dialect


class Netstrings(Dialect):
    """A toy dialect: each message a netstring of its JSON, ``12:{"type":"x"},`` (D. J. Bernstein, 1997).

    Written here to show what adding a dialect takes: this class and one
    registry line.  It decodes with a limit, refusing a length that is too
    long at its first digits, and encodes; the core does everything else.
    """

    name: ClassVar[str] = "netstrings"

    def __init__(self, limits: Limits):
        super().__init__(limits)
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Unit]:
        self._buffer += data
        units: list[Unit] = []
        while True:
            colon = self._buffer.find(b":", 0, 12)
            if colon < 0:
                if len(self._buffer) > 11:
                    raise FramingError("a netstring needs its length and ':' first", units)
                return units
            if not self._buffer[:colon].isdigit():
                raise FramingError("a netstring's length is made of digits", units)
            length = int(self._buffer[:colon])
            if length > self.limits.max_frame:
                raise FramingError(f"a netstring of {length} bytes; the limit is {self.limits.max_frame}", units,
                                   code="too_large")
            end = colon + 1 + length
            if len(self._buffer) <= end:
                return units
            if self._buffer[end] != ord(","):
                raise FramingError("a netstring ends with ','", units)
            units.append(bytes(self._buffer[colon + 1:end]))
            del self._buffer[:end + 1]

    def parse(self, unit: bytes) -> Message | None:
        from chatlab.protocol import decode_message

        return decode_message(unit)

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        payload = json.dumps(msg, separators=(",", ":")).encode()
        return b"%d:%s," % (len(payload), payload)


def netstring(msg: Message) -> bytes:
    return Netstrings.encode_shared(msg)


class NetstringClient:
    """The smallest client of the toy dialect, with a deadline on every read."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=5)
        self.reader = Netstrings(Limits())
        self.pending: list[dict] = []

    def send(self, msg: Message) -> None:
        self.sock.sendall(netstring(msg))

    def wait_for(self, test) -> dict:
        while True:
            while self.pending:
                msg = self.pending.pop(0)
                if test(msg):
                    return msg
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.pending += [json.loads(u) for u in self.reader.feed(data)]


@pytest.fixture
def netstrings_registered():
    register(Netstrings)  # the one registry line
    yield
    DIALECTS.pop(Netstrings.name, None)


def test_a_dialect_written_in_a_test_file_chats_on_every_model(start_server, netstrings_registered):
    server = start_server(listeners=(Listener("toy", "127.0.0.1", 0, DIALECTS["netstrings"]),))
    toy = NetstringClient(server.addresses["toy"])
    try:
        with ChatClient(*server.address, name="ada") as ada:
            toy.send({"type": "hello", "name": "nettie"})
            welcome = toy.wait_for(lambda m: m["type"] in ("welcome", "error"))
            assert welcome["type"] == "welcome" and welcome["users"] == ["ada", "nettie"]
            assert ada.wait_for("joined")["name"] == "nettie"
            toy.send({"type": "say", "text": "hello from a netstring"})
            heard = ada.wait_for("message")
            assert (heard["from"], heard["text"]) == ("nettie", "hello from a netstring")
            ada.say("and back")
            back = toy.wait_for(lambda m: m["type"] == "message" and m["from"] == "ada")
            assert back["text"] == "and back" and back["id"] > heard["id"]  # one order, one id sequence
            # The core's rules hold for the new dialect too: a taken name is refused...
            other = NetstringClient(server.addresses["toy"])
            try:
                other.send({"type": "hello", "name": "ADA"})
                assert other.wait_for(lambda m: m["type"] == "error")["code"] == "name_taken"
                # ... and a length over the limit ends that connection alone, with a reason.
                other.sock.sendall(b"9999999:")
                assert other.wait_for(lambda m: m["type"] == "error")["code"] == "too_large"
            finally:
                other.sock.close()
            ada.say("still here")
            assert toy.wait_for(lambda m: m.get("text") == "still here")
    finally:
        toy.sock.close()


def test_a_new_dialect_with_the_sans_io_core_alone():
    room = CoreDriver()
    room.register(1, "ada")
    assert room.connect(2, dialect=Netstrings(Limits())) == b""  # this dialect does not speak first
    room.send(2, netstring({"type": "hello", "name": "nettie"}))
    [welcome] = [json.loads(u) for u in Netstrings(Limits()).feed(room.take(2))]  # netstrings back
    assert welcome["type"] == "welcome" and welcome["users"] == ["ada", "nettie"]
    room.frames(1)
    room.send(2, netstring({"type": "say", "text": "hi"}))
    assert [(m["from"], m["text"]) for m in room.frames(1)] == [("nettie", "hi")]
