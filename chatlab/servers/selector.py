"""The ``selectors`` server: one thread, many sockets, readiness notification.

The thread-per-client server (``threads.py``) is easy to read because each
client's story is a straight line: block in ``recv()``, handle it, repeat.
But a blocked thread is an expensive way to wait.  Each one costs a stack
and a kernel task, and the scheduler juggles all of them; at ten thousand
clients (the "C10k problem") that cost, not the network, is the limit.

Most of those threads are asleep, waiting for a socket to have something to
say.  So ask the kernel one question instead: *which* of these sockets are
ready?  ``select()``, ``poll()`` and Linux's ``epoll`` answer it;
Python's ``selectors.DefaultSelector`` picks the best one the platform has.
One thread then loops: wait until some sockets are ready, serve each ready
one a little, never block, repeat.  That loop is an *event loop*; asyncio
(``aio.py``) is built on exactly this one.

What changes, compared with ``threads.py``:

* **Sockets are non-blocking.**  ``recv()`` and ``send()`` return at once,
  with whatever the kernel had or could take.  A ``send()`` may take only
  part of the data, so each client has an *output buffer*: what is still to
  be sent waits there for the next time the socket is writable.
* **Write interest only while there is something to write.**  A healthy
  socket is nearly always writable; watching it for writability all the
  time would make ``select()`` return at once, forever: a busy loop.
* **No locks.**  One thread owns the chat core and every socket, so effects
  are applied in the core's order simply because nothing else runs.
* **No thread to block.**  A client that stops reading only makes its own
  buffer grow; when it would pass ``limits.outbox_bytes`` the client is
  dropped as too slow, exactly as in ``threads.py``.

The price: no handler may ever block or run long, because while it runs
nobody else is served.

**TLS in an event loop.**  ``threads.py`` runs the TLS handshake as a
blocking call on the client's reader thread: a client that takes ten
seconds to answer costs one sleeping thread.  Here a blocking handshake
would freeze the whole room for those ten seconds, so the handshake is
driven by readiness like everything else: the bytes a ``recv()`` brought
go into the client's ``TLSLayer`` (``tls.py``, which works on memory
buffers, not sockets), whatever the layer wants to answer goes into the
output buffer, and the loop moves on to the next socket.  Until the
handshake is done the core's words (the banner) are held back; after it,
what the core sends is encrypted into TLS records and queued like plain
bytes, so the too-slow rule counts what really waits.  A handshake
deadline is checked on the tick, since no thread sits waiting for it.
"""

from __future__ import annotations

import itertools
import logging
import selectors
import socket
import ssl
import threading
import time

from ..core import Close, Effect, Send
from ..tls import PLAIN_TEXT_HINT, TLSLayer, looks_like_tls
from .base import BaseServer, format_address

log = logging.getLogger("chatlab.server")

RECV_SIZE = 65536  # bytes asked of one recv(): one system call can bring many messages
LINGER = 2.0  # seconds for a closing peer to take our last bytes, and then to close its side
TICK = 0.5  # seconds between calls to core.tick()
ACCEPT_BATCH = 64  # connections accepted per loop turn: a flood of joins cannot starve the chat
ACCEPT_PAUSE = 0.1  # seconds without accepting after accept() failed (e.g. out of file descriptors)

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Connection:
    """One client: its socket, the bytes still to send it, and how far it is in closing."""

    # One of these per client, touched on every message: slots keep it small
    # and its attribute lookups fast.
    __slots__ = ("sock", "id", "peer", "out", "queued", "events", "open", "closing", "fin_sent", "peer_eof",
                 "deadline", "tls", "tls_state", "held")

    def __init__(self, sock: socket.socket, cid: int, peer: str):
        self.sock, self.id, self.peer = sock, cid, peer
        # What is queued for this client and not yet taken by the kernel: a
        # list of pieces, joined only when sent.  Appending a piece costs
        # the same whatever its size; appending to one growing bytearray
        # would copy every message, and in CPython reallocate it again and
        # again (an emptied bytearray gives its memory back).
        self.out: list[bytes | memoryview] = []
        self.queued = 0  # bytes in ``out``
        self.events = 0  # what the selector watches this socket for (0: not registered)
        self.open = True  # the socket is open and in the server's table
        self.closing = False  # the core said Close: send what is queued, then FIN
        self.fin_sent = False  # our side is shut: we wait for the peer's EOF
        self.peer_eof = False  # the peer closed its side
        self.deadline = 0.0  # (monotonic) when a closing connection is cut off
        # With TLS (see SelectorServer._start_tls): the layer, how far the
        # connection has got -- "hello" (waiting for the client's first
        # bytes), "handshake", "up", "closed" -- and what the core said
        # before the handshake was done, held back until it is.
        self.tls: TLSLayer | None = None
        self.tls_state = ""
        self.held: list[bytes] | None = None


class SelectorServer(BaseServer):
    model = "selectors"
    supports_tls = True

    def _start(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._dirty: list[Connection] = []  # buffers filled this turn, to send before the next wait
        self._closing: set[Connection] = set()  # connections with a deadline to watch
        self._handshaking: dict[Connection, float] = {}  # TLS handshakes under way -> (monotonic) deadline
        self._accept_resume = 0.0  # (monotonic) when to accept again after a failure; 0: accepting
        self._stop_requested = False
        self._stop_timeout = 2.0
        self._stop_lock = threading.Lock()
        # stop() runs in another thread, and the loop may be asleep in
        # select(): a byte on this socket pair wakes it.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.listener.setblocking(False)  # type: ignore[union-attr]
        self.selector.register(self.listener, READ)  # data None: not a client
        self.selector.register(self._wake_r, READ)
        self._thread = threading.Thread(target=self._run, name="chatlab-selector", daemon=True)
        self._thread.start()

    def _stop(self, timeout: float) -> None:
        with self._stop_lock:  # a second stop() waits for the first, then finds nothing to do
            if not self._thread.is_alive():
                return
            if threading.current_thread() is self._thread:
                raise RuntimeError("stop() called from inside the server's own loop")
            self._stop_timeout = timeout
            self._stop_requested = True
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass  # the loop has ended on its own
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the selector loop did not stop within %.1f s", timeout)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        next_tick = time.monotonic() + TICK
        cut_at: float | None = None  # set when stopping: when the last connections are cut off
        try:
            while True:
                if self._stop_requested and cut_at is None:
                    cut_at = time.monotonic() + self._stop_timeout / 2
                    self._begin_shutdown()
                # Everything queued during the last turn goes out now, one
                # send() per client however many messages it holds.
                self._flush_dirty()
                if cut_at is not None and (not self.connections or time.monotonic() >= cut_at):
                    break
                if self._accept_resume and time.monotonic() >= self._accept_resume and cut_at is None:
                    self._accept_resume = 0.0
                    self.selector.register(self.listener, READ)
                wake_at = min(t for t in (next_tick, cut_at, self._accept_resume) if t)
                for key, events in self.selector.select(max(0.0, wake_at - time.monotonic())):
                    conn = key.data
                    if conn is None:
                        if key.fileobj is self.listener:
                            self._accept()
                        else:
                            self._wake_r.recv(64)  # stop() knocked; the loop top sees why
                    elif conn.open:
                        try:
                            if events & READ:
                                self._read(conn)
                            if events & WRITE and conn.open:
                                self._flush(conn)
                        except Exception:
                            self._failed(conn)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK
                    try:
                        self._apply(self.core.tick(time.time()))
                    except Exception:
                        log.exception("the chat core's tick failed")
                    self._cut_overdue()
                    if self._handshaking:
                        self._cut_slow_handshakes()
        except Exception:
            log.exception("the selector loop failed; closing every connection")
        finally:
            for conn in list(self.connections.values()):
                self._forget(conn)
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _begin_shutdown(self) -> None:
        if not self._accept_resume:
            self.selector.unregister(self.listener)
        self._accept_resume = 0.0
        # Every client gets the core's "closing" notice, then a graceful
        # close; the loop gives them half the stop timeout to close their
        # side, then cuts the rest off.
        self._apply(self.core.shutdown(time.time()))

    # ------------------------------------------------------------- events

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                return  # the backlog is empty
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as exc:
                # EMFILE ("too many open files") and friends.  The waiting
                # connection stays in the backlog, so the listener stays
                # readable: retrying at once would spin.  Stop watching it
                # for a moment instead; clients already here are still served.
                log.error("accept failed: %s; not accepting for %.1f s", exc, ACCEPT_PAUSE)
                self.selector.unregister(self.listener)
                self._accept_resume = time.monotonic() + ACCEPT_PAUSE
                return
            conn = Connection(sock, next(self._ids), format_address(address))
            try:
                sock.setblocking(False)
                # Chat messages are small and someone is waiting for each:
                # no Nagle delay (holding a small write until the last is acked).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connections[conn.id] = conn
                self._watch(conn)
                effects = self.core.connect(conn.id, conn.peer, time.time())
                if self.tls is not None:
                    self._start_tls(conn, effects)
                self._apply(effects)
            except Exception:
                self._failed(conn)

    def _read(self, conn: Connection) -> None:
        try:
            # One recv() per ready socket per turn, as large as possible:
            # a busy sender is served in big bites, but cannot starve the
            # others (whatever is left makes it ready again next turn).
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # reset by the peer, or worse
            self._lost(conn, exc)
            return
        if data:
            if conn.closing:
                return  # after Close, late bytes are read and dropped
            if conn.tls is not None:
                data = self._tls_receive(conn, data)  # b"" while the handshake runs
                if not data:
                    return
            self._apply(self.core.receive(conn.id, data, time.time()))
            return
        # End of stream: the peer closed its side.
        conn.peer_eof = True
        if not conn.closing:
            self._apply(self.core.disconnect(conn.id, "disconnected", time.time()))
            self._begin_close(conn)  # even if the core had nothing to say
        self._dirty.append(conn)  # the flush finishes the close (and stops the reading)

    def _flush(self, conn: Connection) -> None:
        """Send as much of the buffer as the kernel takes; finish a close once it is empty."""
        out = conn.out
        if out:
            # Everything queued goes in one send(): one system call, and
            # fewer, fuller TCP segments, however many messages it holds.
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:  # reset, broken pipe: the peer is gone
                self._lost(conn, exc)
                return
            out.clear()
            if sent < len(data):
                # The kernel's send buffer is full: keep the rest for when
                # the socket is writable again.  A memoryview slice shares
                # the bytes instead of copying them.
                out.append(memoryview(data)[sent:])
            conn.queued = len(data) - sent
        if not out and conn.closing:
            if not conn.fin_sent:
                # Graceful close: FIN after the last byte, then wait for the
                # peer's own FIN.  Closing at once, with bytes from the peer
                # still unread, would send a reset that can destroy the
                # goodbye we just sent.
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the peer is already gone; the close below or the deadline ends it
                conn.fin_sent = True
                conn.deadline = time.monotonic() + LINGER
            if conn.peer_eof:
                self._forget(conn)  # both sides closed: done
                return
        self._watch(conn)

    def _flush_dirty(self) -> None:
        # Flushing can lose a connection, whose departure queues a "left"
        # notice for others: keep going until nothing new was queued.
        while self._dirty:
            dirty, self._dirty = self._dirty, []
            for conn in dirty:
                if conn.open:
                    try:
                        self._flush(conn)
                    except Exception:
                        self._failed(conn)

    def _watch(self, conn: Connection) -> None:
        """Tell the selector what this socket is waiting for now."""
        # Read until the peer's EOF; wait for writability only while bytes
        # are waiting (a writable socket would otherwise wake us every turn).
        want = (0 if conn.peer_eof else READ) | (WRITE if conn.out else 0)
        if want == conn.events:
            return
        if not conn.events:
            self.selector.register(conn.sock, want, conn)
        elif not want:
            self.selector.unregister(conn.sock)
        else:
            self.selector.modify(conn.sock, want, conn)
        conn.events = want

    # ------------------------------------------------------------ effects

    def _apply(self, effects: list[Effect]) -> None:
        """Do what the core said, in its order: append to buffers, start closes."""
        connections, limit, dirty = self.connections, self.limits.outbox_bytes, self._dirty
        too_slow: list[Connection] = []
        for effect in effects:
            if type(effect) is Send:
                # The fast path.  A broadcast arrives encoded once, with every
                # recipient in ``to``: the work per recipient is one append to
                # its buffer, and no send() yet -- the flush before the next
                # wait sends each buffer whole, however many messages it holds.
                data, size = effect.data, len(effect.data)
                for cid in effect.to:
                    conn = connections.get(cid)
                    if conn is None:
                        continue  # gone already
                    if limit and conn.queued + size > limit:
                        self._drop_too_slow(conn, size)
                        too_slow.append(conn)
                        continue
                    if conn.tls is not None:
                        self._tls_send(conn, data)
                        continue
                    if not conn.out:
                        dirty.append(conn)  # an empty buffer is not watched yet: flush it this turn
                    conn.out.append(data)
                    conn.queued += size
            elif type(effect) is Close:
                conn = connections.get(effect.client)
                if conn is not None:
                    self._begin_close(conn)
        # The core learns of a slow client after the whole list is applied,
        # so its "left" notice follows every message it had already ordered.
        for conn in too_slow:
            self._apply(self.core.disconnect(conn.id, "too_slow", time.time()))

    def _begin_close(self, conn: Connection) -> None:
        if conn.closing:
            return
        conn.closing = True
        if conn.tls is not None:
            self._tls_close(conn)
        conn.deadline = time.monotonic() + LINGER  # to send what is queued
        self._closing.add(conn)
        self._dirty.append(conn)

    # ------------------------------------------------- endings, good and bad

    def _forget(self, conn: Connection) -> None:
        """Close the socket now and remove every trace of the connection."""
        if not conn.open:
            return
        conn.open = False
        if conn.events:
            self.selector.unregister(conn.sock)
            conn.events = 0
        conn.sock.close()
        conn.out, conn.queued = [], 0  # let the queued bytes go now
        del self.connections[conn.id]
        self._closing.discard(conn)
        if conn.tls is not None:
            self._handshaking.pop(conn, None)

    def _lost(self, conn: Connection, exc: BaseException) -> None:
        """The peer reset the connection or vanished."""
        log.info("%s: connection lost: %s", conn.peer, exc)
        self._forget(conn)
        self._apply(self.core.disconnect(conn.id, "disconnected", time.time()))

    def _drop_too_slow(self, conn: Connection, adding: int) -> None:
        log.warning(
            "%s: too slow: %d bytes already queued, %d more would pass the limit of %d; disconnecting",
            conn.peer, conn.queued, adding, self.limits.outbox_bytes,
        )
        self._forget(conn)

    def _failed(self, conn: Connection) -> None:
        """A bug while serving one client: log it, drop that client, keep serving the rest."""
        log.exception("%s: unexpected error; dropping this client", conn.peer)
        self._forget(conn)
        try:
            self._apply(self.core.disconnect(conn.id, "server_error", time.time()))
        except Exception:
            log.exception("%s: the core failed to forget it", conn.peer)

    def _cut_overdue(self) -> None:
        # Checked on each tick, so a deadline may be overshot by up to TICK:
        # cheaper than keeping every deadline in order, and the exact moment
        # of giving up on a silent peer does not matter.
        now = time.monotonic()
        for conn in [c for c in self._closing if now >= c.deadline]:
            what = "close its side" if conn.fin_sent else f"take its last {conn.queued} bytes"
            log.info("%s: did not %s within %.0f s; closing anyway", conn.peer, what, LINGER)
            self._forget(conn)

    # ---------------------------------------------------------------- TLS

    def _start_tls(self, conn: Connection, effects: list[Effect]) -> None:
        """A new connection on a TLS server: it must send a TLS handshake first."""
        if any(type(e) is Close and e.client == conn.id for e in effects):
            # Refused at the door (server full, a flood): as in threads.py,
            # the one-line refusal goes in clear, and no handshake -- the
            # costly part of TLS -- is spent on a client that will not be served.
            return
        conn.tls = TLSLayer(self.tls, server_side=True)  # type: ignore[arg-type]
        conn.tls_state = "hello"
        conn.held = []
        self._handshaking[conn] = time.monotonic() + self.tls_handshake_timeout

    def _tls_receive(self, conn: Connection, data: bytes) -> bytes:
        """Raw bytes from the client into its TLS layer; return the plaintext for the core."""
        tls = conn.tls
        assert tls is not None
        if conn.tls_state == "up":
            try:
                return tls.receive(data)
            except ssl.SSLError as exc:  # a broken or forged record
                self._lost(conn, exc)
                return b""
        if conn.tls_state == "hello":
            if not looks_like_tls(data):
                self._plain_text_hint(conn, data)
                return b""
            conn.tls_state = "handshake"
        # One step of the handshake: take what this recv() brought, queue
        # our answer, and return to the loop -- never wait here for the
        # client's next flight, everyone else would wait with us.
        try:
            tls.receive(data)
            done = tls.handshake()
            self._queue_records(conn)
            if not done:
                return b""
            del self._handshaking[conn]
            conn.tls_state = "up"
            log.info("%s: TLS up (%s, %s)", conn.peer, tls.version, tls.cipher)
            for plain in conn.held or ():  # the banner, now encrypted
                tls.send(plain)
            conn.held = None
            self._queue_records(conn)
            return tls.receive(None)  # chat that arrived with the handshake
        except ssl.SSLError as exc:  # e.g. the client does not trust our certificate
            self._tls_failed(conn, f"TLS handshake failed: {exc}")
            return b""

    def _tls_send(self, conn: Connection, plain: bytes) -> None:
        """What the core sends a TLS client: encrypted into records, queued like plain bytes."""
        if conn.tls_state == "up":
            conn.tls.send(plain)  # type: ignore[union-attr]
            self._queue_records(conn)
        elif conn.held is not None:
            conn.held.append(plain)  # nothing may go out in clear: wait for the handshake
        # else closing: the close_notify is queued and nothing may follow it (threads.py drops it too)

    def _queue_records(self, conn: Connection) -> None:
        records = conn.tls.outgoing()  # type: ignore[union-attr]
        if records:
            if not conn.out:
                self._dirty.append(conn)
            conn.out.append(records)
            conn.queued += len(records)

    def _tls_close(self, conn: Connection) -> None:
        """Closing: a close_notify goes after the last record, before the FIN."""
        if conn.tls_state == "up":
            # A clean end that an attacker cannot fake by cutting the TCP connection.
            conn.tls.close()  # type: ignore[union-attr]
            self._queue_records(conn)
        conn.tls_state = "closed"
        conn.held = None  # never secured: what the core said to it is never sent
        self._handshaking.pop(conn, None)

    def _plain_text_hint(self, conn: Connection, data: bytes) -> None:
        """Plain text on the TLS port (someone with nc): a one-line hint in clear, then close."""
        log.warning("%s: plain text sent to the TLS port (expected a TLS handshake, got %r); closing",
                    conn.peer, data[:16])
        self._tls_close(conn)
        if not conn.out:
            self._dirty.append(conn)
        conn.out.append(PLAIN_TEXT_HINT)
        conn.queued += len(PLAIN_TEXT_HINT)
        self._apply(self.core.disconnect(conn.id, "disconnected", time.time()))
        self._begin_close(conn)  # the hint, then FIN

    def _tls_failed(self, conn: Connection, why: str) -> None:
        """A handshake that failed or stalled: log it, hang up, send nothing."""
        log.warning("%s: %s; closing", conn.peer, why)
        self._forget(conn)
        self._apply(self.core.disconnect(conn.id, "disconnected", time.time()))

    def _cut_slow_handshakes(self) -> None:
        # Checked on the tick, like the closing deadlines: a client that
        # connects and says nothing may hold its socket up to TICK longer.
        now = time.monotonic()
        for conn in [c for c, deadline in self._handshaking.items() if now >= deadline]:
            self._tls_failed(conn, f"TLS handshake not finished within {self.tls_handshake_timeout:g} s")
