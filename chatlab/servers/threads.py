"""The thread-per-client server: the first model the kit teaches.

Every client gets two threads:

* a **reader**, blocked in ``recv()`` until bytes arrive, which hands them
  to the chat core;
* a **writer**, which drains that client's own outbox with ``sendall()``.

Why a writer per client?  ``sendall()`` blocks while the client's TCP
receive window is full -- that is, while the client is not reading.  A
server that broadcast by calling ``sendall()`` for every peer in turn
would stop for everyone the moment one laptop lid closed.  Here a
broadcast only *appends* to each outbox, which never blocks; a client
whose outbox grows past its limit is disconnected as too slow (shell.py).

One lock guards the chat core (the shared list of clients is the classic
race: two threads registering the same name at once, or one iterating the
list while another removes from it).  Effects are applied under the same
lock, so every outbox receives messages in the core's one order.  Slow
work the core asks for (checking a password) runs on the thread that met
it, *after* the lock is let go: that client waits, the room does not.

Waking a thread is not free: it costs a context switch, and the woken
thread must win the GIL from everyone else.  So a writer is woken once per
*batch* -- after the lock is let go, however many messages the event
queued for it -- and sends everything queued in one ``sendall()``.  Woken
for every message, a thousand writers fought the reader for the GIL line
by line, and a room of a thousand delivered 11,000 messages a second
instead of millions (docs/performance.md).

Better still is not to wake it at all.  Most of the time a client's
outbox is empty and its kernel send buffer has room, so the thread that
queues a message offers it to the kernel at once, with a send that may
not block (``MSG_DONTWAIT``): the kernel takes what fits, and only what
it leaves over waits in the outbox for the writer.  Nothing blocks, so
the lesson stands -- a slow reader still costs the room nothing -- and
a broadcast to a hundred clients is a hundred quick system calls on one
thread instead of a hundred threads woken (their wake-ups, not the
sends, were what made this model slow under load).

An accept thread waits for new connections on every port, and doubles as
the clock: the core hears the time every TICK seconds.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from ..effects import ClientId, Effect, Work
from ..transport import PLAIN, Transport
from .shell import LINGER, RECV_SIZE, TICK, Channel, Shell, Workers, accept_error, run_job, ACCEPT_PAUSE

log = logging.getLogger("chatlab.server")


class Outbox:
    """The bytes waiting to be sent to one client, and the writer's wake-up call."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._woken = False
        self._closed = False
        self._busy = False  # the writer took a batch and is sending it

    def put(self, data: bytes, send_now: Callable[[bytes], int] | None = None) -> bool:
        """Queue ``data``.  True if it is the first of a batch: the writer is then to be woken (``notify``).

        With ``send_now`` (a send that never blocks, returning the bytes
        the kernel took), data that would be first in line is offered to
        the kernel at once, and only what it leaves over is queued.  The
        lock keeps that send from overtaking, or interleaving with, the
        writer's: it is tried only while the writer holds nothing.
        """
        with self._lock:
            if send_now is not None and not self._chunks and not self._busy and not self._closed:
                taken = send_now(data)
                if taken == len(data):
                    return False  # all sent: no writer to wake
                data = data[taken:]
            self._chunks.append(data)
            return len(self._chunks) == 1

    def notify(self) -> None:
        """Wake the writer: something was queued (a no-op if it is awake already)."""
        with self._ready:
            self._ready.notify()

    def wake(self) -> None:
        """Let the writer look at its transport (it has a handshake answer to send)."""
        with self._ready:
            self._woken = True
            self._ready.notify()

    def take(self) -> bytes | None:
        """Everything queued, as one piece (b"" if only woken); None once closed and empty.

        Joining the queued pieces into one ``sendall()`` turns many small
        writes into one system call and fewer, fuller TCP segments.
        Calling it again says the writer sent the last piece it took.
        """
        with self._ready:
            self._busy = False
            while not self._chunks and not self._closed and not self._woken:
                self._ready.wait()
            self._woken = False
            if not self._chunks:
                return None if self._closed else b""
            chunks, self._chunks = self._chunks, []
            self._busy = True
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        """No more data will come: the writer sends what is queued, then stops."""
        with self._ready:
            self._closed = True
            self._ready.notify()


class ThreadChannel(Channel):
    """One client: its socket, its outbox, its reader and writer threads."""

    __slots__ = ("server", "outbox", "peer_closed", "reader", "writer")

    def __init__(self, server: "ThreadedServer", cid: ClientId, peer: str, sock: socket.socket,
                 transport: Transport):
        super().__init__(cid, peer, sock, transport)
        self.server = server
        self.outbox = Outbox()
        self.peer_closed = threading.Event()  # the reader saw the end of the stream
        self.reader = threading.Thread(target=self._read, name=f"chatlab-reader-{cid}", daemon=True)
        self.writer = threading.Thread(target=self._write, name=f"chatlab-writer-{cid}", daemon=True)

    def push(self, data: bytes) -> None:
        # Only a plain connection is written through: TLS must encrypt in
        # one place, in order, and that is the writer.
        send_now = self._send_now if self.transport is PLAIN else None
        if self.outbox.put(data, send_now):
            self.server.to_wake.append(self)  # woken once the lock is let go (ThreadedServer.event)

    def _send_now(self, data: bytes) -> int:
        """Hand the kernel what fits in the socket's send buffer now, without waiting; the bytes it took."""
        try:
            taken = self.sock.send(data, socket.MSG_DONTWAIT)
        except OSError:
            return 0  # full (EAGAIN), or broken: the writer finds out which
        self.sent += taken  # the writer holds nothing now (Outbox.put), so it is not counting too
        return taken

    def wake(self) -> None:
        self.outbox.wake()

    def close_soon(self) -> None:
        self.outbox.close()

    def abort(self) -> None:
        """Shut the socket both ways: wakes a reader blocked in recv() and a writer in sendall()."""
        self.outbox.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut or closed

    def start(self) -> None:
        self.writer.start()
        self.reader.start()

    def _read(self) -> None:
        server = self.server
        try:
            while data := self.sock.recv(RECV_SIZE):
                # Decrypting (TLS) needs no lock; handing the plaintext to the core does.
                server.event(server.deliver, self, server.unwrap(self, data))
        except OSError as exc:
            if not self.dropped:
                server.lost(self, exc)
        finally:
            self.peer_closed.set()
            server.event(server.ended, self)  # nothing, if the core closed it first
            self.outbox.close()
            self.writer.join()
            self.sock.close()
            server.event(server.forget, self)

    def _write(self) -> None:
        transport = self.transport
        try:
            while (data := self.outbox.take()) is not None:
                wire = transport.output() + transport.send(data) if data else transport.output()
                if wire:
                    self.sock.sendall(wire)
                self.sent += len(data)
            if self.dropped:
                return
            if goodbye := transport.close():  # TLS: close_notify
                self.sock.sendall(goodbye)
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


class ThreadedServer(Shell):
    model = "threads"

    def _start(self) -> None:
        self._begin()
        self.lock = threading.Lock()  # guards the core and the channel table
        self.to_wake: list[ThreadChannel] = []  # writers with a new batch queued (under the lock)
        self._work = threading.local()  # Work met by this thread while it held the lock
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._ordered = Workers(lambda work, result: self.event(self.finished, work, result), count=0)
        self._accepter = threading.Thread(target=self._accept_loop, name="chatlab-accept", daemon=True)
        self._accepter.start()

    def make_channel(self, cid: ClientId, peer: str, sock: socket.socket, transport: Transport) -> Channel:
        sock.setblocking(True)
        return ThreadChannel(self, cid, peer, sock, transport)

    def event(self, handler: Callable[..., Any], *args: Any) -> None:
        """Run a shell method under the lock; then, without it, wake the writers and run any work it left."""
        with self.lock:
            try:
                handler(*args)
            except Exception:
                # A bug while serving one client must not end its thread with
                # the lock's work half done, nor touch anyone else.
                channel = next((a for a in args if isinstance(a, Channel)), None)
                if channel is None:
                    log.exception("unexpected error in the server")
                else:
                    self.failed(channel)
            woken, self.to_wake = self.to_wake, []
        self._wake_writers(woken)
        # The slow work (a password to check) runs here, on this thread,
        # with the lock released: only this thread waits for it.
        while pending := getattr(self._work, "queue", None):
            work = pending.popleft()
            result = run_job(work)
            self.event(self.finished, work, result)

    @staticmethod
    def _wake_writers(channels: list["ThreadChannel"]) -> None:
        # Once per batch, and only after the lock is let go: a writer woken
        # for every message would fight the reader (and a thousand other
        # writers) for the GIL and the lock, line by line.
        for channel in channels:
            channel.outbox.notify()

    def post(self, event: Callable[[float], list[Effect]]) -> None:
        # On the poster's own thread, under the lock, like a client's bytes.
        self.event(self.run_posted, event)

    def run_work(self, work: Work) -> None:
        if work.ordered:
            # Work that must keep its order across clients (a shared chat's
            # writes to Redis) runs on one thread of its own, in the order given.
            self._ordered.submit(work)
            return
        # Called with the lock held: noted, and run by event() once it is let go.
        if getattr(self._work, "queue", None) is None:
            self._work.queue = deque()
        self._work.queue.append(work)

    def _accept_loop(self) -> None:
        # Wait on every listener *and* a wake-up socket, so that stop() can
        # interrupt a thread blocked waiting for the next connection.
        failures = 0
        with selectors.DefaultSelector() as selector:
            for sock, listener in self.sockets:
                selector.register(sock, selectors.EVENT_READ, listener)
            selector.register(self._wake_r, selectors.EVENT_READ)
            next_tick = time.monotonic() + TICK
            while not self._stopping:
                ready = selector.select(max(0.0, next_tick - time.monotonic()))
                if time.monotonic() >= next_tick:
                    self.event(self.tick)
                    next_tick = time.monotonic() + TICK
                for key, _ in ready:
                    if key.data is None or self._stopping:
                        continue  # the wake-up socket: the loop top sees why
                    try:
                        sock, address = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError as exc:
                        # EMFILE ("too many open files") and friends: the
                        # connection waits in the backlog for a later try.
                        accept_error(exc, failures)
                        failures += 1
                        time.sleep(ACCEPT_PAUSE)
                        continue
                    if failures:
                        log.warning("accepting again, after %d failed attempts", failures)
                        failures = 0
                    self._accept(sock, address, key.data)

    def _accept(self, sock: socket.socket, address: Any, listener: Any) -> None:
        with self.lock:
            channel = self.admit(sock, address, listener)
            woken, self.to_wake = self.to_wake, []
        self._wake_writers(woken)
        if isinstance(channel, ThreadChannel):
            channel.start()

    def _stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake_w.send(b"x")
        self._accepter.join(timeout)
        self.event(self.shutdown_core)
        with self.lock:
            channels = [c for c in self.channels.values() if isinstance(c, ThreadChannel)]
        # Well-behaved clients close their side when told; give them half the
        # time, then cut the rest off.
        for channel in channels:
            channel.reader.join(max(0.0, deadline - timeout / 2 - time.monotonic()))
        for channel in channels:
            if channel.reader.is_alive():
                channel.abort()
        for channel in channels:
            channel.reader.join(max(0.0, deadline - time.monotonic()))
        self._ordered.stop()
        self._wake_r.close()
        self._wake_w.close()
