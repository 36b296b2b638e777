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

from .framing import FramingError
from .limits import Limits
from .protocol import (
    ALREADY_REGISTERED,
    BAD_NAME,
    BAD_TEXT,
    BANNER,
    LINES,
    NAME_TAKEN,
    NOT_REGISTERED,
    TOO_LARGE,
    ProtocolError,
    Wire,
    check_name,
    clean_text,
    encode_for,
    name_key,
    normalise_name,
)

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

    def __str__(self) -> str:
        return f"{self.peer} ({self.name})" if self.name else self.peer


@dataclass
class ChatCore:
    limits: Limits = field(default_factory=Limits)
    banner: bytes = BANNER

    def __post_init__(self) -> None:
        self.clients: dict[ClientId, Client] = {}  # every open connection
        self.members: dict[str, Client] = {}  # name key -> registered client, in join order
        self.last_message_id = 0
        self._audience: dict[str | None, tuple[ClientId, ...]] | None = None

    # ------------------------------------------------------------ events in

    def connect(self, cid: ClientId, peer: str, now: float) -> list[Effect]:
        """A TCP connection was accepted.  The server speaks first: the banner."""
        self.clients[cid] = Client(cid, peer, Wire(self.limits), now)
        log.info("%s connected", peer)
        return [Send((cid,), self.banner)]

    def receive(self, cid: ClientId, data: bytes, now: float) -> list[Effect]:
        """Bytes arrived from a client: any piece of the stream, of any size."""
        client = self.clients.get(cid)
        if client is None:
            return []  # closed already; late bytes are dropped
        out: list[Effect] = []
        try:
            items, failure = client.wire.feed(data), None
        except FramingError as exc:
            # The frames before the bad one arrived intact: still handle them.
            items, failure = exc.frames, exc
        for item in items:
            self._handle(client, item, now, out)
            if cid not in self.clients:
                return out  # that item ended the connection (a "bye")
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
        rules about time (timeouts) need no clock of their own.  Nothing yet."""
        return []

    def shutdown(self, now: float) -> list[Effect]:
        """The server is stopping: tell everyone, then close every connection."""
        out: list[Effect] = []
        for client in list(self.clients.values()):
            self._notify_closing(client, "shutdown", "the server is shutting down", out)
            out.append(Close(client.id, "shutdown"))
            log.info("%s closed (shutdown) after %.1f s", client, now - client.connected_at)
        self.clients.clear()
        self.members.clear()
        self._audience = None
        return out

    @property
    def users(self) -> list[str]:
        """Registered names, in the order they joined."""
        return [member.name for member in self.members.values()]  # type: ignore[misc]

    # ------------------------------------------------------- message handlers

    def _handle(self, client: Client, item: bytes, now: float, out: list[Effect]) -> None:
        try:
            msg = client.wire.parse(item, registered=client.name is not None)
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
        if key in self.members:
            raise ProtocolError(NAME_TAKEN, f"the name {name} is taken; try another name")
        client.name, client.key = name, key
        self.members[key] = client
        self._audience = None
        log.info("%s registered as %s", client.peer, name)
        self._send(client, {"type": "welcome", "name": name, "users": self.users}, out)
        self._broadcast({"type": "joined", "name": name}, out, skip=client)

    def _on_say(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._require_registered(client)
        text = msg["text"]
        if self.limits.max_text and len(text) > self.limits.max_text:
            raise ProtocolError(TOO_LARGE, f"text has {len(text)} characters; the limit is {self.limits.max_text}")
        text = clean_text(text)
        if not text.strip():
            raise ProtocolError(BAD_TEXT, "nothing to say: the text is empty")
        self.last_message_id += 1
        message = {"type": "message", "id": self.last_message_id, "ts": now, "from": client.name, "text": text}
        log.info("message %d from %s: %s", self.last_message_id, client.name, text)
        # Frames clients get every message, their own included, so they can
        # see where it fell in the one server-wide order.  A person in lines
        # mode already sees what they typed, so it is not echoed back.
        self._broadcast(message, out, skip_lines=client)

    def _on_ping(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._send(client, {"type": "pong", "id": msg.get("id")}, out)

    def _on_who(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._send(client, {"type": "users", "users": self.users}, out)

    def _on_bye(self, client: Client, msg: dict[str, Any], now: float, out: list[Effect]) -> None:
        self._close(client, "quit", "goodbye", now, out)

    # ---------------------------------------------------------------- helpers

    def _require_registered(self, client: Client) -> None:
        if client.name is None:
            raise ProtocolError(NOT_REGISTERED, "say hello with your name first")

    def _send(self, client: Client, msg: dict[str, Any], out: list[Effect]) -> None:
        out.append(Send((client.id,), client.wire.encode(msg)))

    def _reply_error(self, client: Client, code: str, message: str, out: list[Effect]) -> None:
        self._send(client, {"type": "error", "code": code, "message": message}, out)

    def _notify_closing(self, client: Client, reason: str, message: str, out: list[Effect]) -> None:
        self._send(client, {"type": "closing", "reason": reason, "message": message}, out)

    def _broadcast(
        self,
        msg: dict[str, Any],
        out: list[Effect],
        skip: Client | None = None,
        skip_lines: Client | None = None,
    ) -> None:
        """One ``Send`` per wire mode to every registered client, bar the skipped."""
        if self._audience is None:
            # Who listens in which mode changes only on join and leave, so it
            # is worked out then, not once per message.
            audience: dict[str | None, list[ClientId]] = {}
            for member in self.members.values():
                audience.setdefault(member.wire.mode, []).append(member.id)
            self._audience = {mode: tuple(ids) for mode, ids in audience.items()}
        for mode, ids in self._audience.items():
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
        lasted = now - client.connected_at
        if client.key is not None and self.members.get(client.key) is client:
            del self.members[client.key]
            self._audience = None
            self._broadcast({"type": "left", "name": client.name, "reason": reason}, out)
        log.info("%s closed (%s) after %.1f s", client, reason, lasted)
