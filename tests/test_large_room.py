"""Large rooms: joins announced when the newcomer first speaks (limits.large_room).

Announcing every join to every member costs N squared notices for N joins;
above the threshold a newcomer is quiet until it speaks, as in IRC's
delayed-join channels.  Sans-IO tests of the rule, then one over real TCP
for every server model.
"""

from __future__ import annotations

import pytest

from chatlab.dialects.lines import render_line
from chatlab.limits import LARGE_ROOM, Limits
from chatlab.testing import CoreDriver, frames_client

pytestmark = pytest.mark.timeout(60)


class Server(CoreDriver):
    """A ChatCore driven by hand (chatlab.testing); ``inbox[cid]`` is what client ``cid`` would have received."""

    def __init__(self, large_room: int):
        super().__init__(limits=Limits(large_room=large_room))

    def join(self, cid: int, name: str) -> dict:
        return self.register(cid, name)[0]

    def send(self, cid: int, msg: dict) -> None:
        self.send_msg(cid, msg)

    def kinds(self, cid: int) -> list[tuple]:
        return [(m["type"], m.get("name") or m.get("from")) for m in self.frames(cid)]


def test_the_threshold_is_a_named_limit_with_a_default():
    assert Limits().large_room == LARGE_ROOM >= 30  # a classroom is never a "large room"


def test_below_the_threshold_every_join_is_announced():
    server = Server(large_room=3)
    for cid, name in enumerate(["ada", "bob", "cy"], 1):
        server.join(cid, name)
    assert server.kinds(1) == [("joined", "bob"), ("joined", "cy")]
    assert server.kinds(2) == [("joined", "cy")]


def test_a_newcomer_to_a_large_room_is_quiet_until_it_speaks():
    server = Server(large_room=3)
    for cid, name in enumerate(["ada", "bob", "cy"], 1):
        server.join(cid, name)
    for cid in (1, 2, 3):
        server.frames(cid)
    welcome = server.join(4, "dee")
    # The newcomer sees who has been announced, and how many are here in all.
    assert welcome["users"] == ["ada", "bob", "cy"] and welcome["count"] == 4
    assert [server.frames(cid) for cid in (1, 2, 3)] == [[], [], []]
    server.send(4, {"type": "say", "text": "hello all"})
    for cid in (1, 2, 3):
        assert server.kinds(cid) == [("joined", "dee"), ("message", "dee")]
    server.send(4, {"type": "say", "text": "again"})
    assert server.kinds(1) == [("message", "dee")]  # announced once only
    # Once announced, a member is listed to later newcomers, and its leaving is told.
    assert server.join(5, "eve")["users"] == ["ada", "bob", "cy", "dee"]
    server.disconnect(4)
    assert server.kinds(1) == [("left", "dee")]


def test_a_quiet_member_leaves_as_quietly_as_it_came():
    server = Server(large_room=2)
    server.join(1, "ada")
    server.join(2, "bob")
    server.join(3, "cy")
    server.frames(1)
    server.disconnect(3)
    assert server.frames(1) == []
    # `who` is asked for, so it still lists everyone registered.
    server.join(4, "dee")
    server.send(1, {"type": "who"})
    assert server.frames(1) == [{"type": "users", "users": ["ada", "bob", "dee"]}]


def test_zero_turns_the_threshold_off():
    server = Server(large_room=0)
    joined = 150  # beyond LARGE_ROOM: with the threshold on, most would join quietly
    for cid in range(1, joined + 1):
        server.join(cid, f"u{cid}")
    assert [m["type"] for m in server.frames(1)] == ["joined"] * (joined - 1)  # everyone after the first
    assert "count" not in server.join(151, "last")


def test_lines_mode_welcome_says_how_many_more_are_online():
    line = render_line({"type": "welcome", "name": "dee", "users": ["ada", "bob"], "count": 1002})
    assert "Online: ada, bob and 1,000 more." in line


def test_large_rooms_over_tcp(start_server, transcript):
    server = start_server(large_room=2)
    clients = []
    try:
        for name in ("ada", "bob"):
            clients.append(frames_client(server.address, name, transcript))
        ada, bob = clients
        bob_joined = ada.sync()
        assert [m["type"] for m in bob_joined] == ["joined"]
        clients.append(frames_client(server.address, None, transcript))
        cy = clients[-1]
        cy.send_frame({"type": "hello", "name": "cy"})
        welcome = cy.expect("welcome", name="cy")
        assert welcome["users"] == ["ada", "bob"] and welcome["count"] == 3
        assert ada.sync() == []  # cy joined quietly
        cy.send_frame({"type": "say", "text": "hi"})
        got = ada.wait_frame(lambda m: m.get("type") == "message", "cy's message")
        assert [(m["type"], m.get("name") or m.get("from")) for m in got] == [("joined", "cy"), ("message", "cy")]
    finally:
        for client in clients:
            client.close()
