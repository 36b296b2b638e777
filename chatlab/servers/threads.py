"""The thread-per-client server: the first model the kit teaches.

Every client gets two threads:

* a **reader**, blocked in ``recv()`` until bytes arrive, which hands them
  to the chat core;
* a **writer**, which drains that client's own bounded outbox with
  ``sendall()``.

Why a writer per client?  ``sendall()`` blocks while the client's TCP
receive window is full -- that is, while the client is not reading.  A
server that broadcast by calling ``sendall()`` for every peer in turn
would stop for everyone the moment one laptop lid closed.  Here a
broadcast only *appends* to each outbox, which never blocks; a client
whose outbox grows past its limit is disconnected as too slow.

One lock guards the chat core (the shared list of clients is the classic
race: two threads registering the same name at once, or one iterating the
list while another removes from it).  Effects are applied under the same
lock, so every outbox receives messages in the core's one order.
"""

from __future__ import annotations

import itertools
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque

from ..core import Close, Effect, Send
from ..tls import PLAIN_TEXT_HINT, NotTLS, TLSLayer, handshake_over
from .base import BaseServer, format_address

log = logging.getLogger("chatlab.server")

RECV_SIZE = 65536  # bytes asked of one recv(); TCP may hand back fewer
LINGER = 2.0  # seconds to wait for a peer to close its side after we closed ours


class Outbox:
    """The bytes waiting to be sent to one client, bounded in size."""

    def __init__(self, limit: int):
        self.limit = limit  # 0: no limit
        self.size = 0
        self._chunks: deque[bytes] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, data: bytes) -> bool:
        """Queue ``data``; False if that would pass the limit (the client is too slow)."""
        with self._ready:
            if self._closed:
                return True  # closing anyway: drop it quietly
            if self.limit and self.size + len(data) > self.limit:
                return False
            self._chunks.append(data)
            self.size += len(data)
            self._ready.notify()
            return True

    def take(self) -> bytes | None:
        """Everything queued, as one piece; None once closed and empty.

        Joining the queued pieces into one ``sendall()`` turns many small
        writes into one system call and fewer, fuller TCP segments.
        """
        with self._ready:
            while not self._chunks and not self._closed:
                self._ready.wait()
            if not self._chunks:
                return None
            data = b"".join(self._chunks)
            self._chunks.clear()
            self.size = 0
            return data

    def close(self) -> None:
        """No more data will come: the writer sends what is queued, then stops."""
        with self._ready:
            self._closed = True
            self._ready.notify()


class Connection:
    """One client: its socket, its outbox, its reader and writer threads."""

    def __init__(self, server: "ThreadedServer", sock: socket.socket, cid: int, peer: str):
        self.server, self.sock, self.id, self.peer = server, sock, cid, peer
        self.outbox = Outbox(server.limits.outbox_bytes)
        self.peer_closed = threading.Event()  # the reader saw the end of the stream
        # With TLS, nothing may be written until the handshake is done: the
        # writer waits for ``secured`` (set at once for plain TCP).
        self.tls = TLSLayer(server.tls, server_side=True) if server.tls else None
        self.secured = threading.Event()
        if self.tls is None:
            self.secured.set()
        self.reader = threading.Thread(target=self._read, name=f"chatlab-reader-{cid}", daemon=True)
        self.writer = threading.Thread(target=self._write, name=f"chatlab-writer-{cid}", daemon=True)

    def start(self) -> None:
        self.writer.start()
        self.reader.start()

    def abort(self) -> None:
        """Shut the socket both ways: wakes a reader blocked in recv() and a writer in sendall()."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut or closed

    def _read(self) -> None:
        reason = "disconnected"
        try:
            if self.tls is not None:
                self._secure()
            while data := self._recv():
                self.server.event("receive", self.id, data)
        except (OSError, ssl.SSLError) as exc:
            reason = "disconnected"
            log.info("%s: connection lost: %s", self.peer, exc)
        finally:
            self.secured.set()  # let the writer finish, secured or not
            self.peer_closed.set()
            self.server.event("disconnect", self.id, reason)  # nothing, if the core closed it first
            self.outbox.close()
            self.writer.join()
            self.sock.close()
            self.server.forget(self)

    def _secure(self) -> None:
        """The TLS handshake, on this reader thread, before anything else is read or written."""
        assert self.tls is not None
        try:
            handshake_over(self.sock, self.tls, self.server.tls_handshake_timeout)
        except NotTLS as exc:
            log.warning("%s: plain text sent to the TLS port (%s); closing", self.peer, exc)
            self.sock.sendall(PLAIN_TEXT_HINT)
            raise
        except (OSError, ssl.SSLError) as exc:
            log.warning("%s: TLS handshake failed: %s", self.peer, exc)
            raise
        log.info("%s: TLS up (%s, %s)", self.peer, self.tls.version, self.tls.cipher)
        self.secured.set()
        if early := self.tls.receive(None):  # chat that arrived with the handshake
            self.server.event("receive", self.id, early)

    def _recv(self) -> bytes:
        """The next bytes from the client, decrypted if TLS is on; b"" at the end."""
        while True:
            data = self.sock.recv(RECV_SIZE)
            if self.tls is None:
                return data
            plain = self.tls.receive(data)
            if plain or not data:
                return plain

    def _write(self) -> None:
        try:
            self.secured.wait()
            if self.tls is not None and not self.tls.handshake_done:
                return  # the handshake failed: nothing may be sent in clear
            while (data := self.outbox.take()) is not None:
                if self.tls is not None:
                    self.tls.send(data)
                    data = self.tls.outgoing()  # encrypted into TLS records
                self.sock.sendall(data)
            if self.tls is not None:
                self.tls.close()  # close_notify: a clean end an attacker cannot fake
                self.sock.sendall(self.tls.outgoing())
            # Graceful close: FIN goes out after everything queued.  Then give
            # the peer a moment to close its side, so that unread bytes from
            # it do not turn our close into a reset that could destroy the
            # goodbye we just sent.
            self.sock.shutdown(socket.SHUT_WR)
            self.peer_closed.wait(LINGER)
        except OSError:
            pass  # the peer went away; the reader will notice
        finally:
            self.abort()


class ThreadedServer(BaseServer):
    model = "threads"
    supports_tls = True

    def _start(self) -> None:
        self.lock = threading.Lock()  # guards the core and the connection table
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self._accept_failures = 0  # accept() failures in a row (out of file descriptors)
        self._wake_r, self._wake_w = socket.socketpair()
        self._accepter = threading.Thread(target=self._accept_loop, name="chatlab-accept", daemon=True)
        self._accepter.start()

    TICK = 0.5  # seconds between calls to core.tick()

    def event(self, name: str, cid: int, arg: object) -> None:
        """Tell the core something happened (``receive`` or ``disconnect``), and do what it says."""
        with self.lock:
            try:
                effects = getattr(self.core, name)(cid, arg, time.time())
                self._apply(effects)
            except Exception:
                # A bug while serving one client must not end its reader
                # thread with the lock's work half done, nor touch anyone
                # else: log it, drop that client alone.
                log.exception("client %s: unexpected error; dropping this client", cid)
                self._drop_after_error(cid)

    def _drop_after_error(self, cid: int) -> None:
        # Called with self.lock held.
        try:
            self._apply(self.core.disconnect(cid, "server_error", time.time()))
        except Exception:
            log.exception("client %s: the core failed to forget it", cid)
        conn = self.connections.get(cid)
        if conn is not None:
            conn.abort()

    def _apply(self, effects: list[Effect]) -> None:
        # Called with self.lock held.
        too_slow: list[Connection] = []
        for effect in effects:
            if isinstance(effect, Send):
                for cid in effect.to:
                    conn = self.connections.get(cid)
                    if conn is not None and not conn.outbox.put(effect.data):
                        too_slow.append(conn)
            elif isinstance(effect, Close):
                conn = self.connections.get(effect.client)
                if conn is not None:
                    conn.outbox.close()
        for conn in too_slow:
            log.warning(
                "%s: too slow: %d bytes already queued, limit %d; disconnecting",
                conn.peer, conn.outbox.size, conn.outbox.limit,
            )
            self._apply(self.core.disconnect(conn.id, "too_slow", time.time()))
            conn.abort()

    def forget(self, conn: Connection) -> None:
        with self.lock:
            self.connections.pop(conn.id, None)

    def _accept_loop(self) -> None:
        # Wait on the listener *and* a wake-up socket, so that stop() can
        # interrupt a thread blocked waiting for the next connection.
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            next_tick = time.monotonic() + self.TICK
            while not self._stopping:
                # The accept thread doubles as the clock: the core hears the
                # time at least every TICK seconds, connections or not.
                ready = selector.select(max(0.0, next_tick - time.monotonic()))
                if time.monotonic() >= next_tick:
                    with self.lock:
                        try:
                            self._apply(self.core.tick(time.time()))
                        except Exception:  # the clock must keep running whatever happens
                            log.exception("the chat core's tick failed")
                    next_tick = time.monotonic() + self.TICK
                for key, _ in ready:
                    if key.fileobj is self.listener and not self._stopping:
                        self._accept()

    def _accept(self) -> None:
        try:
            sock, address = self.listener.accept()
        except OSError as exc:
            # EMFILE ("too many open files") and friends: log and carry on;
            # the connection waits in the backlog for a later try.  Logged
            # once per run of failures: a retry every 50 ms would otherwise
            # write twenty lines a second for as long as it lasts.
            if not self._accept_failures:
                log.error("accept failed: %s; retrying every 0.05 s", exc)
            self._accept_failures += 1
            time.sleep(0.05)
            return
        if self._accept_failures:
            log.warning("accepting again, after %d failed attempts", self._accept_failures)
            self._accept_failures = 0
        sock.setblocking(True)
        # Chat messages are small and someone is waiting for each one:
        # turn off Nagle's algorithm, which would hold a small write back
        # until the previous one is acknowledged.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(self, sock, next(self._ids), format_address(address))
        with self.lock:
            try:
                effects = self.core.connect(conn.id, conn.peer, time.time())
            except Exception:
                log.exception("%s: unexpected error on connect; closing it", conn.peer)
                effects = [Close(conn.id, "server_error")]
            refused = any(isinstance(e, Close) and e.client == conn.id for e in effects)
            if not refused:
                self.connections[conn.id] = conn
                self._apply(effects)
        if refused:
            self._turn_away(sock, effects)
        else:
            conn.start()

    @staticmethod
    def _turn_away(sock: socket.socket, effects: list[Effect]) -> None:
        """A connection refused at the door (server full, a flood) gets no threads:
        its one-line refusal fits in the socket's send buffer, so it is written
        without waiting, and the socket closed at once."""
        sock.setblocking(False)
        try:
            sock.send(b"".join(e.data for e in effects if isinstance(e, Send)))
            sock.shutdown(socket.SHUT_WR)
            # Read what the client may have sent already: closing a socket
            # with unread bytes sends a reset, which can destroy the refusal.
            while sock.recv(RECV_SIZE):
                pass
        except OSError:
            pass  # would block, or the client is gone: nothing more to do for it
        sock.close()

    def _stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake_w.send(b"x")
        self._accepter.join(timeout)
        with self.lock:
            self._apply(self.core.shutdown(time.time()))
            connections = list(self.connections.values())
        # Well-behaved clients close their side when told; give them half the
        # time, then cut the rest off.
        for conn in connections:
            conn.reader.join(max(0.0, deadline - timeout / 2 - time.monotonic()))
        for conn in connections:
            if conn.reader.is_alive():
                conn.abort()
        for conn in connections:
            conn.reader.join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()
