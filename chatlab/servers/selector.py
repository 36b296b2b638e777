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
  part of the data, so each client keeps what is still to be sent for the
  next time its socket is writable.
* **Write interest only while there is something to write.**  A healthy
  socket is nearly always writable; watching it for writability all the
  time would make ``select()`` return at once, forever: a busy loop.
* **No locks.**  One thread owns the chat core and every socket, so effects
  are applied in the core's order simply because nothing else runs.
* **Slow work goes elsewhere.**  A password check would freeze the loop, and
  everyone with it, for 40 ms: it runs on a worker thread, whose result
  comes back through the same wake-up socket that ``stop()`` uses.

The price: no handler may ever block or run long, because while it runs
nobody else is served.  A TLS handshake, for one, is driven step by step as
the client's bytes arrive (transport.py), never waited for.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections import deque
from typing import Any, Callable

from ..effects import ClientId, Effect, Work
from ..transport import Transport
from .base import Listener
from .shell import ACCEPT_BATCH, ACCEPT_PAUSE, LINGER, RECV_SIZE, TICK, Channel, Shell, Workers, accept_error

log = logging.getLogger("chatlab.server")

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class SelectorChannel(Channel):
    """One client: what is still to be sent to it, and how far it is in closing."""

    # One of these per client, touched on every message: slots keep it small
    # and its attribute lookups fast.
    __slots__ = ("server", "out", "wire", "wire_plain", "events", "open", "goodbye", "fin_sent", "peer_eof",
                 "deadline")

    def __init__(self, server: "SelectorServer", cid: ClientId, peer: str, sock: socket.socket,
                 transport: Transport):
        super().__init__(cid, peer, sock, transport)
        self.server = server
        # What the core queued and the transport has not yet seen: a list of
        # pieces, joined only when sent.  Appending a piece costs the same
        # whatever its size; appending to one growing bytearray would copy
        # every message, and reallocate it again and again.
        self.out: list[bytes] = []
        # Bytes ready for the socket that a send() did not take whole, and
        # how many of the core's bytes they stand for (with TLS they are
        # records: a little longer than the plaintext in them).
        self.wire: bytes | memoryview = b""
        self.wire_plain = 0
        self.events = 0  # what the selector watches this socket for (0: not registered)
        self.open = True  # the socket is open and in the server's table
        self.goodbye = False  # the transport's last words (close_notify) are queued
        self.fin_sent = False  # our side is shut: we wait for the peer's EOF
        self.peer_eof = False  # the peer closed its side
        self.deadline = 0.0  # (monotonic) when a closing connection is cut off

    def push(self, data: bytes) -> None:
        if not self.out:
            self.server.dirty.append(self)  # an empty buffer is not watched: flush it this turn
        self.out.append(data)

    def wake(self) -> None:
        self.server.dirty.append(self)

    def close_soon(self) -> None:
        self.deadline = time.monotonic() + LINGER  # to send what is queued
        self.server.closing.add(self)
        self.server.dirty.append(self)

    def abort(self) -> None:
        self.server.drop(self)


class SelectorServer(Shell):
    model = "selectors"

    def _start(self) -> None:
        self._begin()
        self.selector = selectors.DefaultSelector()
        self.dirty: list[SelectorChannel] = []  # buffers filled this turn, to send before the next wait
        self.closing: set[SelectorChannel] = set()  # connections with a deadline to watch
        self._accept_resume = 0.0  # (monotonic) when to accept again after a failure; 0: accepting
        self._accept_failures = 0
        self._stop_requested = False
        self._stop_timeout = 2.0
        self._done: deque[tuple[Work, Any]] = deque()  # work finished on a worker thread
        self._posted: deque[Callable[[float], list[Effect]]] = deque()  # events posted from other threads
        self._workers = Workers(self._work_done)
        # stop() and the workers run in other threads while the loop may be
        # asleep in select(): a byte on this socket pair wakes it.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        for sock, listener in self.sockets:
            sock.setblocking(False)
            self.selector.register(sock, READ, listener)
        self.selector.register(self._wake_r, READ)  # data None: not a client, not a listener
        self.start_loop(self._run)

    def make_channel(self, cid: ClientId, peer: str, sock: socket.socket, transport: Transport) -> Channel:
        sock.setblocking(False)
        channel = SelectorChannel(self, cid, peer, sock, transport)
        self._watch(channel)
        return channel

    def run_work(self, work: Work) -> None:
        self._workers.submit(work)

    def _work_done(self, work: Work, result: Any) -> None:
        # On the worker's thread: the loop takes the result when it next wakes.
        self._done.append((work, result))
        self._knock()

    def post(self, event: Callable[[float], list[Effect]]) -> None:
        # From another thread: the loop runs it when it next wakes, as it takes finished work.
        self._posted.append(event)
        self._knock()

    def _knock(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the loop has ended: nothing more to tell it

    def _stop(self, timeout: float) -> None:
        def ask() -> None:
            self._stop_timeout = timeout
            self._stop_requested = True
            self._knock()

        self.stop_loop(timeout, ask)
        self._workers.stop()

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
                if cut_at is not None and (not self.channels or time.monotonic() >= cut_at):
                    break
                if self._accept_resume and time.monotonic() >= self._accept_resume and cut_at is None:
                    self._accept_resume = 0.0
                    for sock, listener in self.sockets:
                        self.selector.register(sock, READ, listener)
                wake_at = min(t for t in (next_tick, cut_at, self._accept_resume) if t)
                for key, events in self.selector.select(max(0.0, wake_at - time.monotonic())):
                    channel = key.data
                    if isinstance(channel, Listener):
                        self._accept(key.fileobj, channel)  # type: ignore[arg-type]
                    elif channel is None:
                        self._wake_r.recv(4096)  # stop() knocked, or work is done
                        while self._done:
                            self.finished(*self._done.popleft())
                        while self._posted:
                            self.run_posted(self._posted.popleft())
                    elif channel.open:
                        try:
                            if events & READ:
                                self._read(channel)
                            if events & WRITE and channel.open:
                                self._flush(channel)
                        except Exception:
                            self.failed(channel)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK
                    self.tick()
                    self._cut_overdue()
        except Exception:
            log.exception("the selector loop failed; closing every connection")
        finally:
            for channel in list(self.channels.values()):
                self.drop(channel)  # type: ignore[arg-type]
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _begin_shutdown(self) -> None:
        if not self._accept_resume:
            for sock, _ in self.sockets:
                self.selector.unregister(sock)
        self._accept_resume = 0.0
        # Every client gets the core's "closing" notice, then a graceful
        # close; the loop gives them half the stop timeout to close their
        # side, then cuts the rest off.
        self.shutdown_core()

    # ------------------------------------------------------------- events

    def _accept(self, listener_sock: socket.socket, listener: Listener) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener_sock.accept()
            except (BlockingIOError, InterruptedError):
                break  # the backlog is empty
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as exc:
                # EMFILE ("too many open files") and friends.  The waiting
                # connection stays in the backlog, so the listener stays
                # readable: retrying at once would spin.  Stop watching the
                # listeners for a moment instead; clients here are still served.
                accept_error(exc, self._accept_failures)
                self._accept_failures += 1
                for sock_, _ in self.sockets:
                    self.selector.unregister(sock_)
                self._accept_resume = time.monotonic() + ACCEPT_PAUSE
                return
            if self._accept_failures:
                log.warning("accepting again, after %d failed attempts", self._accept_failures)
                self._accept_failures = 0
            self.admit(sock, address, listener)

    def _read(self, channel: SelectorChannel) -> None:
        try:
            # One recv() per ready socket per turn, as large as possible:
            # a busy sender is served in big bites, but cannot starve the
            # others (whatever is left makes it ready again next turn).
            data = channel.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # reset by the peer, or worse
            self._lost(channel, exc)
            return
        if data:
            self.received(channel, data)
            return
        # End of stream: the peer closed its side.
        channel.peer_eof = True
        if not channel.closing:
            self.ended(channel)
            self.close(channel)  # even if the core had nothing to say
        self.dirty.append(channel)  # the flush finishes the close (and stops the reading)

    def _flush(self, channel: SelectorChannel) -> None:
        """Send as much as the kernel takes; finish a close once all is gone."""
        if not channel.wire:
            # The last send went out whole: take everything queued since, in
            # one piece (one system call, fewer and fuller TCP segments).
            transport, out = channel.transport, channel.out
            wire = transport.output()
            if out:
                plain = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                data = transport.send(plain)
                wire = wire + data if wire else data
                channel.wire_plain = len(plain)
            elif channel.closing and not channel.goodbye:
                channel.goodbye = True
                wire = wire + transport.close()  # TLS: close_notify, after the last record
            channel.wire = wire
        if channel.wire:
            try:
                sent = channel.sock.send(channel.wire)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:  # reset, broken pipe: the peer is gone
                self._lost(channel, exc)
                return
            if sent < len(channel.wire):
                # The kernel's send buffer is full: keep the rest for when the
                # socket is writable again.  A memoryview slice shares the
                # bytes instead of copying them.
                channel.wire = memoryview(channel.wire)[sent:]
            else:
                channel.wire = b""
                channel.sent += channel.wire_plain
                channel.wire_plain = 0
        if channel.closing and channel.goodbye and not channel.wire and not channel.out:
            if not channel.fin_sent:
                # Graceful close: FIN after the last byte, then wait for the
                # peer's own FIN.  Closing at once, with bytes from the peer
                # still unread, would send a reset that can destroy the
                # goodbye we just sent.
                try:
                    channel.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the peer is already gone; the close below or the deadline ends it
                channel.fin_sent = True
                channel.deadline = time.monotonic() + LINGER
            if channel.peer_eof:
                self.drop(channel)  # both sides closed: done
                return
        elif channel.closing and not channel.wire and not channel.out:
            self.dirty.append(channel)  # the goodbye is still to go: next turn
        self._watch(channel)

    def _flush_dirty(self) -> None:
        # Flushing can lose a connection, whose departure queues a "left"
        # notice for others: keep going until nothing new was queued.
        while self.dirty:
            dirty, self.dirty = self.dirty, []
            for channel in dirty:
                if channel.open:
                    try:
                        self._flush(channel)
                    except Exception:
                        self.failed(channel)

    def _watch(self, channel: SelectorChannel) -> None:
        """Tell the selector what this socket is waiting for now."""
        # Read until the peer's EOF; wait for writability only while bytes
        # are waiting (a writable socket would otherwise wake us every turn).
        want = (0 if channel.peer_eof else READ) | (WRITE if channel.wire or channel.out else 0)
        if want == channel.events:
            return
        if not channel.events:
            self.selector.register(channel.sock, want, channel)
        elif not want:
            self.selector.unregister(channel.sock)
        else:
            self.selector.modify(channel.sock, want, channel)
        channel.events = want

    # ------------------------------------------------- endings, good and bad

    def drop(self, channel: SelectorChannel) -> None:
        """Close the socket now and remove every trace of the connection."""
        if not channel.open:
            return
        channel.open = False
        if channel.events:
            self.selector.unregister(channel.sock)
            channel.events = 0
        channel.sock.close()
        channel.out, channel.wire = [], b""  # let the queued bytes go now
        self.closing.discard(channel)
        self.forget(channel)

    def _lost(self, channel: SelectorChannel, exc: BaseException) -> None:
        """The peer reset the connection or vanished."""
        if not channel.closing:
            self.lost(channel, exc)
        self.drop(channel)
        self.ended(channel)

    def _cut_overdue(self) -> None:
        # Checked on each tick, so a deadline may be overshot by up to TICK:
        # cheaper than keeping every deadline in order, and the exact moment
        # of giving up on a silent peer does not matter.
        now = time.monotonic()
        for channel in [c for c in self.closing if now >= c.deadline]:
            what = "close its side" if channel.fin_sent else f"take its last {channel.queued} bytes"
            log.info("%s: did not %s within %.0f s; closing anyway", channel.peer, what, LINGER)
            self.drop(channel)
