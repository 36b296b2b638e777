"""The chat core: the rules of the room, with no sockets, threads or clocks.

A server is two things tangled together: *I/O* (accepting, reading,
writing, closing) and *rules* (who may speak, who hears what, in which
order).  Here the rules stand alone.  The core is told what happened --
a client connected, these bytes arrived, the client went away, time passed
-- together with the current time (always the last argument, from a
monotonic clock), and it answers with *effects* (``effects.py``): ``Send``
these bytes to these clients, ``Close`` that one, do this slow ``Work``
elsewhere.  It never performs them.

That is what lets one core serve three very different servers (a thread
per client, a ``selectors`` loop, ``asyncio``), and lets a unit test drive
a whole chat room by calling methods and reading the effects back
(``chatlab.testing.CoreDriver``).

The core speaks *messages*, never bytes of a particular dialect: each
client's ``dialect`` (``chatlab/dialects/``) turns its bytes into messages
and messages into bytes.  The core owns the components that keep its rules:

* ``guard`` (guard.py): admission, rate limits, timeouts, keep-alive, bugs;
* ``logins`` (logins.py): passwords, checked off the chat's thread;
* ``files`` (files.py): file transfers;
* ``history`` (history.py): what was said, in SQLite;
* ``backplane`` (backplane/): what is shared with other servers -- nothing
  (``LocalBackplane``), or everything, through Redis (``SharedRooms``),
  which then answers the message types that concern every server;

and it hands each message to the handler its type names in ``handlers``, an
explicit table: every type in ``protocol.CLIENT_MESSAGES`` has one.

The core is not thread-safe on purpose: a threaded server must call it
under a lock, and must apply its effects under the same lock so that every
client sees messages in the one order the core gave them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .accounts import Accounts
from .backplane import Backplane, LocalBackplane
from .dialects import Dialect, MainPort, Reply, Unit
from .effects import ClientId, Close, Effect, Send, Work
from .errors import ProtocolError, WireError
from .files import FileStore
from .guard import Guard
from .history import History
from .limits import MAX_FRAME, Limits
from .logins import Logins
from .protocol import (
    ALREADY_REGISTERED,
    BAD_NAME,
    BAD_ROOM,
    BAD_TEXT,
    CLIENT_MESSAGES,
    LAST_ROOM,
    LINES_HELP,
    NAME_TAKEN,
    NOT_IN_ROOM,
    NOT_REGISTERED,
    TOO_LARGE,
    TOO_MANY_ROOMS,
    UNKNOWN_USER,
    check_name,
    clean_text,
    fit,
    json_size,
    look_alikes,
    name_key,
    normalise_name,
    reserved,
)
from .rooms import DEFAULT_ROOM, Room
from .session import Client, Out

log = logging.getLogger("chatlab.core")
# One line per chat message: the log that grows with the traffic, so it can
# be switched off on its own (serverlog.py, ``chatlab serve --no-message-log``).
# A log record costs ~15 µs to make, format and write -- as much as the
# whole broadcast to a hundred members -- so the lines of one burst (what
# one recv() brought) go out as one record, a line per message.
messages_log = logging.getLogger("chatlab.messages")

Handler = Callable[[Client, dict[str, Any], float, Out], None]

#: Bytes a client may send while a slow job runs for it (a password check)
#: before it is cut off: far more than any honest client pipelines.
BACKLOG_LIMIT = 1 << 20

__all__ = ["ChatCore", "Client", "Close", "Effect", "Send", "Work"]


class ChatCore:
    """The rules of one chat server.  ``now`` in every call is a monotonic clock's reading."""

    def __init__(self, limits: Limits | None = None, history: History | None = None,
                 accounts: Accounts | None = None, wallclock: Callable[[], float] = time.time,
                 backplane: Backplane | None = None):
        self.limits = limits or Limits()
        self.history = history if history is not None else History()  # in memory unless given a file
        self.wallclock = wallclock  # only for the "ts" a message carries; every rule runs on ``now``
        self.clients: dict[ClientId, Client] = {}  # every open connection
        self._said: list[str] = []  # message-log lines of this burst, not yet logged (_log_said)
        self.members: dict[str, Client] = {}  # name key -> registered client, in join order
        self.rooms: dict[str, Room] = {}  # room key -> room; the lobby always exists
        # Look-alike forms (protocol.look_alikes) -> the key of the member, or room, that has them.
        self.looks: dict[str, str] = {}
        self.room_looks: dict[str, str] = {}
        self.lobby = self._room(DEFAULT_ROOM)
        self.last_message_id = self.history.last_id()  # ids keep growing across restarts
        self.guard = Guard(self.limits, self)
        self.logins = Logins(accounts, self.limits, self)
        self.files = FileStore(self.limits, self)
        self.handlers: dict[str, Handler] = {
            "hello": self._on_hello,
            "say": self._on_say,
            "dm": self._on_dm,
            "join": self._on_join,
            "leave": self._on_leave,
            "rooms": self._on_rooms,
            "who": self._on_who,
            "history": self._on_history,
            "ping": self._on_ping,
            "pong": self.guard.on_pong,
            "help": self._on_help,
            "bye": self._on_bye,
            **self.files.handlers,
        }
        # A chat shared with other servers answers some types itself (docs/scaling.md).
        self.backplane = backplane if backplane is not None else LocalBackplane()
        self.handlers.update(self.backplane.attach(self))
        missing = set(CLIENT_MESSAGES) ^ set(self.handlers)
        assert not missing, f"message types and handlers differ: {missing}"

    @property
    def accounts(self) -> Accounts | None:
        return self.logins.accounts

    # ------------------------------------------------------------ events in

    def connect(self, cid: ClientId, peer: str, now: float, dialect: Dialect | None = None) -> list[Effect]:
        """A TCP connection was accepted.  ``dialect``: what it speaks (default: the main port's)."""
        dialect = dialect if dialect is not None else MainPort(self.limits)
        out: Out = []
        if not self.guard.admit(cid, peer, dialect, now, out):  # too many, too fast?
            return out  # its refusal
        # (``out`` may close another connection to make room: guard.Guard.make_room.)
        self.clients[cid] = Client(cid, peer, dialect, now, self.guard.watch(peer, now))
        log.debug("%s connected", peer)  # told at INFO once it says hello ("registered as")
        greeting = dialect.greeting()  # on the main port, the server speaks first: the banner
        return out + [Send((cid,), greeting)] if greeting else out

    def receive(self, cid: ClientId, data: bytes, now: float) -> list[Effect]:
        """Bytes arrived from a client: any piece of the stream, of any size."""
        client = self.clients.get(cid)
        if client is None:
            return []  # closed already; late bytes are dropped
        client.watch.last_heard = now  # not idle, whatever it says
        dialect = client.dialect
        try:
            units, failure = dialect.feed(data), None
        except WireError as exc:
            # The units before the bad bytes arrived intact: still handle them.
            units, failure = list(getattr(exc, "items", [])), exc
        if dialect.upgraded is not None:  # the main port chose frames or lines; HTTP became WebSocket
            client.dialect, dialect.upgraded = dialect.upgraded, None
        out: Out = []
        if client.backlog is not None:  # a slow job runs for it: its messages wait their turn
            client.backlog += units if failure is None else [*units, failure]
            if sum(len(u) if isinstance(u, bytes) else 1 for u in client.backlog) > BACKLOG_LIMIT:
                self.close(client, "flooding", "too much sent while your login was being checked", now, out)
            return out
        batch: list[Unit | WireError] = [*units, failure] if failure is not None else list(units)
        effects = self._run(client, batch, now)
        self._log_said()
        return effects

    def _run(self, client: Client, units: list[Unit | WireError], now: float) -> list[Effect]:
        """Handle a client's units in order; a WireError among them (last) ends the connection."""
        out: Out = []
        for index, unit in enumerate(units):
            if isinstance(unit, WireError):
                self.error(client, unit.code, str(unit), out)
                self.close(client, "protocol_error", f"protocol error: {unit}", now, out)
                return out
            effects: Out = []
            try:
                self._handle(client, unit, now, effects)
            except Exception:  # a bug: this client alone pays for it (guard.py)
                return out + self.guard.crashed(client, now)
            out += effects
            if self.clients.get(client.id) is not client:
                return out  # that unit ended the connection (a "bye", a flood)
            if client.backlog is not None:  # a slow job started: the rest waits for it
                client.backlog += units[index + 1:]
                return out
        return out

    def disconnect(self, cid: ClientId, reason: str, now: float) -> list[Effect]:
        """The connection is gone (the peer closed or reset it, or it was too slow)."""
        client = self.clients.get(cid)
        if client is None:
            return []
        out: Out = []
        if client.dialect.pending:
            # Worth a warning from someone who chatted; from a connection that
            # never said hello (a scan, a flood that resets), only detail.
            log.log(logging.WARNING if client.name else logging.DEBUG,
                    "%s vanished mid-message: %d bytes of it dropped", client, client.dialect.pending)
        self.close(client, reason, None, now, out)
        return out

    def tick(self, now: float) -> list[Effect]:
        """Time passed.  Every server calls this about twice a second, so that
        rules about time (timeouts, keep-alive pings, delayed answers) need no
        clock of their own."""
        out: Out = []
        self._write_history(out)  # at the tick: whatever was said since the last batch was handed over
        self.files.expire(now, out=out)
        self.logins.keep_time(now, out)
        self.guard.keep_time(now, out)
        return out

    def finished(self, work: Work, result: Any, now: float) -> list[Effect]:
        """A ``Work`` effect is done: ``result`` is what its job returned (or the exception it raised)."""
        try:
            return work.then(result, now)
        except Exception:
            log.exception("handling the result of %s failed", work.what)
            return []

    def shutdown(self, now: float) -> list[Effect]:
        """The server is stopping: tell everyone, then close every connection."""
        out: Out = []
        for client in list(self.clients.values()):
            self._notify_closing(client, "shutdown", "the server is shutting down", out)
            out.append(Close(client.id, "shutdown"))
            log.info("%s closed (shutdown) after %.1f s", client, now - client.connected_at)
        self.clients.clear()
        self.members.clear()
        self.guard.reset()
        self.logins.reset()
        self.files.clear()
        self.rooms.clear()
        self.looks.clear()
        self.room_looks.clear()
        self.lobby = self._room(DEFAULT_ROOM)
        self.history.flush()
        return out

    @property
    def users(self) -> list[str]:
        """Registered names, in the order they joined."""
        return [member.name for member in self.members.values() if member.name is not None]

    # ------------------------------------------------------- message handlers

    def _handle(self, client: Client, unit: bytes | Reply, now: float, out: Out) -> None:
        if isinstance(unit, Reply):  # the dialect answered by itself (a web page, an IRC capability list)
            if self.guard.within_rate(client, now, out):
                self._reply(client, unit, now, out)
            return
        try:
            msg = self.guard.screen(client, unit, now, out)  # parsed, within its rate
            if isinstance(msg, Reply):  # answered by the dialect, in its turn (an IRC PING)
                self._reply(client, msg, now, out)
            elif msg is not None:
                self.handlers[msg["type"]](client, msg, now, out)
        except ProtocolError as exc:
            self._log_said()  # what was said before it, first
            log.info("%s: %s: %s", client, exc.code, exc.message)
            self.error(client, exc.code, exc.message, out)

    def _reply(self, client: Client, reply: Reply, now: float, out: Out) -> None:
        out.append(Send((client.id,), reply.data))
        if reply.close is not None:
            self.close(client, reply.close, None, now, out)

    def _on_hello(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        if client.name is not None:
            raise ProtocolError(ALREADY_REGISTERED, f"you are already registered as {client.name}")
        name = normalise_name(msg["name"])
        problem = check_name(name, self.limits.max_name or 1 << 30)
        if problem:
            raise ProtocolError(BAD_NAME, f"{problem}; try another name")
        if reserved(name):
            raise ProtocolError(BAD_NAME, f"the name {name} is reserved: it could pass for the server; try another")
        key = name_key(name)
        owner = self.logins.look_alike_account(name, key)
        if owner is not None:
            raise ProtocolError(NAME_TAKEN, f"the name {name} looks like {owner}, a name with an account; "
                                            "try another name")
        verdict = self.logins.check(client, name, key, msg.get("password"), now, out)
        if verdict is True:
            self._register(client, name, key, out)
        elif verdict is not False:
            # A password to check: slow, so it is done elsewhere, and this
            # client's next messages wait until the verdict is in.
            def checked(right: Any, now: float, effects: Out) -> None:
                if self.logins.checked(client, name, right, now, effects):
                    self._register(client, name, key, effects)

            self.logins.run(client, self._pause(client, verdict, checked, lambda: self.logins.cancel(client, now),
                                                f"checking the password of {name}"), out)

    def _register(self, client: Client, name: str, key: str, out: Out) -> None:
        if key in self.members:
            raise ProtocolError(NAME_TAKEN, f"the name {name} is taken; try another name")
        forms = look_alikes(name)
        holder = next((self.looks[form] for form in forms if form in self.looks), None)
        if holder is not None and holder in self.members:
            raise ProtocolError(NAME_TAKEN, f"the name {name} looks like {self.members[holder].name}, who is "
                                            "here; try another name")
        if self.backplane.register(client, name, key, out):
            return  # shared with other servers: the name is claimed on all of them first
        client.name, client.key = name, key
        self.members[key] = client
        self.looks.update(dict.fromkeys(forms, key))
        log.info("%s registered as %s", client.peer, name)
        count: dict[str, int] = {}
        if self._large(self.lobby):
            # Listing everyone to every newcomer would cost N squared names
            # too: a large lobby lists those announced, and counts the rest.
            users, count = [m.name for m in self.lobby.announced.values()], {"count": len(self.members)}
        else:
            users = self.users
        welcome = {"type": "welcome", "name": name, "room": self.lobby.name, **count}
        self.send(client, self._names(welcome, "users", users), out)
        self._enter(client, self.lobby, out, confirm=False)

    def _on_say(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        room = self.member_room(client, msg.get("room"))
        text = self._check_text(msg["text"])
        if not self.guard.within_relay(client, len(text.encode("utf-8")), now, out):
            return  # its address has sent its share of bytes for now
        if client.key not in room.announced:
            self._announce(client, room, out)  # quiet in a large room until now (see _enter)
        message = self._message(client, text, room=room.name)
        if messages_log.isEnabledFor(logging.INFO):
            self._said.append(f"message {message['id']} from {client.name} in {room.name}: {text}")
        # Programs get every message, their own included, so they can see
        # where it fell in the one server-wide order; a person has already
        # seen what they typed (each dialect's ``hears_own``).
        self._broadcast(room, message, out, skip_own=client)
        if self.history.append(room.key, message):
            self._write_history(out)  # a burst: written now, a batch at a time (history.py)

    def _on_dm(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.require_registered(client)
        target = self.user(msg["to"])
        assert target.name is not None  # a member has a name
        text = self._check_text(msg["text"])
        if not self.guard.within_relay(client, len(text.encode("utf-8")), now, out):
            return
        message = self._message(client, text, to=target.name)
        if messages_log.isEnabledFor(logging.INFO):
            self._said.append(f"private message {message['id']} from {client.name} to {target.name}")
        # Only the two parties see it; the sender's copy confirms it, as in a room.
        for party in dict.fromkeys([target, client]):
            if party is target or party.dialect.hears_own:
                self.send(party, message, out)

    def _on_join(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.require_registered(client)
        name = normalise_name(msg["room"].lstrip("#"))
        problem = check_name(name, self.limits.max_name or 1 << 30)
        if problem:
            raise ProtocolError(BAD_ROOM, f"bad room name: {problem.replace('a name', 'a room name')}")
        room = self.rooms.get(name_key(name))
        if room is not None and client in room.members.values():
            client.current_room = room.key
            self.send(client, self._names({"type": "joined", "name": client.name, "room": room.name},
                                          "members", room.names()), out)
            return
        if self.limits.max_rooms_per_user and len(client.rooms) >= self.limits.max_rooms_per_user:
            raise ProtocolError(TOO_MANY_ROOMS, f"you are in {len(client.rooms)} rooms, the most allowed; leave one first")
        if room is None:
            if self.limits.max_rooms and len(self.rooms) >= self.limits.max_rooms:
                raise ProtocolError(TOO_MANY_ROOMS, f"the server has {len(self.rooms)} rooms, the most allowed")
            like = next((self.room_looks[form] for form in look_alikes(name) if form in self.room_looks), None)
            if like is not None and like in self.rooms:
                raise ProtocolError(BAD_ROOM, f"{name} looks like the room {self.rooms[like].name}; "
                                              f"join {self.rooms[like].name}, or pick a name that looks different")
            room = self._room(name)
        self._enter(client, room, out)
        client.current_room = room.key

    def _on_leave(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        room = self.member_room(client, msg.get("room"))
        if len(client.rooms) == 1:
            # A client in no room hears nothing and every line it types is refused: keep it somewhere.
            raise ProtocolError(LAST_ROOM, f"you are only in {room.name}: leaving it would leave you in no room; "
                                "/join another room first, or /quit to leave the chat")
        self._exit(client, room, "left", out, tell_leaver=True, text=self._farewell(msg))

    def _on_history(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        room = self.member_room(client, msg.get("room"))  # only a room you are in
        limit = max(0, min(msg.get("limit", self.limits.history_on_join), self.limits.history_page))
        self._send_history(client, room, limit, out, msg.get("before"), msg.get("since"))

    def _on_rooms(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.require_registered(client)  # who is where is for those who said hello
        after = name_key(normalise_name(msg["after"].lstrip("#"))) if msg.get("after") else None
        rooms = sorted((r for r in self.rooms.values() if after is None or r.key > after), key=lambda r: r.key)
        # A page of the listing: as many rooms as fit in one message, each
        # with as many of its members as fit in a quarter of one.
        entries = [self._names({"name": r.name}, "members", r.names(), self._frame_room // 4) for r in rooms]
        answer: dict[str, Any] = {"type": "rooms", "rooms": []}
        shown = fit(entries, self._frame_room - json_size({**answer, "more": True}))
        answer["rooms"] = entries[:shown]
        if shown < len(entries):
            answer["more"] = True  # the rest: {"type": "rooms", "after": the last name listed}
        self.send(client, answer, out)

    def _on_ping(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.send(client, {"type": "pong", "id": msg.get("id")}, out)

    def _on_who(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.require_registered(client)
        if msg.get("room"):
            room = self._find_room(msg["room"])
            self.send(client, self._names({"type": "users", "room": room.name}, "users", room.names()), out)
        else:
            self.send(client, self._names({"type": "users"}, "users", self.users), out)

    def _on_help(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.send(client, {"type": "help", "text": LINES_HELP}, out)

    def _on_bye(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        client.farewell = self._farewell(msg)
        self.close(client, "quit", "goodbye", now, out)

    def _farewell(self, msg: dict[str, Any]) -> str | None:
        """The text a leave or a bye may carry ("see you tomorrow"): checked like any text; blank is none."""
        text = msg.get("text")
        if not text or not clean_text(text).strip():
            return None
        return self._check_text(text)

    # ------------------------------------------- services (session.Services)

    def require_registered(self, client: Client) -> None:
        if client.name is None:
            raise ProtocolError(NOT_REGISTERED, "say hello with your name first")

    def asked(self, client: Client) -> None:
        self.guard.asked(client)

    def send(self, client: Client, msg: dict[str, Any], out: Out) -> None:
        out.append(Send((client.id,), client.dialect.encode(msg)))

    def error(self, client: Client, code: str, message: str, out: Out) -> None:
        # Errors often quote what was sent ("unknown command /\x1b[2J"): cleaned
        # like any text, so that not even the sender's own terminal obeys it.
        self.send(client, {"type": "error", "code": code, "message": clean_text(message)}, out)

    def user(self, name: str) -> Client:
        target = self.members.get(name_key(name))
        if target is None:
            raise ProtocolError(UNKNOWN_USER, f"nobody called {name[:40]} is here")
        return target

    def member_room(self, client: Client, name: str | None) -> Room:
        """The room a client means: the named one, else its current one; it must be in it."""
        self.require_registered(client)
        key = name_key(normalise_name(name.lstrip("#"))) if name else client.current_room
        room = client.rooms.get(key) if key else None
        if room is None:
            raise ProtocolError(NOT_IN_ROOM, f"you are not in {name or 'any room'}; /join it first")
        return room

    def close(self, client: Client, reason: str, notice: str | None, now: float, out: Out) -> None:
        """Forget a client; tell it why (if it can still hear) and tell the room."""
        self._log_said()  # what it said before it went, first
        if notice is not None:
            self._notify_closing(client, reason, notice, out)
        out.append(Close(client.id, reason))
        del self.clients[client.id]
        self.guard.forget(client)
        self.logins.forget(client)
        lasted = now - client.connected_at
        if client.key is not None and self.members.get(client.key) is client:
            del self.members[client.key]
            for form in look_alikes(client.name or ""):
                if self.looks.get(form) == client.key:
                    del self.looks[form]
            if not self.backplane.gone(client, reason, out):  # shared: the others hear it from Redis
                for room in list(client.rooms.values()):
                    self._exit(client, room, reason, out, text=client.farewell)
        self.files.expire(now, client)
        # The log tells the story of people, not of every socket: a connection
        # that never said hello and just went away is detail (a connect flood
        # would otherwise write lines as fast as it connects, security.md 2.7).
        quiet = client.name is None and reason == "disconnected"
        log.log(logging.DEBUG if quiet else logging.INFO, "%s closed (%s) after %.1f s", client, reason, lasted)

    # ------------------------------------------------ what fits in one message
    #
    # Whatever the server sends must fit the limits it holds every client to:
    # a frame of at most 65,536 bytes (protocol.md section 2.2), and an
    # outbox of outbox_bytes.  A listing built from what others said or
    # chose (history, room names, everyone's names) could pass both, and
    # drop whoever asked.  So each is cut to one message by construction,
    # measured as compact JSON (the largest form any dialect gives it), and
    # says so: "more" (ask for the next page) or "count" (how many in all).

    @property
    def _frame_room(self) -> int:
        """Bytes one message may take."""
        return min(self.limits.max_frame, MAX_FRAME)

    def _names(self, msg: dict[str, Any], field: str, names: list[Any], room: int | None = None) -> dict[str, Any]:
        """``msg`` with ``field`` holding as many of ``names`` as fit; "count" says how many there are if cut."""
        space = (room or self._frame_room) - json_size({**msg, field: [], "count": len(names)})
        shown = fit(names, space)
        msg[field] = names[:shown]
        if shown < len(names):
            msg.setdefault("count", len(names))
        return msg

    def _send_history(self, client: Client, room: Room, limit: int, out: Out, before: int | None = None,
                      since: int | None = None, always: bool = True,
                      found: list[dict[str, Any]] | None = None) -> None:
        """One page of a room's history: up to ``limit`` messages that fit in one message, oldest first.

        Without ``since``, the newest ones below ``before``; with it, the
        oldest ones above ``since``.  ``"more": true`` when messages that match
        were left out (past the limit, or past what fits): page on with
        ``before`` (the first id) or ``since`` (the last id).
        """
        # ``found``: the limit + 1 messages the backplane read from a shared history (backplane/shared.py).
        rows = found if found is not None else self.history.page(room.key, limit + 1, before, since) if limit > 0 else []
        if not rows and not always:
            return  # nothing said there (yet): no empty page to send
        more = len(rows) > limit
        rows = rows[:limit] if since is not None else rows[len(rows) - limit:] if more else rows
        answer: dict[str, Any] = {"type": "history", "room": room.name, "messages": []}
        space = self._frame_room - json_size({**answer, "more": True})
        if since is not None:
            kept = rows[:fit(rows, space)]
        else:
            kept = rows[len(rows) - fit(rows[::-1], space):]
        if not kept and not always:
            return
        answer["messages"] = kept
        if more or len(kept) < len(rows):
            answer["more"] = True
        self.send(client, answer, out)

    # ---------------------------------------------------------------- helpers

    def _notify_closing(self, client: Client, reason: str, message: str, out: Out) -> None:
        self.send(client, {"type": "closing", "reason": reason, "message": message}, out)

    def _check_text(self, text: str) -> str:
        limit = self.limits.max_text
        if limit and len(text) > limit:
            raise ProtocolError(TOO_LARGE, f"text has {len(text)} characters; the limit is {limit}")
        text = clean_text(text)
        # What is relayed is bounded, not only what arrived: cleaning makes a
        # control character visible in up to 8 ("<U+0080>").
        if limit and len(text) > limit:
            raise ProtocolError(TOO_LARGE, f"text has {len(text)} characters once its control characters are "
                                           f"made visible; the limit is {limit}")
        if not text.strip():
            raise ProtocolError(BAD_TEXT, "nothing to say: the text is empty")
        return text

    def _message(self, client: Client, text: str, **where: str) -> dict[str, Any]:
        """A new chat message with the next id in the one server-wide order."""
        self.last_message_id += 1
        return {"type": "message", "id": self.last_message_id, "ts": self.wallclock(), "from": client.name,
                "text": text, **where}

    def _pause(self, client: Client, job: Callable[[], Any], then: Callable[[Any, float, Out], None],
               gone: Callable[[], None], what: str) -> Work:
        """Work for one client: until it is done, what the client sends waits in its backlog.

        ``then(result, now, out)`` continues once the job is done; ``gone()``
        instead, if the client left meanwhile.
        """
        client.backlog = []

        def resume(result: Any, now: float) -> list[Effect]:
            if self.clients.get(client.id) is not client:
                gone()
                return []
            out: Out = []
            backlog, client.backlog = client.backlog or [], None
            try:
                then(result, now, out)
            except ProtocolError as exc:
                self.error(client, exc.code, exc.message, out)
            if self.clients.get(client.id) is client:
                out += self._run(client, backlog, now)
                self._log_said()
            return out

        return Work(job, resume, what)

    def _log_said(self) -> None:
        """The message-log lines of this burst, as one record (serverlog.py gives each line its timestamp)."""
        if self._said:
            lines, self._said = self._said, []
            messages_log.info("\n".join(lines))

    def _write_history(self, out: Out) -> None:
        write = self.history.flush_job()
        if write is not None:
            out.append(Work(write, self._written, "writing history"))

    def _written(self, result: Any, now: float) -> list[Effect]:
        if isinstance(result, BaseException):
            log.error("writing history failed: %r", result)
        return []

    # ------------------------------------------------------------------ rooms

    def _room(self, name: str) -> Room:
        room = self.rooms[name_key(name)] = Room(name, name_key(name))
        self.room_looks.update(dict.fromkeys(look_alikes(name), room.key))
        return room

    def _find_room(self, name: str) -> Room:
        room = self.rooms.get(name_key(normalise_name(name.lstrip("#"))))
        if room is None:
            raise ProtocolError(NOT_IN_ROOM, f"there is no room called {name[:40]}")
        return room

    def _enter(self, client: Client, room: Room, out: Out, confirm: bool = True) -> None:
        """Put a registered client in a room and tell the room (and the client, unless it was just welcomed)."""
        # A room that is already large hears of a newcomer only when it first
        # speaks: N joins announced to everyone would cost N squared notices.
        quiet = self._large(room)
        room.add(client)
        client.rooms[room.key] = room
        if client.current_room is None:
            client.current_room = room.key
        if confirm:
            self.send(client, self._names({"type": "joined", "name": client.name, "room": room.name},
                                          "members", room.names()), out)
        if not quiet:
            self._announce(client, room, out)
        # What was said just before: marked as history, so no client mistakes it for new.
        self._send_history(client, room, self.limits.history_on_join, out, always=False)

    def _large(self, room: Room) -> bool:
        return bool(self.limits.large_room) and len(room.members) >= self.limits.large_room

    def _announce(self, client: Client, room: Room, out: Out) -> None:
        assert client.key is not None
        room.announced[client.key] = client
        self._broadcast(room, {"type": "joined", "name": client.name, "room": room.name}, out, skip=client)

    def _exit(self, client: Client, room: Room, reason: str, out: Out, tell_leaver: bool = False,
              text: str | None = None) -> None:
        """Take a client out of a room, tell the room (with the leaver's ``text``), and drop the room once empty."""
        notice: dict[str, Any] = {"type": "left", "name": client.name, "room": room.name, "reason": reason}
        if text is not None:
            notice["text"] = text
        if tell_leaver:
            self.send(client, notice, out)
        heard = client.key in room.announced  # a quiet member leaves as quietly as it came
        room.remove(client)
        del client.rooms[room.key]
        if client.current_room == room.key:
            client.current_room = next(iter(client.rooms), None)
        if heard:
            self._broadcast(room, notice, out)
        if not room.members and room is not self.lobby:
            del self.rooms[room.key]
            for form in look_alikes(room.name):
                if self.room_looks.get(form) == room.key:
                    del self.room_looks[form]

    def _broadcast(self, room: Room, msg: dict[str, Any], out: Out,
                   skip: Client | None = None, skip_own: Client | None = None) -> None:
        """One ``Send`` per dialect to every member of ``room``, bar ``skip`` (and ``skip_own``,
        the sender, where its dialect does not hear its own messages)."""
        for dialect, ids in room.audience().items():
            leave_out = skip or (skip_own if not dialect.hears_own else None)
            if leave_out is not None and type(leave_out.dialect) is dialect and leave_out.id in ids:
                # Two slices around one C-speed search: a Python loop over
                # every member, per message, was a fifth of a busy server's time.
                at = ids.index(leave_out.id)
                ids = ids[:at] + ids[at + 1:]
            if ids:
                out.append(Send(ids, dialect.encode_shared(msg)))
