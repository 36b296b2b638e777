"""Exercise 8 -- one thread for everyone: a ``selectors`` event loop.

What you will learn
    A thread per client costs memory and a context switch each time a
    client speaks.  An event loop serves every client from ONE thread: the
    kernel tells it which sockets are ready (``selectors``: select, poll,
    epoll or kqueue underneath), and it only ever calls recv() or send()
    when they will not block.  The sockets are non-blocking, so a send may
    take part of the data: what is left waits in that client's own *output
    buffer* until the socket is writable again.  A client that stops
    reading cannot stall anyone -- only its own buffer grows, and past a
    limit it is dropped as too slow.

    The rules of the room are exercise 6's ``on_connect``, ``on_line`` and
    ``on_close``, unchanged: only the I/O shell around them is new.  That is
    the whole difference between the concurrency models.

Read first
    notebooks/05_concurrency_models.ipynb (threads against one event loop);
    notebooks/06_reliability.ipynb (slow readers, bounded buffers); the
    ``selectors`` module.

Check it
    chatlab check 8        (re-checks exercises 1 to 7)

The loop, in words: wait until some socket is ready; a ready listener means
a new client (accept it); a readable client has bytes (read them, feed the
decoder, hand each line to the rules); a writable client has room (send from
its buffer).  Watch a client for "writable" only while its buffer holds
something -- an empty buffer is always writable, and the loop would spin.
"""

from __future__ import annotations

import selectors
import socket

from ex01_echo import ACCEPT_WAIT, BUFFER_SIZE
from ex03_lines import MAX_LINE, LineDecoder, LineTooLong
from ex05_broadcast import Peer
from ex06_names import ChatServer

OUTBUF_LIMIT = 1024 * 1024  # bytes queued for one client before it is dropped as too slow


class BufferedPeer(Peer):
    """A client of the event loop: ``send()`` only queues; the loop writes when the socket is ready."""

    def __init__(self, sock: socket.socket, address: tuple[str, int], server: "SelectorChatServer"):
        super().__init__(sock, address)
        self.server = server
        self.decoder = LineDecoder(MAX_LINE)
        self.outbuf = bytearray()  # bytes waiting for the socket to be writable
        self.closing: str | None = None  # a reason: close once outbuf is sent
        self.closed = False

    def send(self, data: bytes) -> None:
        self.server.queue(self, data)


class SelectorChatServer(ChatServer):
    """Exercise 6's chat, served by one thread and a selector."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, outbuf_limit: int = OUTBUF_LIMIT):
        super().__init__(host, port)
        self.outbuf_limit = outbuf_limit
        self.selector: selectors.BaseSelector | None = None

    def serve_forever(self) -> None:
        """The event loop: the only thread this server runs."""
        self.selector = selectors.DefaultSelector()
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                # TODO: 1. wait for ready sockets: self.selector.select(timeout=ACCEPT_WAIT)
                # TODO:    (the timeout lets the loop look at the stop flag)
                # TODO: 2. the listener is ready: a client is waiting, self.accept()
                # TODO: 3. a client (key.data is its BufferedPeer): readable -> self.read(peer);
                # TODO:    writable (and not closed meanwhile) -> self.write(peer)
                raise NotImplementedError(
                    "for key, events in self.selector.select(timeout=ACCEPT_WAIT): the listener "
                    "-> self.accept(); else peer = key.data: EVENT_READ -> self.read(peer), then "
                    "EVENT_WRITE (if not peer.closed) -> self.write(peer)"
                )
        finally:
            with self.lock:
                everyone = list(self.clients)
            for peer in everyone:
                self.close(peer, "shutdown")
            self.selector.close()

    def accept(self) -> None:
        """A new client: non-blocking, registered for reading, greeted."""
        # TODO: 1. accept (BlockingIOError: someone else got it first -- just return); make the socket non-blocking
        # TODO: 2. wrap it in a BufferedPeer(sock, address, self) and add it to self.clients (under self.lock)
        # TODO: 3. register the socket for EVENT_READ, with the peer as data: key.data gives it back
        # TODO: 4. let the rules greet it: self.on_connect(peer)
        raise NotImplementedError(
            "sock, address = self.listener.accept(); sock.setblocking(False); peer = "
            "BufferedPeer(sock, address, self); add it to self.clients, "
            "self.selector.register(sock, selectors.EVENT_READ, peer), then self.on_connect(peer)"
        )

    def read(self, peer: BufferedPeer) -> None:
        """The socket is readable: one recv(), which will not block."""
        # TODO: 1. recv() once; BlockingIOError: nothing after all, return
        # TODO: 2. b"" or another OSError: the client is gone: self.close(peer, "disconnected")
        # TODO: 3. feed the bytes to peer.decoder; LineTooLong: send "! a line has at most 4096 bytes (too_large)",
        # TODO:    then self.finish(peer, "protocol_error")
        # TODO: 4. each line goes to self.on_line(peer, line); False: the client asked to leave: self.finish(peer, "quit")
        raise NotImplementedError(
            "data = peer.sock.recv(BUFFER_SIZE) (OSError or b\"\": self.close(peer, "
            "\"disconnected\")); lines = peer.decoder.feed(data) (LineTooLong: an error line, then "
            "self.finish(peer, \"protocol_error\")); each line: if not self.on_line(peer, line): "
            "self.finish(peer, \"quit\")"
        )

    def write(self, peer: BufferedPeer) -> None:
        """The socket is writable: send what we can from the buffer; send() may take only part."""
        # TODO: 1. send() from peer.outbuf; drop from its front the bytes send() took
        # TODO:    (BlockingIOError: not ready after all; another OSError: self.close(peer, "disconnected"))
        # TODO: 2. if the buffer is now empty: if peer.closing, close it (self.close(peer, peer.closing));
        # TODO:    otherwise watch it for EVENT_READ only again
        raise NotImplementedError(
            "sent = peer.sock.send(peer.outbuf); del peer.outbuf[:sent]; once empty: stop "
            "watching for EVENT_WRITE (self.selector.modify(peer.sock, selectors.EVENT_READ, "
            "peer)), or, if peer.closing, self.close(peer, peer.closing)"
        )

    def queue(self, peer: BufferedPeer, data: bytes) -> None:
        """Add ``data`` to a client's output buffer -- never block, whoever is slow."""
        # TODO: 1. nothing for a closed client
        # TODO: 2. if its buffer would pass self.outbuf_limit, it is not reading: self.close(peer, "too_slow")
        # TODO: 3. else append to peer.outbuf, and watch the socket for writable as well as readable
        # TODO:    (a client that is leaving is watched for writable only: we read nothing more from it)
        raise NotImplementedError(
            "if the buffer would pass self.outbuf_limit: self.close(peer, \"too_slow\"); else "
            "peer.outbuf += data and self.selector.modify(peer.sock, selectors.EVENT_READ | "
            "selectors.EVENT_WRITE, peer)"
        )

    def finish(self, peer: BufferedPeer, reason: str) -> None:
        """The client is leaving: tell the room now, close once its buffer is sent."""
        self.on_close(peer, reason)
        if not peer.outbuf:
            self.close(peer, reason)
        else:
            peer.closing = reason
            self.selector.modify(peer.sock, selectors.EVENT_WRITE, peer)

    def close(self, peer: BufferedPeer, reason: str) -> None:
        """Forget the client and close its socket now; the rules tell the room (once)."""
        if peer.closed:
            return
        peer.closed = True
        self.selector.unregister(peer.sock)
        peer.sock.close()
        with self.lock:
            self.clients.remove(peer)
        self.on_close(peer, reason)
