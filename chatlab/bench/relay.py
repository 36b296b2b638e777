"""A trivial relay: the yardstick that shows the load generator's own ceiling.

A benchmark measures the *pair* of server and load generator: if the
generator cannot read faster than a million messages a second, no server
will be seen delivering more.  So the generator is first run against a
server that does almost nothing: this relay.  It speaks just enough of
chatlab's lines mode (a banner, a name line, ``* Welcome, NAME!``) and then
forwards the bytes each client sends, cut at the last complete line, to
every other client -- no parsing, no per-message work, one ``send()`` per
listener per chunk.  Whatever rate the generator reaches against it is the
ceiling for every other row of the table.

One thread, non-blocking sockets and a ``selectors`` loop, with an
unbounded output buffer per client (a yardstick, not a server to copy: see
``chatlab.servers`` for the bounded version).

Usage: ``python -m chatlab.bench.relay [--port 0]``; prints
``relay listening on HOST:PORT``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import selectors
import socket

RECV_SIZE = 256 * 1024


class Peer:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.name: bytes | None = None
        self.inbuf = bytearray()  # a line not yet complete
        self.outbuf = bytearray()  # bytes the kernel would not take yet


class Relay:
    def __init__(self, listener: socket.socket):
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.peers: dict[socket.socket, Peer] = {}
        self.registered: list[Peer] = []

    def run(self) -> None:
        while True:
            for key, events in self.selector.select():
                if key.fileobj is self.listener:
                    self.accept()
                    continue
                peer = key.data
                if events & selectors.EVENT_WRITE:
                    self.flush(peer)
                if events & selectors.EVENT_READ and peer.sock in self.peers:
                    self.read(peer)

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return  # gone before we got to it, or out of descriptors: try later
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = Peer(sock)
        self.peers[sock] = peer
        self.selector.register(sock, selectors.EVENT_READ, peer)
        self.queue(peer, b"relay: type your name\n")

    def read(self, peer: Peer) -> None:
        try:
            data = peer.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(peer)
            return
        peer.inbuf += data
        if peer.name is None:
            name, found, rest = bytes(peer.inbuf).partition(b"\n")
            if not found:
                return
            peer.name, peer.inbuf = name.strip(), bytearray(rest)
            self.registered.append(peer)
            self.queue(peer, b"* Welcome, " + peer.name + b"!\n")
        cut = peer.inbuf.rfind(b"\n") + 1
        if cut:
            chunk = bytes(peer.inbuf[:cut])
            del peer.inbuf[:cut]
            for other in self.registered:
                if other is not peer:
                    self.queue(other, chunk)

    def queue(self, peer: Peer, data: bytes) -> None:
        if not peer.outbuf:
            try:
                sent = peer.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return  # gone; its read side will notice
            if sent == len(data):
                return
            data = data[sent:]
            self.selector.modify(peer.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, peer)
        peer.outbuf += data

    def flush(self, peer: Peer) -> None:
        try:
            sent = peer.sock.send(peer.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(peer)
            return
        del peer.outbuf[:sent]
        if not peer.outbuf:
            self.selector.modify(peer.sock, selectors.EVENT_READ, peer)

    def drop(self, peer: Peer) -> None:
        self.selector.unregister(peer.sock)
        del self.peers[peer.sock]
        if peer in self.registered:
            self.registered.remove(peer)
        peer.sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a trivial relay: the load generator's yardstick")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(1024)
    listener.setblocking(False)
    host, port = listener.getsockname()
    print(f"relay listening on {host}:{port}", flush=True)
    try:
        Relay(listener).run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
