"""``Crowd``: many lines-mode clients on one thread -- a room full of people who only listen.

A thread per client would measure our own limits, not the server's, so one
``selectors`` loop reads for all of them, each through its own client wire
(``chatlab.dialects.client``).  It keeps, for each chat message, who got it
and when: enough to measure how long one message takes to reach everyone,
and how many messages per second the server delivers.
"""

from __future__ import annotations

import selectors
import socket
import threading

from ..dialects.client import LINES, ClientWire
from ..errors import WireError
from .registry import RECV_SIZE, TIMEOUT, Instrument, clock


class Crowd(Instrument):
    """Many lines-mode clients on one thread, each counted when welcomed and for every message."""

    def __init__(self, address: tuple[str, int], prefix: str = "c"):
        self.address: tuple[str, int] = (address[0], address[1])
        self.prefix = prefix
        self.members: list[socket.socket] = []
        self._welcomed: set[socket.socket] = set()
        self.arrivals: dict[str, list[float]] = {}  # text -> arrival times
        self.delivered = 0
        self._wires: dict[socket.socket, ClientWire] = {}
        self._changed = threading.Condition()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._new: list[socket.socket] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"chatlab-crowd-{prefix}")
        self._register()
        self._thread.start()

    def __len__(self) -> int:
        return len(self.members)

    def grow(self, size: int, timeout: float = 60.0) -> None:
        """Connect and register members until there are ``size``.

        Returns once each new member has been welcomed, so that a message
        sent afterwards is one every member must receive.
        """
        new: list[socket.socket] = []
        while len(self.members) + len(new) < size:
            sock = socket.create_connection(self.address, timeout=TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            name = f"{self.prefix}{len(self.members) + len(new) + 1}"
            sock.sendall(ClientWire(LINES).encode({"type": "hello", "name": name}))
            sock.setblocking(False)
            new.append(sock)
        with self._changed:
            self._new.extend(new)
            self.members.extend(new)
        self._wake_w.send(b"x")
        with self._changed:
            if not self._changed.wait_for(lambda: all(s in self._welcomed for s in new), timeout):
                missing = sum(s not in self._welcomed for s in new)
                raise TimeoutError(f"{missing} of {len(new)} new crowd members got no welcome "
                                   f"within {timeout:g} s")

    def _loop(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    self._wake_r.recv(1024)
                    with self._changed:
                        for s in self._new:
                            self._wires[s] = ClientWire(LINES)
                            self._selector.register(s, selectors.EVENT_READ)
                        self._new.clear()
                    continue
                try:
                    data = sock.recv(RECV_SIZE)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(sock)
                    continue
                now = clock()
                try:
                    events = [msg for msg, _ in self._wires[sock].feed(data)]  # type: ignore[index]
                except WireError:
                    self._selector.unregister(sock)
                    continue
                if sock not in self._welcomed and any(m["type"] == "welcome" for m in events):
                    with self._changed:
                        self._welcomed.add(sock)  # type: ignore[arg-type]
                        self._changed.notify_all()
                chats = [m["text"] for m in events if m["type"] == "message"]
                if chats:
                    with self._changed:
                        for text in chats:
                            self.arrivals.setdefault(text, []).append(now)
                        self.delivered += len(chats)
                        self._changed.notify_all()

    def wait_all(self, text: str, timeout: float = 30.0) -> list[float]:
        """Block until every member received the message ``text``; their arrival times."""
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.arrivals.get(text, ())) >= len(self.members), timeout)
            got = list(self.arrivals.get(text, ()))
        if not ok:
            raise TimeoutError(f"{len(got)} of {len(self.members)} crowd members got {text!r} in {timeout:g} s")
        return got

    def wait_delivered(self, total: int, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.delivered >= total, timeout):
                raise TimeoutError(f"{self.delivered} of {total} deliveries in {timeout:g} s")

    def stop(self) -> None:
        self._unregister()
        if self._stopping:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(TIMEOUT)
        for sock in self.members:
            sock.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
