"""Several servers, one chat: chatlab serve --redis, against a real redis-server (docs/scaling.md).

Every test starts its own servers ("nodes") on a Redis of this module
(flushed before each test), or a Redis of its own where a restart is the
point; everything is stopped in ``finally``/fixtures.  Nothing sleeps to
synchronise: each step waits for the message that proves it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from chatlab.client import ChatClient, ChatError
from chatlab.lab.redis import NodeProcess, RedisServer, redis_available
from chatlab.limits import Limits
from chatlab.servers import MODELS, BaseServer, make_server

pytestmark = [pytest.mark.skipif(redis_available() is not None, reason=str(redis_available())),
              pytest.mark.timeout(90)]

LIMITS = Limits.off()  # the tests send faster than a person: no rate limits
FAST = ["--rate-limit", "0", "--flood-limit", "0", "--accept-rate", "0", "--max-per-address", "0", "--relay-rate", "0"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def nodes() -> Iterator[Callable[..., BaseServer]]:
    """Start in-process nodes (any model) on a Redis; all stopped at the end."""
    started: list[BaseServer] = []

    def start(url: str, model: str = "selectors", mode: str = "streams", limits: Limits = LIMITS) -> BaseServer:
        from chatlab.backplane import make_backplane

        server = make_server(model, "127.0.0.1", 0, limits, backplane=make_backplane(url, mode))
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., ChatClient]]:
    made: list[ChatClient] = []

    def connect(server: Any, name: str | None = None, **options: Any) -> ChatClient:
        address = server.address
        client = ChatClient(address[0], address[1], name=name, timeout=10, **options)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()


def messages_until(client: ChatClient, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The next ``count`` chat messages the client receives (other events skipped)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got.append(client.wait_for("message", timeout=max(0.1, deadline - time.monotonic())))
    return got


def left(client: ChatClient, name: str, timeout: float) -> dict[str, Any]:
    return client.wait_for(lambda e: e["type"] == "left" and e["name"] == name, timeout)


# ------------------------------------------------------------ one room, many nodes


@pytest.mark.parametrize("models", [("threads", "selectors", "asyncio"), ("asyncio", "asyncio"),
                                    ("threads", "threads"), ("selectors", "selectors")])
def test_every_node_shows_the_same_messages_in_the_same_order_with_the_same_ids(redis_url, nodes, clients, models):
    servers = [nodes(redis_url, model) for model in models]
    people = [clients(server, f"p{i}") for i, server in enumerate(servers)]
    for person in people:  # everyone is in: each has seen the last one join, or is the last
        person.send({"type": "who"})
        person.wait_for(lambda e: e["type"] == "users" and len(e["users"]) == len(people))
    per_person = 40
    start = threading.Barrier(len(people))

    def chat(person: ChatClient, i: int) -> None:
        start.wait(10)
        for n in range(per_person):
            person.say(f"p{i} says {n}")

    threads = [threading.Thread(target=chat, args=(p, i)) for i, p in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    seen = [[(m["id"], m["from"], m["text"]) for m in messages_until(p, per_person * len(people))] for p in people]
    # One order: every client saw exactly the same sequence ...
    for other in seen[1:]:
        assert other == seen[0]
    # ... with ids increasing in it, and each sender's messages in the order it sent them.
    ids = [i for i, _, _ in seen[0]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for i in range(len(people)):
        assert [t for _, f, t in seen[0] if f == f"p{i}"] == [f"p{i} says {n}" for n in range(per_person)]


def test_names_rooms_history_and_private_messages_across_nodes(redis_url, nodes, clients):
    a, b = nodes(redis_url, "threads"), nodes(redis_url, "asyncio")
    ada = clients(a, "ada")
    bob = clients(b, "bob")
    assert bob.users == ["ada", "bob"]  # the welcome lists everyone, on every node, in order
    ada.wait_for(lambda e: e["type"] == "joined" and e["name"] == "bob")
    with pytest.raises(ChatError) as taken:
        clients(b, "ADA")  # a name held on another node
    assert taken.value.code == "name_taken"
    bob.send({"type": "join", "room": "kitchen"})
    assert bob.wait_for("joined")["members"] == ["bob"]
    ada.send({"type": "join", "room": "#Kitchen"})
    assert ada.wait_for(lambda e: e["type"] == "joined" and "members" in e)["members"] == ["bob", "ada"]
    assert bob.wait_for("joined") == {"type": "joined", "name": "ada", "room": "kitchen"}
    ada.send({"type": "say", "room": "kitchen", "text": "tea?"})
    said = bob.wait_for("message")
    assert (said["from"], said["text"], said["room"]) == ("ada", "tea?", "kitchen")
    bob.send({"type": "dm", "to": "ADA", "text": "yes please"})
    private = ada.wait_for(lambda e: e["type"] == "message" and "to" in e)
    assert (private["from"], private["to"], private["text"]) == ("bob", "ada", "yes please")
    assert bob.wait_for(lambda e: e["type"] == "message" and "to" in e)["id"] == private["id"]  # the sender's copy
    bob.send({"type": "dm", "to": "nobody", "text": "?"})
    assert bob.wait_for("error")["code"] == "unknown_user"
    bob.send({"type": "rooms"})
    assert bob.wait_for("rooms")["rooms"] == [{"name": "kitchen", "members": ["bob", "ada"]},
                                              {"name": "lobby", "members": ["ada", "bob"]}]
    # History comes from Redis: what was said on one node can be read on the other,
    # paged back with "before", and forward with "since".
    for n in range(5):
        ada.send({"type": "say", "room": "lobby", "text": f"lobby {n}"})
    lobby = messages_until(bob, 5)
    bob.send({"type": "history", "room": "lobby", "limit": 3})
    assert [m["text"] for m in bob.wait_for("history")["messages"]] == ["lobby 2", "lobby 3", "lobby 4"]
    bob.send({"type": "history", "room": "lobby", "limit": 2, "before": lobby[2]["id"]})
    page = bob.wait_for("history")
    assert [m["text"] for m in page["messages"]] == ["lobby 0", "lobby 1"] and "more" not in page
    bob.send({"type": "history", "room": "lobby", "limit": 10, "since": lobby[2]["id"]})
    assert [m["text"] for m in bob.wait_for("history")["messages"]] == ["lobby 3", "lobby 4"]
    bob.send({"type": "history", "room": "lobby", "limit": 1, "since": lobby[2]["id"]})
    page = bob.wait_for("history")
    assert [m["text"] for m in page["messages"]] == ["lobby 3"] and page["more"] is True
    # A newcomer on a third node gets the room's recent history on joining.
    carl = clients(nodes(redis_url, "selectors"), "carl")
    assert [m["text"] for m in carl.wait_for("history")["messages"]][-2:] == ["lobby 3", "lobby 4"]
    ada.close()
    assert {left(bob, "ada", 10)["room"], left(bob, "ada", 10)["room"]} == {"lobby", "kitchen"}
    assert clients(b, "ada").name == "ada"  # the name is free again, on any node


def test_a_farewell_reaches_the_room_on_every_node(redis_url, nodes, clients):
    a, b = nodes(redis_url, "selectors"), nodes(redis_url, "threads")
    ada, bob = clients(a, "ada"), clients(b, "bob")
    ada.wait_for(lambda e: e["type"] == "joined" and e["name"] == "bob")
    for person in (ada, bob):
        person.send({"type": "join", "room": "games"})
        person.wait_for(lambda e: e["type"] == "joined" and "members" in e)
    ada.wait_for(lambda e: e["type"] == "joined" and e["name"] == "bob" and e["room"] == "games")
    bob.send({"type": "leave", "room": "games", "text": "back in \x1b[31mfive"})
    told = {"type": "left", "name": "bob", "room": "games", "reason": "left", "text": "back in ^[[31mfive"}
    assert left(ada, "bob", 10) == told  # on the other node, cleaned by bob's
    assert left(bob, "bob", 10) == told  # and the leaver's own confirmation
    bob.send({"type": "bye", "text": "see you tomorrow"})
    gone = left(ada, "bob", 10)
    assert (gone["room"], gone["reason"], gone["text"]) == ("lobby", "quit", "see you tomorrow")
    ada.send({"type": "leave", "room": "games"})  # no farewell: no text
    assert "text" not in left(ada, "ada", 10)


def test_two_clients_racing_for_one_name_on_two_nodes_one_wins(redis_url, nodes, clients):
    a, b = nodes(redis_url, "selectors"), nodes(redis_url, "threads")
    for round_ in range(15):
        racers = [clients(a), clients(b)]
        start = threading.Barrier(2)
        results: list[str] = []

        def race(client: ChatClient) -> None:
            start.wait(5)
            try:
                client.register(f"racer{round_}")
                results.append("won")
            except ChatError as exc:
                results.append(exc.code)

        threads = [threading.Thread(target=race, args=(c,)) for c in racers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(results) == ["name_taken", "won"], f"round {round_}: {results}"


def test_a_file_goes_to_people_on_the_same_node_and_is_refused_clearly_for_others(redis_url, nodes, clients):
    a, b = nodes(redis_url, "asyncio"), nodes(redis_url, "selectors")
    ada, amy, bob = clients(a, "ada"), clients(a, "amy"), clients(b, "bob")
    ada.send_file(b"notes", "notes.txt", to="bob")
    error = ada.wait_for("error")
    assert error["code"] == "other_server" and "another server" in error["message"]
    ada.send_file(b"notes", "notes.txt", to="amy")
    offer = amy.wait_for("file_offer")
    assert amy.accept_file(offer["file"]) == b"notes"
    bob.send({"type": "ping", "id": 1})
    bob.wait_for("pong")
    assert not [e for e in bob._events.queue if e["type"] == "file_offer"]


# ------------------------------------------------------------------- faults


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_node_killed_9_is_announced_as_left_within_10_s_and_its_names_are_freed(redis_url, nodes, clients, tmp_path,
                                                                                  model):
    doomed = NodeProcess(redis_url, model, args=tuple(FAST), log_file=str(tmp_path / "doomed.log"))
    try:
        ada = clients(doomed, "ada")
        ada.send({"type": "join", "room": "kitchen"})
        ada.wait_for("joined")
        survivor = nodes(redis_url, "asyncio")
        bob = clients(survivor, "bob")
        bob.send({"type": "join", "room": "kitchen"})
        bob.wait_for(lambda e: e["type"] == "joined" and "members" in e)
        ada.say("last words")
        assert bob.wait_for("message")["text"] == "last words"
        killed = time.monotonic()
        doomed.kill()
        notices = [left(bob, "ada", 10), left(bob, "ada", 10)]
        assert time.monotonic() - killed < 10
        assert {n["room"] for n in notices} == {"lobby", "kitchen"}
        assert {n["reason"] for n in notices} == {"server_lost"}
        assert clients(survivor, "ada").name == "ada"
        bob.send({"type": "who"})
        assert bob.wait_for("users")["users"] == ["bob", "ada"]
    finally:
        doomed.stop()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_paused_node_catches_up_from_the_stream_and_a_node_given_up_for_dead_comes_back(redis_url, nodes,
                                                                                          clients, tmp_path, model):
    frozen = NodeProcess(redis_url, model, args=tuple(FAST), log_file=str(tmp_path / "frozen.log"))
    try:
        ada = clients(frozen, "ada")
        bob = clients(nodes(redis_url, "threads"), "bob")
        ada.wait_for(lambda e: e["type"] == "joined" and e["name"] == "bob")
        # 1. Paused briefly (less than the heartbeat's TTL): nothing is lost,
        #    the node reads on from where it was.
        frozen.pause()
        for n in range(50):
            bob.say(f"while frozen {n}")
        messages_until(bob, 50)  # all in the stream
        frozen.resume()
        assert [m["text"] for m in messages_until(ada, 50)] == [f"while frozen {n}" for n in range(50)]
        # 2. Paused for longer than the TTL: the others give it up for dead...
        frozen.pause()
        assert left(bob, "ada", 12)["reason"] == "server_lost"
        bob.say("said while ada's server was given up")
        messages_until(bob, 1)
        frozen.resume()
        # ... and when it wakes it writes its users back: ada is announced
        # again, has lost nothing, and can chat on.
        assert bob.wait_for(lambda e: e["type"] == "joined" and e["name"] == "ada", 10)["room"] == "lobby"
        assert messages_until(ada, 1)[0]["text"] == "said while ada's server was given up"
        ada.say("back")
        assert messages_until(bob, 1)[0]["text"] == "back"
    finally:
        frozen.stop()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_redis_restarted_clients_are_told_nothing_acknowledged_is_lost_and_the_nodes_carry_on(nodes, clients, model):
    with RedisServer() as redis_server:  # a Redis of its own, to kill
        a, b = nodes(redis_server.url, model), nodes(redis_server.url, "selectors")
        ada, bob = clients(a, "ada"), clients(b, "bob")
        ada.wait_for(lambda e: e["type"] == "joined" and e["name"] == "bob")
        for n in range(10):
            ada.say(f"before {n}")
        acknowledged = messages_until(ada, 10)  # each one back out of the stream: in Redis
        messages_until(bob, 10)
        redis_server.kill()
        # Everyone is told, with an error code, that nothing can be sent...
        assert ada.wait_for("error", 10)["code"] == "unavailable"
        assert bob.wait_for("error", 10)["code"] == "unavailable"
        # ... and a message said now is refused, never silently dropped.
        ada.say("during")
        refused = ada.wait_for("error", 10)
        assert refused["code"] == "unavailable" and "not sent" in refused["message"]
        redis_server.start()
        # The nodes reconnect by themselves, and say so; a message gets through again.
        for person in (ada, bob):
            assert person.wait_for("notice", 20)["code"] == "available"
        bob.say("after")
        assert messages_until(ada, 1)[0]["text"] == "after"
        # What was acknowledged before the restart is all still there.
        ada.send({"type": "history", "room": "lobby", "limit": 100})
        history = [m["id"] for m in ada.wait_for("history")["messages"]]
        assert [m["id"] for m in acknowledged] == history[:10]
        assert len(history) == len(set(history)) == 11


# ------------------------------------------------------- behind a load balancer

HAPROXY = """
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch
frontend chat
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (Debian: apt-get install haproxy)")
def test_a_classroom_behind_haproxy_one_address_spread_over_nodes_and_a_dead_node_routed_around(redis_url, tmp_path):
    from chatlab.lab.redis import free_port

    a = NodeProcess(redis_url, "selectors", args=tuple(FAST), log_file=str(tmp_path / "a.log"))
    b = NodeProcess(redis_url, "asyncio", args=tuple(FAST), log_file=str(tmp_path / "b.log"))
    port = free_port()
    servers = "\n".join(f"    server {n.node} 127.0.0.1:{n.address[1]} check inter 200ms fall 1 rise 1" for n in (a, b))
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY.format(port=port, servers=servers))
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    people: list[ChatClient] = []
    try:
        deadline = time.monotonic() + 10
        while True:  # haproxy is up when a chat banner comes through it
            try:
                people.append(ChatClient("127.0.0.1", port, name="p0", resume=True, timeout=5))
                break
            except (ConnectionError, OSError):
                assert time.monotonic() < deadline, "haproxy did not start"
                time.sleep(0.05)
        people += [ChatClient("127.0.0.1", port, name=f"p{i}", resume=True, timeout=10) for i in range(1, 4)]
        import redis

        store = redis.Redis.from_url(redis_url, decode_responses=True)
        held = [json.loads(v) for v in store.hgetall("chatlab:names").values()]
        assert {h["node"] for h in held} == {a.node, b.node}  # round robin: one address, both nodes used
        on_a = {h["name"] for h in held if h["node"] == a.node}
        a.kill()
        for person in people:
            if person.name in on_a:
                # Back through the same address, on b. (A message said before its client saw the
                # connection die went into a dead socket: never acknowledged, so not resent.)
                person.wait_for("resumed", 30)
        for person in people:
            person.say(f"{person.name} is here")
        # Everyone -- those whose node died too, back through the same address -- hears everyone, once.
        for person in people:
            heard = sorted(m["text"] for m in (person.wait_for(
                lambda e: e["type"] == "message" and e["text"].endswith(" is here"), 30) for _ in people))
            assert heard == sorted(f"{p.name} is here" for p in people)
        holders = {json.loads(v)["node"] for v in store.hgetall("chatlab:names").values()}
        assert holders == {b.node}
        store.close()
    finally:
        for person in people:
            person.close()
        proxy.terminate()
        proxy.wait(10)
        a.stop()
        b.stop()


@pytest.mark.parametrize("mode, lost", [("streams", 0), ("pubsub", 5)])
def test_a_node_cut_off_from_redis_catches_up_with_streams_and_loses_with_pubsub(redis_url, clients, mode, lost):
    """The lesson of notebook 14, as a test: Redis drops one node's reading connection (as after a network
    blip); while that node reconnects, another node's client says five messages."""
    import redis

    from chatlab.backplane.shared import SharedRooms
    from chatlab.backplane.store import RedisStore

    servers = []
    try:
        for heartbeat in (3.0, 1.0):  # the victim retries slowly: the five messages surely fall in its gap
            server = make_server("selectors", "127.0.0.1", 0, LIMITS,
                                 backplane=SharedRooms(RedisStore(redis_url, mode=mode, heartbeat=heartbeat)))
            servers.append(server.start())
        victim, other = servers
        ada, bob = clients(victim, "ada"), clients(other, "bob")
        ada.wait_for(lambda e: e["type"] == "joined" and e["name"] == "bob")
        store = redis.Redis.from_url(redis_url, decode_responses=True)
        reader = f"chatlab-reader-{victim.backplane.status()['node']}"
        for connection in store.client_list():
            if connection["name"] == reader:
                store.client_kill_filter(_id=connection["id"])
        assert ada.wait_for("error", 10)["code"] == "unavailable"  # ada's server knows, and says so
        for n in range(5):
            bob.say(f"during {n}")
        assert [m["text"] for m in messages_until(bob, 5)] == [f"during {n}" for n in range(5)]  # acknowledged
        assert ada.wait_for("notice", 15)["code"] == "available"
        if mode == "pubsub":  # and subscribed again (else "after" too could be lost: pub/sub's very flaw)
            deadline = time.monotonic() + 10
            while store.pubsub_numsub("chatlab:room:lobby")[0][1] < 2:
                assert time.monotonic() < deadline, "the node did not subscribe again"
                time.sleep(0.01)
        bob.say("after")
        messages_until(bob, 1)
        got = [m["text"] for m in messages_until(ada, 6 - lost)]
        assert got == [f"during {n}" for n in range(lost, 5)] + ["after"] if lost == 0 else got == ["after"]
        store.close()
    finally:
        for server in servers:
            server.stop()
