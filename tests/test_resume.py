"""Clients that resume: ChatClient(resume=True) after a dropped connection, a server restart, a node killed.

The person must miss nothing and see nothing twice: every test compares
what a resuming client received with exactly what was said.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from chatlab.client import ChatClient
from chatlab.lab.redis import NodeProcess, RedisServer, redis_available
from chatlab.limits import Limits
from chatlab.servers import MODELS, make_server

pytestmark = pytest.mark.timeout(90)

FAST = ("--rate-limit", "0", "--flood-limit", "0", "--accept-rate", "0", "--max-per-address", "0", "--relay-rate", "0")


def texts(client: ChatClient, count: int, timeout: float = 30) -> list[str]:
    """The texts of the next ``count`` chat messages (other events skipped)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got.append(client.wait_for("message", max(0.1, deadline - time.monotonic()))["text"])
    return got


def event(client: ChatClient, kind: str, timeout: float = 30) -> dict[str, Any]:
    return client.wait_for(kind, timeout)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_dropped_connection_is_resumed_and_what_was_said_meanwhile_caught_up(model):
    server = make_server(model, "127.0.0.1", 0, Limits.off()).start()
    ada = bob = None
    try:
        ada = ChatClient(*server.address, name="ada", resume=True, timeout=10)
        bob = ChatClient(*server.address, name="bob", timeout=10)
        bob.say("before")
        assert texts(ada, 1) == ["before"]
        # The connection breaks under ada (as a Wi-Fi drop would end it).
        ada.sock.shutdown(socket.SHUT_RDWR)
        assert event(ada, "reconnecting")["attempt"] == 1
        for n in range(5):
            bob.say(f"meanwhile {n}")
        resumed = event(ada, "resumed")
        assert resumed["missed"] <= 5
        bob.say("after")
        assert texts(ada, 6) == [f"meanwhile {n}" for n in range(5)] + ["after"]
        ada.say("ada is back")
        assert texts(bob, 1 + 5 + 1 + 1)[-1] == "ada is back"  # bob hears his own too
    finally:
        for client in (ada, bob):
            if client is not None:
                client.close()
        server.stop()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_restarted_server_is_rejoined_with_the_rooms_and_history(tmp_path, model):
    db = str(tmp_path / "history.db")
    server = make_server(model, "127.0.0.1", 0, Limits.off(), db=db).start()
    port = server.address[1]
    ada = bob = None
    try:
        ada = ChatClient("127.0.0.1", port, name="ada", resume=True, timeout=10)
        ada.send({"type": "join", "room": "kitchen"})
        ada.wait_for("joined")
        ada.send({"type": "say", "room": "kitchen", "text": "kettle on"})
        assert texts(ada, 1) == ["kettle on"]
        server.stop()  # everyone is told "shutdown": a resuming client comes back
        assert ada.wait_for("closing")["reason"] == "shutdown"
        event(ada, "reconnecting")
        server = make_server(model, "127.0.0.1", port, Limits.off(), db=db).start()
        assert event(ada, "resumed")["missed"] == 0  # nothing was said while it was down
        bob = ChatClient("127.0.0.1", port, name="bob", timeout=10)
        bob.send({"type": "join", "room": "kitchen"})
        assert bob.wait_for(lambda e: e["type"] == "joined" and "members" in e)["members"] == ["ada", "bob"]
        bob.send({"type": "say", "room": "kitchen", "text": "two sugars"})
        assert texts(ada, 1) == ["two sugars"]  # once: not again from the history it fetched
    finally:
        for client in (ada, bob):
            if client is not None:
                client.close()
        server.stop()


def test_a_client_that_means_to_leave_is_not_brought_back():
    server = make_server("selectors", "127.0.0.1", 0, Limits()).start()
    try:
        ada = ChatClient(*server.address, name="ada", resume=True, timeout=5)
        ada.send({"type": "bye"})
        assert ada.wait_for(lambda e: e["type"] == "disconnected", 5)["type"] == "disconnected"
        ada.close()
    finally:
        server.stop()


@pytest.mark.skipif(redis_available() is not None, reason=str(redis_available()))
@pytest.mark.parametrize("killed, survivor", [("threads", "selectors"), ("selectors", "asyncio"),
                                              ("asyncio", "threads")])
def test_a_node_killed_under_a_client_it_resumes_on_another_node_missing_nothing(tmp_path, killed, survivor):
    with RedisServer() as redis_server:
        doomed = NodeProcess(redis_server.url, killed, args=FAST, log_file=str(tmp_path / "doomed.log"))
        other = make_server(survivor, "127.0.0.1", 0, Limits.off(), redis=redis_server.url).start()
        ada = bob = None
        try:
            ada = ChatClient(*doomed.address, name="ada", resume=True, also=[other.address], timeout=10)
            bob = ChatClient(*other.address, name="bob", timeout=10)
            said: list[str] = []
            stop = threading.Event()

            def chatter() -> None:  # bob talks on, whatever happens to ada's server
                n = 0
                while not stop.is_set() and n < 2000:
                    said.append(f"bob {n}")
                    bob.say(f"bob {n}")
                    n += 1
                    stop.wait(0.01)

            talking = threading.Thread(target=chatter)
            talking.start()
            try:
                first = texts(ada, 20)  # ada hears bob, live
                doomed.kill()
                event(ada, "reconnecting")
                resumed = event(ada, "resumed", 40)
                assert resumed["address"].endswith(f":{other.address[1]}")
            finally:
                stop.set()
                talking.join(10)
            heard = texts(bob, len(said))  # bob's own copies: everything he said is in the stream
            assert heard == said
            got = first + texts(ada, len(said) - 20, 40)
            # Nothing missed, nothing twice, in order: ada's screen is bob's script.
            assert got == said
            assert resumed["missed"] > 0  # some came from the history, while ada's name was still held
        finally:
            for client in (ada, bob):
                if client is not None:
                    client.close()
            other.stop()
            doomed.stop()


def test_the_terminal_says_it_is_reconnecting_and_what_it_caught_up():
    from chatlab.terminal import describe

    assert describe({"type": "reconnecting", "attempt": 2, "delay": 0.4, "reason": "connection lost"}) == \
        "* Connection lost (connection lost); reconnecting in 0.4 s (try 2)..."
    assert describe({"type": "resumed", "address": "127.0.0.1:5051", "missed": 3}) == \
        "* Reconnected to 127.0.0.1:5051: 3 messages you missed follow."
    assert describe({"type": "resumed", "address": "127.0.0.1:5051", "missed": 0}) == \
        "* Reconnected to 127.0.0.1:5051: you missed nothing."
