"""Exercise 7 -- the client: a send thread, a receive thread, and a clean goodbye.

What you will learn
    A chat client waits for two things at once: what its user wants to say,
    and what the server sends.  Each wait blocks -- ``get()`` on a queue,
    ``recv()`` on the socket -- so each gets a thread of its own, and
    neither can hold up the other.  The threads talk through queues, which
    are made to be shared between threads.  Closing cleanly means, in order:
    say goodbye, tell the server "no more from me" with shutdown(SHUT_WR),
    keep reading until the server closes too, then join both threads and
    close the socket -- nothing left running, nothing lost.

Read first
    notebooks/03_thread_server.ipynb (the server's side of the same
    conversation); docs/protocol.md, section 4 (lines mode); the ``queue``
    module.

Check it
    chatlab check 7        (re-checks exercises 1 to 6)

Use it (against ``chatlab serve``, or your server of exercise 6)::

    client = Client("127.0.0.1", 5050, "ada")
    client.say("hello")
    print(client.received.get(timeout=5))   # the banner, then the welcome, ...
    client.close()

The client speaks lines mode: its first line is its name.  Every line the
server sends is put, without its newline, on the queue ``received``; once
the connection has ended, ``None`` follows the last line.
"""

from __future__ import annotations

import queue
import socket
import threading

from ex02_reliable import send_all
from ex03_lines import LineDecoder

BUFFER_SIZE = 4096
CLOSE_WAIT = 2.0  # seconds close() waits for the server to close its side


class Client:
    """A lines-mode chat client: one thread sends, one thread receives."""

    def __init__(self, host: str, port: int, name: str, timeout: float = 5.0):
        self.name = name
        self.received: queue.Queue[str | None] = queue.Queue()  # lines from the server; None at the end
        self.outgoing: queue.Queue[str | None] = queue.Queue()  # lines to send; None: time to stop
        self.sock: socket.socket | None = None
        self.sender: threading.Thread | None = None
        self.receiver: threading.Thread | None = None
        # TODO: 1. connect: socket.create_connection((host, port), timeout); keep it in self.sock
        # TODO: 2. from now on the receive thread waits as long as the chat lasts: settimeout(None)
        # TODO: 3. queue the name: in lines mode it is the first line the server reads
        # TODO: 4. create and start two daemon threads: self.sender running self._send_loop,
        # TODO:    self.receiver running self._receive_loop
        raise NotImplementedError(
            "self.sock = socket.create_connection((host, port), timeout); then settimeout(None); "
            "put the name in self.outgoing; start self.sender (target self._send_loop) and "
            "self.receiver (target self._receive_loop)"
        )

    def say(self, text: str) -> None:
        """Queue one line for the send thread; returns at once."""
        self.outgoing.put(text)

    def close(self) -> None:
        """Say goodbye, wait for the server to close, join both threads, close the socket."""
        # TODO: 1. queue "/quit", then None (which tells the send thread to stop)
        # TODO: 2. join the send thread; then the receive thread, which ends when the server closes
        # TODO:    (use a timeout: CLOSE_WAIT)
        # TODO: 3. if the receive thread is still waiting, shutdown(socket.SHUT_RDWR) wakes its recv(); join it
        # TODO: 4. close the socket. Calling close() twice must do no harm
        raise NotImplementedError(
            "put \"/quit\" then None in self.outgoing; join self.sender, then self.receiver "
            "(timeout CLOSE_WAIT); if the receiver is still alive, shutdown(SHUT_RDWR) the socket "
            "and join it again; then close the socket"
        )

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -------------------------------------------------------------- threads

    def _send_loop(self) -> None:
        """The send thread: take lines from self.outgoing and send them, until None."""
        # TODO: 1. take the next line from self.outgoing (get() waits until there is one)
        # TODO: 2. None: shutdown(socket.SHUT_WR) -- "no more from me" -- and end the thread
        # TODO: 3. else: encode it as UTF-8, add b"\n", and send all of it (exercise 2's send_all)
        # TODO: 4. an OSError means the connection is gone: end the thread quietly
        raise NotImplementedError(
            "loop: text = self.outgoing.get(); on None: self.sock.shutdown(socket.SHUT_WR) and "
            "return; else send_all(self.sock, (text + \"\\n\").encode()); an OSError means the "
            "connection is gone: return"
        )

    def _receive_loop(self) -> None:
        """The receive thread: turn the stream into lines on self.received, then None."""
        # TODO: 1. a LineDecoder (exercise 3) turns the pieces recv() returns into whole lines
        # TODO: 2. put each line, decoded from UTF-8 (errors="replace"), on self.received
        # TODO: 3. b"" (the server closed) or an OSError ends the loop
        # TODO: 4. finally, whatever happened, put None on self.received: "no more lines"
        raise NotImplementedError(
            "decoder = LineDecoder(); loop: data = self.sock.recv(BUFFER_SIZE), stop on b\"\" or "
            "OSError; put each decoded line (decoded from UTF-8) on self.received; finally put "
            "None"
        )
