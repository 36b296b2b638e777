"""``ChatClient``: a chatlab client with a send thread and a receive thread.

Why two threads?  A chat client waits for two things at once: what the
user types and what the server sends.  Each blocking call -- ``recv()`` on
the socket, ``get()`` on the queue of things to send -- gets a thread of
its own, so neither can hold up the other.  (The servers show the other
answers: an event loop, or ``asyncio``.)

Usable from scripts, tests and notebooks::

    with ChatClient("127.0.0.1", 5050, name="ada") as ada:
        ada.say("hello")
        print(ada.wait_for("message")["text"])

Events are the server's messages as dicts (see ``docs/protocol.md``), plus
those the client makes itself: ``{"type": "disconnected", "reason": ...}``
when the connection ends, and ``{"type": "file_received", "file": ...,
"name": ..., "data": ..., "ok": ...}`` when a file it accepted is complete.

With ``resume=True`` a dropped connection is not the end.  The client
connects again (to the next of ``also``'s addresses, for a chat on several
servers), with a growing pause between tries, registers under the same
name, joins its rooms again, and asks each room for the messages it missed
-- a ``history`` request ``since`` the last id it saw there.  Those
messages come as ordinary ``message`` events, in order, marked
``"missed": true``; anything that arrives live meanwhile waits its turn, so
the person misses nothing and sees nothing twice.  Two more events tell
what happens: ``{"type": "reconnecting", "attempt": N, "delay": S,
"reason": ...}`` before each try, and ``{"type": "resumed", "address": ...,
"missed": N}`` once it is back.  (Private messages are not in any room's
history: one sent while the client was away is lost to it.  And what this
client said into a connection that had already broken, before it noticed,
reached no server and is not said again: a message counts as sent when the
server's copy of it comes back, which the terminal shows.)
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import queue
import random
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterator

from .dialects.client import ClientWire, refusal_of
from .errors import WireError
from .files import CHUNK, MAX_FILE_NAME
from .servers.base import DEFAULT_HOST, DEFAULT_PORT, format_address
from .tls import TLSLayer, client_context, handshake_over


#: Resuming: the first pause before connecting again, the longest, how long to keep trying,
#: and the messages asked for in one history page while catching up.
RESUME_FIRST = 0.1
RESUME_MAX = 2.0
RESUME_FOR = 120.0
RESUME_PAGE = 100
#: The ``closing`` reasons after which a resuming client comes back (None: the connection just broke).
#: Not after "quit", "flooding", "auth_failed", "protocol_error"...: those were meant.
RESUME_AFTER = (None, "shutdown", "server_lost", "server_error", "too_slow", "idle")


#: The last request of a resume: its answer says that every answer before it has come.
BARRIER = {"type": "who", "room": "lobby"}


def _is_barrier(event: dict[str, Any]) -> bool:
    return event.get("type") == "users" and event.get("room") == "lobby"


class ChatConnectionError(ConnectionError):
    """Could not reach the server; the message says what to check."""


class ChatError(Exception):
    """The server answered with an ``error`` message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} ({code})")
        self.code, self.message = code, message


def open_connection(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """Connect over TCP, turning the classic failures into advice."""
    where = format_address((host, port))
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise ChatConnectionError(
            f"could not connect to {where}: connection refused. Nothing is listening there: "
            "is the server running, and are the address and port the ones it printed?"
        ) from None
    except socket.gaierror:
        raise ChatConnectionError(
            f"could not find the host {host!r}: check the spelling, or use the server's IP address."
        ) from None
    except TimeoutError:
        raise ChatConnectionError(
            f"no answer from {where} within {timeout:g} s: check the address, that you are on "
            "the same network, and that no firewall blocks the port."
        ) from None
    except OSError as exc:
        raise ChatConnectionError(f"could not connect to {where}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class ChatClient:
    """A frames-mode client.  Give ``name`` to register at once (else call ``register``)."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        name: str | None = None,
        *,
        password: str | None = None,
        timeout: float = 5.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        tls: bool | ssl.SSLContext = False,
        cafile: str | None = None,
        resume: bool = False,
        also: list[tuple[str, int]] | tuple[tuple[str, int], ...] = (),
        resume_for: float = RESUME_FOR,
    ):
        self.timeout = timeout
        self.on_event = on_event  # called on the receive thread, for each event
        self.name: str | None = None
        self.users: list[str] = []
        self._tls_option, self._cafile = tls, cafile
        # Resuming: where to try, for how long, and what to restore.
        self.resume, self.resume_for = resume, resume_for
        self.addresses: list[tuple[str, int]] = [(host, port), *[(h, p) for h, p in also]]
        self.address = (host, port)  # where we are connected now
        self.resumes = 0  # how many times the connection was restored
        self.last_ids: dict[str, int] = {}  # room -> the newest message id seen there
        self.rooms: list[str] = []  # rooms joined, besides the lobby, to join again
        self._password: str | None = None
        self._link = threading.Condition()  # the sender waits on it for a new connection
        self._generation = 0  # which connection self.sock is
        self.sock, self.tls, self.wire = self._open(host, port)
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._outgoing: queue.Queue[bytes | None] = queue.Queue()
        self._ping_ids = itertools.count(1)
        self._closing = threading.Event()
        self.keepalives = 0  # keep-alive pings from the server, answered for us
        self._closed = False
        self._uploads: dict[str, bytes] = {}  # SHA-256 -> data of files we offered
        self._downloads: dict[str, bytearray] = {}  # file id -> data so far
        self.offers: dict[str, dict[str, Any]] = {}  # file id -> the file_offer we received
        try:
            early = self._read_banner()
        except BaseException:
            self.sock.close()
            raise
        # The handshake used a timeout; from now on the receive thread just
        # waits, for as long as the conversation lasts.
        self.sock.settimeout(None)
        self._receiver = threading.Thread(target=self._receive_loop, args=(early,), daemon=True,
                                          name="chatlab-client-receive")
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="chatlab-client-send")
        self._receiver.start()
        self._sender.start()
        if name is not None:
            try:
                self.register(name, password=password)
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------ the wire

    def _open(self, host: str, port: int) -> tuple[socket.socket, TLSLayer | None, ClientWire]:
        """A TCP connection (and TLS over it, if asked), with the wire that reads it."""
        sock = open_connection(host, port, self.timeout)
        layer: TLSLayer | None = None
        if self._tls_option:
            # TLS first: the banner and everything after it travel encrypted.
            tls = self._tls_option
            context = tls if isinstance(tls, ssl.SSLContext) else client_context(self._cafile)
            layer = TLSLayer(context, server_side=False, server_hostname=host)
            try:
                handshake_over(sock, layer, self.timeout)
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise ChatConnectionError(
                    f"the server's certificate is not trusted ({exc.verify_message}): "
                    "give the lab CA file with --cafile, and connect with a name the certificate lists"
                ) from None
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise ChatConnectionError(f"TLS handshake failed: {exc}. Is the server running with --tls?") from None
            sock.settimeout(self.timeout)  # for the banner, as without TLS
        # The banner, then frames: parsed in one place for every client.
        return sock, layer, ClientWire("frames")

    def _read_banner(self) -> list[dict[str, Any]]:
        """Read the server's one-line greeting; return the messages that came with it."""
        # With TLS 1.2 the server finishes the handshake last and may send the
        # banner in the same segment: it can be decrypted already, unread.
        data = self.tls.receive(None) if self.tls is not None else b""
        while True:
            try:
                events = [event for event, _ in self.wire.feed(data)]
            except WireError as exc:
                raise ChatConnectionError(f"{exc}") from None
            if events:
                break
            try:
                data = self._recv()
            except TimeoutError:
                raise ChatConnectionError("connected, but the server sent no banner: is it a chatlab server?") from None
            if not data:
                raise ChatConnectionError("the server closed the connection before greeting us")
        greeting, rest = events[0], events[1:]
        if greeting["type"] == "refused":
            # "chatlab/1 closing server_full: ..." in place of the banner: refused.
            raise ChatConnectionError(f"the server refused the connection: {refusal_of(greeting)}")
        self.banner = greeting["text"]
        return rest

    def _receive_loop(self, early: list[dict[str, Any]]) -> None:
        while True:
            reason, closing = self._pump(early)
            early = []
            if self._closed:
                reason = "closed by us"
                break
            if not (self.resume and self.name is not None and closing in RESUME_AFTER) or not self._reconnect(reason):
                break
        self._deliver({"type": "disconnected", "reason": reason})
        with self._link:
            self._generation = -1  # no connection will come: the send thread stops
            self._link.notify_all()
        self._outgoing.put(None)  # let the send thread finish too

    def _pump(self, early: list[dict[str, Any]]) -> tuple[str, str | None]:
        """Deliver what one connection brings until it ends: why, and the ``closing`` reason if one came."""
        reason, closing = "the server closed the connection", None
        try:
            for event in early:
                self._deliver(event)
            while data := self._recv():
                for event, _ in self.wire.feed(data):
                    if event.get("type") == "closing":
                        closing = event.get("reason")
                    self._deliver(event)
        except (OSError, WireError, ssl.SSLError) as exc:
            reason = f"connection lost: {exc}"
        return reason, closing

    # ------------------------------------------------------------ resuming

    def _reconnect(self, reason: str) -> bool:
        """Connect again, with backoff, until registered again and caught up (True), or ``resume_for`` is over."""
        deadline, delay, attempt = time.monotonic() + self.resume_for, RESUME_FIRST, 0
        self.sock.close()
        while time.monotonic() < deadline and not self._closed:
            attempt += 1
            self._emit({"type": "reconnecting", "attempt": attempt, "delay": round(delay, 3), "reason": reason})
            if self._closing.wait(delay):
                return False
            # Jitter: a classroom dropped at once must not come back at once, in step.
            delay = min(RESUME_MAX, delay * 2) * random.uniform(0.8, 1.2)
            address = self.addresses[(self.addresses.index(self.address) + attempt - 1) % len(self.addresses)]
            try:
                self._resume_at(address)
                return True
            except (OSError, ChatConnectionError, ChatError, WireError, ssl.SSLError, TimeoutError) as exc:
                reason = f"{exc}"
        return False

    def _resume_at(self, address: tuple[str, int]) -> None:
        """Register again on a new connection, join our rooms, and fetch what we missed; then switch to it."""
        sock, layer, wire = self._open(*address)
        old = self.sock, self.tls, self.wire
        self.sock, self.tls, self.wire = sock, layer, wire
        try:
            held = self._read_banner()
            rooms, since = ["lobby", *self.rooms], dict(self.last_ids)
            newest = max(since.values(), default=0)
            hello: dict[str, Any] = {"type": "hello", "name": self.name}
            if self._password is not None:
                hello["password"] = self._password
            # All at once: the server answers in order (it holds what follows
            # a hello back until the hello is answered).  The last request, a
            # "who" of the lobby, marks the end: on a chat shared by several
            # servers it is answered, like history, in the order asked (a
            # ping would be answered at once, before the history came back).
            requests = [hello, *({"type": "join", "room": room} for room in self.rooms),
                        *({"type": "history", "room": room, "since": since.get(room, newest), "limit": RESUME_PAGE}
                          for room in rooms), BARRIER]
            self._send_now(requests)
            answers = self._until_barrier(held)
            welcome = next((e for e in answers if e["type"] in ("welcome", "error")), None)
            if welcome is None or welcome["type"] == "error":
                raise ChatError(welcome["code"] if welcome else "no_welcome", welcome["message"] if welcome else
                                "the server did not answer our hello")
            self.users = list(welcome["users"])
            # The history answers to *our* requests are each room's last one
            # before the pong (a join's own recent history comes before them).
            pages = {e["room"]: e for e in answers if e["type"] == "history"}
            live = [e for e in answers if e["type"] not in ("welcome", "history")
                    and not (e["type"] == "joined" and "members" in e) and not _is_barrier(e)]
            caught: list[dict[str, Any]] = []
            for room in rooms:
                page, seen = pages.get(room), self.last_ids.get(room, since.get(room, newest))
                while page is not None:
                    fresh = [m for m in page["messages"] if m["id"] > seen]
                    caught += fresh
                    seen = max([seen, *(m["id"] for m in fresh)])
                    if not page.get("more") or not page["messages"]:
                        break
                    self._send_now([{"type": "history", "room": room, "since": page["messages"][-1]["id"],
                                     "limit": RESUME_PAGE}, BARRIER])
                    more = self._until_barrier([])
                    live += [e for e in more if e["type"] != "history" and not _is_barrier(e)]
                    page = next((e for e in reversed(more) if e["type"] == "history"), None)
        except BaseException:
            self.sock, self.tls, self.wire = old
            sock.close()
            raise
        sock.settimeout(None)
        self.address = address
        self.resumes += 1
        with self._link:
            self._generation += 1
            self._link.notify_all()  # the send thread carries on, on the new connection
        self._emit({"type": "resumed", "address": format_address(address), "missed": len(caught)})
        for message in caught:  # what was said while we were away, in order
            self._deliver({**message, "missed": True})
        for event in live:  # what came live meanwhile, in order, less what history already gave
            if event["type"] == "message" and "room" in event and event["id"] <= self.last_ids.get(event["room"], 0):
                continue
            self._deliver(event)

    def _send_now(self, messages: list[dict[str, Any]]) -> None:
        """Write messages on the current connection from this thread (while resuming)."""
        data = b"".join(self.wire.encode(m) for m in messages)
        if self.tls is not None:
            self.tls.send(data)
            data = self.tls.outgoing()
        self.sock.sendall(data)

    def _until_barrier(self, held: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Everything the server sends until it answers BARRIER (within the timeout)."""
        got = list(held)
        deadline = time.monotonic() + self.timeout
        while not any(_is_barrier(e) or (e["type"] == "error" and e.get("code") == "name_taken") for e in got):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self._recv()
            if not data:
                raise ChatConnectionError("the server closed the connection while we resumed")
            for event, _ in self.wire.feed(data):
                if event.get("type") == "ping":  # a keep-alive: answered, not news
                    self._send_now([{"type": "pong", "id": event.get("id")}])
                else:
                    got.append(event)
        return got

    def _emit(self, event: dict[str, Any]) -> None:
        """An event the client makes itself."""
        if self.on_event is not None:
            self.on_event(event)
        self._events.put(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        if event.get("type") == "ping":
            # The server's keep-alive: it heard nothing from us for a while.
            # Answering shows that we are still here (protocol.md, Keep-alive).
            self.keepalives += 1
            self.send({"type": "pong", "id": event.get("id")})
            return
        kind = event.get("type")
        if kind == "file_upload":  # the server pulls the next chunk of a file we offered
            data = self._uploads[event["sha256"]]
            seq = event["seq"]
            self.send({"type": "file_chunk", "file": event["file"], "seq": seq,
                       "data": base64.b64encode(data[seq * CHUNK : (seq + 1) * CHUNK]).decode("ascii")})
            return  # plumbing, not news
        if kind == "file_offer":
            self.offers[event["file"]] = event
        if kind == "file_chunk" and event["file"] in self._downloads:
            complete = self._file_chunk(event)
            if complete is None:
                return
            event = complete
        if event.get("type") == "welcome":
            self.name = event["name"]
        if event.get("type") in ("welcome", "users"):
            self.users = list(event["users"])
        self._note(event)
        if self.on_event is not None:
            self.on_event(event)
        self._events.put(event)

    def _note(self, event: dict[str, Any]) -> None:
        """Remember what a resume needs: our rooms, and the newest message id seen in each."""
        kind = event.get("type")
        if kind == "message" and "room" in event:
            self.last_ids[event["room"]] = max(self.last_ids.get(event["room"], 0), event["id"])
        elif kind == "history" and event.get("messages"):
            room = event["room"]
            self.last_ids[room] = max(self.last_ids.get(room, 0), event["messages"][-1]["id"])
        elif kind == "joined" and "members" in event and event.get("name") == self.name:
            room = event["room"]
            # Nothing seen there yet: what it may have missed is what came after everything seen anywhere.
            self.last_ids.setdefault(room, max(self.last_ids.values(), default=0))
            if room != "lobby" and room not in self.rooms:
                self.rooms.append(room)
        elif kind == "left" and event.get("name") == self.name and event.get("reason") == "left":
            if event["room"] in self.rooms:
                self.rooms.remove(event["room"])

    def _recv(self) -> bytes:
        """The next plaintext from the server (b"" at the end of the stream)."""
        while True:
            data = self.sock.recv(65536)
            if self.tls is None:
                return data
            plain = self.tls.receive(data)
            if plain or not data:
                return plain
            # Only TLS housekeeping (e.g. session tickets): read on.

    def _send_loop(self) -> None:
        generation = self._generation
        while (data := self._outgoing.get()) is not None:
            while True:
                try:
                    self._send_on(data)
                    break
                except (OSError, ssl.SSLError):
                    if not self.resume:
                        return  # the receive thread reports the lost connection
                # Resuming: wait for the receive thread's new connection, then send it there.
                with self._link:
                    while self._generation == generation:
                        self._link.wait()
                    generation = self._generation
                if generation < 0:
                    return
        try:
            if self.tls is not None:
                self.tls.close()
                self.sock.sendall(self.tls.outgoing())
        except (OSError, ssl.SSLError):
            pass

    def _send_on(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.send(data)
            data = self.tls.outgoing()  # the same bytes, encrypted into TLS records
        self.sock.sendall(data)

    def send(self, msg: dict[str, Any]) -> None:
        """Queue one message for the send thread (returns at once)."""
        self._outgoing.put(self.wire.encode(msg))

    # ---------------------------------------------------------- the protocol

    def register(self, name: str, timeout: float | None = None, *, password: str | None = None) -> dict[str, Any]:
        """Say hello; return the ``welcome``, or raise ChatError (e.g. ``name_taken``, ``auth_failed``).

        ``password``: for a name with an account on a server run with ``--users``.
        """
        hello = {"type": "hello", "name": name}
        if password is not None:
            hello["password"] = password
        self._password = password  # for registering again after a resume
        self.send(hello)
        reply = self.wait_for(lambda e: e["type"] in ("welcome", "error"), timeout)
        if reply["type"] == "error":
            raise ChatError(reply["code"], reply["message"])
        return reply

    def say(self, text: str) -> None:
        self.send({"type": "say", "text": text})

    def who(self) -> None:
        self.send({"type": "who"})

    def ping(self) -> int:
        """Send a ping; the ``pong`` with the returned id answers it."""
        ping_id = next(self._ping_ids)
        self.send({"type": "ping", "id": ping_id})
        return ping_id

    def rtt(self, timeout: float | None = None) -> float:
        """One round trip to the server and back, in seconds."""
        started = time.perf_counter()
        ping_id = self.ping()
        self.wait_for(lambda e: e["type"] == "pong" and e["id"] == ping_id, timeout)
        return time.perf_counter() - started

    # ----------------------------------------------------------------- files

    def send_file(self, data: bytes, name: str, to: str | None = None, room: str | None = None) -> None:
        """Offer a file to a person or a room (default: the lobby).

        Returns at once: the server then pulls the file chunk by chunk, and the
        receive thread answers each request.  ``file_sent`` (or an ``error``)
        tells how it went.
        """
        if not 0 < len(name.encode("utf-8")) <= MAX_FILE_NAME:
            # The server would refuse it (bad_file): say so here, before any byte goes.
            raise ValueError(f"a file name has 1 to {MAX_FILE_NAME} bytes of UTF-8; {name[:40]!r}... has "
                             f"{len(name.encode('utf-8'))}")
        sha256 = hashlib.sha256(data).hexdigest()
        self._uploads[sha256] = bytes(data)
        offer: dict[str, Any] = {"type": "file_offer", "name": name, "size": len(data), "sha256": sha256}
        if to is not None:
            offer["to"] = to
        elif room is not None:
            offer["room"] = room
        self.send(offer)

    def accept_file(self, file_id: str, wait: bool = True, timeout: float = 60.0) -> bytes | None:
        """Fetch an offered file.  With ``wait``, return its bytes once checked;
        otherwise a ``file_received`` event (with ``data`` and ``ok``) comes later."""
        self._downloads[file_id] = bytearray()
        self.send({"type": "file_accept", "file": file_id})
        if not wait:
            return None
        done = self.wait_for(lambda e: e["type"] == "file_received" and e["file"] == file_id, timeout)
        if not done["ok"]:
            raise ChatError("bad_checksum", f"file {file_id} arrived damaged: its SHA-256 does not match")
        return done["data"]

    def decline_file(self, file_id: str) -> None:
        self.send({"type": "file_decline", "file": file_id})

    def _file_chunk(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Keep a chunk; ask for the next, or check the whole file (on the receive thread)."""
        data = self._downloads[event["file"]]
        data += base64.b64decode(event["data"])
        if not event["last"]:
            self.send({"type": "file_get", "file": event["file"], "seq": event["seq"] + 1})
            return None
        del self._downloads[event["file"]]
        offer = self.offers.get(event["file"], {})
        return {"type": "file_received", "file": event["file"], "name": offer.get("name"),
                "from": offer.get("from"), "data": bytes(data),
                "ok": hashlib.sha256(data).hexdigest() == offer.get("sha256")}

    # ---------------------------------------------------------------- events

    def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event from the server; TimeoutError if none comes in time."""
        try:
            return self._events.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            raise TimeoutError(f"no event from the server within {timeout or self.timeout:g} s") from None

    def wait_for(self, match: str | Callable[[dict[str, Any]], bool], timeout: float | None = None) -> dict[str, Any]:
        """Skip events until one matches (a type name, or a test); return it."""
        test = (lambda e: e["type"] == match) if isinstance(match, str) else match
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event ({match}) from the server in time")
            event = self.next_event(remaining)
            if test(event):
                return event
            if event["type"] == "disconnected":
                raise ChatConnectionError(f"disconnected while waiting: {event['reason']}")

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Events as they come, ending after ``disconnected`` (or a quiet ``timeout``)."""
        while True:
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                return
            yield event
            if event["type"] == "disconnected":
                return

    # ------------------------------------------------------------- shutdown

    def close(self, timeout: float = 2.0) -> None:
        """Say bye, let the server close, then release the socket and threads."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()  # a resume waiting between two tries gives up
        if self._receiver.is_alive():
            self.send({"type": "bye"})
            self._outgoing.put(None)
            self._sender.join(timeout)
            # The server answers bye with a "closing" notice and its FIN; the
            # receive thread sees the end of the stream and stops by itself.
            self._receiver.join(timeout)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # in case the server did not answer
        except OSError:
            pass
        self._receiver.join(timeout)
        self._sender.join(timeout)
        self.sock.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
