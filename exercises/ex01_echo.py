"""Exercise 1 -- a TCP echo server and client: the life cycle of a socket.

What you will learn
    The calls every TCP program is made of, in the order they happen.
    The server: socket() creates an endpoint, bind() gives it an address,
    listen() turns it into a listening socket, accept() hands back one new
    socket per client.  The client: socket() and connect().  Both: send and
    receive bytes, then close().  Also: why port 0 (the kernel picks a free
    port), why SO_REUSEADDR (a restarted server must not wait for TIME_WAIT),
    and why a client says "I am done sending" with shutdown(SHUT_WR).

Read first
    notebooks/01_sockets.ipynb (the life cycle, ports, "address already in
    use" and TIME_WAIT); the Python Socket HOWTO.

Check it
    chatlab check 1

Fill in every place marked TODO (each raises NotImplementedError until you
do), then run the check: it starts your server on 127.0.0.1, port 0, talks
to it over real TCP and shows what was sent and received if something fails.
"""

from __future__ import annotations

import os
import socket
import threading

BUFFER_SIZE = 4096  # bytes asked of one recv(); TCP may hand back fewer
ACCEPT_WAIT = 0.2  # seconds accept() waits before the loop looks at the stop flag
STOP_WAIT = 2.0  # seconds stop() waits for the server thread to end


class EchoServer:
    """Sends back every byte it receives, to one client at a time.

    Use it as a context manager, so that the port is released whatever
    happens in the ``with`` block::

        with EchoServer() as server:
            print(echo_once(server.address, b"hello"))
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        # 127.0.0.1 is the loopback address: only programs on this machine
        # can connect.  Port 0 asks the kernel for any free port.
        self.host, self.port = host, port
        self.listener: socket.socket | None = None
        self.current: socket.socket | None = None  # the client being served, if any
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "EchoServer":
        """Create the listening socket, then serve in a background thread."""
        # TODO: 1. create a TCP socket (AF_INET, SOCK_STREAM) and keep it in self.listener
        # TODO: 2. set SO_REUSEADDR on it (not on Windows, where it means something else)
        # TODO: 3. bind it to (self.host, self.port), then listen()
        # TODO: 4. start a daemon thread running self.serve_forever; keep it in self._thread
        raise NotImplementedError(
            "socket.socket(socket.AF_INET, socket.SOCK_STREAM), setsockopt(SOL_SOCKET, "
            "SO_REUSEADDR, 1), bind((self.host, self.port)), listen(), then a threading.Thread "
            "running self.serve_forever"
        )
        return self

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) really listened on: with port 0, the port the kernel chose."""
        # TODO: ask the listening socket where it is bound: self.listener.getsockname()
        raise NotImplementedError(
            "ask the listening socket where it is bound: self.listener.getsockname()"
        )

    def serve_forever(self) -> None:
        """Accept clients one after another; echo each until it has finished."""
        # A thread blocked in accept() cannot be woken portably, so accept()
        # waits at most ACCEPT_WAIT seconds, and the loop looks at the flag.
        self.listener.settimeout(ACCEPT_WAIT)
        while not self._stopping.is_set():
            # TODO: accept one client; on TimeoutError loop again, on OSError return
            # TODO: serve it with self.handle(conn), keeping it in self.current meanwhile
            # TODO: close it afterwards, whatever happened (a `with conn:` block does that)
            raise NotImplementedError(
                "conn, peer = self.listener.accept() (on socket.timeout just loop again; on "
                "OSError the listener was closed: return), then self.handle(conn), then close "
                "conn"
            )

    def handle(self, conn: socket.socket) -> None:
        """Echo until the client closes its side of the connection."""
        # TODO: recv() returns whatever piece of the stream has arrived, from 1 byte up to
        # TODO: BUFFER_SIZE, and b"" at the end of the stream: echo each piece as it comes
        raise NotImplementedError(
            "loop: data = conn.recv(BUFFER_SIZE); b\"\" means the client closed its side, so stop; "
            "otherwise send the same bytes back with conn.sendall(data)"
        )

    def stop(self) -> None:
        """Stop accepting, end the current conversation, release the port."""
        # TODO: 1. set the stop flag
        # TODO: 2. shutdown(socket.SHUT_RDWR) the client being served, if any: its recv() returns b""
        # TODO: 3. join the server thread (timeout=STOP_WAIT), then close the listener
        raise NotImplementedError(
            "set self._stopping, shut down self.current if there is one (that wakes a recv()), "
            "join self._thread (with a timeout: STOP_WAIT), then close self.listener"
        )

    def __enter__(self) -> "EchoServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def echo_once(address: tuple[str, int], data: bytes, timeout: float = 5.0) -> bytes:
    """Connect to an echo server, send ``data``, and return everything it sends back.

    The client says "I am done sending" with ``shutdown(SHUT_WR)``: a
    *half-close*.  The server reads the end of the stream (b""), stops
    echoing and closes; the client reads until that end too.  (Sending all
    before reading works while ``data`` fits in the kernel's buffers -- a few
    hundred kilobytes on loopback.  Beyond that, both sides would wait for
    each other: sending and receiving at once needs two threads, exercise 7.)
    """
    # TODO: 1. create a TCP socket, give it a timeout, connect() it to address
    # TODO: 2. send all of data, then shutdown(socket.SHUT_WR): "no more from me" (you can still read)
    # TODO: 3. recv() and collect pieces until b"" (the server closed), close, return the bytes
    raise NotImplementedError(
        "socket.socket(), settimeout(timeout), connect(address), sendall(data), "
        "shutdown(socket.SHUT_WR), then recv() until it returns b\"\", and close the socket"
    )
