"""Exercise 5 -- a multi-client broadcast server: a thread per client, and a lock.

What you will learn
    The echo server of exercise 1 serves one client at a time; the next one
    waits.  Here every client gets a thread of its own, blocked in its own
    recv(), so all of them are served at once.  Each line a client sends
    goes to every *other* client.  That needs a list of clients shared by
    all the threads -- and a shared list needs a lock.

Read first
    notebooks/03_thread_server.ipynb (concurrent clients, the shared list
    and its lock); the ``threading`` module (Thread, Lock).

Check it
    chatlab check 5        (re-checks exercises 1 to 4: this one builds on them)

The race, and why the lock fixes it
    Without a lock, picture three threads.  Bob's thread broadcasts with
    ``for peer in self.clients: peer.send(line)`` and has reached index 1.
    Carol (index 1) leaves, and her thread runs ``self.clients.remove(carol)``.
    Every later client shifts down one place, so when Bob's loop moves on to
    index 2, it skips Dave -- who never gets Bob's line, and nothing raised an
    error.  (With a set or a dict instead of a list, the loop would at least
    fail loudly: "RuntimeError: Set changed size during iteration".)  Two
    threads appending at once, or one looking up a name while another adds
    it, go wrong in the same silent way, once in a thousand runs.
    The fix: every read and write of ``self.clients`` happens while holding
    ``self.lock``.  A broadcast copies the list under the lock -- a
    *snapshot* -- and sends outside it, so that a client slow to read never
    holds the lock, and everyone else with it (exercise 9 finishes that job).

The server speaks chatlab's lines mode (docs/protocol.md, section 4), minus
names: the banner line first, then each line goes to everyone else, so
``nc 127.0.0.1 PORT`` works as a client.
"""

from __future__ import annotations

import socket
import threading

from ex01_echo import ACCEPT_WAIT, BUFFER_SIZE, STOP_WAIT, EchoServer
from ex03_lines import MAX_LINE, LineDecoder, LineTooLong

BANNER = b"chatlab/1 Welcome! Every line you send goes to everyone else.\n"


class Peer:
    """One connected client: its socket, and a lock of its own for sending.

    Two threads may send to the same client at once (Bob's and Carol's
    broadcasts).  ``sendall`` can take several system calls, so without the
    lock their bytes could interleave mid-line.
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int]):
        self.sock = sock
        self.address = address
        self.name: str | None = None  # exercise 6 gives clients names
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def abort(self) -> None:
        """Shut the connection both ways: wakes the thread blocked in this client's recv()."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already

    def __repr__(self) -> str:
        return f"<Peer {self.name or '%s:%d' % self.address[:2]}>"


def read_lines(sock: socket.socket, max_length: int = MAX_LINE):
    """The lines a client sends, one by one, until it closes its side (a generator).

    Exercise 3's decoder does the framing: recv() returns any piece of the
    stream, the decoder hands back whole lines.
    """
    decoder = LineDecoder(max_length)
    while data := sock.recv(BUFFER_SIZE):
        yield from decoder.feed(data)


class BroadcastServer(EchoServer):
    """Every line a client sends goes to every other client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.clients: list[Peer] = []  # every connected client: shared by all threads
        self.lock = threading.Lock()  # held for every read and write of self.clients
        self.threads: list[threading.Thread] = []  # one per client, joined by stop()

    def serve_forever(self) -> None:
        """Accept clients, and give each a thread of its own (instead of serving it here)."""
        self.listener.settimeout(ACCEPT_WAIT)
        while not self._stopping.is_set():
            try:
                sock, address = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            # TODO: 1. wrap the new socket with self.new_peer(sock, address), and add the peer to
            # TODO:    self.clients -- holding self.lock
            # TODO: 2. start a daemon thread running self.handle(peer), and keep it in self.threads
            # TODO:    so that stop() can join it
            raise NotImplementedError(
                "peer = self.new_peer(sock, address); with self.lock: self.clients.append(peer); "
                "then a threading.Thread(target=self.handle, args=(peer,), daemon=True), kept in "
                "self.threads, started"
            )

    def new_peer(self, sock: socket.socket, address: tuple[str, int]) -> Peer:
        """What stands for one client (exercise 9 gives it an outbox and a writer)."""
        return Peer(sock, address)

    def handle(self, peer: Peer) -> None:
        """One client's thread, from its first byte to its close."""
        # TODO: 1. run self.serve(peer); a vanished client (OSError) or a line too long (LineTooLong)
        # TODO:    just ends this client, never the server
        # TODO: 2. finally, whatever happened: remove peer from self.clients (holding the lock), close its socket
        raise NotImplementedError(
            "try: self.serve(peer) except (OSError, LineTooLong): pass; finally: with self.lock: "
            "self.clients.remove(peer); and close peer.sock"
        )

    def serve(self, peer: Peer) -> None:
        """The conversation: the banner, then every line to everyone else."""
        # TODO: peer.send(BANNER); then for line in read_lines(peer.sock): self.broadcast(line + b"\n", exclude=peer)
        raise NotImplementedError(
            "peer.send(BANNER); then for line in read_lines(peer.sock): self.broadcast(line + "
            "b\"\\n\", exclude=peer)"
        )

    def broadcast(self, data: bytes, exclude: Peer | None = None) -> None:
        """Send ``data`` to every client but ``exclude``."""
        # TODO: 1. holding self.lock, copy the list of everyone but exclude (a snapshot)
        # TODO: 2. release the lock, then send to each; a send that fails (OSError) means that client
        # TODO:    is going away: ignore it, its own thread will notice and clean up
        raise NotImplementedError(
            "take a snapshot under the lock: with self.lock: others = [p for p in self.clients if "
            "p is not exclude]; then, outside the lock, p.send(data) for each, ignoring OSError "
            "(that client's own thread cleans up)"
        )

    def stop(self) -> None:
        """Stop accepting, cut every client off, and join every thread."""
        super().stop()
        with self.lock:
            everyone = list(self.clients)
        for peer in everyone:
            peer.abort()
        for thread in self.threads:
            thread.join(STOP_WAIT)
