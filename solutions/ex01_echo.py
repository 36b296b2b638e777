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
        # BEGIN SOLUTION
        # HINT: socket.socket(socket.AF_INET, socket.SOCK_STREAM), setsockopt(SOL_SOCKET, SO_REUSEADDR, 1),
        # HINT: bind((self.host, self.port)), listen(), then a threading.Thread running self.serve_forever
        # TODO: 1. create a TCP socket (AF_INET, SOCK_STREAM) and keep it in self.listener
        # TODO: 2. set SO_REUSEADDR on it (not on Windows, where it means something else)
        # TODO: 3. bind it to (self.host, self.port), then listen()
        # TODO: 4. start a daemon thread running self.serve_forever; keep it in self._thread
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Without SO_REUSEADDR, a server restarted right after stopping fails
        # with "address already in use" for a minute or two: its old
        # connections linger in TIME_WAIT, and they hold the port.  On Windows
        # SO_REUSEADDR would let two servers share a port, so it is left off.
        if os.name != "nt":
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((self.host, self.port))
        self.listener.listen()
        self._thread = threading.Thread(target=self.serve_forever, name="ex01-echo-server", daemon=True)
        self._thread.start()
        # END SOLUTION
        return self

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) really listened on: with port 0, the port the kernel chose."""
        # BEGIN SOLUTION
        # HINT: ask the listening socket where it is bound: self.listener.getsockname()
        host, port = self.listener.getsockname()[:2]
        return host, port
        # END SOLUTION

    def serve_forever(self) -> None:
        """Accept clients one after another; echo each until it has finished."""
        # A thread blocked in accept() cannot be woken portably, so accept()
        # waits at most ACCEPT_WAIT seconds, and the loop looks at the flag.
        self.listener.settimeout(ACCEPT_WAIT)
        while not self._stopping.is_set():
            # BEGIN SOLUTION
            # HINT: conn, peer = self.listener.accept() (on socket.timeout just loop again; on OSError the
            # HINT: listener was closed: return), then self.handle(conn), then close conn
            # TODO: accept one client; on TimeoutError loop again, on OSError return
            # TODO: serve it with self.handle(conn), keeping it in self.current meanwhile
            # TODO: close it afterwards, whatever happened (a `with conn:` block does that)
            try:
                conn, peer = self.listener.accept()
            except TimeoutError:
                continue  # nobody came: look at the stop flag again
            except OSError:
                return  # the listener was closed
            with conn:
                if self._stopping.is_set():
                    return
                self.current = conn
                try:
                    self.handle(conn)
                except OSError:
                    pass  # the client vanished (a reset): serve the next one
                finally:
                    self.current = None
            # END SOLUTION

    def handle(self, conn: socket.socket) -> None:
        """Echo until the client closes its side of the connection."""
        # BEGIN SOLUTION
        # HINT: loop: data = conn.recv(BUFFER_SIZE); b"" means the client closed its side, so stop;
        # HINT: otherwise send the same bytes back with conn.sendall(data)
        # TODO: recv() returns whatever piece of the stream has arrived, from 1 byte up to
        # TODO: BUFFER_SIZE, and b"" at the end of the stream: echo each piece as it comes
        while data := conn.recv(BUFFER_SIZE):
            conn.sendall(data)
        # END SOLUTION

    def stop(self) -> None:
        """Stop accepting, end the current conversation, release the port."""
        # BEGIN SOLUTION
        # HINT: set self._stopping, shut down self.current if there is one (that wakes a recv()),
        # HINT: join self._thread (with a timeout: STOP_WAIT), then close self.listener
        # TODO: 1. set the stop flag
        # TODO: 2. shutdown(socket.SHUT_RDWR) the client being served, if any: its recv() returns b""
        # TODO: 3. join the server thread (timeout=STOP_WAIT), then close the listener
        self._stopping.set()
        current = self.current
        if current is not None:
            try:
                current.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # it closed already
        if self._thread is not None:
            self._thread.join(STOP_WAIT)
        if self.listener is not None:
            self.listener.close()
        # END SOLUTION

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
    # BEGIN SOLUTION
    # HINT: socket.socket(), settimeout(timeout), connect(address), sendall(data), shutdown(socket.SHUT_WR),
    # HINT: then recv() until it returns b"", and close the socket
    # TODO: 1. create a TCP socket, give it a timeout, connect() it to address
    # TODO: 2. send all of data, then shutdown(socket.SHUT_WR): "no more from me" (you can still read)
    # TODO: 3. recv() and collect pieces until b"" (the server closed), close, return the bytes
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(BUFFER_SIZE):
            received += chunk
        return bytes(received)
    # END SOLUTION
