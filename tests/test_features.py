"""Private messages, rooms and history over real TCP, in both framings and every server model."""

from __future__ import annotations

import pytest

from chatlab.servers import make_server
from chatlab.testing import RawClient, frames_client

pytestmark = pytest.mark.timeout(60)


def nc_client(address, name, transcript):
    """A lines-mode client, registered, past its welcome."""
    nc = RawClient(address, name, transcript)
    nc.recv_banner()
    nc.send_line(name)
    assert nc.recv_line().startswith(f"* Welcome, {name}!")
    return nc


# ------------------------------------------------------- private messages


def test_dm_reaches_only_the_two_parties(clients):
    ada, bob, eve = clients("ada"), clients("bob"), clients("eve")
    ada.sync(), bob.sync()
    ada.send_frame({"type": "dm", "to": "BOB", "text": "psst"})
    for party in (ada, bob):
        msg = party.expect("message", **{"from": "ada", "to": "bob", "text": "psst"})
        assert "room" not in msg
    assert [m for m in eve.sync() if m["type"] == "message"] == []


def test_dm_to_nobody_is_an_error(clients):
    ada = clients("ada")
    ada.send_frame({"type": "dm", "to": "ghost", "text": "hello?"})
    ada.expect("error", code="unknown_user")


def test_msg_command_in_lines_mode(server, clients, transcript):
    ada = clients("ada")
    with nc_client(server.address, "carol", transcript) as nc:
        ada.expect("joined", name="carol")
        nc.send_line("/msg ada just between us")
        ada.expect("message", **{"from": "carol", "to": "ada", "text": "just between us"})
        ada.send_frame({"type": "dm", "to": "carol", "text": "ok"})
        assert nc.recv_line() == "*ada* (private) ok"
        nc.send_line("/msg nobody hi")
        assert nc.recv_line() == "! nobody called nobody is here"  # words: the code is for programs


# ------------------------------------------------------------------ rooms


def test_rooms_join_say_leave(clients):
    ada, bob, eve = clients("ada"), clients("bob"), clients("eve")
    ada.sync(), bob.sync()
    ada.send_frame({"type": "join", "room": "games"})
    assert ada.expect("joined", name="ada", room="games")["members"] == ["ada"]
    bob.send_frame({"type": "join", "room": "#Games"})  # a leading # and case do not matter
    assert bob.expect("joined", name="bob", room="games")["members"] == ["ada", "bob"]
    ada.expect("joined", name="bob", room="games")
    bob.send_frame({"type": "say", "text": "gg", "room": "games"})
    for member in (ada, bob):
        member.expect("message", room="games", text="gg")
    # eve is not in games: she saw neither the joins nor the message.
    assert [m for m in eve.sync() if m.get("room") == "games"] == []
    eve.send_frame({"type": "say", "text": "let me in", "room": "games"})
    eve.expect("error", code="not_in_room")
    bob.send_frame({"type": "leave", "room": "games"})
    bob.expect("left", name="bob", room="games", reason="left")
    ada.expect("left", name="bob", room="games", reason="left")
    # say without a room still goes to the lobby, which bob never left.
    bob.send_frame({"type": "say", "text": "back in the lobby"})
    for member in (ada, bob, eve):
        member.expect("message", room="lobby", text="back in the lobby")


def test_rooms_listing_and_who_in_a_room(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    ada.send_frame({"type": "join", "room": "study"})
    ada.expect("joined", room="study")
    ada.send_frame({"type": "rooms"})
    assert ada.expect("rooms")["rooms"] == [
        {"name": "lobby", "members": ["ada", "bob"]},
        {"name": "study", "members": ["ada"]},
    ]
    bob.sync()
    bob.send_frame({"type": "who", "room": "study"})
    assert bob.expect("users") == {"type": "users", "room": "study", "users": ["ada"]}


def test_an_empty_room_disappears(clients):
    ada = clients("ada")
    ada.send_frame({"type": "join", "room": "tmp"})
    ada.expect("joined")
    ada.send_frame({"type": "leave", "room": "tmp"})
    ada.expect("left")
    ada.send_frame({"type": "rooms"})
    assert [r["name"] for r in ada.expect("rooms")["rooms"]] == ["lobby"]


@pytest.mark.parametrize("room", ["", "two words", "x" * 33, "bad/room"])
def test_bad_room_names(clients, room):
    ada = clients("ada")
    ada.send_frame({"type": "join", "room": room})
    ada.expect("error", code="bad_room")


def test_room_limits(start_server, transcript):
    server = start_server(max_rooms=3, max_rooms_per_user=2)
    ada = frames_client(server.address, "ada", transcript)
    bob = frames_client(server.address, "bob", transcript)
    try:
        ada.sync()
        ada.send_frame({"type": "join", "room": "one"})
        ada.expect("joined", room="one")
        ada.send_frame({"type": "join", "room": "two"})
        ada.expect("error", code="too_many_rooms")  # lobby + one = 2 rooms for ada
        bob.send_frame({"type": "join", "room": "two"})
        bob.expect("joined", room="two")
        bob.send_frame({"type": "leave", "room": "lobby"})
        bob.expect("left", room="lobby")
        bob.send_frame({"type": "join", "room": "three"})
        bob.expect("error", code="too_many_rooms")  # lobby, one, two: the server is full
    finally:
        ada.close()
        bob.close()


def test_disconnect_leaves_every_room_once(clients):
    ada, bob = clients("ada"), clients("bob")
    for room in ("a", "b"):
        for c in (ada, bob):
            c.send_frame({"type": "join", "room": room})
    ada.sync()
    bob.close()
    lefts = []
    while len(lefts) < 3:  # wait on the notices themselves: a ping could overtake bob's close
        msg = ada.recv_frame()
        if msg["type"] == "left":
            lefts.append(msg)
    assert sorted(m["room"] for m in lefts) == ["a", "b", "lobby"]
    assert all(m["reason"] == "disconnected" for m in lefts)
    assert [m for m in ada.sync() if m["type"] == "left"] == []  # once each, never again


def test_rooms_in_lines_mode(server, clients, transcript):
    ada = clients("ada")
    ada.send_frame({"type": "join", "room": "games"})
    ada.expect("joined")
    with nc_client(server.address, "carol", transcript) as nc:
        nc.send_line("/join games")
        assert nc.recv_line() == "* You are in games: ada, carol"
        nc.send_line("plain lines now go to games")
        ada.wait_frame(lambda m: m.get("text") == "plain lines now go to games" and m["room"] == "games",
                       "carol's line in games")
        ada.send_frame({"type": "say", "text": "hi", "room": "games"})
        assert nc.recv_line() == "[games] <ada> hi"
        nc.send_line("/rooms")
        assert nc.recv_line() == "* Rooms: games (2), lobby (2)"
        nc.send_line("/who games")
        assert nc.recv_line() == "* In games: ada, carol"
        nc.send_line("/leave")
        assert nc.recv_line() == "* carol left games"  # words, not "(left)"
        nc.send_line("lobby again")
        ada.wait_frame(lambda m: m.get("text") == "lobby again" and m["room"] == "lobby", "carol in the lobby")
        nc.send_line("/help")
        assert "/join ROOM" in nc.recv_line()


def test_nobody_can_leave_their_last_room(server, clients, transcript):
    with nc_client(server.address, "carol", transcript) as nc:
        nc.send_line("/leave")
        refusal = nc.recv_line()
        assert refusal.startswith("! you are only in lobby: leaving it would leave you in no room"), refusal
        assert "(last_room)" not in refusal  # words for a person; frames clients get the code
        ada = clients("ada")
        nc.send_line("still here")  # still in the lobby: the line is heard, not refused
        ada.wait_frame(lambda m: m.get("text") == "still here" and m["room"] == "lobby", "carol in the lobby")
    bob = clients("bob")
    bob.send_frame({"type": "leave"})
    assert bob.wait_frame(lambda m: m["type"] == "error", "the refusal")[-1]["code"] == "last_room"


def test_a_person_in_nc_is_told_plainly_that_files_need_chatlab_chat(server, clients, transcript):
    from chatlab.client import ChatClient

    with nc_client(server.address, "carol", transcript) as nc, ChatClient(*server.address, name="ada") as ada:
        ada.send_file(b"notes", "notes.txt", to="carol")
        offer = nc.recv_line()
        while "offers the file" not in offer and offer.startswith("* "):  # ("* ada joined" first)
            offer = nc.recv_line()
        assert "offers the file notes.txt" in offer and "join with 'chatlab chat' (nc cannot)" in offer, offer
        nc.send_line("/accept f1")
        answer = nc.recv_line()
        assert "/accept needs a chatlab client" in answer and "unknown command" not in answer, answer


# ---------------------------------------------------------------- history


def test_joining_shows_recent_history_marked_as_such(clients):
    ada = clients("ada")
    for i in range(3):
        ada.send_frame({"type": "say", "text": f"before {i}"})
    ada.sync()
    bob = clients()
    bob.send_frame({"type": "hello", "name": "bob"})
    bob.expect("welcome")
    history = bob.expect("history", room="lobby")
    assert [m["text"] for m in history["messages"]] == ["before 0", "before 1", "before 2"]
    assert all(m["type"] == "message" and m["from"] == "ada" for m in history["messages"])


@pytest.mark.limits(rate_limit=0)  # 30 messages at once: over the rate limit's burst
def test_history_paging(clients):
    ada = clients("ada")
    for i in range(30):
        ada.send_frame({"type": "say", "text": f"m{i}"})
    ada.sync()
    ada.send_frame({"type": "history", "room": "lobby", "limit": 10})
    page = ada.expect("history")["messages"]
    assert [m["text"] for m in page] == [f"m{i}" for i in range(20, 30)]
    ada.send_frame({"type": "history", "room": "lobby", "limit": 10, "before": page[0]["id"]})
    assert [m["text"] for m in ada.expect("history")["messages"]] == [f"m{i}" for i in range(10, 20)]
    ada.send_frame({"type": "history", "limit": "ten"})
    ada.expect("error", code="bad_frame")


def test_history_in_lines_mode(server, clients, transcript):
    ada = clients("ada")
    ada.send_frame({"type": "say", "text": "remember me"})
    ada.sync()
    with nc_client(server.address, "carol", transcript) as nc:
        assert nc.recv_line() == "--- history of lobby: 1 message ---"
        assert nc.recv_line().endswith("<ada> remember me")
        assert nc.recv_line() == "--- end of history ---"
        nc.send_line("/history 5")
        assert nc.recv_line().startswith("--- history of lobby")


def test_history_survives_a_restart_with_db(model, tmp_path, transcript):
    db = str(tmp_path / "chat.db")
    first = make_server(model, "127.0.0.1", 0, db=db).start()
    try:
        ada = frames_client(first.address, "ada", transcript)
        ada.send_frame({"type": "say", "text": "written to disk"})
        said = ada.expect("message")
        ada.close()
    finally:
        first.stop()
    second = make_server(model, "127.0.0.1", 0, db=db).start()
    try:
        bob = frames_client(second.address, "bob", transcript)
        history = bob.expect("history")["messages"]
        assert [(m["id"], m["text"]) for m in history] == [(said["id"], "written to disk")]
        bob.send_frame({"type": "say", "text": "after the restart"})
        assert bob.expect("message")["id"] > said["id"]  # ids keep growing
        bob.close()
    finally:
        second.stop()


def test_private_messages_are_not_in_history(clients):
    ada, _bob = clients("ada"), clients("bob")  # bob must be there to be written to
    ada.sync()
    ada.send_frame({"type": "dm", "to": "bob", "text": "secret"})
    ada.expect("message")
    ada.send_frame({"type": "history"})
    assert ada.expect("history")["messages"] == []


# ---------------------------------------------------------- file sharing

import base64  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402

from chatlab.client import ChatClient  # noqa: E402
from chatlab.files import CHUNK  # noqa: E402


def test_a_file_to_one_person_arrives_whole_and_checked(server):
    data = os.urandom(3 * CHUNK + 123)
    with ChatClient(*server.address, name="ada") as ada, ChatClient(*server.address, name="bob") as bob:
        ada.send_file(data, "../../secret/notes.bin", to="bob")
        offer = bob.wait_for("file_offer")
        assert offer["name"] == "notes.bin"  # never a path: it could climb directories
        assert offer["size"] == len(data) and offer["sha256"] == hashlib.sha256(data).hexdigest()
        assert ada.wait_for("file_sent")["recipients"] == ["bob"]
        assert bob.accept_file(offer["file"]) == data
        assert ada.wait_for("file_accepted")["by"] == "bob"


def test_a_file_to_a_room_can_be_declined(server):
    with ChatClient(*server.address, name="ada") as ada, ChatClient(*server.address, name="bob") as bob:
        ada.send_file(b"hello file", "hello.txt")  # to the lobby
        offer = bob.wait_for("file_offer")
        assert offer["room"] == "lobby" and offer["from"] == "ada"
        bob.decline_file(offer["file"])
        assert ada.wait_for("file_declined")["by"] == "bob"


def test_chat_flows_between_the_chunks_of_a_file(clients):
    """The receiver pulls chunk by chunk: a message said mid-transfer arrives mid-transfer."""
    ada, bob, carol = clients("ada"), clients("bob"), clients("carol")
    ada.sync(), bob.sync()
    data = os.urandom(4 * CHUNK)
    sha = hashlib.sha256(data).hexdigest()
    ada.send_frame({"type": "file_offer", "name": "big.bin", "size": len(data), "sha256": sha, "to": "bob"})
    for seq in range(4):
        request = ada.expect("file_upload", seq=seq)
        chunk = base64.b64encode(data[seq * CHUNK:(seq + 1) * CHUNK]).decode()
        ada.send_frame({"type": "file_chunk", "file": request["file"], "seq": seq, "data": chunk})
    ada.expect("file_sent")
    offer = bob.expect("file_offer", sha256=sha)
    bob.send_frame({"type": "file_accept", "file": offer["file"]})
    received = base64.b64decode(bob.expect("file_chunk", seq=0)["data"])
    carol.send_frame({"type": "say", "text": "meanwhile"})  # while the file is in flight
    bob.expect("message", text="meanwhile")
    for seq in range(1, 4):
        bob.send_frame({"type": "file_get", "file": offer["file"], "seq": seq})
        chunk = bob.expect("file_chunk", seq=seq)
        received += base64.b64decode(chunk["data"])
    assert chunk["last"] and received == data


def test_a_file_that_does_not_match_its_checksum_is_refused(clients):
    ada, bob = clients("ada"), clients("bob")
    ada.sync()
    ada.send_frame({"type": "file_offer", "name": "x", "size": 3, "sha256": "0" * 64, "to": "bob"})
    request = ada.expect("file_upload", seq=0)
    ada.send_frame({"type": "file_chunk", "file": request["file"], "seq": 0, "data": base64.b64encode(b"abc").decode()})
    ada.expect("error", code="bad_checksum")
    assert [m for m in bob.sync() if m["type"] == "file_offer"] == []


@pytest.mark.parametrize("offer, code", [
    ({"name": "x", "size": 10 ** 9, "sha256": "0" * 64, "to": "bob"}, "too_large"),
    ({"name": "x", "size": 1, "sha256": "not hex", "to": "bob"}, "bad_file"),
    ({"name": "..", "size": 1, "sha256": "0" * 64, "to": "bob"}, "bad_file"),
    ({"name": "x", "size": 1, "sha256": "0" * 64, "to": "nobody"}, "unknown_user"),
])
def test_bad_file_offers(clients, offer, code):
    ada, _bob = clients("ada"), clients("bob")  # someone to offer files to
    ada.sync()
    ada.send_frame({"type": "file_offer", **offer})
    ada.expect("error", code=code)


def test_only_the_recipients_may_fetch_a_file(clients):
    ada, _bob, eve = clients("ada"), clients("bob"), clients("eve")  # bob is offered it, eve is not
    ada.sync()
    ada.send_frame({"type": "file_offer", "name": "x", "size": 0, "sha256": hashlib.sha256(b"").hexdigest(),
                    "to": "bob"})
    file_id = ada.wait_frame(lambda m: m["type"] == "file_upload", "file_upload")[-1]["file"]
    ada.send_frame({"type": "file_chunk", "file": file_id, "seq": 0, "data": ""})  # an empty file: one empty chunk
    ada.wait_frame(lambda m: m["type"] == "file_sent", "file_sent")
    eve.send_frame({"type": "file_accept", "file": file_id})
    eve.expect("error", code="unknown_file")


def test_lines_mode_sees_file_offers(server, transcript):
    with ChatClient(*server.address, name="ada") as ada, nc_client(server.address, "carol", transcript) as nc:
        ada.send_file(b"data", "report.txt", to="carol")
        line = nc.recv_line()
        assert "ada offers the file report.txt (4 bytes" in line


@pytest.mark.parametrize("before", [2 ** 63, 2 ** 100, -(2 ** 70)])
def test_history_paging_with_huge_ids(clients, before):
    ada = clients("ada")
    ada.send_frame({"type": "say", "text": "one"})
    ada.expect("message")
    ada.send_frame({"type": "history", "room": "lobby", "limit": 5, "before": before})
    assert len(ada.expect("history")["messages"]) == (1 if before > 0 else 0)
