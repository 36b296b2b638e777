"""Test helpers for the IRC port: a raw IRC line client and a reader of IRC lines.

Both read the server's lines independently of chatlab's own IRC code, so
a test checks the dialect against what an IRC client would understand,
not against itself.  Every read has a deadline, and a failure prints every
line the client received.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Callable

Line = tuple[str, str, list[str]]  # (prefix, command, params)


def words(line: str) -> Line:
    """An IRC line as (prefix, command, params), the trailing parameter last."""
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    head, colon, trailing = line.partition(" :")
    params = head.split()
    verb = params.pop(0)
    if colon:
        params.append(trailing)
    return prefix, verb, params


class IrcPeer:
    """A raw IRC client over a real socket: send lines, wait for a command, with deadlines."""

    def __init__(self, address: tuple[str, int], label: str = "irc", tls: ssl.SSLContext | None = None,
                 timeout: float = 10.0):
        self.label, self.timeout = label, timeout
        sock = socket.create_connection(address, timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls is not None else sock
        self.buffer = b""
        self.seen: list[str] = []  # every line received, for the failure message
        self.queue: list[str] = []  # received and not yet looked at
        self.eof = False

    def send(self, *lines: str | bytes) -> None:
        data = b"".join((line.encode() if isinstance(line, str) else line) + b"\r\n" for line in lines)
        self.sock.sendall(data)

    def _read(self, deadline: float, what: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.eof:
            raise AssertionError(f"{self.label} waited for {what} and got "
                                 f"{'the end of the stream' if self.eof else 'nothing more in time'}; "
                                 "it received:\n  " + "\n  ".join(self.seen[-40:]))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            data = None
        except ConnectionResetError:
            data = b""
        if data is None:
            return
        if not data:
            self.eof = True
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\r\n")
        for raw in lines:
            assert len(raw) + 2 <= 512, f"a line of {len(raw) + 2} bytes: {raw[:80]!r}"
            self.seen.append(raw.decode())
            self.queue.append(raw.decode())

    def expect(self, verb: str | tuple[str, ...], test: Callable[[Line], bool] = lambda line: True,
               timeout: float | None = None) -> Line:
        """The next line with this command (or one of these), others before it skipped (and kept in ``seen``)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        verbs = (verb,) if isinstance(verb, str) else verb
        while True:
            while self.queue:
                line = words(self.queue.pop(0))
                if line[1] in verbs and test(line):
                    return line
            self._read(deadline, f"a {verb} line")

    def register(self, nick: str, password: str | None = None) -> list[Line]:
        """NICK and USER (PASS first, given one); every line up to the lobby's end of names."""
        self.send(*([f"PASS {password}"] if password else []), f"NICK {nick}", f"USER {nick} 0 * :{nick} at irc")
        self.expect("001")
        self.expect("366")
        return [words(line) for line in self.seen]

    def sync(self) -> None:
        """A barrier: everything the server sent before answering a PING has arrived."""
        token = f"sync{time.monotonic_ns()}"
        self.send(f"PING :{token}")
        self.expect("PONG", lambda line: line[2][-1] == token)

    def expect_closed(self, timeout: float | None = None) -> list[Line]:
        """Read until the server closes the connection; the lines that came meanwhile."""
        deadline = time.monotonic() + (timeout or self.timeout)
        start = len(self.seen) - len(self.queue)
        self.queue.clear()
        while not self.eof:
            self._read(deadline, "the end of the stream")
        return [words(line) for line in self.seen[start:]]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "IrcPeer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
