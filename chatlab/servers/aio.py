"""The ``asyncio`` server: the event loop, written as if each client had a thread.

``selector.py`` shows what an event loop is: one thread asks the kernel which
sockets are ready and serves each a little, never blocking.  It answers the
C10k problem (ten thousand clients without ten thousand threads), but the
code is turned inside out: a client's story is scattered over callbacks and
flags ("is it closing? did we send the FIN?").

asyncio runs that same loop for you (on Linux it is built on ``selectors``
and ``epoll``) and gives the straight-line style back: a *coroutine* reads
like a thread's code, but every ``await`` is a point where it steps aside
and the loop serves someone else.  Thousands of coroutines cost far less
than thousands of threads, and since only one runs at a time, the chat core
needs no lock -- but a coroutine that runs long without awaiting stalls
everybody (so slow work, like a password check, goes to a worker thread:
``run_in_executor``).

One task per port accepts connections (``threads.py`` has an accept
thread) and each client gets two tasks, as in ``threads.py`` it gets two
threads:

* a **reader**, ``await reader.read()`` in a loop, which hands the bytes to
  the chat core and applies its effects at once;
* a **writer**, which drains that client's own queue: it joins everything
  queued into one ``write()``, then ``await drain()`` -- the point where it
  waits while the client is not reading.

Why a writer task, and not ``write()`` + ``await drain()`` in the broadcast?
A broadcast that awaited each peer's ``drain()`` in turn would wait for the
slowest reader in the room: one closed laptop lid would freeze everyone.
Here a broadcast only *appends* to each queue, which never waits; a client
whose queue would pass ``limits.outbox_bytes`` is dropped as too slow (shell.py).

Waking a task costs a turn of the loop, so a writer that has nothing to do
is not woken for a message at all.  What is queued for it this turn is
handed, once the turn's callbacks have run, straight to the client's
transport, whose ``write()`` never waits either -- it sends what the kernel
takes at once and keeps the rest; only then is the writer woken, to
``drain()`` what the transport kept.  One flush per turn, not one write per
message: with a hundred clients talking at once, everything one turn
brought for a client goes in one system call (``selector.py`` flushes the
same way; ``threads.py`` writes through with a send that may not block).

What an idle client costs is what it holds while it waits: two suspended
tasks, a stream pair, a future for each to wait on -- about 8 KB, against
a thread's stack of many times that.  Nothing more is kept while it waits
(not even the last message sent: docs/performance.md measured it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any, Callable

from ..effects import ClientId, Effect, Work
from ..transport import PLAIN, Transport
from .base import Listener
from .shell import ACCEPT_BATCH, ACCEPT_PAUSE, LINGER, RECV_SIZE, TICK, Channel, Shell, Workers, accept_error

log = logging.getLogger("chatlab.server")


class TaskChannel(Channel):
    """One client: its stream, its outbound queue, and the tasks that serve it."""

    __slots__ = ("server", "reader", "writer", "queue", "held", "wakeup", "peer_closed")

    def __init__(self, server: "AsyncioServer", cid: ClientId, peer: str, sock: socket.socket,
                 transport: Transport):
        super().__init__(cid, peer, sock, transport)
        self.server = server
        # The streams, once the reader task has made them (see AsyncioServer._serve).
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.queue: list[bytes] = []  # queued for this client, not yet written
        self.held = 0  # bytes written straight to the transport that it still holds (push)
        # The writer's wake-up call: a future it awaits while it has nothing
        # to send, and the reader's news that the peer closed its side.  (An
        # asyncio.Event would do as well, with a queue of waiters each: at
        # ten thousand idle clients, plain futures are a kilobyte each less.)
        self.wakeup: asyncio.Future[None] | None = None
        self.peer_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def push(self, data: bytes) -> None:
        if not self.queue:
            if self.idle():
                self.server.flush_soon(self)  # written through at the end of this turn
            else:
                self.wake()
        self.queue.append(data)

    def idle(self) -> bool:
        """Its writer waits with nothing to send, on a plain connection.

        (TLS encrypts in one place, in order: the writer.)
        """
        return (self.wakeup is not None and not self.wakeup.done() and not self.held
                and self.transport is PLAIN and self.writer is not None and not self.writer.transport.is_closing())

    def write_through(self) -> None:
        """Hand what is queued to the transport, without waking the writer unless the kernel left some."""
        if not self.queue:
            return  # the writer took it meanwhile
        if not self.idle():
            self.wake()
            return
        assert self.writer is not None
        data, self.queue = b"".join(self.queue), []
        self.writer.write(data)
        self.held = self.writer.transport.get_write_buffer_size()
        self.sent += len(data) - self.held
        if self.held:
            self.wake()  # the writer drains the rest, and counts it sent then

    def wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    def close_soon(self) -> None:
        self.wake()  # the writer sends what is queued, then closes

    def abort(self) -> None:
        self.queue.clear()
        # abort() closes at once, however much the transport still holds
        # (close() would wait to send it -- forever, to a client not reading).
        if self.writer is not None:
            self.writer.transport.abort()
        else:
            self.sock.close()  # cut off before its streams were made
        self.wake()


class AsyncioServer(Shell):
    model = "asyncio"

    def _start(self) -> None:
        self._begin()
        self._dirty: list[TaskChannel] = []  # channels with a queue to write through this turn
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._workers = Workers(self._work_done)
        self.start_loop(self._run)
        self._ready.wait()
        if self._startup_error is not None:
            self._workers.stop()
            raise self._startup_error

    def _stop(self, timeout: float) -> None:
        def ask() -> None:
            try:
                # The loop is not thread-safe: ask it, from this thread, to stop itself.
                self._loop.call_soon_threadsafe(self._request_stop, timeout)
            except RuntimeError:
                pass  # the loop has ended on its own

        self.stop_loop(timeout, ask)
        self._workers.stop()

    def make_channel(self, cid: ClientId, peer: str, sock: socket.socket, transport: Transport) -> Channel:
        return TaskChannel(self, cid, peer, sock, transport)

    def flush_soon(self, channel: TaskChannel) -> None:
        """Write ``channel``'s queue through once this turn of the loop has run its callbacks."""
        self._dirty.append(channel)
        if len(self._dirty) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for channel in dirty:
            channel.write_through()

    def run_work(self, work: Work) -> None:
        self._workers.submit(work)

    def post(self, event: Callable[[float], list[Effect]]) -> None:
        # The loop is not thread-safe: it is asked to run the event itself.
        try:
            self._loop.call_soon_threadsafe(self.run_posted, event)
        except RuntimeError:
            pass  # the loop has ended

    def _work_done(self, work: Work, result: Any) -> None:
        # On the worker's thread: the loop is not thread-safe, so it is asked
        # to take the result itself.
        try:
            self._loop.call_soon_threadsafe(self.finished, work, result)
        except RuntimeError:
            pass  # the loop has ended

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                log.exception("the asyncio loop failed")
        finally:
            self._ready.set()
            # Anything still running (it should not be) is cancelled, so
            # that no task outlives the loop it belongs to.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._stop_timeout = 2.0
        self._shutting_down = False
        self._serving: set[asyncio.Task[None]] = set()  # one reader task per client
        accepting = [asyncio.create_task(self._accept(sock, listener), name=f"chatlab-accept-{listener.name}")
                     for sock, listener in self.sockets]
        ticker = asyncio.create_task(self._tick(), name="chatlab-tick")
        self._ready.set()
        await self._stopping.wait()

        # Stop accepting, tell every client, and give them half the timeout
        # to close their side; then cut off the rest.
        self._shutting_down = True
        for task in (*accepting, ticker):
            task.cancel()
        self.shutdown_core()
        half = self._stop_timeout / 2
        if self._serving:
            _, pending = await asyncio.wait(self._serving, timeout=half)
            for channel in list(self.channels.values()):
                channel.abort()
            if pending:
                await asyncio.wait(pending, timeout=max(0.1, half - 0.3))

    def _request_stop(self, timeout: float) -> None:
        self._stop_timeout = timeout
        self._stopping.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports here what no task could catch.
        log.error("asyncio: %s", context.get("message"), exc_info=context.get("exception"))

    async def _accept(self, listener_sock: socket.socket, listener: Listener) -> None:
        """Accept connections and start a reader task for each.

        ``asyncio.start_server()`` would do this for us, but written out it
        shows what an event-loop server does, and it can survive running out
        of file descriptors gracefully: Python 3.11's own accept loop, after
        EMFILE, logs and reschedules itself up to 100 times per attempt
        (CPython issue gh-151615).
        """
        loop = asyncio.get_running_loop()
        listener_sock.setblocking(False)
        failures = 0
        while True:
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, address = await loop.sock_accept(listener_sock)
                except ConnectionAbortedError:
                    continue  # the client gave up while waiting in the backlog
                except OSError as exc:
                    # EMFILE ("too many open files") and friends.  The waiting
                    # connection stays in the backlog, so retrying at once
                    # would spin: pause; clients already here are still served.
                    accept_error(exc, failures)
                    failures += 1
                    await asyncio.sleep(ACCEPT_PAUSE)
                    break
                if failures:
                    log.warning("accepting again, after %d failed attempts", failures)
                    failures = 0
                task = asyncio.create_task(self._serve(sock, address, listener))
                # The loop keeps only weak references to tasks: hold on to
                # each until it is done, or it could vanish mid-conversation.
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)
            # When connections are already waiting, sock_accept() returns
            # without ever pausing; yield now and then so the chat goes on.
            await asyncio.sleep(0)

    # ------------------------------------------------------ one connection

    async def _serve(self, sock: socket.socket, address: Any, listener: Listener) -> None:
        """The reader task: one per client, from accept to the end of its connection."""
        if self._shutting_down:  # accepted just before the stop
            sock.close()
            return
        channel = self.admit(sock, address, listener)
        if channel is None:
            return  # turned away at the door
        assert isinstance(channel, TaskChannel)
        try:
            # Streams over a socket that is already connected: ours came from accept().
            reader, writer = await asyncio.open_connection(sock=sock, limit=RECV_SIZE)
        except OSError as exc:
            self.lost(channel, exc)
            sock.close()
            self.ended(channel)
            self.forget(channel)
            return
        channel.reader, channel.writer = reader, writer
        if channel.dropped:  # cut off while the streams were made
            writer.transport.abort()
            self.forget(channel)
            return
        # With no high-water mark, drain() waits until the transport has handed
        # every byte to the kernel: what is counted as sent, has been.
        writer.transport.set_write_buffer_limits(high=0)
        writing = asyncio.create_task(self._write(channel), name=f"chatlab-writer-{channel.id}")
        reason = "disconnected"
        try:
            while data := await reader.read(RECV_SIZE):
                self.received(channel, data)
        except OSError as exc:  # reset by the peer, or worse
            if not channel.dropped:
                self.lost(channel, exc)
        except Exception:
            self.failed(channel)  # a bug while serving one client: that client alone
            reason = "server_error"
        finally:
            if not channel.peer_closed.done():
                channel.peer_closed.set_result(None)
            try:
                self.ended(channel, reason)  # nothing if the core closed it first
            except Exception:
                log.exception("%s: the core failed to forget it", channel.peer)
            if not channel.closing:
                channel.closing = True
                channel.close_soon()
            try:
                await writing
            finally:
                writer.transport.abort()  # a no-op if the writer closed it
                self.forget(channel)

    async def _write(self, channel: TaskChannel) -> None:
        """The writer task: send what is queued, whole; on Close, close gracefully."""
        writer, transport = channel.writer, channel.transport
        assert writer is not None
        try:
            while not channel.dropped:
                if channel.queue or channel.held or transport.wants_to_write:
                    # Everything queued since the last write goes as one: one
                    # system call, and fewer, fuller TCP segments.
                    plain, channel.queue = b"".join(channel.queue), []
                    held, channel.held = channel.held, 0
                    if plain or transport.wants_to_write:
                        writer.write(transport.output() + transport.send(plain) if plain else transport.output())
                    # Waits only while this client is not reading: only
                    # this client's writer waits, nobody else.
                    await writer.drain()
                    channel.sent += held + len(plain)
                    del plain  # not kept while the writer waits: an idle client would hold its last message
                elif channel.closing:
                    await self._close_gracefully(channel)
                    return
                else:
                    channel.wakeup = asyncio.get_running_loop().create_future()
                    await channel.wakeup
                    channel.wakeup = None
        except OSError:
            pass  # the peer went away; the reader task notices
        finally:
            writer.transport.abort()

    @staticmethod
    async def _close_gracefully(channel: TaskChannel) -> None:
        writer = channel.writer
        assert writer is not None
        try:
            if goodbye := channel.transport.close():  # TLS: close_notify
                writer.write(goodbye)
            await asyncio.wait_for(writer.drain(), LINGER)
            # FIN after the last byte, then wait for the peer's own FIN.
            # Closing at once, with bytes from the peer still unread, would
            # send a reset that can destroy the goodbye we just sent.
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(channel.peer_closed, LINGER)
        except asyncio.TimeoutError:
            log.info("%s: did not take its last bytes or close its side within %.0f s; closing anyway",
                     channel.peer, LINGER)
