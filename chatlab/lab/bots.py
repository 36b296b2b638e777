"""Clients that play people: ``Bot``, plans for a room of bots, and ``Crowd``.

A ``Bot`` is one scripted client (frames or lines) that records everything
it sends and receives.  ``run_plan`` runs several on a schedule, keeping the
plan's order even on a busy machine.  ``Crowd`` is hundreds of listening
clients on one thread, to measure the server rather than our own threads.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..framing import FrameDecoder, LineDecoder, encode_frame, encode_line
from .recorder import (CLOSED, CONNECT_STARTED, CONNECTED, RECEIVED, REGISTERED, SENT, Recorder, describe,
                       parse_server_line)
from .registry import RECV_SIZE, TIMEOUT, Instrument, clock


class Bot(Instrument):
    """A scripted chat client that records everything it does and sees.

    ``mode="frames"`` speaks JSON frames like ``ChatClient``; ``mode="lines"``
    speaks lines like a person with ``nc`` -- which is what the course's
    servers understand.  Sends happen on the caller's thread; one receive
    thread decodes what arrives and records it.
    """

    def __init__(self, address: tuple[str, int], name: str, recorder: Recorder | None = None,
                 mode: str = "frames", timeout: float = TIMEOUT, rcvbuf: int | None = None):
        if mode not in ("frames", "lines"):
            raise ValueError("mode is 'frames' or 'lines'")
        self.address, self.name, self.mode, self.timeout = tuple(address)[:2], name, mode, timeout
        self.recorder = recorder if recorder is not None else Recorder()
        self.rcvbuf = rcvbuf
        self.sock: socket.socket | None = None
        self.received: list[dict[str, Any]] = []
        self.registered = False
        self.closed = threading.Event()
        self._cursor = 0  # received messages already looked at by wait_for
        self._inbox = threading.Condition()
        self._send_lock = threading.Lock()
        self._receiver: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Bot {self.name} {self.mode}>"

    # ----------------------------------------------------------- connecting

    def connect(self) -> "Bot":
        rec = self.recorder
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if self.rcvbuf:  # before connect(), so the advertised window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(self.timeout)
        rec.record(self.name, CONNECT_STARTED)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            rec.record(self.name, CLOSED, {"type": "closed", "reason": "connect failed"})
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        rec.record(self.name, CONNECTED)
        self._register()
        self._receiver = threading.Thread(target=self._receive_loop, daemon=True,
                                          name=f"chatlab-bot-{self.name}")
        self._receiver.start()
        return self

    def register(self, name: str | None = None, confirm: bool = True) -> "Bot":
        """Send our name; with ``confirm``, wait for the server's answer (an error raises)."""
        name = name or self.name
        if self.mode == "frames":
            self.send({"type": "hello", "name": name})
        else:
            self._send_bytes(encode_line(name), {"type": "hello", "name": name})
        if confirm:
            # A welcome in frames mode; in lines mode the course's servers may
            # not send one, so the first line that is not an error will do.
            def answered(msg: dict[str, Any]) -> bool:
                return msg["type"] in ("welcome", "error") or (self.mode == "lines" and msg["type"] != "banner")
            reply = self.wait_for(answered, what=f"an answer to {name}'s hello")
            if reply["type"] == "error":
                raise RuntimeError(f"{name} was refused: {reply.get('message')} ({reply.get('code')})")
        self.registered = True
        self.recorder.record(self.name, REGISTERED)
        return self

    def join(self) -> "Bot":
        """Connect and register."""
        return self.connect().register()

    # -------------------------------------------------------------- sending

    def _send_bytes(self, data: bytes, msg: dict[str, Any]) -> None:
        if self.sock is None:
            raise RuntimeError(f"{self.name} is not connected")
        with self._send_lock:
            # Recorded just before the bytes go into the socket: the start of
            # every latency measured from here.
            self.recorder.record(self.name, SENT, msg, len(data))
            self.sock.sendall(data)

    def send(self, msg: dict[str, Any]) -> None:
        """Send one message: a frame, or (lines mode) the line that means it."""
        if self.mode == "frames":
            payload = json.dumps(msg, separators=(",", ":")).encode()
            self._send_bytes(encode_frame(payload), msg)
        else:
            lines = {"say": msg.get("text", ""), "who": "/who", "ping": "/ping", "bye": "/quit"}
            self._send_bytes(encode_line(lines[msg["type"]]), msg)

    def send_raw(self, data: bytes, note: str = "") -> None:
        """Bytes exactly as given: for showing what a server does with bad input."""
        self._send_bytes(data, {"type": "raw", "hex": data[:32].hex(" "), "note": note})

    def say(self, text: str) -> None:
        self.send({"type": "say", "text": text})

    def ping(self) -> float:
        """A round trip: ping, wait for the pong.  Also a barrier: every message
        the server sent us before the pong has arrived when this returns."""
        ping_id = f"{self.name}-{clock():.9f}"
        started = clock()
        self.send({"type": "ping", "id": ping_id})
        self.wait_for(lambda m: m["type"] == "pong" and m.get("id", ping_id) == ping_id, what="a pong")
        return clock() - started

    # ------------------------------------------------------------ receiving

    def _receive_loop(self) -> None:
        sock = self.sock
        assert sock is not None
        lines = LineDecoder(1 << 20)
        frames = FrameDecoder(1 << 24)
        head: bytearray | None = bytearray()  # the banner, until its newline arrives
        reason = "server closed"
        try:
            while True:
                try:
                    data = sock.recv(RECV_SIZE)
                except TimeoutError:
                    if self.closed.is_set():
                        break
                    continue  # an idle bot is fine; the timeout only bounds sends
                if not data:
                    break
                if head is not None:
                    # The banner is a line, even for a frames client.
                    head += data
                    if b"\n" not in head:
                        if len(head) > 4096:
                            raise ValueError("no banner line in the first 4096 bytes")
                        continue
                    banner, _, data = bytes(head).partition(b"\n")
                    head = None
                    self._deliver({"type": "banner", "text": banner.decode("utf-8", "replace").rstrip("\r")},
                                  len(banner) + 1)
                if self.mode == "frames":
                    for payload in frames.feed(data):
                        self._deliver(json.loads(payload), len(payload) + 4)
                else:
                    for line in lines.feed(data):
                        self._deliver(parse_server_line(line.decode("utf-8", "replace")), len(line) + 1)
        except (OSError, ValueError) as exc:
            reason = f"connection lost: {exc}"
        if self.closed.is_set():
            reason = "closed by us"
        self.recorder.record(self.name, CLOSED, {"type": "closed", "reason": reason})
        with self._inbox:
            self.received.append({"type": "disconnected", "reason": reason})
            self.closed.set()
            self._inbox.notify_all()

    def _deliver(self, msg: dict[str, Any], size: int) -> None:
        self.recorder.record(self.name, RECEIVED, msg, size)
        with self._inbox:
            self.received.append(msg)
            self._inbox.notify_all()

    def wait_for(self, test: str | Callable[[dict[str, Any]], bool], timeout: float | None = None,
                 what: str = "") -> dict[str, Any]:
        """Skip received messages until one passes ``test`` (a type name or a function); return it."""
        check = (lambda m: m["type"] == test) if isinstance(test, str) else test
        started = clock()
        deadline = started + (self.timeout if timeout is None else timeout)
        with self._inbox:
            while True:
                while self._cursor < len(self.received):
                    msg = self.received[self._cursor]
                    self._cursor += 1
                    if check(msg):
                        return msg
                    if msg["type"] == "disconnected":
                        raise ConnectionError(f"{self.name} was disconnected ({msg['reason']}) "
                                              f"while waiting for {what or test}")
                remaining = deadline - clock()
                if remaining <= 0 or not self._inbox.wait(remaining):
                    if self._cursor >= len(self.received):
                        last = describe(self.received[-1]) if self.received else "nothing"
                        raise TimeoutError(f"{self.name} waited {deadline - started:g} s for "
                                           f"{what or test}; last received: {last}")

    def messages(self) -> list[dict[str, Any]]:
        """The chat messages received so far."""
        with self._inbox:
            return [m for m in self.received if m["type"] == "message"]

    # -------------------------------------------------------------- leaving

    def leave(self) -> None:
        """Say goodbye and wait (bounded) for the server to close; then close."""
        if self.sock is not None and not self.closed.is_set():
            try:
                self.send({"type": "bye"})
                self.closed.wait(self.timeout)
            except OSError:
                pass
        self.stop()

    def stop(self) -> None:
        """Close at once (no goodbye); join the receive thread."""
        self._unregister()
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self.closed.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._receiver is not None and self._receiver is not threading.current_thread():
            self._receiver.join(self.timeout)
        sock.close()


# ---------------------------------------------------------------- schedules


@dataclass
class Plan:
    """One bot's script: join at ``join_at``, say each text at its time, leave at ``leave_at`` (seconds)."""

    name: str
    join_at: float
    says: list[tuple[float, str]] = field(default_factory=list)
    leave_at: float = 1.0


def chat_plan(bots: int = 3, messages: int = 3, gap: float = 0.05, stagger: float = 0.05) -> list[Plan]:
    """Bots that join one after another, chat in turn, and leave one after another."""
    plans = []
    talk_start = stagger * bots
    talk_end = talk_start + gap * messages * bots
    for i in range(bots):
        name = f"bot{i + 1}"
        says = [(talk_start + gap * (k * bots + i), f"{name} #{k + 1}") for k in range(messages)]
        plans.append(Plan(name, stagger * i, says, talk_end + gap + stagger * i))
    return plans


def run_plan(address: tuple[str, int], plans: list[Plan], recorder: Recorder | None = None,
             mode: str = "frames", timeout: float = TIMEOUT) -> list[Bot]:
    """Run every plan, one thread per bot, on a shared clock; return the (closed) bots.

    The times are a schedule, but on a busy machine a bot may fall behind
    it -- and a message said before a late bot has registered is one that
    bot never hears.  So the plan's *order* is kept whatever the clock says:
    a bot says something at ``t`` only once every bot due before ``t`` has
    joined, and leaves at ``leave_at`` only once every message due before
    then has been handled by the server (frames mode: the sender has its
    own copy back; lines mode: the message was sent).  Before leaving it also waits until it has heard
    them: in frames mode with a ping (a barrier), in lines mode by waiting
    for the texts themselves.  Every wait is bounded by ``timeout``.
    """
    recorder = recorder if recorder is not None else Recorder()
    bots = [Bot(address, p.name, recorder, mode, timeout) for p in plans]
    errors: list[BaseException] = []
    done: set[Any] = set()  # plan names that have joined, and (name, text) said (or given up)
    progress = threading.Condition()
    t0 = clock()

    def until(t: float) -> None:
        delay = t0 + t - clock()
        if delay > 0:
            time.sleep(delay)  # the schedule: bots act at chosen times, not before

    def happened(*things: Any) -> None:
        with progress:
            done.update(things)
            progress.notify_all()

    def after(things: set[Any], what: str) -> None:
        with progress:
            if not progress.wait_for(lambda: things <= done, timeout):
                raise TimeoutError(f"waited {timeout:g} s for {what}: {sorted(map(str, things - done))[:3]}")

    def expected_for(plan: Plan) -> set[tuple[str, str]]:
        """Messages from others said while ``plan``'s bot is in the room."""
        return {(p.name, text) for p in plans if p is not plan
                for t, text in p.says if plan.join_at < t < plan.leave_at}

    def act(bot: Bot, plan: Plan) -> None:
        try:
            until(plan.join_at)
            bot.join()
            happened(plan.name)
            for t, text in plan.says:
                until(t)
                after({p.name for p in plans if p.join_at < t}, "the bots due to join first")
                bot.say(text)
                if mode == "frames":
                    # Sent is not yet handled: the server has broadcast it once
                    # our own copy is back (a frames client gets its own messages).
                    bot.wait_for(lambda m: m["type"] == "message" and m["from"] == bot.name and m["text"] == text,
                                 what="our own message back")
                happened((plan.name, text))
            until(plan.leave_at)
            after(expected_for(plan), "the messages due before leaving")
            if mode == "frames":
                bot.ping()  # a barrier: everything sent to us before it has arrived
            else:
                _await_texts(bot, expected_for(plan), timeout)
            bot.leave()
        except BaseException as exc:
            errors.append(exc)
            bot.stop()
        finally:  # never leave the others waiting for what this bot will not do
            happened(plan.name, *((plan.name, text) for _, text in plan.says))

    threads = [threading.Thread(target=act, args=(b, p), name=f"chatlab-plan-{p.name}", daemon=True)
               for b, p in zip(bots, plans)]
    for t in threads:
        t.start()
    deadline = clock() + max(p.leave_at for p in plans) + 4 * timeout
    try:
        for t in threads:
            t.join(max(0.0, deadline - clock()))
    finally:
        for b in bots:
            b.stop()
        for t in threads:
            t.join(timeout)
    if errors:
        raise errors[0]
    return bots


def _await_texts(bot: Bot, wanted: set[tuple[str, str]], timeout: float) -> None:
    """Wait until ``bot`` heard these (sender, text) messages, or ``timeout`` passed.

    Lines mode has no barrier every server understands (the course's servers
    may not answer ``/ping``), so this is best effort: whatever never arrived
    is simply missing from the record, where a table or plot will show it.
    """
    missing = set(wanted)

    def heard(msg: dict[str, Any]) -> bool:
        missing.discard((msg.get("from"), msg.get("text")))
        return not missing

    if missing:
        try:
            bot.wait_for(heard, timeout, what="the others' messages")
        except TimeoutError:
            pass


# -------------------------------------------------------------------- crowd


class Crowd(Instrument):
    """Many lines-mode clients on one thread: a room full of people who only listen.

    A thread per client would measure our own limits, not the server's, so
    one ``selectors`` loop reads for all of them.  It keeps, for each chat
    line, who got it and when -- enough to measure how long one message takes
    to reach everyone, and how many messages per second the server delivers.
    """

    def __init__(self, address: tuple[str, int], prefix: str = "c", welcome: bytes = b"* Welcome"):
        self.address, self.prefix, self.welcome = tuple(address)[:2], prefix, welcome
        self.members: list[socket.socket] = []
        self._welcomed: set[socket.socket] = set()
        self.arrivals: dict[str, list[float]] = {}  # text -> arrival times
        self.delivered = 0
        self._decoders: dict[socket.socket, LineDecoder] = {}
        self._changed = threading.Condition()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._new: list[socket.socket] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"chatlab-crowd-{prefix}")
        self._register()
        self._thread.start()

    def __len__(self) -> int:
        return len(self.members)

    def grow(self, size: int, timeout: float = 60.0) -> None:
        """Connect and register members until there are ``size``.

        Returns once each new member has been welcomed, so that a message
        sent afterwards is one every member must receive.
        """
        new = []
        while len(self.members) + len(new) < size:
            sock = socket.create_connection(self.address, timeout=TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(encode_line(f"{self.prefix}{len(self.members) + len(new) + 1}"))
            sock.setblocking(False)
            new.append(sock)
        with self._changed:
            self._new.extend(new)
            self.members.extend(new)
        self._wake_w.send(b"x")
        with self._changed:
            if not self._changed.wait_for(lambda: all(s in self._welcomed for s in new), timeout):
                missing = sum(s not in self._welcomed for s in new)
                raise TimeoutError(f"{missing} of {len(new)} new crowd members got no welcome line "
                                   f"({self.welcome!r}...) within {timeout:g} s")

    def _loop(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    self._wake_r.recv(1024)
                    with self._changed:
                        for s in self._new:
                            self._decoders[s] = LineDecoder(1 << 20)
                            self._selector.register(s, selectors.EVENT_READ)
                        self._new.clear()
                    continue
                try:
                    data = sock.recv(RECV_SIZE)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(sock)
                    continue
                now = clock()
                lines = self._decoders[sock].feed(data)  # type: ignore[index]
                if sock not in self._welcomed and any(line.startswith(self.welcome) for line in lines):
                    with self._changed:
                        self._welcomed.add(sock)  # type: ignore[arg-type]
                        self._changed.notify_all()
                chats = [line for line in lines if line.startswith(b"<")]
                if chats:
                    with self._changed:
                        for line in chats:
                            text = line.partition(b"> ")[2].decode("utf-8", "replace")
                            self.arrivals.setdefault(text, []).append(now)
                        self.delivered += len(chats)
                        self._changed.notify_all()

    def wait_all(self, text: str, timeout: float = 30.0) -> list[float]:
        """Block until every member received the message ``text``; their arrival times."""
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.arrivals.get(text, ())) >= len(self.members), timeout)
            got = list(self.arrivals.get(text, ()))
        if not ok:
            raise TimeoutError(f"{len(got)} of {len(self.members)} crowd members got {text!r} in {timeout:g} s")
        return got

    def wait_delivered(self, total: int, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.delivered >= total, timeout):
                raise TimeoutError(f"{self.delivered} of {total} deliveries in {timeout:g} s")

    def stop(self) -> None:
        self._unregister()
        if self._stopping:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(TIMEOUT)
        for sock in self.members:
            sock.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
