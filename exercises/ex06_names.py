"""Exercise 6 -- names and notices: a real chat room.

What you will learn
    A chat needs to know who is who.  The first line a client sends is its
    name; names are unique *ignoring case* (Ada and ADA would fool people),
    and two clients racing for the same name must not both win -- the check
    and the insert happen under one lock.  Everyone else hears "* ada joined"
    and later "* ada left (quit)", each exactly once, however the client
    goes: /quit, closing the connection, or breaking the rules.

    The rules of the room are written as three event handlers --
    ``on_connect``, ``on_line``, ``on_close`` -- that never read from a
    socket: the thread that owns the socket calls them.  Exercise 8 keeps
    these rules and swaps the threads for an event loop.

Read first
    notebooks/03_thread_server.ipynb (join and leave notices, the shared
    list and its lock); docs/protocol.md, sections 4 (lines mode) and 5
    (names).

Check it
    chatlab check 6        (re-checks exercises 1 to 5)

What a client sees (``nc 127.0.0.1 PORT`` is enough to try it)::

    chatlab/1 Welcome! Type your name and press Enter.
    ada
    * Welcome, ada! Online: bob, ada. Type a message and press Enter; /who lists users, /quit leaves.
    <bob> hi ada
    * carol joined
    /who
    * Online: bob, ada, carol
    /quit
    * Server closing the connection: goodbye

A taken name: ``! the name ADA is taken; try another name (name_taken)``;
a bad one: ``! a name may use only letters, digits, '_', '-' and '.'; try
another name (bad_name)``.  Every error line starts with "!" and ends with
its code in brackets, as in docs/protocol.md.  (chatlab's own server also
folds look-alike Unicode names and cleans control characters out of the
text; this exercise leaves both out.)
"""

from __future__ import annotations

from ex03_lines import MAX_LINE, LineTooLong
from ex05_broadcast import BroadcastServer, Peer, read_lines

BANNER = b"chatlab/1 Welcome! Type your name and press Enter.\n"
MAX_NAME = 32  # characters in a name
NAME_PUNCTUATION = "_-."
GOODBYE = "* Server closing the connection: goodbye"


def check_name(name: str) -> str | None:
    """Why ``name`` is not allowed, or None if it is fine."""
    if not name:
        return "a name needs at least one character"
    if len(name) > MAX_NAME:
        return f"a name has at most {MAX_NAME} characters"
    if not all(ch.isalnum() or ch in NAME_PUNCTUATION for ch in name):
        return "a name may use only letters, digits, '_', '-' and '.'"
    return None


class ChatServer(BroadcastServer):
    """Chat with names: the banner, a name, then lines to everyone else."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        # name.casefold() -> Peer, in the order they joined (dicts keep order).
        # Shared by every thread: guarded by self.lock, like self.clients.
        self.names: dict[str, Peer] = {}

    # ------------------------------------------------ the I/O shell: threads

    def serve(self, peer: Peer) -> None:
        """One client's thread: read lines, hand each to the rules, until it leaves."""
        self.on_connect(peer)
        reason = "disconnected"  # unless we learn better
        try:
            for line in read_lines(peer.sock):
                if not self.on_line(peer, line):
                    reason = "quit"
                    return
        except LineTooLong:
            reason = "protocol_error"
            peer.send(f"! a line has at most {MAX_LINE} bytes (too_large)\n".encode())
        finally:
            self.on_close(peer, reason)

    def broadcast(self, data: bytes, exclude: Peer | None = None) -> None:
        """To every *registered* client but ``exclude``: someone still choosing a name hears nothing yet."""
        with self.lock:
            others = [p for p in self.names.values() if p is not exclude]
        self.send_to(others, data)

    def send_to(self, peers: list[Peer], data: bytes) -> None:
        """``data`` to each of ``peers`` -- call it without holding the lock."""
        for peer in peers:
            try:
                peer.send(data)
            except OSError:
                pass  # that client is leaving; its own thread cleans up

    # ------------------------------------------------- the rules of the room

    def on_connect(self, peer: Peer) -> None:
        """A client connected: the server speaks first."""
        peer.send(BANNER)

    def on_line(self, peer: Peer, line: bytes) -> bool:
        """One line from ``peer``.  Returns False once the client has asked to leave."""
        text = line.decode("utf-8", "replace")
        if peer.name is None:
            self.register(peer, text.strip())
            return True
        # TODO: 1. a blank line (only spaces): ignore it (return True)
        # TODO: 2. "/quit": send GOODBYE (and a newline) to peer, return False
        # TODO: 3. "/who": send "* Online: ada, bob" -- the names in the order they joined, read under self.lock
        # TODO: 4. any other line starting with one "/": "! unknown command /xyz; try /who or /quit (unknown_type)"
        # TODO: 5. anything else is chat: "<name> text" to everyone else (self.broadcast, excluding peer);
        # TODO:    a leading "//" stands for a "/" that is really part of the text
        raise NotImplementedError(
            "a blank line: ignore it; \"/quit\": send GOODBYE and return False; \"/who\": \"* Online: "
            "\" and the names in join order; \"//text\" sends \"/text\"; another \"/...\": an error line "
            "(unknown_type); else \"<name> text\" to the others"
        )

    def register(self, peer: Peer, name: str) -> None:
        """The client's first line: its name.  Taken or bad, it can try again."""
        # TODO: 1. a bad name (check_name gives a reason): "! REASON; try another name (bad_name)"
        # TODO: 2. holding self.lock ONCE: if name.casefold() is in self.names, the name is taken; if not,
        # TODO:    add it and set peer.name (test and insert under one lock, or two clients racing for
        # TODO:    "ada" could both win), and note who is online (join order) and who else is there
        # TODO:    (those, and only those, hear that peer joined)
        # TODO: 3. taken: "! the name NAME is taken; try another name (name_taken)"
        # TODO: 4. registered: "* Welcome, NAME! Online: a, b. Type a message and press Enter; /who lists users,
        # TODO:    /quit leaves." to peer, then "* NAME joined" to the others you noted (self.send_to)
        raise NotImplementedError(
            "check_name(name) -> \"! <problem>; try another name (bad_name)\"; then, in ONE hold of "
            "self.lock: is name.casefold() in self.names? if not, add it, and note who is online "
            "and who else to tell; then, outside the lock, welcome peer and self.send_to(others, "
            "\"* name joined\")"
        )

    def on_close(self, peer: Peer, reason: str) -> None:
        """The client is gone (reason: quit, disconnected, protocol_error, ...).  Tell the room, once."""
        # TODO: 1. holding self.lock: if peer registered (peer.name) and self.names still maps its
        # TODO:    name.casefold() to this very peer, remove it, note who is still there, and
        # TODO:    remember that you did
        # TODO: 2. only if you removed it: "* NAME left (REASON)" to those still there (self.send_to)
        raise NotImplementedError(
            "in one hold of self.lock: remove peer from self.names only if it is there and is "
            "this peer, and note who else is there; only then send_to them \"* name left (reason)\" "
            "-- said once, never for a nameless client"
        )
