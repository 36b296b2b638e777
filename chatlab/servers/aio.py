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
everybody.

One task accepts connections (``threads.py`` has an accept thread) and
each client gets two tasks, as in ``threads.py`` it gets two threads:

* a **reader**, ``await reader.read()`` in a loop, which hands the bytes to
  the chat core and applies its effects at once;
* a **writer**, which drains that client's own bounded queue: it joins
  everything queued into one ``write()``, then ``await drain()`` -- the
  point where it waits while the client is not reading.

Why a writer task, and not ``write()`` + ``await drain()`` in the broadcast?
A broadcast that awaited each peer's ``drain()`` in turn would wait for the
slowest reader in the room: one closed laptop lid would freeze everyone.
Here a broadcast only *appends* to each queue, which never waits; a client
whose queue would pass ``limits.outbox_bytes`` is dropped as too slow.

**TLS in an event loop.**  ``threads.py`` runs the TLS handshake as a
blocking call on the reader thread.  Blocking here would stop the loop and
every client with it, for as long as the slowest client takes to answer.
So the reader task runs the handshake itself, awaiting each flight from the
client: while one client thinks, the loop serves the others.  The bytes go
through the same sans-IO ``TLSLayer`` (``tls.py``) as in the other models:
raw bytes in, plaintext out to the core; the writer task encrypts what it
sends, and waits (like the writer thread) until the handshake is done, so
the banner never goes out in clear.  asyncio has TLS of its own
(``loop.start_tls``), but it reads the client's first bytes itself: to
answer plain text with the hint we would have to peek at them first
(``MSG_PEEK``), and the three models would no longer share one TLS code.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

from ..core import Close, Effect, Send
from ..tls import PLAIN_TEXT_HINT, NotTLS, TLSLayer, looks_like_tls
from .base import BaseServer, format_address

log = logging.getLogger("chatlab.server")

RECV_SIZE = 65536  # bytes asked of one read(): one system call can bring many messages
LINGER = 2.0  # seconds for a closing peer to take our last bytes, and then to close its side
TICK = 0.5  # seconds between calls to core.tick()
ACCEPT_BATCH = 64  # connections accepted before letting others run: a flood of joins cannot starve the chat
ACCEPT_PAUSE = 0.1  # seconds without accepting after accept() failed (e.g. out of file descriptors)


class Connection:
    """One client: its stream, its outbound queue, and the tasks that serve it."""

    def __init__(self, cid: int, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tls: ssl.SSLContext | None = None):
        self.id, self.peer = cid, peer
        self.reader, self.writer = reader, writer
        # With TLS, the writer task waits for ``secured``: nothing is written
        # until the reader task has finished the handshake.
        self.tls = TLSLayer(tls, server_side=True) if tls is not None else None
        self.secured = asyncio.Event()
        self.queue: deque[bytes] = deque()  # queued for this client, not yet written
        self.size = 0  # bytes in the queue
        self.has_data = asyncio.Event()  # wakes the writer task
        self.closing = False  # the core said Close: send what is queued, then FIN
        self.dropped = False  # cut off (too slow): nothing more is sent
        self.peer_closed = asyncio.Event()  # the reader saw the end of the stream

    def close_soon(self) -> None:
        """No more data will come: the writer sends what is queued, then closes."""
        self.closing = True
        self.has_data.set()

    def drop(self) -> None:
        """Cut the connection now, discarding what is queued."""
        self.dropped = True
        self.queue.clear()
        self.size = 0
        # abort() closes at once, however much the transport still holds
        # (close() would wait to send it -- forever, to a client not reading).
        self.writer.transport.abort()
        self.close_soon()


class AsyncioServer(BaseServer):
    model = "asyncio"
    supports_tls = True

    def _start(self) -> None:
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._stop_lock = threading.Lock()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        # A notebook or the command line starts the server from the main
        # thread and must get it back at once: the loop gets a thread of its own.
        self._thread = threading.Thread(target=self._run, name="chatlab-asyncio", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def _stop(self, timeout: float) -> None:
        with self._stop_lock:  # a second stop() waits for the first, then finds nothing to do
            if not self._thread.is_alive():
                return
            if threading.current_thread() is self._thread:
                raise RuntimeError("stop() called from inside the server's own loop")
            try:
                # The loop is not thread-safe: ask it, from this thread, to stop itself.
                self._loop.call_soon_threadsafe(self._request_stop, timeout)
            except RuntimeError:
                pass  # the loop has ended on its own
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the asyncio loop did not stop within %.1f s", timeout)

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
        self._serving: set[asyncio.Task] = set()  # one reader task per client
        self.listener.setblocking(False)  # type: ignore[union-attr]
        accepting = asyncio.create_task(self._accept(), name="chatlab-accept")
        ticker = asyncio.create_task(self._tick(), name="chatlab-tick")
        self._ready.set()
        await self._stopping.wait()

        # Stop accepting, tell every client, and give them half the timeout
        # to close their side; then cut off the rest.
        self._shutting_down = True
        accepting.cancel()
        ticker.cancel()
        self._apply(self.core.shutdown(time.time()))
        half = self._stop_timeout / 2
        if self._serving:
            _, pending = await asyncio.wait(self._serving, timeout=half)
            for conn in list(self.connections.values()):
                conn.drop()
            if pending:
                await asyncio.wait(pending, timeout=max(0.1, half - 0.3))

    def _request_stop(self, timeout: float) -> None:
        self._stop_timeout = timeout
        self._stopping.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._apply(self.core.tick(time.time()))
            except Exception:
                log.exception("the chat core's tick failed")

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports here what no task could catch.
        log.error("asyncio: %s", context.get("message"), exc_info=context.get("exception"))

    async def _accept(self) -> None:
        """Accept connections and start a reader task for each.

        ``asyncio.start_server()`` would do this for us, but written out it
        shows what an event-loop server does, and it can survive running out
        of file descriptors gracefully: Python 3.11's own accept loop, after
        EMFILE, logs and reschedules itself up to 100 times per attempt
        (CPython issue gh-151615).
        """
        loop = asyncio.get_running_loop()
        while True:
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, address = await loop.sock_accept(self.listener)  # type: ignore[arg-type]
                except ConnectionAbortedError:
                    continue  # the client gave up while waiting in the backlog
                except OSError as exc:
                    # EMFILE ("too many open files") and friends.  The waiting
                    # connection stays in the backlog, so retrying at once
                    # would spin: pause; clients already here are still served.
                    log.error("accept failed: %s; not accepting for %.1f s", exc, ACCEPT_PAUSE)
                    await asyncio.sleep(ACCEPT_PAUSE)
                    break
                task = asyncio.create_task(self._serve(sock, address))
                # The loop keeps only weak references to tasks: hold on to
                # each until it is done, or it could vanish mid-conversation.
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)
            # When connections are already waiting, sock_accept() returns
            # without ever pausing; yield now and then so the chat goes on.
            await asyncio.sleep(0)

    # ------------------------------------------------------ one connection

    async def _serve(self, sock: socket.socket, address: Any) -> None:
        """The reader task: one per client, from accept to the end of its connection."""
        if self._shutting_down:  # accepted just before the stop
            sock.close()
            return
        # Chat messages are small and someone is waiting for each: no Nagle
        # delay (holding a small write until the last is acked).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # Streams over a socket that is already connected: ours came from accept().
            reader, writer = await asyncio.open_connection(sock=sock, limit=RECV_SIZE)
        except OSError as exc:
            log.info("%s: connection lost: %s", format_address(address), exc)
            sock.close()
            return
        conn = Connection(next(self._ids), format_address(address), reader, writer, self.tls)
        self.connections[conn.id] = conn
        writing = asyncio.create_task(self._write(conn), name=f"chatlab-writer-{conn.id}")
        reason = "disconnected"
        try:
            effects = self.core.connect(conn.id, conn.peer, time.time())
            if conn.tls is not None and any(type(e) is Close and e.client == conn.id for e in effects):
                # Refused at the door (server full, a flood): as in threads.py,
                # the one-line refusal goes in clear, and no handshake -- the
                # costly part of TLS -- is spent on a client that will not be
                # served.  (No await since the writer task was created: it has
                # not run yet, and will see a plain connection.)
                conn.tls = None
            self._apply(effects)
            if conn.tls is not None:
                await self._secure(conn)
            while data := await reader.read(RECV_SIZE):
                if conn.closing:
                    continue  # after Close, late bytes are read and dropped
                if conn.tls is not None:
                    data = conn.tls.receive(data)  # the plaintext these records completed, if any
                if data:
                    self._apply(self.core.receive(conn.id, data, time.time()))
        except OSError as exc:  # reset by the peer, or worse
            log.info("%s: connection lost: %s", conn.peer, exc)
        except Exception:
            # A bug while serving one client: log it, drop that client alone.
            log.exception("%s: unexpected error; dropping this client", conn.peer)
            reason = "server_error"
            conn.drop()
        finally:
            conn.secured.set()  # let the writer finish, secured or not
            conn.peer_closed.set()
            try:
                self._apply(self.core.disconnect(conn.id, reason, time.time()))  # nothing if closed first
            except Exception:
                log.exception("%s: the core failed to forget it", conn.peer)
            conn.close_soon()
            try:
                await writing
            finally:
                writer.transport.abort()  # a no-op if the writer closed it
                del self.connections[conn.id]

    async def _write(self, conn: Connection) -> None:
        """The writer task: send what is queued, whole; on Close, close gracefully."""
        writer = conn.writer
        try:
            if conn.tls is not None:
                await conn.secured.wait()
                if not conn.tls.handshake_done:
                    return  # the handshake failed: nothing may be sent in clear
            while not conn.dropped:
                if conn.queue:
                    # Everything queued since the last write goes as one: one
                    # system call, and fewer, fuller TCP segments.
                    data = b"".join(conn.queue)
                    conn.queue.clear()
                    conn.size = 0
                    if conn.tls is not None:
                        conn.tls.send(data)
                        data = conn.tls.outgoing()  # encrypted into TLS records
                    writer.write(data)
                    # Waits only while this client is not reading: only
                    # this client's writer waits, nobody else.
                    await writer.drain()
                elif conn.closing:
                    await self._close_gracefully(conn)
                    return
                else:
                    conn.has_data.clear()
                    await conn.has_data.wait()
        except OSError:
            pass  # the peer went away; the reader task notices
        finally:
            writer.transport.abort()

    async def _close_gracefully(self, conn: Connection) -> None:
        writer = conn.writer
        try:
            if conn.tls is not None:
                # close_notify: a clean end that an attacker cannot fake by cutting TCP.
                conn.tls.close()
                writer.write(conn.tls.outgoing())
            # drain() normally returns while a little is still buffered; a
            # high-water mark of 0 makes it wait until the last byte has gone.
            writer.transport.set_write_buffer_limits(high=0)
            await asyncio.wait_for(writer.drain(), LINGER)
            # FIN after the last byte, then wait for the peer's own FIN.
            # Closing at once, with bytes from the peer still unread, would
            # send a reset that can destroy the goodbye we just sent.
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(conn.peer_closed.wait(), LINGER)
        except asyncio.TimeoutError:
            log.info("%s: did not take its last bytes or close its side within %.0f s; closing anyway",
                     conn.peer, LINGER)

    # ---------------------------------------------------------------- TLS

    async def _secure(self, conn: Connection) -> None:
        """The TLS handshake, in the reader task, before anything else is read or written."""
        assert conn.tls is not None
        try:
            await asyncio.wait_for(self._handshake(conn), self.tls_handshake_timeout)
        except NotTLS as exc:
            log.warning("%s: plain text sent to the TLS port (%s); closing", conn.peer, exc)
            await self._send_in_clear(conn, PLAIN_TEXT_HINT)
            raise
        except asyncio.TimeoutError:  # (in Python 3.10 not an OSError: say it as one)
            why = f"TLS handshake not finished within {self.tls_handshake_timeout:g} s"
            log.warning("%s: TLS handshake failed: %s", conn.peer, why)
            raise TimeoutError(why) from None
        except OSError as exc:  # ssl.SSLError is one: e.g. the client does not trust us
            log.warning("%s: TLS handshake failed: %s", conn.peer, exc)
            raise
        log.info("%s: TLS up (%s, %s)", conn.peer, conn.tls.version, conn.tls.cipher)
        conn.secured.set()
        if early := conn.tls.receive(None):  # chat that arrived with the handshake
            self._apply(self.core.receive(conn.id, early, time.time()))

    @staticmethod
    async def _handshake(conn: Connection) -> None:
        """``handshake_over()`` in tls.py, with an ``await`` wherever that one blocks."""
        tls, first = conn.tls, True
        assert tls is not None
        while not tls.handshake():
            if out := tls.outgoing():
                conn.writer.write(out)
                await conn.writer.drain()
            data = await conn.reader.read(RECV_SIZE)  # the client's next flight: others are served meanwhile
            if not data:
                raise ConnectionError("the peer closed the connection during the TLS handshake")
            if first and not looks_like_tls(data):
                raise NotTLS(f"expected a TLS handshake, got {data[:16]!r}")
            first = False
            tls.receive(data)
        if out := tls.outgoing():
            conn.writer.write(out)

    @staticmethod
    async def _send_in_clear(conn: Connection, data: bytes) -> None:
        """Write ``data`` unencrypted and wait until it has gone (the connection is about to be cut)."""
        writer = conn.writer
        try:
            writer.write(data)
            writer.transport.set_write_buffer_limits(high=0)
            await asyncio.wait_for(writer.drain(), LINGER)
        except (OSError, asyncio.TimeoutError):
            pass  # the peer is gone, or not reading: it will not see the hint

    # ------------------------------------------------------------ effects

    def _apply(self, effects: list[Effect]) -> None:
        """Do what the core said, in its order.  Never awaits: nothing can come between."""
        connections, limit = self.connections, self.limits.outbox_bytes
        too_slow: list[Connection] = []
        for effect in effects:
            if type(effect) is Send:
                # A broadcast arrives encoded once, with every recipient in
                # ``to``: the work per recipient is one append to its queue
                # (and a wake-up for its writer, only if the queue was empty).
                data = effect.data
                for cid in effect.to:
                    conn = connections.get(cid)
                    if conn is None or conn.dropped:
                        continue
                    if limit and conn.size + len(data) > limit:
                        log.warning(
                            "%s: too slow: %d bytes already queued, %d more would pass the limit of %d; "
                            "disconnecting", conn.peer, conn.size, len(data), limit,
                        )
                        conn.drop()
                        too_slow.append(conn)
                        continue
                    if not conn.queue:
                        conn.has_data.set()
                    conn.queue.append(data)
                    conn.size += len(data)
            elif type(effect) is Close:
                conn = connections.get(effect.client)
                if conn is not None:
                    conn.close_soon()
        # The core learns of a slow client after the whole list is applied,
        # so its "left" notice follows every message it had already ordered.
        for conn in too_slow:
            self._apply(self.core.disconnect(conn.id, "too_slow", time.time()))
