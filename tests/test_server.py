"""The chat server over real TCP on 127.0.0.1: every model must pass every test."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from chatlab.client import ChatClient
from chatlab.framing import encode_frame
from chatlab.testing import RawClient, chatlab_threads, frames_client, race_for_name

pytestmark = pytest.mark.timeout(60)


def say(client, text):
    client.send_frame({"type": "say", "text": text})


# ----------------------------------------------------------- registration


def test_banner_then_welcome_with_every_user(clients):
    ada = clients("ada")
    bob = clients()
    bob.send_frame({"type": "hello", "name": "bob"})
    assert bob.expect("welcome")["users"] == ["ada", "bob"]
    ada.expect("joined", name="bob")


def test_banner_is_one_line(server, transcript):
    with RawClient(server.address, "nc", transcript) as raw:
        assert raw.recv_banner().startswith("chatlab/1 ")


def test_name_taken_ignoring_case_and_compatibility_forms_then_retry(clients):
    clients("Ada")
    other = clients()
    for attempt in ["ada", "ADA", "Ａｄａ"]:
        other.send_frame({"type": "hello", "name": attempt})
        other.expect("error", code="name_taken")
    other.send_frame({"type": "hello", "name": "ada2"})
    other.expect("welcome", name="ada2")


@pytest.mark.parametrize("name", ["", "two words", "x" * 33, "<script>", "tab\there"])
def test_bad_name_then_retry(clients, name):
    client = clients()
    client.send_frame({"type": "hello", "name": name})
    client.expect("error", code="bad_name")
    client.send_frame({"type": "hello", "name": "fine"})
    client.expect("welcome")


def test_two_clients_racing_for_one_name(clients):
    racers = [clients() for _ in range(8)]
    replies = race_for_name(racers, "winner")
    assert sorted(r["type"] for r in replies) == ["error"] * 7 + ["welcome"]
    assert all(r["code"] == "name_taken" for r in replies if r["type"] == "error")


def test_hello_twice_is_refused(clients):
    ada = clients("ada")
    ada.send_frame({"type": "hello", "name": "ada"})
    ada.expect("error", code="already_registered")


# ------------------------------------------------------------- broadcast


@pytest.mark.limits(rate_limit=0)  # each client sends faster than a person may
def test_every_client_gets_every_message_in_one_order(clients):
    names = [f"user{i}" for i in range(5)]
    users = [clients(n) for n in names]
    for u in users:
        u.sync()  # swallow the join notices
    per_sender = 20

    def chat(client, name):
        for i in range(per_sender):
            say(client, f"{name} #{i}")

    threads = [threading.Thread(target=chat, args=(u, n)) for u, n in zip(users, names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    total = per_sender * len(users)
    orders = []
    for u in users:
        got = [u.expect("message") for _ in range(total)]
        orders.append([(m["id"], m["from"], m["text"]) for m in got])
        ids = [m["id"] for m in got]
        assert ids == sorted(ids) and len(set(ids)) == total
        for n in names:  # each sender's messages keep the order they were sent in
            assert [m["text"] for m in got if m["from"] == n] == [f"{n} #{i}" for i in range(per_sender)]
    assert all(order == orders[0] for order in orders)  # the same order for everyone


def test_message_fields(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    before = time.time()
    say(ada, "hello")
    for client in (ada, bob):
        msg = client.expect("message", **{"from": "ada", "text": "hello"})
        assert isinstance(msg["id"], int) and abs(msg["ts"] - before) < 60


def test_join_and_leave_are_announced_exactly_once(clients):
    ada = clients("ada")
    bob = clients("bob")
    carol = clients("carol")
    carol.send_frame({"type": "bye"})
    carol.expect("closing", reason="quit")
    carol.expect_closed()
    bob.close()  # vanishes without a bye
    # Wait for bob's notice itself (a ping could overtake his close), then sync.
    seen = ada.wait_frame(lambda m: m["type"] == "left" and m["name"] == "bob", "bob's left notice")
    seen += ada.sync()
    assert [m for m in seen if m["type"] in ("joined", "left")] == [
        {"type": "joined", "name": "bob", "room": "lobby"},
        {"type": "joined", "name": "carol", "room": "lobby"},
        {"type": "left", "name": "carol", "room": "lobby", "reason": "quit"},
        {"type": "left", "name": "bob", "room": "lobby", "reason": "disconnected"},
    ]


def test_ping_pong_even_before_registering(clients):
    client = clients()
    client.send_frame({"type": "ping", "id": "abc"})
    client.expect("pong", id="abc")


def test_who_lists_users(clients):
    ada = clients("ada")
    clients("bob")
    ada.sync()
    ada.send_frame({"type": "who"})
    assert ada.expect("users")["users"] == ["ada", "bob"]


@pytest.mark.limits(rate_limit=0)  # 51 messages at once: over the rate limit's burst
def test_many_frames_in_one_write_and_one_frame_in_single_bytes(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    batch = b"".join(encode_frame(json.dumps({"type": "say", "text": f"m{i}"}).encode()) for i in range(50))
    ada.send(batch, "50 frames in one write")
    one = encode_frame(b'{"type":"say","text":"slow"}')
    for byte in one:
        ada.send(bytes([byte]))
    texts = [bob.expect("message")["text"] for _ in range(51)]
    assert texts == [f"m{i}" for i in range(50)] + ["slow"]


def test_control_characters_never_arrive_raw(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    say(ada, "\x1b[2J\x1b]0;pwned\x07hi\u202e")
    assert bob.expect("message")["text"] == "^[[2J^[]0;pwned^Ghi"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"not json", "bad_frame"),
        (b'"a string"', "bad_frame"),
        (b'{"text": "no type"}', "bad_frame"),
        (b'{"type": "say"}', "bad_frame"),
        (b'{"type": "say", "text": ["a"]}', "bad_frame"),
        (b'\xc3\x28', "bad_frame"),  # invalid UTF-8
        (b'{"type": "say", "text": "\xe2\x82"}', "bad_frame"),  # truncated UTF-8
        (b'{"type": "teleport"}', "unknown_type"),
        (json.dumps({"type": "say", "text": "x" * 4097}).encode(), "too_large"),
        (b'{"type": "say", "text": "   "}', "bad_text"),
    ],
)
def test_bad_frames_get_an_error_and_the_connection_stays(clients, payload, code):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    bob.send_frame(payload)
    bob.expect("error", code=code)
    say(bob, "still here")
    assert ada.expect("message")["text"] == "still here"


def test_chat_before_hello_is_not_registered(clients):
    client = clients()
    say(client, "hi")
    client.expect("error", code="not_registered")


def test_oversized_frame_header_closes_that_client_only(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    bob.send(struct.pack(">I", 0xFFFFFFFF), "a header claiming 4 GiB")
    bob.expect("error", code="too_large")
    bob.expect("closing", reason="protocol_error")
    bob.expect_closed()
    ada.expect("left", name="bob", reason="protocol_error")
    say(ada, "fine")
    ada.expect("message", text="fine")


def test_a_line_that_never_ends_is_cut_off(server, clients, transcript):
    ada = clients("ada")
    with RawClient(server.address, "nc", transcript) as raw:
        raw.recv_banner()
        raw.send_line("eve")
        raw.recv_line()  # welcome
        ada.expect("joined", name="eve")
        raw.send(b"x" * 5000, "5000 bytes with no newline")
        assert raw.recv_line().startswith("! line longer than 4096 bytes")
        raw.expect_closed()
    ada.expect("left", name="eve", reason="protocol_error")


def test_client_vanishing_mid_frame(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    frame = encode_frame(b'{"type":"say","text":"never finished"}')
    bob.send(frame[:10], "the first 10 bytes of a frame")
    bob.close()
    ada.expect("left", name="bob", reason="disconnected")
    say(ada, "after")
    ada.expect("message", text="after")


def test_reset_in_the_middle_of_a_frame(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    bob.send(encode_frame(b'{"type":"say","text":"cut"}')[:7])
    # SO_LINGER with a zero timeout makes close() send a RST, not a FIN.
    bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bob.close()
    ada.expect("left", name="bob", reason="disconnected")


# ------------------------------------------------------------ lines mode


def test_lines_mode_exactly_as_nc_would(server, clients, transcript):
    ada = clients("ada")
    with RawClient(server.address, "nc", transcript) as nc:
        nc.recv_banner()
        nc.send(b"ADA\n")  # taken (case does not count): explained, try again
        assert "taken" in nc.recv_line()
        nc.send(b"bad name!\n")
        assert nc.recv_line().startswith("! a name may use only letters")
        nc.send(b"carol\r\n")  # telnet sends CRLF
        welcome = nc.recv_line()
        assert welcome.startswith("* Welcome, carol!") and "ada, carol" in welcome
        ada.expect("joined", name="carol")
        say(ada, "hi carol")
        ada.expect("message", text="hi carol")  # frames clients get their own message back
        assert nc.recv_line() == "<ada> hi carol"
        nc.send(b"hi ada\n")
        ada.expect("message", text="hi ada", **{"from": "carol"})
        nc.send(b"/who\n")
        # The next line is the answer to /who: carol's own line was not echoed.
        assert nc.recv_line() == "* Online: ada, carol"
        nc.send(b"/dance\n")
        assert "unknown command" in nc.recv_line()
        nc.send(b"\xff\xfe oops\n")
        assert "UTF-8" in nc.recv_line()
        nc.send(b"/quit\n")
        assert "closing" in nc.recv_line().lower()
        nc.expect_closed()
    ada.expect("left", name="carol", reason="quit")


def test_frames_and_lines_see_the_same_conversation(server, clients, transcript):
    ada = clients("ada")
    with RawClient(server.address, "nc", transcript) as nc:
        nc.recv_banner()
        nc.send_line("bob")
        nc.recv_line()
        ada.expect("joined")
        for i in range(5):
            say(ada, f"frame {i}")
            nc.send_line(f"line {i}")
        got = [ada.expect("message")["text"] for _ in range(10)]
        # Order between the two senders is decided by the server; each sender's own order holds.
        assert [t for t in got if t.startswith("frame")] == [f"frame {i}" for i in range(5)]
        assert [t for t in got if t.startswith("line")] == [f"line {i}" for i in range(5)]
        assert [nc.recv_line() for _ in range(5)] == [f"<ada> frame {i}" for i in range(5)]


# --------------------------------------------------- slow readers, shutdown


class Tally:
    """Counts what a ChatClient receives, and lets a test wait for a count (no sleeping)."""

    def __init__(self):
        self.messages = 0
        self.lefts: list[dict] = []
        self.changed = threading.Condition()

    def on_event(self, event):
        with self.changed:
            if event["type"] == "message":
                self.messages += 1
            elif event["type"] == "left":
                self.lefts.append(event)
            self.changed.notify_all()

    def wait(self, test, timeout=20.0):
        with self.changed:
            return self.changed.wait_for(test, timeout)


def test_a_client_that_never_reads_stalls_nobody(start_server, transcript):
    server = start_server(outbox_bytes=64 * 1024, rate_limit=0, relay_rate=0)  # the chatters send as fast as they can
    # The sleeper registers, then never reads; a small receive buffer fills fast.
    sleeper = frames_client(server.address, "sleeper", transcript, rcvbuf=4096)
    tallies = [Tally() for _ in range(10)]
    chatters = [ChatClient(*server.address, name=f"c{i}", on_event=t.on_event) for i, t in enumerate(tallies)]
    try:
        text = "x" * 4000
        rounds = 0
        # Chat until the server gives up on the sleeper: its kernel buffers
        # and its 64 KiB outbox fill first.  Each round waits until every
        # chatter has every message so far: a stall would show as a timeout.
        # Bounded: at most 2000 rounds of 10 x 4 KB.
        while not tallies[0].lefts and rounds < 2000:
            for c in chatters:
                c.say(text)
            rounds += 1
            for i, t in enumerate(tallies):
                assert t.wait(lambda: t.messages >= rounds * 10), (
                    f"round {rounds}: c{i} has {t.messages} of {rounds * 10} messages")
        assert rounds < 2000, "the sleeper was never disconnected"
        for t in tallies:
            # Nothing lost, and the sleeper's departure announced exactly once, with the reason.
            assert t.wait(lambda: t.lefts), "the sleeper's departure was not announced"
            assert t.messages == rounds * 10
            assert t.lefts == [{"type": "left", "name": "sleeper", "room": "lobby", "reason": "too_slow"}]
    finally:
        sleeper.close()
        for c in chatters:
            c.close()


def test_a_reader_that_falls_behind_gets_every_byte_in_order(start_server):
    # A reader falls behind: more is queued for it than the kernel buffers
    # hold (~4 MB), so its writer is busy sending from the outbox.  Then it
    # reads, in small pieces, while three talkers go on.  Bytes for it are
    # now sent some at once and some from the outbox (threads.py writes
    # through when nothing waits), and no piece may overtake, split or
    # repeat another.
    server = start_server(outbox_bytes=1 << 25, rate_limit=0, relay_rate=0)
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    witness = Tally()
    talkers = [ChatClient(*server.address, name=f"t{i}") for i in range(3)]
    watcher = ChatClient(*server.address, name="witness", on_event=witness.on_event)
    behind, more, filler = 2500, 2500, "x" * 900  # 7,500 messages of ~915 bytes: ~7 MB behind
    try:
        reader.settimeout(30)
        reader.connect(server.address)
        reader.sendall(b"reader\n")
        got, pending = {f"t{i}": [] for i in range(3)}, b""
        while b"* Welcome, reader!" not in pending:  # registered: from here on it hears every message
            data = reader.recv(4096)
            assert data, f"closed before the welcome: {pending!r}"
            pending += data
        pending = pending.rpartition(b"\n")[2]

        def talk(first: int, last: int) -> None:
            for n in range(first, last):
                for t in talkers:
                    t.say(f"{n:05d} {filler}")

        talk(0, behind)
        # The witness heard them all: the server has queued them all for the reader too.
        assert witness.wait(lambda: witness.messages >= 3 * behind, timeout=60), "the talkers' messages stalled"
        more_talk = threading.Thread(target=talk, args=(behind, behind + more), daemon=True)
        more_talk.start()
        while sum(map(len, got.values())) < 3 * (behind + more):
            data = reader.recv(1024)  # small pieces, while the talkers go on
            assert data, "the server closed the reader"
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line.startswith(b"<t"):
                    name, _, text = line.decode()[1:].partition("> ")
                    number, _, rest = text.partition(" ")
                    assert rest == filler, f"a message from {name} arrived damaged: {line[:80]!r}"
                    got[name].append(int(number))
        more_talk.join(30)
        for name, numbers in got.items():
            assert numbers == list(range(behind + more)), f"{name}'s messages arrived out of order or twice"
    finally:
        reader.close()
        for t in [*talkers, watcher]:
            t.close()


def test_graceful_shutdown_tells_every_client(start_server, transcript):
    before = chatlab_threads()
    server = start_server()
    ada = frames_client(server.address, "ada", transcript)
    with RawClient(server.address, "nc", transcript) as nc:
        nc.recv_banner()
        nc.send_line("bob")
        nc.recv_line()
        started = time.monotonic()
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        assert ada.wait_frame(lambda m: m["type"] == "closing", "the closing notice")[-1]["reason"] == "shutdown"
        assert "shutting down" in nc.recv_line()
        ada.expect_closed()
        nc.expect_closed()
        ada.close()
        stopper.join(5)
        assert not stopper.is_alive()
        assert time.monotonic() - started < 2.5
    assert chatlab_threads() <= before  # every thread the server started has ended


def test_shutdown_with_a_client_that_ignores_it(start_server, transcript):
    server = start_server()
    stubborn = frames_client(server.address, "stubborn", transcript, rcvbuf=4096)
    try:
        started = time.monotonic()
        server.stop()
        # Bounded even though the client never closes its side.
        assert time.monotonic() - started < 2.5
        stubborn.expect_closed()
    finally:
        stubborn.close()


def test_goodbye_survives_a_client_that_keeps_sending(clients):
    # After its FIN the server reads (and drops) until the client's EOF
    # (docs/protocol.md, section 8).  Closing at once, with bytes from the
    # client still unread, would send a reset: the client's writes would
    # fail, and the goodbye could be destroyed before it is read.
    talker = clients("talker", timeout=20)
    # A small send buffer keeps the talker still sending when a server that
    # did not linger would reset it (more than the kernel buffers can absorb).
    talker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    chatter = encode_frame(json.dumps({"type": "say", "text": "x" * 1000}).encode())
    talker.send(encode_frame(b'{"type":"bye"}') + chatter * 1000, "bye, then 1 MB the server must read and drop")
    talker.expect("closing", reason="quit")
    talker.expect_closed()


def test_port_zero_reports_the_real_port(server):
    host, port = server.address
    assert host == "127.0.0.1" and port > 0


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def test_ipv6_loopback(model, transcript):
    from chatlab.servers import make_server

    try:
        server = make_server(model, "::1", 0).start()
    except Exception as exc:  # an IPv6-less kernel
        pytest.skip(f"cannot listen on ::1: {exc}")
    try:
        client = frames_client(server.address, "six", transcript)
        client.close()
    finally:
        server.stop()
