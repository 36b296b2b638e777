"""A chat server as a typical tutorial writes it: the benchmark's baseline.

DO NOT copy this design.  It is here so that ``chatlab bench`` can show,
with numbers, what the chatlab servers do differently.  It is written the
way many online tutorials write a first chat server, honestly and without
sabotage:

* one thread per client, reading lines with ``makefile().readline()``;
* one global list of clients behind one lock;
* a broadcast that holds the lock and calls ``sendall()`` on every peer in
  turn, one system call per message per peer.

What goes wrong: ``sendall()`` blocks while a peer's TCP receive window is
full, that is, while that peer is not reading.  It blocks *holding the
lock*, so one client that stops reading freezes the whole room (the
benchmark's "stalled reader" scenario shows it).  And every message costs
one system call per listener: nothing is ever coalesced.

It speaks chatlab's lines mode closely enough for the benchmark's load
generator: a banner line, a name line, ``* Welcome, NAME!``, then chat
lines relayed as ``<name> text``.  Usage::

    python benchmarks/naive_server.py [--host 127.0.0.1] [--port 0]

It prints ``naive server listening on HOST:PORT`` when ready; SIGTERM or
Ctrl+C stops it.
"""

import argparse
import socket
import threading

clients = []  # (socket, name) of everyone registered
lock = threading.Lock()


def broadcast(data, sender=None):
    with lock:
        for sock, name in clients:
            if sock is not sender:
                try:
                    sock.sendall(data)
                except OSError:
                    pass  # that client is gone; its own thread will remove it


def handle(sock):
    name = None
    try:
        sock.sendall(b"Welcome to the chat! Type your name and press Enter.\n")
        reader = sock.makefile("rb")
        name = reader.readline().strip().decode("utf-8", "replace")
        if not name:
            return
        with lock:
            clients.append((sock, name))
        sock.sendall(f"* Welcome, {name}!\n".encode())
        broadcast(f"* {name} joined\n".encode(), sender=sock)
        for line in reader:
            text = line.strip().decode("utf-8", "replace")
            if text:
                broadcast(f"<{name}> {text}\n".encode(), sender=sock)
    except OSError:
        pass
    finally:
        with lock:
            if (sock, name) in clients:
                clients.remove((sock, name))
        sock.close()
        if name:
            broadcast(f"* {name} left\n".encode())


def main():
    parser = argparse.ArgumentParser(description="a naive thread-per-client chat server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5050)
    args = parser.parse_args()

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen()
    host, port = server.getsockname()
    print(f"naive server listening on {host}:{port}", flush=True)
    try:
        while True:
            sock, _ = server.accept()
            threading.Thread(target=handle, args=(sock,), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
