"""``SharedRooms``: one chat over several servers, as a component of each server's core.

It runs on the chat's thread like every other component, and never waits:
what needs Redis goes out as ``Work`` (ordered: a client's messages reach
its room in the order it sent them), and what Redis has to say comes back
through the shell's ``post`` -- the entries the store's reader took from the
rooms' streams (``store.py``).

The rule that makes every server show the same thing: **nothing is shown
before it is in the stream**.  A ``say`` only appends the message to the
room's stream; every server, the sender's included, delivers it to its own
members when its reader gets it back -- so every member on every server
sees the same messages, in the same order, with the same ids.  The same
goes for ``joined`` and ``left``.

Joining has one race to close.  The join's entry ``at`` is written by a
Work job, and the reader may already have handed over entries after ``at``
(or not yet the ones before it) by the time the job's answer reaches the
core.  So each room keeps a ``Feed``: the last entry delivered here, the
members still waiting for entries up to their own join to pass, and the
last few entries delivered, which a late joiner is given.  The history a
joiner gets is everything *before* ``at``; live entries are everything
*after*: each message once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..effects import ClientId, Effect, Send, Work
from ..errors import ProtocolError
from ..protocol import (
    json_size, fit, BAD_ROOM, NAME_TAKEN, NOT_IN_ROOM, OTHER_SERVER, TOO_MANY_ROOMS, UNAVAILABLE, UNKNOWN_USER, check_name, name_key,
    normalise_name,
)
from ..rooms import DEFAULT_ROOM, Room
from ..session import Client, Out
from . import Backplane, Post
from .store import LOBBY, RedisStore, StreamId, Unavailable

if TYPE_CHECKING:
    from ..core import ChatCore, Handler

log = logging.getLogger("chatlab.backplane")

#: Entries a room remembers having delivered, for a member whose join
#: answer comes back after the reader has gone past its join.
REPLAY = 512

UNREACHABLE = "the chat's shared store (Redis) is unreachable: {what} until it is back"
AVAILABLE = "available"  # a notice's code: the shared store is back
BACK = "the chat's shared store (Redis) is back: messages can be sent again"


class Batch:
    """Messages waiting to be written to Redis together, until the job that writes them takes them.

    Filled on the chat's thread, taken on the worker's: a lock between the two.
    """

    def __init__(self) -> None:
        self.items: list[tuple[Client, tuple[str, str, str, str, float, bool]]] = []
        self.taken = False
        self._lock = threading.Lock()

    def add(self, client: Client, item: tuple[str, str, str, str, float, bool]) -> bool:
        """False if the job has already taken the batch (start another)."""
        with self._lock:
            if self.taken:
                return False
            self.items.append((client, item))
            return True

    def take(self) -> list[tuple[str, str, str, str, float, bool]]:
        with self._lock:
            self.taken = True
            return [item for _, item in self.items]


@dataclass(eq=False)
class Feed:
    """A room's stream as this server has delivered it."""

    delivered: StreamId = (0, 0)  # the last entry delivered here
    joining: dict[ClientId, StreamId] = field(default_factory=dict)  # members who joined at a later entry
    seats: dict[ClientId, StreamId] = field(default_factory=dict)  # each member's join entry
    recent: deque[tuple[StreamId, dict[str, Any], str | None]] = field(default_factory=lambda: deque(maxlen=REPLAY))


class SharedRooms(Backplane):
    """Rooms, names and ids shared by every server on one Redis (docs/scaling.md)."""

    shared = True

    def __init__(self, store: RedisStore):
        self.store = store
        self.feeds: dict[str, Feed] = {}  # room key -> its feed, for the rooms this server has members in
        self._claiming: set[str] = set()  # names being claimed by a client of this server
        # The batch of messages not yet taken by its job: a message joins it rather than
        # costing a round trip of its own -- unless other ordered work was given since.
        self._open: Batch | None = None
        self._core: "ChatCore | None" = None

    @property
    def core(self) -> "ChatCore":
        assert self._core is not None, "attach() first"
        return self._core

    def attach(self, core: "ChatCore") -> dict[str, "Handler"]:
        self._core = core
        return {
            "say": self._on_say,
            "dm": self._on_dm,
            "join": self._on_join,
            "leave": self._on_leave,
            "who": self._on_who,
            "rooms": self._on_rooms,
            "history": self._on_history,
            "file_offer": self._on_file_offer,
        }

    # ------------------------------------------------------------ life cycle

    def connect(self) -> None:
        self.store.connect()
        # Every server follows the lobby from the start: everyone registers into it.
        self.feeds[LOBBY] = Feed(delivered=self._top(LOBBY))
        self.store.follow(LOBBY, self.feeds[LOBBY].delivered)

    def _top(self, room: str) -> StreamId:
        from .store import parse_id

        entries = self.store.redis.xrevrange(self.store.room_stream(room), "+", "-", count=1)
        return parse_id(str(entries[0][0])) if entries else (0, 0)

    def start(self, post: Post) -> None:
        self.store.on_entries = lambda room, entries: post(lambda now: self._deliver(room, entries, now))
        self.store.on_state = lambda up, why: post(lambda now: self._state(up, why))
        self.store.on_lost = lambda keys: post(lambda now: self._lost(keys, now))
        self.store.run()

    def stop(self) -> None:
        self.store.stop()

    def status(self) -> dict[str, Any]:
        return {"shared": True, **self.store.status()}

    # ------------------------------------------------------------- helpers

    def _work(self, job: Callable[[], Any], then: Callable[[Any, float], list[Effect]], what: str) -> Work:
        self._open = None  # a message said after this must be written after it too
        return Work(job, then, what, ordered=True)

    def _unavailable(self, client: Client, what: str, out: Out) -> None:
        self.core.error(client, UNAVAILABLE, UNREACHABLE.format(what=what), out)

    def _answer(self, client: Client, what: str, reply: Callable[[Any, Out], None]) -> Callable[[Any, float], list[Effect]]:
        """A Work continuation for one client: ``reply(result, out)``, or ``unavailable`` if Redis failed."""
        def then(result: Any, now: float) -> list[Effect]:
            out: Out = []
            if self.core.clients.get(client.id) is not client:
                return out  # gone meanwhile
            if isinstance(result, Unavailable):
                self._unavailable(client, what, out)
            elif isinstance(result, ProtocolError):
                self.core.error(client, result.code, result.message, out)
            elif isinstance(result, BaseException):
                self.core.error(client, UNAVAILABLE, f"the shared store failed: {what} ({result})", out)
            else:
                try:
                    reply(result, out)
                except ProtocolError as exc:
                    self.core.error(client, exc.code, exc.message, out)
            return out
        return then

    def _paused(self, client: Client, job: Callable[[], Any], then: Callable[[Any, float, Out], None],
                undo: Callable[[Any], list[Effect]], what: str) -> Work:
        """Work for one client that holds back its next messages (the core's pause), ordered.

        ``undo(result)``: the client left before the answer came; what to do about what Redis did.
        """
        self._open = None
        work = self.core._pause(client, job, then, lambda: None, what)

        def resume(result: Any, now: float) -> list[Effect]:
            if self.core.clients.get(client.id) is not client:
                return undo(result)
            return work.then(result, now)

        return dataclasses.replace(work, then=resume, ordered=True)

    @staticmethod
    def _failed(result: Any, what: str) -> None:
        """In a paused continuation: Redis failed, say so (the core's pause answers the ProtocolError)."""
        if isinstance(result, Unavailable):
            raise ProtocolError(UNAVAILABLE, UNREACHABLE.format(what=what))
        if isinstance(result, BaseException):
            raise ProtocolError(UNAVAILABLE, f"the shared store failed: {what} ({result})")

    def _logged(self, what: str) -> Callable[[Any, float], list[Effect]]:
        def then(result: Any, now: float) -> list[Effect]:
            if isinstance(result, BaseException):
                log.warning("%s: %s (retried when Redis is back)", what, result)
            return []
        return then

    # -------------------------------------------------------- registration

    def register(self, client: Client, name: str, key: str, out: Out) -> bool:
        if key in self._claiming:
            raise ProtocolError(NAME_TAKEN, f"the name {name} is taken; try another name")
        self._claiming.add(key)
        store, limits = self.store, self.core.limits
        lobby = self.core.lobby

        def job() -> Any:
            if not store.claim(key, name):
                return None
            seat = store.join(LOBBY, lobby.name, key, name, limits.large_room, limits.history_on_join + 1)
            return seat, store.users()

        def then(result: Any, now: float, out: Out) -> None:
            self._claiming.discard(key)
            self._failed(result, "you cannot register")
            if result is None:
                raise ProtocolError(NAME_TAKEN, f"the name {name} is taken; try another name")
            (at, quiet, members, history, _), users = result
            client.name, client.key = name, key
            self.core.members[key] = client
            log.info("%s registered as %s (shared)", client.peer, name)
            count: dict[str, int] = {}
            if limits.large_room and len(members) >= limits.large_room:
                # As on one server: a large lobby lists those announced, and counts the rest.
                users, count = [m["name"] for m in members if m["quiet"] != "1"], {"count": len(users)}
                if name not in users:
                    users.append(name)
            welcome = {"type": "welcome", "name": name, "room": lobby.name, **count}
            self.core.send(client, self.core._names(welcome, "users", users), out)
            self._seat(client, lobby, at, quiet, out)
            if history:
                self.core._send_history(client, lobby, limits.history_on_join, out, found=history)

        def undo(result: Any) -> list[Effect]:
            self._claiming.discard(key)
            if isinstance(result, tuple):  # it got the name, and left: give it back
                return [self._work(lambda: store.depart(key, name, [(LOBBY, False)], "disconnected"),
                                   self._logged(f"releasing {name}"), f"releasing {name}")]
            return []

        out.append(self._paused(client, job, then, undo, f"claiming the name {name} on every server"))
        return True

    def gone(self, client: Client, reason: str, out: Out) -> bool:
        assert client.key is not None and client.name is not None
        key, name = client.key, client.name
        rooms = [(room.key, key not in room.announced) for room in client.rooms.values()]
        # Every room it is seated in here -- a room it is leaving too (still seated until its "left" comes back).
        for room in [r for r in self.core.rooms.values() if r.members.get(key) is client]:
            self._unseat(client, room)
        farewell = client.farewell
        out.append(self._work(lambda: self.store.depart(key, name, rooms, reason, farewell),
                              self._logged(f"telling the others that {name} left"), f"{name} leaving"))
        return True

    # ------------------------------------------------------- rooms, here

    def _feed(self, room: Room) -> Feed:
        feed = self.feeds.get(room.key)
        if feed is None:
            feed = self.feeds[room.key] = Feed()
        return feed

    def _seat(self, client: Client, room: Room, at: StreamId, quiet: bool, out: Out) -> None:
        """Put a client in a room here, at entry ``at`` of the room's stream (its join)."""
        assert client.key is not None
        room.add(client)
        client.rooms[room.key] = room
        if client.current_room is None:
            client.current_room = room.key
        if not quiet:
            room.announced[client.key] = client
        feed = self._feed(room)
        feed.seats[client.id] = at
        if self.store.follow(room.key, at):
            feed.delivered = at  # the first member here: read on from its join
            out.append(Work(self.store.wake_reader, lambda result, now: [], "reading a new room's stream"))
        elif feed.delivered < at:
            feed.joining[client.id] = at  # entries up to its join are still to come: not for it
        else:
            # The reader went past its join before this answer came back:
            # what it missed since, it is given now, in order.
            missed = [entry for entry in feed.recent if entry[0] > at]
            if feed.recent and feed.recent[0][0] > at and len(feed.recent) == REPLAY:
                log.warning("%s joined %s too late to be given everything since its join", client, room.name)
            for _, msg, subject in missed:
                if subject != client.key or (msg["type"] == "message" and client.dialect.hears_own):
                    self.core.send(client, msg, out)

    def _unseat(self, client: Client, room: Room) -> None:
        """Take a client out of a room here (the others hear of it from the stream)."""
        room.remove(client)
        client.rooms.pop(room.key, None)
        if client.current_room == room.key:
            client.current_room = next(iter(client.rooms), None)
        feed = self.feeds.get(room.key)
        if feed is not None:
            feed.joining.pop(client.id, None)
            feed.seats.pop(client.id, None)
        if not room.members and room is not self.core.lobby:
            self.core.rooms.pop(room.key, None)
            self.feeds.pop(room.key, None)
            self.store.unfollow(room.key)

    # --------------------------------------------------------- the handlers

    def _on_say(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        room = self.core.member_room(client, msg.get("room"))
        text = self.core._check_text(msg["text"])
        if not self.core.guard.within_relay(client, len(text.encode("utf-8")), now, out):
            return  # its address has sent its share of bytes for now (security.md 2.5a)
        assert client.key is not None and client.name is not None
        announce = client.key not in room.announced  # quiet in a large room until now
        if announce:
            room.announced[client.key] = client
        item = (room.key, client.name, client.key, text, self.core.wallclock(), announce)
        # Only into the stream: it is shown to everyone, here too, when it comes back out.
        if self._open is not None and self._open.add(client, item):
            return  # it goes with the messages waiting to be written
        batch = self._open = Batch()
        batch.add(client, item)
        work = Work(lambda: self.store.say_many(batch.take()), lambda result, now: self._said(batch, result),
                    "writing messages", ordered=True)
        out.append(work)

    def _said(self, batch: Batch, result: Any) -> list[Effect]:
        """A batch is written: each message that was not is answered with an error (the rest come back out)."""
        out: Out = []
        results = result if isinstance(result, list) else [result] * len(batch.items)
        for (client, _), one in zip(batch.items, results):
            if isinstance(one, BaseException):
                out += self._answer(client, "your message was not sent", lambda r, out: None)(one, 0.0)
        return out

    def _on_dm(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.core.require_registered(client)
        text = self.core._check_text(msg["text"])
        if not self.core.guard.within_relay(client, len(text.encode("utf-8")), now, out):
            return
        to, name, ts = msg["to"], client.name, self.core.wallclock()
        assert name is not None

        def sent(result: Any, out: Out) -> None:
            if result is None:
                raise ProtocolError(UNKNOWN_USER, f"nobody called {to[:40]} is here")

        out.append(self._work(lambda: self.store.dm(name_key(normalise_name(to)), name, text, ts),
                              self._answer(client, "your message was not sent", sent), f"a private message from {name}"))

    def _on_join(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        core, limits = self.core, self.core.limits
        core.require_registered(client)
        name = normalise_name(msg["room"].lstrip("#"))
        problem = check_name(name, limits.max_name or 1 << 30)
        if problem:
            raise ProtocolError(BAD_ROOM, f"bad room name: {problem.replace('a name', 'a room name')}")
        key = name_key(name)
        room = core.rooms.get(key)
        if room is not None and client in room.members.values():
            client.current_room = room.key
            shown = room.name
            out.append(self._work(lambda: self.store.members(key) or [],
                                  self._answer(client, "you cannot list the room", lambda members, out: core.send(
                                      client, core._names({"type": "joined", "name": client.name, "room": shown},
                                                          "members", members), out)), "listing a room"))
            return
        if limits.max_rooms_per_user and len(client.rooms) >= limits.max_rooms_per_user:
            raise ProtocolError(TOO_MANY_ROOMS, f"you are in {len(client.rooms)} rooms, the most allowed; leave one first")
        if room is None and limits.max_rooms and len(core.rooms) >= limits.max_rooms:
            raise ProtocolError(TOO_MANY_ROOMS, f"the server has {len(core.rooms)} rooms, the most allowed")
        assert client.key is not None and client.name is not None
        ckey, cname, store = client.key, client.name, self.store
        shown = room.name if room is not None else name

        def job() -> Any:
            return store.join(key, shown, ckey, cname, limits.large_room, limits.history_on_join + 1)

        def then(result: Any, now: float, out: Out) -> None:
            self._failed(result, "you cannot join a room")
            at, quiet, members, history, shown_there = result
            here = core.rooms.get(key) or core._room(shown_there)
            self._seat(client, here, at, quiet, out)
            client.current_room = here.key
            core.send(client, core._names({"type": "joined", "name": cname, "room": here.name}, "members",
                                          [m["name"] for m in members]), out)
            if history:
                core._send_history(client, here, limits.history_on_join, out, found=history)

        def undo(result: Any) -> list[Effect]:
            if isinstance(result, tuple):
                return [self._work(lambda: store.leave(key, ckey, cname, "disconnected", False),
                                   self._logged(f"{cname} leaving {shown}"), f"{cname} leaving {shown}")]
            return []

        out.append(self._paused(client, job, then, undo, f"{cname} joining {shown}"))

    def _on_leave(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        room = self.core.member_room(client, msg.get("room"))
        assert client.key is not None and client.name is not None
        key, name, quiet = client.key, client.name, client.key not in room.announced
        farewell = self.core._farewell(msg)
        # It says nothing more there from now; it hears the room until its
        # "left" comes back out of the stream, after everything said before it.
        client.rooms.pop(room.key, None)
        if client.current_room == room.key:
            client.current_room = next(iter(client.rooms), None)

        def failed(result: Any, out: Out) -> None:
            pass

        def then(result: Any, now: float) -> list[Effect]:
            if isinstance(result, BaseException) and self.core.clients.get(client.id) is client:
                client.rooms[room.key] = room  # still in it, everywhere
            return self._answer(client, "you cannot leave the room", failed)(result, now)

        out.append(self._work(lambda: self.store.leave(room.key, key, name, "left", quiet, farewell), then,
                              f"{name} leaving {room.name}"))

    def _on_who(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.core.require_registered(client)  # who is where is for those who said hello
        if msg.get("room"):
            shown = normalise_name(msg["room"].lstrip("#"))
            key = name_key(shown)

            def listed(members: list[str] | None, out: Out) -> None:
                if members is None:
                    raise ProtocolError(NOT_IN_ROOM, f"there is no room called {msg['room'][:40]}")
                local = self.core.rooms.get(key)
                self.core.send(client, self.core._names({"type": "users", "room": local.name if local else shown},
                                                        "users", members), out)

            out.append(self._work(lambda: self.store.members(key), self._answer(client, "you cannot list a room", listed),
                                  "listing a room"))
        else:
            out.append(self._work(self.store.users, self._answer(client, "you cannot list who is here",
                                  lambda users, out: self.core.send(client, self.core._names(
                                      {"type": "users"}, "users", users), out)), "listing users"))

    def _on_rooms(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        core = self.core
        core.require_registered(client)
        after = name_key(normalise_name(msg["after"].lstrip("#"))) if msg.get("after") else None

        def listed(rooms: list[dict[str, Any]], out: Out) -> None:
            # A page, as on one server (core._on_rooms): as many rooms as fit in one message.
            entries = [core._names({"name": r["name"]}, "members", r["members"], core._frame_room // 4)
                       for r in rooms if after is None or r["key"] > after]
            answer: dict[str, Any] = {"type": "rooms", "rooms": []}
            shown = fit(entries, core._frame_room - json_size({**answer, "more": True}))
            answer["rooms"] = entries[:shown]
            if shown < len(entries):
                answer["more"] = True
            core.send(client, answer, out)

        out.append(self._work(self.store.room_list, self._answer(client, "you cannot list the rooms", listed),
                              "listing rooms"))

    def _on_history(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        core, limits = self.core, self.core.limits
        room = core.member_room(client, msg.get("room"))  # only a room you are in
        key, shown = room.key, room.name
        limit = max(0, min(msg.get("limit", limits.history_on_join), limits.history_page))
        before, since = msg.get("before"), msg.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise ProtocolError("bad_frame", '"history" needs a "since" field holding an integer')
        store = self.store

        out.append(self._work(lambda: store.history(key, shown, limit + 1, before, since) if limit > 0 else [],
                              self._answer(client, "you cannot read the history", lambda found, out: core._send_history(
                                  client, room, limit, out, before, since, found=found)), "reading history"))

    def _on_file_offer(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        """Files stay on one server: an offer to someone connected elsewhere is refused, clearly."""
        offer = self.core.files.handlers["file_offer"]
        to = msg.get("to")
        if not isinstance(to, str) or name_key(normalise_name(to)) in self.core.members:
            offer(client, msg, now, out)
            return

        def looked_up(node: str | None, out: Out) -> None:
            if node is None:
                raise ProtocolError(UNKNOWN_USER, f"nobody called {to[:40]} is here")
            raise ProtocolError(OTHER_SERVER, f"{to[:40]} is connected to another server of this chat, and files "
                                              "go only to people on the same server (docs/scaling.md)")

        out.append(self._work(lambda: self.store.lookup(name_key(normalise_name(to))),
                              self._answer(client, "you cannot send a file", looked_up), "finding a file's recipient"))

    # ------------------------------------------------- what the stream says

    def _deliver(self, room_key: str, entries: list[tuple[StreamId, dict[str, str]]], now: float) -> list[Effect]:
        """Entries the reader took from a stream (on the core's thread): shown to this server's members."""
        out: Out = []
        if not room_key:
            for _, fields in entries:
                self._private(fields, out)
            return out
        room = self.core.rooms.get(room_key)
        feed = self.feeds.get(room_key)
        if room is None or feed is None:
            return out  # nobody here is in it any more
        me = self.store.node
        for sid, fields in entries:
            if sid <= feed.delivered:
                continue  # delivered already (the reader was given an older cursor)
            feed.delivered = sid
            if feed.joining:
                for cid in [c for c, at in feed.joining.items() if at <= sid]:
                    del feed.joining[cid]
            mine = fields.get("node") == me
            if mine and fields.get("here") == "0":
                continue  # about this server's own users, who never left (store.py, REAP)
            kind = fields.get("kind")
            subject_key = fields.get("key")
            subject = room.members.get(subject_key) if mine and subject_key else None
            if kind == "message":
                message = self.store.message(f"{sid[0]}-{sid[1]}", fields, room.name)
                sender = room.members.get(name_key(message["from"])) if mine else None
                self._fanout(room, feed, sid, message, out, skip_own=sender)
                feed.recent.append((sid, message, sender.key if sender is not None else None))
            elif kind in ("joined", "left"):
                notice: dict[str, Any] = {"type": kind, "name": fields["name"], "room": room.name}
                if kind == "left":
                    notice["reason"] = fields.get("reason", "disconnected")
                    if fields.get("text"):
                        notice["text"] = fields["text"]  # the farewell, checked by the leaver's server
                    if subject is not None and room.key not in subject.rooms and feed.seats.get(subject.id, sid) < sid:
                        # Our own member's leave, back out of the stream after all it said before.
                        self._unseat(subject, room)
                        self.core.send(subject, notice, out)
                if fields.get("quiet") == "1":
                    continue
                self._fanout(room, feed, sid, notice, out, skip=subject)
                feed.recent.append((sid, notice, subject_key if mine else None))
        return out

    def _fanout(self, room: Room, feed: Feed, sid: StreamId, msg: dict[str, Any], out: Out,
                skip: Client | None = None, skip_own: Client | None = None) -> None:
        """As the core's broadcast, leaving out the members who joined after this entry."""
        waiting = {cid for cid, at in feed.joining.items() if at >= sid} if feed.joining else ()
        for dialect, ids in room.audience().items():
            leave_out = skip or (skip_own if not dialect.hears_own else None)
            if (leave_out is not None and type(leave_out.dialect) is dialect) or waiting:
                ids = tuple(i for i in ids if i not in waiting and (leave_out is None or i != leave_out.id))
            if ids:
                out.append(Send(ids, dialect.encode_shared(msg)))

    def _private(self, fields: dict[str, str], out: Out) -> None:
        if fields.get("kind") != "dm":
            return
        message = {"type": "message", "id": int(fields["id"]), "ts": float(fields["ts"]), "from": fields["from"],
                   "text": fields["text"], "to": fields["to"]}
        target = self.core.members.get(name_key(fields["to"]))
        sender = self.core.members.get(name_key(fields["from"]))
        for party in dict.fromkeys(p for p in (target, sender) if p is not None):
            if party is target or party.dialect.hears_own:
                self.core.send(party, message, out)

    def _state(self, up: bool, why: str) -> list[Effect]:
        """Redis went away (or came back): every client here is told that nothing can be sent meanwhile."""
        out: Out = []
        if not up:
            for client in list(self.core.members.values()):
                self._unavailable(client, "messages cannot be sent", out)
            return out
        if why == "reset":  # Redis lost its data: its streams start again from nothing
            for feed in self.feeds.values():
                feed.delivered = (0, 0)
                feed.joining.clear()
        for client in list(self.core.members.values()):
            self.core.send(client, {"type": "notice", "code": AVAILABLE, "message": BACK}, out)
        return out

    def _lost(self, keys: list[str], now: float) -> list[Effect]:
        """Given up for dead while away, this server's users lost these names to others: they must go."""
        out: Out = []
        for key in keys:
            client = self.core.members.get(key)
            if client is not None:
                self.core.close(client, "server_lost", "your server lost touch with the others, and your name was "
                                "taken meanwhile: connect again", now, out)
        return out


__all__ = ["DEFAULT_ROOM", "Feed", "SharedRooms"]
