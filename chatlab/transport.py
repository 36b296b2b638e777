"""Transports: how a connection's bytes travel -- as they are, or inside TLS.

A server model moves bytes between sockets and the chat core.  With TLS,
the bytes on the wire are records that must be decrypted on the way in and
encrypted on the way out, and a handshake comes first.  If each server
model handled that itself, each would grow ``if tls:`` branches in its
reading, writing and closing.  Instead, as Twisted wraps TLS around any
protocol (``TLSMemoryBIOProtocol``), TLS here is a *transport* with the
same interface as plain TCP, and every model uses it without knowing which
it has:

* ``receive(raw)``: bytes from the network in, plaintext for the core out
  (nothing, while the handshake runs);
* ``send(plain)``: plaintext from the core in, bytes to write out (held
  back, until the handshake is done, so nothing leaves in clear);
* ``output()``: bytes the transport itself needs written -- the
  handshake's answers, a one-line hint to someone who sent plain text;
* ``close()``: what goes out before the FIN (TLS's close_notify);
* ``failure``: why the connection must end, once it must;
* ``deadline``: when an unfinished handshake is cut off (monotonic).

Both are sans-IO: no socket, no clock, no thread of their own.
"""

from __future__ import annotations

import logging
import ssl
import threading

from .tls import HANDSHAKE_TIMEOUT, PLAIN_TEXT_HINT, TLSLayer, looks_like_tls

log = logging.getLogger("chatlab.server")


class Plain:
    """Plain TCP: bytes pass through untouched.  One shared instance serves every plain connection."""

    failure: str | None = None
    deadline: float | None = None
    wants_to_write = False

    def receive(self, raw: bytes) -> bytes:
        return raw

    def send(self, plain: bytes) -> bytes:
        return plain

    def output(self) -> bytes:
        return b""

    def close(self) -> bytes:
        return b""


PLAIN = Plain()


class TLS:
    """The server's side of one TLS connection, over a ``TLSLayer`` (memory buffers).

    Safe to use from two threads at once (a reader and a writer), as the
    thread-per-client model does.
    """

    def __init__(self, context: ssl.SSLContext, now: float, peer: str = "?",
                 timeout: float = HANDSHAKE_TIMEOUT):
        self.layer = TLSLayer(context, server_side=True)
        self.peer = peer
        # "hello": no byte from the client yet; "handshake"; "up": secured;
        # "closed": closing, or failed.
        self.state = "hello"
        self.failure: str | None = None
        self.deadline: float | None = now + timeout
        self._held: list[bytes] = []  # what the core said before the handshake was done (the banner)
        self._out = bytearray()  # the transport's own bytes to write
        self._lock = threading.Lock()

    @property
    def wants_to_write(self) -> bool:
        return bool(self._out)

    def receive(self, raw: bytes) -> bytes:
        with self._lock:
            if self.state == "up":
                try:
                    return self.layer.receive(raw)
                except ssl.SSLError as exc:  # a broken or forged record
                    self._fail(f"a broken TLS record: {exc}")
                    return b""
            if self.state == "closed":
                return b""
            if self.state == "hello":
                if not looks_like_tls(raw):
                    # Someone with nc, or a client without --tls: tell them, in
                    # clear, in one line -- then close.
                    self._fail(f"plain text sent to the TLS port (expected a TLS handshake, got {raw[:16]!r})")
                    self._out += PLAIN_TEXT_HINT
                    return b""
                self.state = "handshake"
            # One step of the handshake: take what arrived, queue our answer,
            # and return -- never wait here for the client's next flight.
            try:
                self.layer.receive(raw)
                done = self.layer.handshake()
                self._out += self.layer.outgoing()
            except ssl.SSLError as exc:  # e.g. the client does not trust our certificate
                self._fail(f"TLS handshake failed: {exc}")
                self._out += self.layer.outgoing()  # the alert that tells the client why
                return b""
            if not done:
                return b""
            self.state, self.deadline = "up", None
            log.info("%s: TLS up (%s, %s)", self.peer, self.layer.version, self.layer.cipher)
            for plain in self._held:  # the banner, now encrypted
                self.layer.send(plain)
            self._held = []
            self._out += self.layer.outgoing()
            return self.layer.receive(None)  # chat that arrived with the handshake

    def send(self, plain: bytes) -> bytes:
        with self._lock:
            if self.state == "up":
                self.layer.send(plain)
                return self.layer.outgoing()
            if self.state in ("hello", "handshake"):
                self._held.append(plain)  # nothing may go out in clear: wait for the handshake
            return b""  # closing: nothing may follow the close_notify

    def output(self) -> bytes:
        with self._lock:
            out = bytes(self._out)
            self._out.clear()
            return out

    def close(self) -> bytes:
        """A close_notify, if the connection was secured: a clean end an attacker cannot fake."""
        with self._lock:
            out = bytes(self._out)
            self._out.clear()
            if self.state == "up":
                self.layer.close()
                out += self.layer.outgoing()
            self.state = "closed"
            self._held = []
            return out

    def expire(self, timeout: float) -> None:
        """The handshake did not finish in time: give up on it."""
        with self._lock:
            if self.state in ("hello", "handshake"):
                self._fail(f"TLS handshake not finished within {timeout:g} s")

    def _fail(self, why: str) -> None:
        self.failure, self.state, self.deadline, self._held = why, "closed", None, []


Transport = Plain | TLS
