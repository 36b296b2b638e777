"""The shell: what every server model does around the chat core, however it waits.

The chat core (core.py) decides; a server's *shell* carries out its
decisions on real sockets.  Most of that is the same for every model, and
lives here, once:

* **admission**: a new connection's socket options, the core's verdict,
  and a refusal at the door written without ever making the connection a
  client (``turn_away``);
* **applying effects**: ``Send`` appends to each recipient's outbox, within
  ``limits.outbox_bytes`` -- a client whose outbox would pass it is
  dropped as too slow, never waited for -- and consecutive sends to
  the same recipients (a burst: all that one ``recv()`` brought) are
  appended as one piece; ``Close`` starts a graceful close; ``Work`` goes
  to ``run_work``;
* **the transport** of each connection (plain, or TLS: transport.py), with
  the handshake's deadline;
* **the tick**: the core hears the time every ``TICK`` seconds.

What is left to a model (threads.py, selector.py, aio.py) is only *how it
waits*: for connections, for bytes, for a socket that can take more, for
work done elsewhere.  A model subclasses ``Shell`` and ``Channel`` and fills
in the few methods marked below.  Diff two models and you see two ways of
waiting, and nothing else.

How much is "queued" for a client?  Everything the core gave it that the
kernel has not yet taken: bytes in its outbox *and* bytes a writer has
taken but not yet handed to ``send()``.  Counting only the first would let
a client that never reads hold twice the limit.  The shell counts what it
queues (``pushed``), the model what the kernel took (``sent``); each
counter is written by one thread at a time, so no lock is needed between
a thread that queues and a thread that sends.
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
from typing import Any, Callable

from ..effects import ClientId, Close, Effect, Send, Work
from ..transport import PLAIN, TLS, Transport
from .base import BaseServer, Listener, format_address

log = logging.getLogger("chatlab.server")

RECV_SIZE = 65536  # bytes asked of one recv(): one system call can bring many messages
LINGER = 2.0  # seconds for a closing peer to take our last bytes, and then to close its side
TICK = 0.5  # seconds between calls to core.tick()
ACCEPT_BATCH = 64  # connections accepted per turn: a flood of joins cannot starve the chat
ACCEPT_PAUSE = 0.1  # seconds without accepting after accept() failed (e.g. out of file descriptors)
WORKERS = 2  # threads for Work (password checks, history commits) in the event-loop models


class Channel:
    """One client connection as the shell sees it: its socket, its transport, what waits for it."""

    __slots__ = ("id", "peer", "sock", "transport", "pushed", "sent", "closing", "dropped")

    def __init__(self, cid: ClientId, peer: str, sock: socket.socket, transport: Transport):
        self.id, self.peer, self.sock, self.transport = cid, peer, sock, transport
        self.pushed = 0  # bytes the shell has queued for it, in all (written by the shell)
        self.sent = 0  # of those, bytes the kernel has taken (written by the model)
        self.closing = False  # the core said Close: send what is queued, then FIN
        self.dropped = False  # cut off (too slow, a failed transport): nothing more is sent

    @property
    def queued(self) -> int:
        """Bytes queued for it that the kernel has not taken yet."""
        return self.pushed - self.sent

    # What each model provides: how bytes wait, and how a writer is woken.

    def push(self, data: bytes) -> None:
        """Queue ``data`` (plaintext; the shell has counted it in ``pushed``) and see that it is sent."""
        raise NotImplementedError

    def wake(self) -> None:
        """The transport has bytes of its own to write (a handshake's answer)."""
        raise NotImplementedError

    def close_soon(self) -> None:
        """Send what is queued, then the transport's goodbye, then FIN; wait (LINGER) for the peer's."""
        raise NotImplementedError

    def abort(self) -> None:
        """Cut the connection now, dropping whatever is queued."""
        raise NotImplementedError


class Shell(BaseServer):
    """The policy every model shares.  Its methods run wherever the model serialises the core."""

    def _begin(self) -> None:
        """Set up the shell's state (each model calls this from ``_start``)."""
        self.channels: dict[ClientId, Channel] = {}
        self._ids = itertools.count(1)
        self._handshaking: dict[ClientId, Channel] = {}  # TLS handshakes under way

    # What each model provides.

    def make_channel(self, cid: ClientId, peer: str, sock: socket.socket, transport: Transport) -> Channel:
        raise NotImplementedError

    def run_work(self, work: Work) -> None:
        """Run ``work.job()`` away from the chat, then ``self.finished(work, result)`` where the core may be called."""
        raise NotImplementedError

    def post(self, event: Callable[[float], list[Effect]]) -> None:
        """From any thread: have ``event(now)`` called where the core may be called, and apply its effects.

        This is how something that lives on a thread of its own -- a shared
        chat's reader of Redis streams (chatlab/backplane/) -- hands what it
        learnt to the core without ever touching it from the wrong thread.
        """
        raise NotImplementedError

    def run_posted(self, event: Callable[[float], list[Effect]]) -> None:
        """Call a posted event (on the core's thread) and apply its effects."""
        try:
            effects = event(time.monotonic())
        except Exception:
            log.exception("a posted event failed")
            return
        self.apply(effects)

    # -------------------------------------------------------------- arrivals

    def admit(self, sock: socket.socket, address: Any, listener: Listener) -> Channel | None:
        """A connection was accepted on ``listener``: its channel, or None if it was turned away."""
        # Chat messages are small and someone is waiting for each one:
        # turn off Nagle's algorithm, which would hold a small write back
        # until the previous one is acknowledged.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # reset already; the first read will tell
        cid, peer, now = next(self._ids), format_address(address), time.monotonic()
        try:
            effects = self.core.connect(cid, peer, now, listener.dialect(self.limits))
        except Exception:
            log.exception("%s: unexpected error on connect; closing it", peer)
            sock.close()
            return None
        if any(type(e) is Close and e.client == cid for e in effects):
            turn_away(sock, b"".join(e.data for e in effects if type(e) is Send))
            return None
        # A refusal goes in clear (above); a client that is let in on a TLS
        # port must first complete a handshake: the banner waits in the transport.
        transport: Transport = PLAIN
        if listener.tls is not None:
            transport = TLS(listener.tls, now, peer, self.tls_handshake_timeout)
        channel = self.make_channel(cid, peer, sock, transport)
        self.channels[cid] = channel
        if transport is not PLAIN:
            self._handshaking[cid] = channel
        self.apply(effects)
        return channel

    # ----------------------------------------------------------------- bytes

    def received(self, channel: Channel, raw: bytes) -> None:
        """Bytes arrived on ``channel``: through its transport to the core, and the core's answer out."""
        self.deliver(channel, self.unwrap(channel, raw))

    def unwrap(self, channel: Channel, raw: bytes) -> bytes | None:
        """Raw bytes through the channel's transport: the plaintext (None: the transport failed).

        This part needs no core, so the thread-per-client model runs it
        (decrypting TLS) outside the lock that serialises the core.
        """
        if channel.closing or channel.dropped:
            return b""  # after Close, late bytes are read and dropped
        transport = channel.transport
        plain = transport.receive(raw)
        if transport.failure is not None:
            return None
        if transport.wants_to_write:
            channel.wake()
        return plain

    def deliver(self, channel: Channel, plain: bytes | None) -> None:
        """Plaintext (from ``unwrap``) to the core, and the core's answer out."""
        if plain is None:
            self.transport_failed(channel)
            return
        if channel.transport.deadline is None and self._handshaking:
            self._handshaking.pop(channel.id, None)  # secured (or never needed it)
        if plain:
            self.apply(self.core.receive(channel.id, plain, time.monotonic()))

    def ended(self, channel: Channel, reason: str = "disconnected") -> None:
        """The peer closed its side, or the connection broke: the core forgets the client."""
        self._handshaking.pop(channel.id, None)
        self.apply(self.core.disconnect(channel.id, reason, time.monotonic()))

    def forget(self, channel: Channel) -> None:
        """The model has closed the channel's socket: nothing of it is kept."""
        self.channels.pop(channel.id, None)
        self._handshaking.pop(channel.id, None)

    def lost(self, channel: Channel, exc: BaseException) -> None:
        """The peer reset the connection or vanished (``exc``: how the model learnt it).

        Only detail for the log: the core tells the close, with its reason,
        at INFO for a registered client -- one line per person, never one per
        socket of a connect flood.
        """
        log.debug("%s: connection lost: %s", channel.peer, exc)

    def transport_failed(self, channel: Channel) -> None:
        """Plain text on a TLS port, a failed or stalled handshake: log it, say what the transport says, hang up."""
        log.warning("%s: %s; closing", channel.peer, channel.transport.failure)
        self._handshaking.pop(channel.id, None)
        self.apply(self.core.disconnect(channel.id, "disconnected", time.monotonic()))
        self.close(channel)  # the hint (or TLS alert) goes out, then FIN

    def close(self, channel: Channel) -> None:
        """Close gracefully: what is queued, the transport's goodbye, then FIN."""
        if not channel.closing and not channel.dropped:
            channel.closing = True
            channel.close_soon()

    def failed(self, channel: Channel) -> None:
        """A bug while serving one client: log it, drop that client alone, keep serving the rest."""
        log.exception("%s: unexpected error; dropping this client", channel.peer)
        channel.dropped = True
        channel.abort()
        try:
            self.apply(self.core.disconnect(channel.id, "server_error", time.monotonic()))
        except Exception:
            log.exception("%s: the core failed to forget it", channel.peer)

    # --------------------------------------------------------------- effects

    def apply(self, effects: list[Effect]) -> None:
        """Do what the core said, in its order: queue bytes, start closes, hand out work."""
        channels, limit = self.channels, self.limits.outbox_bytes
        too_slow: list[Channel] = []
        at, end = 0, len(effects)
        while at < end:
            effect = effects[at]
            at += 1
            if type(effect) is Send:
                # The hot path.  A broadcast arrives encoded once, with every
                # recipient in ``to``; and the messages of one burst (all
                # that one recv() brought) follow each other to the same
                # recipients: they are queued as one piece.  Per recipient,
                # one check and one append for the whole burst.
                to, pieces = effect.to, [effect.data]
                while at < end and isinstance(after := effects[at], Send) and after.to == to:
                    pieces.append(after.data)
                    at += 1
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                size = len(data)
                for cid in to:
                    channel = channels.get(cid)
                    if channel is None or channel.dropped:
                        continue  # gone already
                    if limit and channel.pushed - channel.sent + size > limit:
                        log.warning("%s: too slow: %d bytes already queued, %d more would pass the limit of %d; "
                                    "disconnecting", channel.peer, channel.queued, size, limit)
                        channel.dropped = True
                        channel.abort()
                        too_slow.append(channel)
                        continue
                    channel.pushed += size
                    channel.push(data)
            elif type(effect) is Close:
                channel = channels.get(effect.client)
                if channel is not None:
                    self.close(channel)
            else:
                assert type(effect) is Work
                self.run_work(effect)
        # The core learns of a slow client after the whole list is applied,
        # so its "left" notice follows every message it had already ordered.
        for channel in too_slow:
            self.apply(self.core.disconnect(channel.id, "too_slow", time.monotonic()))

    def finished(self, work: Work, result: Any) -> None:
        """Work is done (on the model's own thread): the core takes the result."""
        self.apply(self.core.finished(work, result, time.monotonic()))

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Every TICK seconds: the core's clocks, and TLS handshakes past their deadline."""
        now = time.monotonic()
        try:
            self.apply(self.core.tick(now))
        except Exception:  # the clock must keep running whatever happens
            log.exception("the chat core's tick failed")
        for channel in [c for c in self._handshaking.values()
                        if c.transport.deadline is not None and now >= c.transport.deadline]:
            assert isinstance(channel.transport, TLS)
            channel.transport.expire(self.tls_handshake_timeout)
            self.transport_failed(channel)

    def shutdown_core(self) -> None:
        """Stopping: the core tells every client and closes every connection."""
        self.apply(self.core.shutdown(time.monotonic()))

    # ------------------------------------------- a loop on a thread of its own

    def start_loop(self, run: Callable[[], None]) -> None:
        """Run an event loop on a thread of its own: a notebook or the command
        line starts the server from its main thread, and must get it back."""
        self._stop_lock = threading.Lock()
        self._loop_thread = threading.Thread(target=run, name=f"chatlab-{self.model}", daemon=True)
        self._loop_thread.start()

    def stop_loop(self, timeout: float, ask: Callable[[], None]) -> None:
        """``ask`` the loop (from another thread) to stop itself; wait for it, within ``timeout``."""
        with self._stop_lock:  # a second stop() waits for the first, then finds nothing to do
            if not self._loop_thread.is_alive():
                return
            if threading.current_thread() is self._loop_thread:
                raise RuntimeError("stop() called from inside the server's own loop")
            ask()
            self._loop_thread.join(timeout)
            if self._loop_thread.is_alive():
                log.error("the %s loop did not stop within %.1f s", self.model, timeout)


def run_job(work: Work) -> Any:
    """``work.job()``, or the exception it raised (the core is told either way)."""
    try:
        return work.job()
    except Exception as exc:
        log.exception("%s failed", work.what)
        return exc


class Workers:
    """A few threads that an event-loop model hands its ``Work`` to.

    Started with the server and stopped with it, so that a server's threads
    are the same in number from start to stop, however much work comes.
    ``done(work, result)`` is called on the worker's thread: it must hand
    the result to the loop, not call the core.  ``ordered`` work has a
    thread of its own, which runs it one job at a time in the order given
    (two threads taking jobs from one queue could finish them in any order).
    """

    def __init__(self, done: Callable[[Work, Any], None], count: int = WORKERS):
        self._jobs: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._ordered: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._done = done
        self._threads = [threading.Thread(target=self._serve, args=(self._jobs,), name=f"chatlab-work-{i}",
                                          daemon=True) for i in range(count)]
        self._threads.append(threading.Thread(target=self._serve, args=(self._ordered,), name="chatlab-work-ordered",
                                              daemon=True))
        for thread in self._threads:
            thread.start()

    def submit(self, work: Work) -> None:
        (self._ordered if work.ordered else self._jobs).put(work)

    def _serve(self, jobs: "queue.SimpleQueue[Work | None]") -> None:
        while (work := jobs.get()) is not None:
            self._done(work, run_job(work))

    def stop(self, timeout: float = 2.0) -> None:
        """Finish the work already given (a last history commit), then end the threads."""
        for _ in self._threads[:-1]:
            self._jobs.put(None)
        self._ordered.put(None)
        for thread in self._threads:
            thread.join(timeout)


def turn_away(sock: socket.socket, refusal: bytes) -> None:
    """A connection refused at the door (server full, a flood) costs one write and a close.

    The one-line refusal fits in the socket's send buffer, so it is written
    without waiting, and the socket closed at once: no thread, no task, no
    buffer is spent on it.
    """
    sock.setblocking(False)
    try:
        sock.send(refusal)
        sock.shutdown(socket.SHUT_WR)
        # Read what the client may have sent already: closing a socket with
        # unread bytes sends a reset, which can destroy the refusal.
        while sock.recv(RECV_SIZE):
            pass
    except OSError:
        pass  # would block, or the client is gone: nothing more to do for it
    sock.close()


def accept_error(exc: OSError, failures: int) -> None:
    """Log a failed accept() (EMFILE: out of file descriptors) once per run of failures."""
    if not failures:
        log.error("accept failed: %s; pausing accepts for %.1f s at a time", exc, ACCEPT_PAUSE)
