"""The web port: HTTP/1.1 for the chat page, then an upgrade to WebSocket for the chat.

``chatlab serve --web-port 8080`` listens for browsers.  A browser first
asks for the page with plain HTTP requests (``GET /``, ``GET /chat.js``),
each on a connection of its own here: the answer is one ``Reply`` unit,
then the connection closes.  The page then opens a WebSocket
(RFC 6455): an HTTP request for ``/chat`` that asks to upgrade,

    GET /chat HTTP/1.1
    Host: 192.168.1.5:8080
    Upgrade: websocket
    Connection: Upgrade
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
    Sec-WebSocket-Version: 13
    Origin: http://192.168.1.5:8080

answered by ``101 Switching Protocols`` with ``Sec-WebSocket-Accept``
(the key, with a fixed GUID appended, hashed with SHA-1: proof that the
server read this very request).  From then on the connection speaks
``websocket.py``'s dialect: this one hands over (``upgraded``), as the
main port hands over to frames or lines at the first byte.

HTTP is parsed by h11, the handshake by wsproto: both sans-IO, so this
module, like every dialect, only turns bytes into units and back.

What a careful server adds, and this one does:

* **Origin** (cross-site WebSocket hijacking): a page from any site may
  open a WebSocket to any address, the student's ``localhost`` included;
  the browser tells the server which page asks, in ``Origin``.  Only this
  server's own page (Origin equal to the Host it was reached at) gets a
  socket; any other is refused with 403.  A program that sends no Origin
  is no browser, and could open a TCP connection anyway: it is let in.
* **bounds**: a request's line and headers fit in ``MAX_REQUEST`` bytes
  (else 431), a request has no body (else 413), and it must arrive whole
  within ``HTTP_TIMEOUT`` seconds of the connection (the generic
  ``register_timeout`` hook: a *slowloris* client trickling one header
  a minute is cut off, with 408).  The chat's limits -- connections per
  address, rate -- apply to browsers as to everyone.
* **headers**: a Content-Security-Policy that lets the page run only its
  own script and style and connect only to its own server (so even a
  message that slipped through as HTML could neither run nor phone home),
  ``nosniff``, no framing by other sites, no referrer.
"""

from __future__ import annotations

from http import HTTPStatus
import hmac
import json
from importlib import resources
from typing import Any, Callable, ClassVar
from urllib.parse import parse_qs, urlsplit

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection
from wsproto.utilities import RemoteProtocolError as HandshakeError

from ..errors import FramingError
from ..limits import Limits
from ..protocol import BAD_FRAME, RATE_LIMITED, TOO_LARGE
from . import register
from .base import Dialect, Message, Reply, Unit
from .websocket import WebSocketDialect

MAX_REQUEST = 8 * 1024  # bytes of request line and headers: a browser sends well under 2 KiB
HTTP_TIMEOUT = 10.0  # seconds for a request to arrive whole, from the connection
SOCKET_PATH = b"/chat"  # where the page opens its WebSocket

#: The page: path -> (file in chatlab/webpage, content type).  Package data,
#: so that ``pip install`` carries it; no build step, nothing from outside.
PAGE_FILES: dict[bytes, tuple[str, str]] = {
    b"/": ("index.html", "text/html; charset=utf-8"),
    b"/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    b"/sha256.js": ("sha256.js", "text/javascript; charset=utf-8"),
    b"/chat.css": ("chat.css", "text/css; charset=utf-8"),
    b"/icon.svg": ("icon.svg", "image/svg+xml"),
    b"/instructor.js": ("instructor.js", "text/javascript; charset=utf-8"),
    b"/instructor": ("instructor.html", "text/html; charset=utf-8"),  # with the key only (below)
}
#: The instructor view (chatlab/instructor.py): the page and its numbers, for whoever holds the key.
GUARDED = (b"/instructor", b"/status")


def page_file(name: str) -> bytes:
    """One file of the page, as served."""
    return (resources.files("chatlab") / "webpage" / name).read_bytes()


PAGE: dict[bytes, tuple[bytes, str]] = {path: (page_file(name), kind) for path, (name, kind) in PAGE_FILES.items()}

# Every response carries these.  The policy: nothing but this server's own
# script, style and images; WebSocket only back to it ('self' covers ws: and
# wss: on the same host and port); no plugins, no <base>, no form posts, no
# framing by another site.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"Content-Security-Policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
    (b"Permissions-Policy", b"camera=(), microphone=(), geolocation=()"),
    (b"Cache-Control", b"no-cache"),  # a page updated with the server is fetched again
    (b"Server", b"chatlab"),
    (b"Connection", b"close"),  # one request per connection: a page is four small files
]

#: The HTTP answer to the core's ``error`` codes and ``closing`` reasons.
ERROR_STATUS = {TOO_LARGE: 431, RATE_LIMITED: 429, BAD_FRAME: 400}
CLOSING_STATUS = {"register_timeout": 408, "shutdown": 503, "flooding": 429, "server_error": 500}


def same_origin(origin: bytes, host: bytes, secure: bool) -> bool:
    """Whether ``Origin`` names the page this server serves at ``Host`` (scheme, host and port alike).

    >>> same_origin(b"http://192.168.1.5:8080", b"192.168.1.5:8080", secure=False)
    True
    >>> same_origin(b"https://evil.example", b"192.168.1.5:8080", secure=False)
    False
    """
    try:
        parts = urlsplit(origin.decode("ascii"))
    except UnicodeDecodeError:
        return False
    return parts.scheme == ("https" if secure else "http") and parts.netloc.lower() == host.decode("latin-1").lower()


class WebPort(Dialect):
    """One HTTP connection: a file of the page, an error, or the upgrade to WebSocket."""

    name: ClassVar[str] = "http"
    register_timeout: ClassVar[float | None] = HTTP_TIMEOUT  # must be served or upgraded by then

    def __init__(self, limits: Limits, secure: bool = False, status: Callable[[], dict[str, Any]] | None = None,
                 status_key: str = ""):
        super().__init__(limits)
        self.secure = secure  # served over TLS: the page's origin is https://
        # The instructor view: a snapshot of the server (instructor.StatusBoard.status), behind a secret key.
        self.status, self.status_key = status, status_key
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        self._answered = False  # one request per connection: what follows it is not read

    def refusal(self, reason: str, message: str) -> bytes:
        # Refused at the door (the server is full, a flood): an HTTP answer
        # before the request is even read, which h11 allows.
        return self._respond(503, f"{reason}: {message}\n".encode())

    def feed(self, data: bytes) -> list[Unit]:
        if self._answered:
            return []
        try:
            self._http.receive_data(data)
            event = self._http.next_event()
        except h11.RemoteProtocolError as exc:
            code = TOO_LARGE if exc.error_status_hint == 431 else BAD_FRAME
            raise FramingError(f"not an HTTP/1.1 request: {exc}", code=code) from None
        if not isinstance(event, h11.Request):
            return []  # NEED_DATA: the request has not arrived whole
        self._answered = True
        return self._answer(event)

    def _answer(self, request: h11.Request) -> list[Unit]:
        path = request.target.split(b"?", 1)[0]
        headers = {name: value for name, value in request.headers}  # h11 gives names in lower case
        if b"content-length" in headers and headers[b"content-length"] != b"0" or b"transfer-encoding" in headers:
            return [Reply(self._respond(413, b"this server takes no request bodies\n"), close="protocol_error")]
        if path == SOCKET_PATH:
            return self._upgrade(request, headers)
        if request.method not in (b"GET", b"HEAD"):
            return [Reply(self._respond(405, b"only GET\n", [(b"Allow", b"GET, HEAD")]), close="protocol_error")]
        if path in GUARDED and not self._has_key(request.target):
            path = b"/no such page"  # the same answer as any page that does not exist: nothing to guess from
        if path == b"/status":
            assert self.status is not None
            snapshot = json.dumps(self.status(), ensure_ascii=False).encode()
            return [Reply(self._respond(200, snapshot, [(b"Content-Type", b"application/json")]), close="served")]
        if path not in PAGE:
            return [Reply(self._respond(404, b"not found: the chat is at /\n"), close="served")]
        body, kind = PAGE[path]
        return [Reply(self._respond(200, body, [(b"Content-Type", kind.encode())], head=request.method == b"HEAD"),
                      close="served")]

    def _has_key(self, target: bytes) -> bool:
        """Whether the URL carries the instructor view's key (compared in constant time)."""
        if self.status is None or not self.status_key:
            return False
        given = parse_qs(urlsplit(target.decode("latin-1")).query).get("key", [""])[0]
        return hmac.compare_digest(given.encode(), self.status_key.encode())

    def _upgrade(self, request: h11.Request, headers: dict[bytes, bytes]) -> list[Unit]:
        """The WebSocket handshake: refuse another site's page, else accept and hand over."""
        origin, host = headers.get(b"origin"), headers.get(b"host", b"")
        if origin is not None and not same_origin(origin, host, self.secure):
            return [Reply(self._respond(403, b"this chat takes WebSocket connections from its own page only\n"),
                          close="cross_origin")]
        if b"upgrade" not in headers:  # a browser that opened /chat as a page
            return [Reply(self._respond(426, b"this is the chat's WebSocket: open / instead\n",
                                        [(b"Upgrade", b"websocket"), (b"Content-Type", b"text/plain; charset=utf-8")]),
                          close="protocol_error")]
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            list(ws.events())  # wsproto's Request: the handshake's fields, checked
        except HandshakeError as exc:
            # Not an upgrade, or a WebSocket version we do not speak.
            status = exc.event_hint.status_code if isinstance(exc.event_hint, RejectConnection) else 400
            extra = [(b"Sec-WebSocket-Version", b"13")] if status == 426 else []
            extra.append((b"Content-Type", b"text/plain; charset=utf-8"))
            return [Reply(self._respond(status, f"a WebSocket upgrade is needed here: {exc}\n".encode(), extra),
                          close="protocol_error")]
        # No extension is accepted: permessage-deflate would give every
        # connection bytes of its own, and a broadcast must be encoded once.
        accept = ws.send(AcceptConnection())
        chat = WebSocketDialect(self.limits, ws)
        self.upgraded = chat
        trailing, _ = self._http.trailing_data  # frames the browser sent right behind its request
        return [Reply(accept), *(chat.feed(trailing) if trailing else [])]

    def _respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 head: bool = False) -> bytes:
        """One whole response, written by h11 (which checks it against the request it answers)."""
        fields = [*SECURITY_HEADERS, *(headers or [(b"Content-Type", b"text/plain; charset=utf-8")]),
                  (b"Content-Length", str(len(body)).encode())]
        out = self._http.send(h11.Response(status_code=status, headers=fields, reason=HTTPStatus(status).phrase)) or b""
        if not head:
            out += self._http.send(h11.Data(data=body)) or b""
        return out + (self._http.send(h11.EndOfMessage()) or b"")

    def parse(self, unit: bytes) -> Message | None:  # pragma: no cover - an HTTP port yields only replies
        raise AssertionError("an HTTP connection is answered by replies; chat comes after the upgrade")

    def encode(self, msg: Message) -> bytes:
        # The core says something to a connection that is still HTTP: an
        # error (a bad request) or a closing (a timeout, a shutdown).  It
        # becomes the HTTP answer, unless one was given already.
        if self._answered or self._http.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        if msg["type"] == "error":
            status = ERROR_STATUS.get(msg["code"], 400)
        elif msg["type"] == "closing":
            status = CLOSING_STATUS.get(msg["reason"], 400)
        else:
            return b""  # chat is never sent to an HTTP connection
        self._answered = True
        return self._respond(status, f"{msg.get('message', '')}\n".encode())

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        return b""  # an HTTP connection is in no room


register(WebPort)
register(WebSocketDialect)
