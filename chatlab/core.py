"""The chat core: the rules of the room, with no sockets, threads or clocks.

A server is two things tangled together: *I/O* (accepting, reading,
writing, closing) and *rules* (who may speak, who hears what, in which
order).  Here the rules stand alone.  The core is told what happened --
a client connected, these bytes arrived, the client went away -- together
with the current time (always the last argument), and it answers with *effects*: ``Send`` these bytes
to these clients, ``Close`` that one.  It never performs them.

That is what lets one core serve three very different servers (a thread
per client, a ``selectors`` loop, ``asyncio``), and lets a unit test drive
a whole chat room by calling methods and reading the effects back.

The core is not thread-safe on purpose: a threaded server must call it
under a lock, and must apply its effects under the same lock so that every
client sees messages in the one order the core gave them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Hashable

from .files import FileSharing
from .framing import FramingError
from .accounts import Accounts
from .guard import Defences, Watch
from .history import History
from .limits import Limits
from .protocol import (
    ALREADY_REGISTERED,
    BAD_NAME,
    BAD_ROOM,
    BAD_TEXT,
    BANNER,
    LINES,
    LINES_HELP,
    NAME_TAKEN,
    NOT_IN_ROOM,
    NOT_REGISTERED,
    TOO_LARGE,
    TOO_MANY_ROOMS,
    UNKNOWN_USER,
    ProtocolError,
    Wire,
    check_name,
    clean_text,
    encode_for,
    name_key,
    normalise_name,
)
from .rooms import DEFAULT_ROOM, Room

log = logging.getLogger("chatlab.core")

ClientId = Hashable


# ------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Send:
    """Queue ``data`` for each client in ``to``.

    A broadcast is one ``Send`` with many recipients: the message is encoded
    once, not once per listener.
    """

    to: tuple[ClientId, ...]
    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the connection once what is queued for it has been sent."""

    client: ClientId
    reason: str


Effect = Send | Close


# ------------------------------------------------------------------- clients


@dataclass(eq=False)
class Client:
    id: ClientId
    peer: str
    wire: Wire
    connected_at: float
    name: str | None = None  # set once registered
    key: str | None = None  # name_key(name): what must be unique
    rooms: dict[str, Room] = field(default_factory=dict)  # room key -> room, in join order
    current_room: str | None = None  # lines mode: the room plain lines go to
    watch: Watch | None = None  # what the defences note about it (guard.py)

    def __str__(self) -> str:
        return f"{self.peer} ({self.name})" if self.name else self.peer


@dataclass
class ChatCore(FileSharing, Defences):
    limits: Limits = field(default_factory=Limits)
    banner: bytes = BANNER
    history: History = field(default_factory=History)  # in memory unless given a file
    accounts: Accounts | None = None  # names that need a password (None: nobody needs one)

    def __post_init__(self) -> None:
        self.clients: dict[ClientId, Client] = {}  # every open connection
        self.members: dict[str, Client] = {}  # name key -> registered client, in join order
        self.rooms: dict[str, Room] = {}  # room key -> room; the lobby always exists
        self.lobby = self._room(DEFAULT_ROOM)
        self.last_message_id = self.history.last_id()  # ids keep growing across restarts
        self._init_defences()

    # ------------------------------------------------------------ events in

    def connect(self, cid: ClientId, peer: str, now: float) -> list[Effect]:
        """A TCP connection was accepted.  The server speaks first: the banner."""
        refusal = self._admit(cid, peer, now)  # too many, too fast? (guard.py)
        if refusal is not None:
            return refusal
        self.clients[cid] = Client(cid, peer, Wire(self.limits), now, watch=self._watch(peer, now))
        log.info("%s connected", peer)
        return [Send((cid,), self.banner)]

    def receive(self, cid: ClientId, data: bytes, now: float) -> list[Effect]:
        """Bytes arrived from a client: any piece of the stream, of any size."""
        client = self.clients.get(cid)
        if client is None:
            return []  # closed already; late bytes are dropped
        out: list[Effect] = []
        client.watch.last_heard = now  # not idle, whatever it says
        try:
            items, failure = client.wire.feed(data), None
        except FramingError as exc:
            # The frames before the bad one arrived intact: still handle them.
            items, failure = exc.frames, exc
        for item in items:
            effects: list[Effect] = []
            try:
                self._handle(client, item, now, effects)
            except Exception:  # a bug: this client alone pays for it (guard.py)
                return out + self._crashed(client, now)
            out += effects
            if cid not in self.clients:
                return out  # that item ended the connection (a "bye", a flood)
        if failure is not None:
            self._reply_error(client, failure.code, str(failure), out)
            self._close(client, "protocol_error", f"protocol error: {failure}", now, out)
        return out

    def disconnect(self, cid: ClientId, reason: str, now: float) -> list[Effect]:
        """The connection is gone (the peer closed or reset it, or it was too slow)."""
        client = self.clients.get(cid)
        if client is None:
            return []
        out: list[Effect] = []
        if client.wire.pending:
            log.warning("%s vanished mid-message: %d bytes of it dropped", client, client.wire.pending)
        self._close(client, reason, None, now, out)
        return out

    def tick(self, now: float) -> list[Effect]:
        """Time passed.  Every server calls this about twice a second, so that
        rules about time (timeouts, keep-alive pings, delayed answers) need no
        clock of their own."""
        self.history.flush()  # one commit per tick for all the messages since the last
        self._expire_files(now)
        return self._keep_time(now)  # guard.py

    def shutdown(self, now: float) -> list[Effect]:
        """The server is stopping: tell everyone, then close every connection."""
        out: list[Effect] = []
        for client in list(self.clients.values()):
            self._notify_closing(client, "shutdown", "the server is shutting down", out)
            out.append(Close(client.id, "shutdown"))
            log.info("%s closed (shutdown) after %.1f s", client, now - client.connected_at)
        self.clients.clear()
        self.members.clear()
        self._init_defences()
        self.rooms.clear()
        self.lobby = self._room(DEFAULT_ROOM)
        self.history.flush()
        return out

    @property
    def users(self) -> list[str]:
        """Registered names, in the order they joined."""
        return [member.name for member in self.members.values()]  # type: ignore[misc]

    # ------------------------------------------------------- message handlers

    def _handle(self, client: Client, item: bytes, now: float, out: list[Effect]) -> None:
        try:
            msg = self._screen(client, item, now, out)  # parsed, within its rate (guard.py)
            if msg is not None:
                getattr(self, "_on_" + msg["type"])(client, msg, now, out)
        except ProtocolError as exc:
            log.info("%s: %s: %s", client, exc.code, exc.message)
            self._reply_error(client, exc.code, exc.message, out)

    def _on_hello(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        if client.name is not None:
            raise ProtocolError(ALREADY_REGISTERED, f"you are already registered as {client.name}")
        name = normalise_name(msg["name"])
        problem = check_name(name, self.limits.max_name or 1 << 30)
        if problem:
            raise ProtocolError(BAD_NAME, f"{problem}; try another name")
        key = name_key(name)
        if not self._authenticate(client, name, key, msg, now, out):
            return  # a password is missing or wrong: answered now, or after a delay (guard.py)
        if key in self.members:
            raise ProtocolError(NAME_TAKEN, f"the name {name} is taken; try another name")
        client.name, client.key = name, key
        self.members[key] = client
        log.info("%s registered as %s", client.peer, name)
        if self._large(self.lobby):
            # Listing everyone to every newcomer would cost N squared names
            # too: a large lobby lists those announced, and counts the rest.
            users, count = [m.name for m in self.lobby.announced.values()], {"count": len(self.members)}
        else:
            users, count = self.users, {}
        self._send(client, {"type": "welcome", "name": name, "users": users, "room": self.lobby.name, **count}, out)
        self._enter(client, self.lobby, out, confirm=False)

    def _on_say(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        room = self._member_room(client, msg.get("room"))
        text = self._check_text(msg["text"])
        if client.key not in room.announced:
            self._announce(client, room, out)  # quiet in a large room until now (see _enter)
        message = self._message(client, text, now, room=room.name)
        log.info("message %d from %s in %s: %s", message["id"], client.name, room.name, text)
        # Frames clients get every message, their own included, so they can
        # see where it fell in the one server-wide order.  A person in lines
        # mode already sees what they typed, so it is not echoed back.
        self._broadcast(room, message, out, skip_lines=client)
        self.history.append(room.key, message)

    def _on_dm(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._require_registered(client)
        target = self._user(msg["to"])
        message = self._message(client, self._check_text(msg["text"]), now, to=target.name)
        log.info("private message %d from %s to %s", message["id"], client.name, target.name)
        # Only the two parties see it; the sender's copy confirms it, as in a room.
        for party in dict.fromkeys([target, client]):
            if party is target or party.wire.mode != LINES:
                self._send(party, message, out)

    def _on_join(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._require_registered(client)
        name = normalise_name(msg["room"].lstrip("#"))
        problem = check_name(name, self.limits.max_name or 1 << 30)
        if problem:
            raise ProtocolError(BAD_ROOM, f"bad room name: {problem.replace('a name', 'a room name')}")
        room = self.rooms.get(name_key(name))
        if room is not None and client in room.members.values():
            client.current_room = room.key
            self._send(client, {"type": "joined", "name": client.name, "room": room.name,
                                "members": room.names()}, out)
            return
        if self.limits.max_rooms_per_user and len(client.rooms) >= self.limits.max_rooms_per_user:
            raise ProtocolError(TOO_MANY_ROOMS, f"you are in {len(client.rooms)} rooms, the most allowed; leave one first")
        if room is None:
            if self.limits.max_rooms and len(self.rooms) >= self.limits.max_rooms:
                raise ProtocolError(TOO_MANY_ROOMS, f"the server has {len(self.rooms)} rooms, the most allowed")
            room = self._room(name)
        self._enter(client, room, out)
        client.current_room = room.key

    def _on_leave(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        room = self._member_room(client, msg.get("room"))
        self._exit(client, room, "left", out, tell_leaver=True)

    def _on_history(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._require_registered(client)
        room = self._find_room(msg["room"]) if msg.get("room") else self._member_room(client, None)
        limit = max(0, min(msg.get("limit", self.limits.history_on_join), self.limits.history_page))
        messages = self.history.page(room.key, limit, msg.get("before"))
        self._send(client, {"type": "history", "room": room.name, "messages": messages}, out)

    def _on_rooms(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        listing = [{"name": r.name, "members": r.names()} for r in sorted(self.rooms.values(), key=lambda r: r.key)]
        self._send(client, {"type": "rooms", "rooms": listing}, out)

    def _on_ping(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._send(client, {"type": "pong", "id": msg.get("id")}, out)

    def _on_who(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        if msg.get("room"):
            room = self._find_room(msg["room"])
            self._send(client, {"type": "users", "room": room.name, "users": room.names()}, out)
        else:
            self._send(client, {"type": "users", "users": self.users}, out)

    def _on_help(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._send(client, {"type": "help", "text": LINES_HELP}, out)

    def _on_bye(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._close(client, "quit", "goodbye", now, out)

    # ---------------------------------------------------------------- helpers

    def _require_registered(self, client: Client) -> None:
        if client.name is None:
            raise ProtocolError(NOT_REGISTERED, "say hello with your name first")

    def _send(self, client: Client, msg: dict[str, Any], out: list[Effect]) -> None:
        out.append(Send((client.id,), client.wire.encode(msg)))

    def _reply_error(self, client: Client, code: str, message: str, out: list[Effect]) -> None:
        # Errors often quote what was sent ("unknown command /\x1b[2J"): cleaned
        # like any text, so that not even the sender's own terminal obeys it.
        self._send(client, {"type": "error", "code": code, "message": clean_text(message)}, out)

    def _notify_closing(self, client: Client, reason: str, message: str, out: list[Effect]) -> None:
        self._send(client, {"type": "closing", "reason": reason, "message": message}, out)

    def _user(self, name: str) -> Client:
        target = self.members.get(name_key(name))
        if target is None:
            raise ProtocolError(UNKNOWN_USER, f"nobody called {name[:40]} is here")
        return target

    def _check_text(self, text: str) -> str:
        if self.limits.max_text and len(text) > self.limits.max_text:
            raise ProtocolError(TOO_LARGE, f"text has {len(text)} characters; the limit is {self.limits.max_text}")
        text = clean_text(text)
        if not text.strip():
            raise ProtocolError(BAD_TEXT, "nothing to say: the text is empty")
        return text

    def _message(self, client: Client, text: str, now: float, **where: str) -> dict[str, Any]:
        """A new chat message with the next id in the one server-wide order."""
        self.last_message_id += 1
        return {"type": "message", "id": self.last_message_id, "ts": now, "from": client.name, "text": text, **where}

    # ------------------------------------------------------------------ rooms

    def _room(self, name: str) -> Room:
        room = self.rooms[name_key(name)] = Room(name, name_key(name))
        return room

    def _find_room(self, name: str) -> Room:
        room = self.rooms.get(name_key(normalise_name(name.lstrip("#"))))
        if room is None:
            raise ProtocolError(NOT_IN_ROOM, f"there is no room called {name[:40]}")
        return room

    def _member_room(self, client: Client, name: str | None) -> Room:
        """The room a client means: the named one, else its current one; it must be in it."""
        self._require_registered(client)
        key = name_key(normalise_name(name.lstrip("#"))) if name else client.current_room
        room = client.rooms.get(key) if key else None
        if room is None:
            raise ProtocolError(NOT_IN_ROOM, f"you are not in {name or 'any room'}; /join it first")
        return room

    def _enter(self, client: Client, room: Room, out: list[Effect], confirm: bool = True) -> None:
        """Put a registered client in a room and tell the room (and the client, unless it was just welcomed)."""
        # A room that is already large hears of a newcomer only when it first
        # speaks: N joins announced to everyone would cost N squared notices.
        quiet = self._large(room)
        room.add(client)
        client.rooms[room.key] = room
        if client.current_room is None:
            client.current_room = room.key
        if confirm:
            self._send(client, {"type": "joined", "name": client.name, "room": room.name,
                                "members": room.names()}, out)
        if not quiet:
            self._announce(client, room, out)
        # What was said just before: marked as history, so no client mistakes it for new.
        recent = self.history.page(room.key, self.limits.history_on_join) if self.limits.history_on_join else []
        if recent:
            self._send(client, {"type": "history", "room": room.name, "messages": recent}, out)

    def _large(self, room: Room) -> bool:
        return bool(self.limits.large_room) and len(room.members) >= self.limits.large_room

    def _announce(self, client: Client, room: Room, out: list[Effect]) -> None:
        room.announced[client.key] = client
        self._broadcast(room, {"type": "joined", "name": client.name, "room": room.name}, out, skip=client)

    def _exit(self, client: Client, room: Room, reason: str, out: list[Effect], tell_leaver: bool = False) -> None:
        """Take a client out of a room, tell the room, and drop the room once empty."""
        notice = {"type": "left", "name": client.name, "room": room.name, "reason": reason}
        if tell_leaver:
            self._send(client, notice, out)
        heard = client.key in room.announced  # a quiet member leaves as quietly as it came
        room.remove(client)
        del client.rooms[room.key]
        if client.current_room == room.key:
            client.current_room = next(iter(client.rooms), None)
        if heard:
            self._broadcast(room, notice, out)
        if not room.members and room is not self.lobby:
            del self.rooms[room.key]

    def _broadcast(self, room: Room, msg: dict[str, Any], out: list[Effect],
                   skip: Client | None = None, skip_lines: Client | None = None) -> None:
        """One ``Send`` per wire mode to every member of ``room``, bar the skipped."""
        for mode, ids in room.audience().items():
            leave_out = skip or (skip_lines if mode == LINES else None)
            if leave_out is not None and leave_out.wire.mode == mode:
                ids = tuple(i for i in ids if i != leave_out.id)
            if ids:
                out.append(Send(ids, encode_for(mode, msg)))

    def _close(self, client: Client, reason: str, notice: str | None, now: float, out: list[Effect]) -> None:
        """Forget a client; tell it why (if it can still hear) and tell the room."""
        if notice is not None:
            self._notify_closing(client, reason, notice, out)
        out.append(Close(client.id, reason))
        del self.clients[client.id]
        self._forget(client)
        lasted = now - client.connected_at
        if client.key is not None and self.members.get(client.key) is client:
            del self.members[client.key]
            for room in list(client.rooms.values()):
                self._exit(client, room, reason, out)
        self._expire_files(now, client)
        log.info("%s closed (%s) after %.1f s", client, reason, lasted)
