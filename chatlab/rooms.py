"""Rooms (channels): who hears a message.

A room is a named set of registered clients.  Everyone starts in the
default room, ``lobby``; anyone may join or leave other rooms, which exist
while someone is in them.  A message said in a room, and the notices of
people joining and leaving it, go to that room's members only.

Broadcasting to a room is the hot path of a chat server, so a room keeps
its audience ready: the ids of its members, grouped by wire dialect (a
message is encoded once per dialect, not once per member), worked out again
only when someone joins or leaves -- never once per message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable

if TYPE_CHECKING:
    from .dialects import Dialect

DEFAULT_ROOM = "lobby"


@dataclass(eq=False)
class Room:
    name: str  # as first spelled (after NFKC)
    key: str  # what must be unique: the name's NFKC case fold
    members: dict[str, Any] = field(default_factory=dict)  # member name key -> Client, join order
    # Members the room has been told about: all of them, unless the room is
    # large (limits.large_room), where a joiner is announced when first speaking.
    announced: dict[str, Any] = field(default_factory=dict)
    _audience: dict[type[Dialect], tuple[Hashable, ...]] | None = None

    def add(self, client: Any) -> None:
        self.members[client.key] = client
        self._audience = None

    def remove(self, client: Any) -> None:
        self.members.pop(client.key, None)
        self.announced.pop(client.key, None)
        self._audience = None

    def names(self) -> list[str]:
        return [member.name for member in self.members.values()]

    def audience(self) -> dict[type[Dialect], tuple[Hashable, ...]]:
        """Member ids by dialect class (frames, lines, ...), cached between joins and leaves."""
        if self._audience is None:
            by_dialect: dict[type[Dialect], list[Hashable]] = {}
            for member in self.members.values():
                by_dialect.setdefault(type(member.dialect), []).append(member.id)
            self._audience = {dialect: tuple(ids) for dialect, ids in by_dialect.items()}
        return self._audience
