"""One connection as the chat core knows it, and what the core's components may ask of it.

``Client`` is the core's record of a connection: where it comes from, the
dialect its bytes are in, and -- once it has said hello -- its name and
rooms.  ``Services`` is the narrow interface the core offers the
components it owns (the guard, the logins, the file store): they may send
a message, answer with an error, or close a client, and nothing else.
Writing the interface down keeps each component readable on its own, and
keeps the core free to change how it does those things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .dialects import Dialect
from .effects import ClientId, Effect

if TYPE_CHECKING:
    from .guard import Watch
    from .rooms import Room

Out = list[Effect]  # the effects a handler adds to, in order


@dataclass(eq=False)
class Client:
    id: ClientId
    peer: str  # "HOST:PORT" it connected from
    dialect: Dialect  # how its bytes become messages, and messages bytes
    connected_at: float  # (monotonic) when it connected
    watch: "Watch"  # what the guard notes about it (guard.py)
    name: str | None = None  # set once registered
    key: str | None = None  # name_key(name): what must be unique
    rooms: dict[str, "Room"] = field(default_factory=dict)  # room key -> room, in join order
    current_room: str | None = None  # the room plain lines go to (lines mode)
    # While a slow job runs for this client (a password check, off the
    # chat's thread), what else it sends waits here, decoded, so that its
    # messages are still handled in the order it sent them.
    backlog: list[Any] | None = None
    farewell: str | None = None  # what it said as it left (a bye's text), for its rooms' "left"

    def __str__(self) -> str:
        return f"{self.peer} ({self.name})" if self.name else self.peer


class Services(Protocol):
    """What the chat core does for the components it owns."""

    clients: dict[ClientId, Client]

    def send(self, client: Client, msg: dict[str, Any], out: Out) -> None:
        """Queue one message for one client, in its dialect."""

    def error(self, client: Client, code: str, message: str, out: Out) -> None:
        """Answer a client with an ``error`` message."""

    def close(self, client: Client, reason: str, notice: str | None, now: float, out: Out) -> None:
        """Forget a client: tell it why (``notice``), tell its rooms, close its connection."""

    def require_registered(self, client: Client) -> None:
        """Raise ProtocolError(not_registered) unless the client has said hello."""

    def asked(self, client: Client) -> None:
        """The server asked ``client`` for one answer (a file chunk, a pong): it will cost no rate-limit token."""

    def user(self, name: str) -> Client:
        """The registered client called ``name`` (else ProtocolError unknown_user)."""

    def member_room(self, client: Client, name: str | None) -> "Room":
        """The room a client means -- ``name``, or its current one -- which it must be in."""
