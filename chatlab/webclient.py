"""A WebSocket chat client in Python: what the chat page does in a browser, for tests and notebooks.

``chatlab serve --web-port`` speaks WebSocket (docs/protocol.md, section
15).  This client opens the same socket the page opens -- an HTTP request
that asks to upgrade, then one JSON message per WebSocket message -- with
wsproto doing the framing, as the server does.  It is small and blocking
on purpose: ``send`` a message, ``wait_for`` one, with a deadline on
every read.

    with WebSocketClient("127.0.0.1", 8080) as web:
        web.register("ada")
        web.say("hello from a WebSocket")
        print(web.wait_for("message"))
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any, Callable

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Ping, RejectConnection, RejectData, Request,
                            TextMessage)

from .dialects.web import SOCKET_PATH


class WebSocketRefused(ConnectionError):
    """The server answered the upgrade with an HTTP error (403: another site's Origin)."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"the WebSocket upgrade was refused: HTTP {status}: {body.decode(errors='replace').strip()}")
        self.status, self.body = status, body


class WebSocketClient:
    """One WebSocket to a chatlab web port.

    ``origin``: the Origin header to send (a browser always sends its
    page's; None sends none, as a program may).  ``"same"`` (the default)
    sends this server's own, as the chat page does.
    """

    def __init__(self, host: str, port: int, origin: str | None = "same", timeout: float = 5.0,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None):
        self.timeout = timeout
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if origin == "same":
            origin = f"{'https' if tls else 'http'}://{netloc}"
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = tls.wrap_socket(sock, server_hostname=server_hostname or host) if tls else sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[dict[str, Any]] = []
        self.closed: CloseConnection | None = None  # the server's close frame, once it came
        self.name: str | None = None
        headers = [(b"Origin", origin.encode())] if origin else []
        self.sock.sendall(self.ws.send(Request(host=netloc, target=SOCKET_PATH.decode(), extra_headers=headers)))
        self._handshake()

    def _handshake(self) -> None:
        status, body = 0, b""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise WebSocketRefused(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise WebSocketRefused(status, body)
            self._read(deadline, "the answer to the WebSocket upgrade")

    def _read(self, deadline: float, what: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {what} within {self.timeout:g} s")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"no {what} within {self.timeout:g} s") from None
        self.ws.receive_data(data or None)  # None: the TCP connection ended
        if not data:
            raise ConnectionError(f"the server closed the connection while we waited for {what}")

    def send(self, msg: dict[str, Any]) -> None:
        """One message, as one WebSocket text message (masked, as every client's frames are)."""
        self.sock.sendall(self.ws.send(TextMessage(data=json.dumps(msg, ensure_ascii=False))))

    def next_message(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message from the server (answering its pings on the way)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        parts: list[str] = []
        while not self.pending:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        self.pending.append(json.loads("".join(parts)))
                        parts = []
                elif isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = event
                    try:
                        self.sock.sendall(self.ws.send(event.response()))
                    except Exception:
                        pass  # we had closed first, or the socket is gone: nothing to answer
            if not self.pending:
                if self.closed is not None:
                    raise ConnectionError(f"the server closed the WebSocket: {self.closed.code} {self.closed.reason}")
                self._read(deadline, "message")
        return self.pending.pop(0)

    def wait_for(self, match: str | Callable[[dict[str, Any]], bool], timeout: float | None = None) -> dict[str, Any]:
        """The next message of type ``match`` (or for which ``match(msg)`` is true); others are skipped."""
        test = (lambda m: m["type"] == match) if isinstance(match, str) else match
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self.next_message(max(0.0, deadline - time.monotonic()))
            if test(msg):
                return msg

    def register(self, name: str, password: str | None = None) -> dict[str, Any]:
        """Say hello; the welcome (or raise the error's message)."""
        self.send({"type": "hello", "name": name, **({"password": password} if password is not None else {})})
        answer = self.wait_for(lambda m: m["type"] in ("welcome", "error"))
        if answer["type"] == "error":
            raise ConnectionError(f"{answer['code']}: {answer['message']}")
        self.name = answer["name"]
        return answer

    def say(self, text: str, room: str | None = None) -> None:
        self.send({"type": "say", "text": text, **({"room": room} if room else {})})

    def close(self) -> None:
        """Close the WebSocket (a Close frame, as a browser does when a tab closes), then the socket."""
        try:
            if self.closed is None:
                self.sock.sendall(self.ws.send(CloseConnection(code=1000, reason="bye")))
        except Exception:
            pass  # already closing, or the socket is gone
        self.sock.close()

    def __enter__(self) -> "WebSocketClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
