"""``Bot``: one scripted client that plays a person, and records everything it sends and receives.

A bot speaks frames like ``ChatClient``, or lines like a person with
``nc`` -- which is what the course's servers understand.  It reads the
server through the one client wire every chatlab client uses
(``chatlab.dialects.client``), so the banner, a refusal and every message
are parsed as they are everywhere else.  ``plans.py`` runs several bots on a
schedule; ``crowd.py`` holds hundreds of listeners on one thread.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

from ..dialects.client import ClientWire
from ..errors import WireError
from .recorder import CLOSED, CONNECT_STARTED, CONNECTED, RECEIVED, REGISTERED, SENT, Recorder, describe
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
        self.address: tuple[str, int] = (address[0], address[1])
        self.name, self.mode, self.timeout = name, mode, timeout
        self.wire = ClientWire(mode)
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
        self.send({"type": "hello", "name": name})
        if confirm:
            # A welcome in frames mode; in lines mode the course's servers may
            # not send one, so the first line that is not an error will do.
            def answered(msg: dict[str, Any]) -> bool:
                return msg["type"] in ("welcome", "error", "refused") or (
                    self.mode == "lines" and msg["type"] != "banner")
            reply = self.wait_for(answered, what=f"an answer to {name}'s hello")
            if reply["type"] in ("error", "refused"):
                raise RuntimeError(f"{name} was refused: {reply.get('message')} "
                                   f"({reply.get('code') or reply.get('reason')})")
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
        """Send one message: a frame, or (lines mode) the line a person would type for it."""
        self._send_bytes(self.wire.encode(msg), msg)

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
                for msg, size in self.wire.feed(data):
                    self._deliver(msg, size)
        except (OSError, WireError) as exc:
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
