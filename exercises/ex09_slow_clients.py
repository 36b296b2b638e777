"""Exercise 9 -- slow clients: never synchronise with the slowest reader.

What you will learn
    In exercise 6, a broadcast calls ``sendall`` on each client in turn, in
    the sender's thread.  ``sendall`` blocks while that client's TCP
    receive window is full -- that is, while the client is not reading.  So
    one laptop lid closing freezes the thread of whoever speaks next: their
    later lines wait behind a client who is not there.  (Run exercise 6's
    server and a client that never reads, and watch.)

    The fix, as in chatlab's own server and in python-websockets' broadcast
    guide: every client gets its own *outbox* -- a queue of bytes -- and a
    *writer thread* that drains it.  Sending to a client only appends to its
    outbox, which never blocks.  The outbox is bounded: a client whose
    unsent bytes pass the limit is not reading, and it is dropped as too
    slow (Redis does the same with its client-output-buffer-limit).  The
    event loop of exercise 8 got this from its output buffers; here threads
    get it too.

Read first
    notebooks/06_reliability.ipynb (a slow reader, backpressure, bounded
    queues); docs/protocol.md, section 7 (limits); the ``threading``
    module's Condition.

Check it
    chatlab check 9        (re-checks exercises 1 to 8)
"""

from __future__ import annotations

import socket
import threading
from collections import deque

from ex01_echo import STOP_WAIT
from ex05_broadcast import Peer
from ex06_names import ChatServer

OUTBOX_LIMIT = 1024 * 1024  # unsent bytes one client may have before it is dropped as too slow


class QueuedPeer(Peer):
    """A client whose ``send()`` only queues; a writer thread of its own does the sending."""

    def __init__(self, sock: socket.socket, address: tuple[str, int], server: "OutboxChatServer"):
        super().__init__(sock, address)
        self.server = server
        self.chunks: deque[bytes] = deque()  # the outbox: bytes not yet sent
        self.size = 0  # bytes in the outbox
        self.ready = threading.Condition()  # guards the outbox; the writer waits on it
        self.closed = False  # no more sending: the writer empties the outbox, then ends
        self.writer = threading.Thread(target=self.write_loop, name=f"ex09-writer-{address[1]}", daemon=True)

    def send(self, data: bytes) -> None:
        """Called from any thread: put ``data`` in the outbox, never wait for the network."""
        # TODO: 1. holding self.ready: a closed outbox takes nothing more
        # TODO: 2. if self.size + len(data) would pass self.server.outbox_limit, this client is not
        # TODO:    reading: remember that, and (after releasing the lock) call self.server.too_slow(self)
        # TODO: 3. else append data to self.chunks, add its length to self.size, and notify() the writer
        raise NotImplementedError(
            "with self.ready: append data to self.chunks, add to self.size, self.ready.notify(); "
            "but if the outbox would pass self.server.outbox_limit, do not queue it: "
            "self.server.too_slow(self) (outside the lock)"
        )

    def write_loop(self) -> None:
        """The writer thread: wait for bytes, send them, until the outbox is closed and empty."""
        # TODO: 1. holding self.ready, wait() until there are chunks or the outbox is closed
        # TODO: 2. closed and empty: the thread's work is done
        # TODO: 3. take every chunk at once (b"".join: one system call instead of many), empty the outbox
        # TODO: 4. release the lock, THEN sendall -- it may block for a long time, and send() must not wait
        # TODO: 5. an OSError: the connection is gone; end quietly
        raise NotImplementedError(
            "loop: with self.ready: wait() while the outbox is empty and not closed; closed and "
            "empty: return; take everything (b\"\".join(self.chunks)), clear it, size 0; then, "
            "OUTSIDE the lock, self.sock.sendall(data)"
        )

    def close_outbox(self) -> None:
        """Nothing more will be queued: the writer sends what is left, then ends."""
        with self.ready:
            self.closed = True
            self.ready.notify()


class OutboxChatServer(ChatServer):
    """Exercise 6's chat, where no client can hold up another."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, outbox_limit: int = OUTBOX_LIMIT):
        super().__init__(host, port)
        self.outbox_limit = outbox_limit

    def new_peer(self, sock: socket.socket, address: tuple[str, int]) -> QueuedPeer:
        """A client with an outbox, and its writer thread started (joined by stop())."""
        peer = QueuedPeer(sock, address, self)
        self.threads.append(peer.writer)
        peer.writer.start()
        return peer

    def serve(self, peer: QueuedPeer) -> None:
        """Exercise 6's conversation; then let the writer send what is queued before the socket closes."""
        # TODO: 1. run exercise 6's conversation: super().serve(peer)
        # TODO: 2. finally, whatever happened: close the outbox, and join the writer (timeout STOP_WAIT),
        # TODO:    so that what is queued -- the goodbye -- is sent before handle() closes the socket
        raise NotImplementedError(
            "try: super().serve(peer) finally: peer.close_outbox(); peer.writer.join(STOP_WAIT) "
            "(the goodbye after /quit is still in the outbox when the conversation ends)"
        )

    def too_slow(self, peer: QueuedPeer) -> None:
        """``peer`` let its outbox overflow: tell the room (once), and cut it off."""
        # TODO: 1. tell the room: self.on_close(peer, "too_slow") -- it says so only once, however
        # TODO:    many broadcasts overflow at the same time
        # TODO: 2. close its outbox, and abort() its socket: its reader and writer threads wake up and end
        raise NotImplementedError(
            "self.on_close(peer, \"too_slow\") (it announces only once); peer.close_outbox(); "
            "peer.abort() -- shutting the socket wakes the reader thread, which then ends as for "
            "any lost client"
        )
