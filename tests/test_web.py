"""The web port without a browser: the HTTP and WebSocket dialects sans-IO, then live on every model.

The sans-IO tests feed the dialects bytes -- one at a time where it
matters, since TCP may cut anywhere -- and read the answers back with
wsproto's *client* side, the way a browser would.  The live tests chat
through ``chatlab.webclient`` next to frames and lines clients.
(test_web_browser.py does it all again in real Chromium.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("wsproto")
pytest.importorskip("h11")

from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage  # noqa: E402
from wsproto.extensions import PerMessageDeflate  # noqa: E402
from wsproto.frame_protocol import FrameProtocol  # noqa: E402

from chatlab.client import ChatClient  # noqa: E402
from chatlab.dialects import DIALECTS, Reply  # noqa: E402
from chatlab.dialects.web import HTTP_TIMEOUT, PAGE, PAGE_FILES, WebPort, same_origin  # noqa: E402
from chatlab.dialects.websocket import WebSocketDialect  # noqa: E402
from chatlab.errors import FramingError  # noqa: E402
from chatlab.limits import Limits  # noqa: E402
from chatlab.servers import Listener  # noqa: E402
from chatlab.testing import CoreDriver, RawClient  # noqa: E402
from chatlab.webclient import WebSocketClient, WebSocketRefused  # noqa: E402

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1:8080"
ORIGIN = "http://127.0.0.1:8080"


class Browser:
    """The browser's end of one WebSocket, sans-IO (wsproto's client): bytes to send, events read back."""

    def __init__(self, origin: str | None = ORIGIN, host: str = HOST):
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"Origin", origin.encode())] if origin else []
        # Offering compression, as Chrome does: the server must decline it.
        self.request = self.ws.send(Request(host=host, target="/chat", extra_headers=headers,
                                            extensions=[PerMessageDeflate()]))

    def read(self, data: bytes) -> list[Any]:
        self.ws.receive_data(data)
        return list(self.ws.events())

    def messages(self, data: bytes) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.read(data) if isinstance(e, TextMessage)]

    def text(self, msg: dict[str, Any]) -> bytes:
        """One message as a (masked) text frame: wsproto's own framing, usable even before the 101 is read."""
        return bytes(FrameProtocol(client=True, extensions=[]).send_data(json.dumps(msg)))


def upgraded(room: CoreDriver, cid: int, origin: str | None = ORIGIN) -> Browser:
    """A web connection in the core, upgraded to WebSocket."""
    browser = Browser(origin)
    room.connect(cid, dialect=WebPort(Limits()))
    room.send(cid, browser.request)
    assert isinstance(browser.read(room.take(cid))[0], AcceptConnection)
    return browser


# ---------------------------------------------------------------- HTTP, sans-IO


def test_the_page_is_served_with_its_security_headers():
    port = WebPort(Limits())
    [reply] = port.feed(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
    assert isinstance(reply, Reply) and reply.close == "served"  # one request, then the connection closes
    head, _, body = reply.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    csp = headers[b"Content-Security-Policy"].decode()
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert headers[b"X-Content-Type-Options"] == b"nosniff" and headers[b"X-Frame-Options"] == b"DENY"
    assert headers[b"Content-Type"] == b"text/html; charset=utf-8"
    assert body == PAGE[b"/"][0] and int(headers[b"Content-Length"]) == len(body)
    assert port.feed(b"GET /chat.js HTTP/1.1\r\n\r\n") == []  # what follows the one request is not read


def test_a_request_fed_one_byte_at_a_time_gets_the_same_answer():
    request = b"GET /chat.js?v=1 HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nAccept: */*\r\n\r\n"
    whole = WebPort(Limits()).feed(request)
    port, pieces = WebPort(Limits()), []
    for i in range(len(request)):
        pieces += port.feed(request[i:i + 1])
    assert pieces == whole and whole[0].data.endswith(PAGE[b"/chat.js"][0])


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"413"),
    (b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n", b"426"),  # the socket's path, but no upgrade asked for
    (b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", b"426"),
])
def test_what_is_not_the_page_gets_an_http_error(request_bytes, status):
    [reply] = WebPort(Limits()).feed(request_bytes)
    assert reply.data.startswith(b"HTTP/1.1 " + status) and reply.close is not None


def test_head_gets_the_headers_alone():
    [reply] = WebPort(Limits()).feed(b"HEAD /chat.css HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.data.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(PAGE[b"/chat.css"][0]) in head and body == b""


def test_a_request_that_is_not_http_or_too_large_is_answered_then_closed():
    room = CoreDriver()
    room.connect(1, dialect=WebPort(Limits()))
    room.send(1, b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    assert room.take(1).startswith(b"HTTP/1.1 400 Bad Request\r\n") and room.closed[1] == "protocol_error"
    room.connect(2, dialect=WebPort(Limits()))
    room.send(2, b"GET / HTTP/1.1\r\nCookie: " + b"x" * 10_000)  # headers past MAX_REQUEST, not even complete
    assert room.take(2).startswith(b"HTTP/1.1 431 ") and room.closed[2] == "protocol_error"


def test_a_slow_request_is_cut_off_with_408_long_before_the_register_timeout():
    room = CoreDriver(limits=Limits(register_timeout=60))
    room.connect(1, dialect=WebPort(Limits()))
    room.send(1, b"GET / HTTP/1.1\r\nX-Slow: ")  # slowloris: a header, a byte at a time, forever
    room.tick(HTTP_TIMEOUT - 1)
    assert 1 not in room.closed
    room.tick(1.5)
    assert room.take(1).startswith(b"HTTP/1.1 408 Request Timeout") and room.closed[1] == "register_timeout"


def test_once_upgraded_a_browser_has_the_servers_register_timeout():
    room = CoreDriver(limits=Limits(register_timeout=60))
    upgraded(room, 1)
    room.tick(HTTP_TIMEOUT + 5)
    assert 1 not in room.closed  # a WebSocket is a chat client: 60 s to say hello
    room.tick(60)
    assert room.closed[1] == "register_timeout"


def test_a_refusal_at_the_door_is_an_http_503():
    room = CoreDriver(limits=Limits(max_per_address=1))
    room.connect(1, "10.0.0.9:1000", dialect=WebPort(Limits()))
    refused = room.connect(2, "10.0.0.9:1001", dialect=WebPort(Limits()))
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"too_many_connections" in refused
    assert room.closed[2] == "too_many_connections"


def test_same_origin_means_scheme_host_and_port():
    assert same_origin(b"http://127.0.0.1:8080", b"127.0.0.1:8080", secure=False)
    assert same_origin(b"HTTP://Chat.Example:8080", b"chat.example:8080", secure=False)
    assert not same_origin(b"http://127.0.0.1:8081", b"127.0.0.1:8080", secure=False)  # another port
    assert not same_origin(b"https://127.0.0.1:8080", b"127.0.0.1:8080", secure=False)  # another scheme
    assert same_origin(b"https://127.0.0.1:8443", b"127.0.0.1:8443", secure=True)
    assert not same_origin(b"null", b"127.0.0.1:8080", secure=False)  # a sandboxed frame, a file: page
    assert not same_origin(b"http://evil.example", b"127.0.0.1:8080", secure=False)


# ----------------------------------------------------------- WebSocket, sans-IO


def test_the_upgrade_answers_the_key_and_hands_over_byte_by_byte():
    browser = Browser()
    # A browser may send its first message right behind the request: it must not be lost.
    stream = browser.request + browser.text({"type": "hello", "name": "ada"})
    port = WebPort(Limits())
    dialect, units = port, []
    for i in range(len(stream)):
        units += dialect.feed(stream[i:i + 1])
        dialect = dialect.upgraded or dialect  # as the core swaps them
    assert isinstance(port.upgraded, WebSocketDialect) and dialect is port.upgraded
    accept = units[0]
    assert isinstance(accept, Reply) and accept.data.startswith(b"HTTP/1.1 101 ")
    key = re.search(rb"Sec-WebSocket-Key: (\S+)", browser.request, re.IGNORECASE)[1]
    expected = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert b"Sec-WebSocket-Accept: " + expected + b"\r\n" in accept.data  # RFC 6455, section 4.2.2
    assert b"permessage-deflate" in browser.request  # offered...
    assert b"Sec-WebSocket-Extensions" not in accept.data  # ... and declined: broadcasts are encoded once
    assert [port.upgraded.parse(u) for u in units[1:]] == [{"type": "hello", "name": "ada"}]


def test_a_request_and_its_first_message_in_one_piece():
    browser = Browser()
    port = WebPort(Limits())
    units = port.feed(browser.request + browser.text({"type": "ping", "id": 7}))
    assert isinstance(units[0], Reply) and port.upgraded.parse(units[1]) == {"type": "ping", "id": 7}


def test_another_sites_page_is_refused_and_a_program_without_origin_let_in():
    for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"]:
        port = WebPort(Limits())
        [reply] = port.feed(Browser(origin).request)
        assert reply.data.startswith(b"HTTP/1.1 403 Forbidden") and reply.close == "cross_origin"
        assert port.upgraded is None
    port = WebPort(Limits())
    port.feed(Browser(origin=None).request)
    assert isinstance(port.upgraded, WebSocketDialect)


def test_messages_fed_one_byte_at_a_time_are_the_frames_mode_messages():
    room = CoreDriver()
    room.register(1, "bob")
    browser = upgraded(room, 2)
    stream = browser.text({"type": "hello", "name": "ada"}) + browser.text({"type": "say", "text": "héllo ✓"})
    for i in range(len(stream)):
        room.send(2, stream[i:i + 1])
    got = browser.messages(room.take(2))
    assert [m["type"] for m in got] == ["welcome", "message"]
    assert got[0] == {"type": "welcome", "name": "ada", "users": ["bob", "ada"], "room": "lobby"}
    said = got[1]
    assert (said["from"], said["text"], said["room"]) == ("ada", "héllo ✓", "lobby")  # it hears its own, with its id
    assert [(m["from"], m["text"], m["id"]) for m in room.frames(1) if m["type"] == "message"] == \
        [("ada", "héllo ✓", said["id"])]


def test_a_broadcast_is_the_same_bytes_for_every_browser():
    room = CoreDriver()
    a, b = upgraded(room, 1), upgraded(room, 2)
    room.send(1, a.text({"type": "hello", "name": "ada"}))
    room.send(2, b.text({"type": "hello", "name": "bob"}))
    room.take(1), room.take(2)
    room.register(3, "cy")
    room.take(1), room.take(2)
    room.send_msg(3, {"type": "say", "text": "to all"})
    one, two = room.take(1), room.take(2)
    assert one == two and one[0] == 0x81 and not one[1] & 0x80  # FIN + text; the server's frames are unmasked
    [msg] = a.messages(one)
    assert one == WebSocketDialect.encode_shared(msg)


def test_a_message_over_the_limit_is_refused_as_it_arrives_with_close_code_1009():
    room = CoreDriver()
    browser = upgraded(room, 1)
    huge = browser.ws.send(TextMessage(data="x" * 70_000))
    room.send(1, huge[:40_000])
    assert 1 not in room.closed  # under the limit so far: held
    room.send(1, huge[40_000:])
    events = browser.read(room.take(1))
    assert [json.loads(e.data)["type"] for e in events if isinstance(e, TextMessage)] == ["error", "closing"]
    assert json.loads(events[0].data)["code"] == "too_large"
    [close] = [e for e in events if isinstance(e, CloseConnection)]
    assert (close.code, close.reason) == (1009, "protocol_error") and room.closed[1] == "protocol_error"


def test_a_claim_of_4_gb_is_not_buffered():
    dialect = WebSocketDialect(Limits(), _server_side_upgraded())
    header = bytes([0x81, 0x80 | 127]) + (4 << 30).to_bytes(8, "big") + b"\x00\x00\x00\x00"
    dialect.feed(header + b"x" * 60_000)
    assert dialect.pending == 60_000
    with pytest.raises(FramingError) as refused:
        dialect.feed(b"x" * 10_000)
    assert refused.value.code == "too_large"


def _server_side_upgraded() -> WSConnection:
    ws = WSConnection(ConnectionType.SERVER)
    ws.receive_data(Browser().request)
    list(ws.events())
    ws.send(AcceptConnection())
    return ws


@pytest.mark.parametrize("frame, code", [
    (bytes([0x81, 0x02]) + b"hi", 1002),  # unmasked: a browser always masks (RFC 6455, section 5.1)
    (bytes([0x81, 0x82, 0, 0, 0, 0]) + b"\xff\xfe", 1007),  # a text message that is not UTF-8
    (bytes([0x83, 0x80, 0, 0, 0, 0]), 1002),  # opcode 3 does not exist
])
def test_a_broken_stream_is_answered_then_closed_with_its_code(frame, code):
    room = CoreDriver()
    room.register(9, "watcher")
    browser = upgraded(room, 1)
    room.send(1, browser.text({"type": "hello", "name": "ada"}))
    room.take(1), room.frames(9)
    room.send(1, frame)
    events = browser.read(room.take(1))
    [close] = [e for e in events if isinstance(e, CloseConnection)]
    assert close.code == code and room.closed[1] == "protocol_error"
    assert any(m["type"] == "left" and m["reason"] == "protocol_error" for m in room.frames(9))


def test_a_browsers_close_means_bye_and_is_answered_with_a_close():
    room = CoreDriver()
    room.register(9, "watcher")
    browser = upgraded(room, 1)
    room.send(1, browser.text({"type": "hello", "name": "ada"}))
    room.take(1), room.frames(9)
    room.send(1, browser.ws.send(CloseConnection(code=1001, reason="tab closed")))
    [close] = [e for e in browser.read(room.take(1)) if isinstance(e, CloseConnection)]
    assert close.code == 1000 and room.closed[1] == "quit"
    assert [m for m in room.frames(9) if m["type"] == "left"][0]["reason"] == "quit"


def test_keepalive_is_a_websocket_ping_and_a_pong_counts_as_life():
    room = CoreDriver(limits=Limits(ping_interval=30, idle_timeout=100))
    browser = upgraded(room, 1)
    room.send(1, browser.text({"type": "hello", "name": "ada"}))
    room.take(1)
    room.tick(31)
    [ping] = browser.read(room.take(1))
    assert isinstance(ping, Ping)  # not JSON: the browser answers it by itself, even in a background tab
    room.tick(60)
    room.send(1, browser.ws.send(ping.response()))
    room.tick(60)  # 120 s since hello, but only 60 since the pong: still here
    assert 1 not in room.closed


def test_a_client_ping_is_answered_with_a_pong_and_a_binary_json_message_is_read():
    room = CoreDriver()
    browser = upgraded(room, 1)
    room.send(1, browser.ws.send(Ping(payload=b"are you there")))
    [pong] = browser.read(room.take(1))
    assert pong.payload == b"are you there"
    room.send(1, browser.ws.send(BytesMessage(data=b'{"type":"ping","id":3}')))
    assert browser.messages(room.take(1)) == [{"type": "pong", "id": 3}]
    room.send(1, browser.text({"type": "dance"}))
    [error] = browser.messages(room.take(1))
    assert error["code"] == "unknown_type"  # the same errors as frames mode, and the connection stays
    assert 1 not in room.closed


def test_the_server_shutting_down_closes_with_1001():
    room = CoreDriver()
    browser = upgraded(room, 1)
    room.apply(room.core.shutdown(room.now))
    events = browser.read(room.take(1))
    assert json.loads(events[0].data)["reason"] == "shutdown"
    assert (events[1].code, events[1].reason) == (1001, "shutdown")


def test_the_web_dialects_are_registered():
    assert DIALECTS["http"] is WebPort and DIALECTS["websocket"] is WebSocketDialect


# ------------------------------------------------------------------- the page


def test_the_page_is_package_data_and_loads_nothing_from_outside():
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest brings tomli
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["tool"]["setuptools"]["package-data"]["chatlab"]
    assert "webpage/*" in declared  # so that a pip install (not only -e) carries the page
    files = {name for name, _ in PAGE_FILES.values()}
    assert files == {p.name for p in (ROOT / "chatlab" / "webpage").iterdir()}
    html = PAGE[b"/"][0].decode()
    for name in files - {"index.html", "instructor.html", "instructor.js"}:
        assert f'"/{name}"' in html
    assert '"/instructor.js"' in (ROOT / "chatlab" / "webpage" / "instructor.html").read_text()
    for name in files:
        text = (ROOT / "chatlab" / "webpage" / name).read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name  # no CDN, no outside font
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
        if name.endswith(".html"):
            assert not re.search(r"<script>|<style|\son\w+=|style=", text), name  # nothing inline: the CSP refuses it


def test_the_accessible_names_the_issue_promises_are_in_the_page():
    html = PAGE[b"/"][0].decode()
    assert re.search(r'<label for="name">Name</label>', html)
    assert re.search(r'<label for="message"[^>]*>Message</label>', html)
    assert re.search(r'<button type="submit" id="send">Send</button>', html)
    assert 'role="log"' in html


# ------------------------------------------------------------ live, every model


def web_server(start_server, **limits):
    return start_server(listeners=(Listener("web", "127.0.0.1", 0, WebPort),), **limits)


def test_browsers_programs_and_people_share_one_room(start_server, transcript):
    server = web_server(start_server)
    host, port = server.addresses["web"]
    assert urllib.request.urlopen(f"http://{host}:{port}/", timeout=5).read() == PAGE[b"/"][0]
    with ChatClient(*server.address, name="ada") as ada, WebSocketClient(host, port) as web, \
            RawClient(server.address, "nc", transcript) as nc:
        nc.recv_banner()
        nc.send_line("carol")
        nc.recv_line()
        assert web.register("webby")["users"] == ["ada", "carol", "webby"]
        assert ada.wait_for("joined")["name"] == "carol" and ada.wait_for("joined")["name"] == "webby"
        web.say("from the browser")
        heard = ada.wait_for("message")
        assert (heard["from"], heard["text"]) == ("webby", "from the browser")
        assert nc.recv_line() == "* webby joined" and nc.recv_line() == "<webby> from the browser"
        nc.send_line("from nc")
        # Two connections race to the server: ada speaks once nc's line has arrived, so the order is known.
        assert ada.wait_for("message")["text"] == "from nc"
        ada.say("from a program")
        got = [web.wait_for("message") for _ in range(3)]  # its own first: programs and pages hear their own
        assert [(m["from"], m["text"]) for m in got] == [("webby", "from the browser"), ("carol", "from nc"),
                                                          ("ada", "from a program")]
        assert [m["id"] for m in got] == sorted(m["id"] for m in got)  # one order for every dialect
        web.send({"type": "hello", "name": "again"})
        assert web.wait_for("error")["code"] == "already_registered"


def test_another_origin_is_refused_on_every_model(start_server):
    server = web_server(start_server)
    host, port = server.addresses["web"]
    with pytest.raises(WebSocketRefused) as refused:
        WebSocketClient(host, port, origin="http://evil.example")
    assert refused.value.status == 403
    with WebSocketClient(host, port, origin=None) as program:  # no Origin: a program, not a page
        assert program.register("prog")["name"] == "prog"


def test_a_flood_from_a_browser_is_rate_limited_like_any_other(start_server):
    server = web_server(start_server, rate_limit=5, rate_burst=5, flood_limit=0)
    with WebSocketClient(*server.addresses["web"]) as web:
        web.register("fast")
        for i in range(10):
            web.say(f"message {i}")
        assert web.wait_for("error")["code"] == "rate_limited"


def test_a_slowloris_connection_is_closed_on_every_model(start_server):
    class Impatient(WebPort):
        register_timeout: ClassVar[float | None] = 1.0

    server = start_server(listeners=(Listener("web", "127.0.0.1", 0, Impatient),))
    started = time.monotonic()
    with socket.create_connection(server.addresses["web"], timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 5


def test_the_web_port_speaks_tls_with_the_same_certificates(start_server, tmp_path):
    pytest.importorskip("cryptography")
    from chatlab.tls import client_context, make_lab_pki, server_context

    paths = make_lab_pki(tmp_path)
    tls = server_context(paths["cert"], paths["key"])
    server = start_server(tls=tls, listeners=(Listener("web", "127.0.0.1", 0, lambda limits: WebPort(limits, secure=True),
                                                        tls=tls),))
    host, port = server.addresses["web"]
    context = client_context(paths["ca"])
    page = urllib.request.urlopen(f"https://localhost:{port}/", context=context, timeout=5).read()
    assert page == PAGE[b"/"][0]
    with WebSocketClient("localhost", port, tls=context) as web:  # Origin https://localhost:PORT
        assert web.register("secure")["name"] == "secure"
    with pytest.raises(WebSocketRefused):
        WebSocketClient("localhost", port, tls=context, origin=f"http://localhost:{port}")  # http page, https port
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"https://localhost:{port}/", context=ssl.create_default_context(), timeout=5)


# ---------------------------------------------------------------------- the CLI


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chatlab", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen, text: str, timeout: float = 20) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never printed; got {lines}; stderr: {proc.stderr.read() if proc.poll() else ''}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_web_port_prints_the_pages_url():
    proc = serve("--web-port", "0")
    try:
        lines = read_until(proc, "Press Ctrl+C")
        [url] = [re.search(r"http://\S+", line)[0] for line in lines if "Chat in a browser" in line]
        assert url.startswith("http://127.0.0.1:")
        assert b"<title>chatlab</title>" in urllib.request.urlopen(url, timeout=5).read()
    finally:
        stop(proc)


def test_serve_on_every_interface_prints_lan_urls_and_a_qr_code():
    pytest.importorskip("segno")
    from chatlab.weblink import lan_addresses

    if not lan_addresses(ipv6=False):
        pytest.skip("this machine has no LAN address")
    proc = serve("--web-port", "0", "--host", "0.0.0.0")
    try:
        lines = read_until(proc, "Press Ctrl+C")
        urls = [re.search(r"http://\S+", line)[0] for line in lines if re.search(r"(Chat in a browser|or):", line)]
        assert urls and all(not u.startswith("http://127.") for u in urls)
        assert sum("█" in line for line in lines) > 10  # the QR code, drawn with block characters
        assert b"<title>chatlab</title>" in urllib.request.urlopen(urls[0], timeout=5).read()
    finally:
        stop(proc)


def test_the_protocol_documents_examples_are_true():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc.split("## 15. WebSocket", 1)[1]
    key = re.search(r"Sec-WebSocket-Key: (\S+)", section)[1].encode()
    accept = re.search(r"Sec-WebSocket-Accept: (\S+)", section)[1].encode()
    assert base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()) == accept
    frame = bytes.fromhex(re.search(r"^C: ((?:[0-9a-f]{2} ?)+)$", section, re.MULTILINE)[1])
    assert frame[0] == 0x81 and frame[1] == 0x80 | (len(frame) - 6)  # FIN + text, masked, its length
    mask, payload = frame[2:6], frame[6:]
    assert json.loads(bytes(b ^ mask[i % 4] for i, b in enumerate(payload))) == {"type": "hello", "name": "ada"}
    welcome = WebSocketDialect.encode_shared({"type": "welcome", "name": "ada", "users": ["ada"], "room": "lobby"})
    assert welcome.hex(" ").startswith(re.search(r"^S: ((?:[0-9a-f]{2} )+)", section, re.MULTILINE)[1].strip())


def test_the_page_says_why_someone_left_in_the_servers_words():
    from chatlab.protocol import REASON_WORDS

    script = (ROOT / "chatlab" / "webpage" / "chat.js").read_text()
    table = script.split("const REASON_WORDS = {", 1)[1].split("};", 1)[0]
    assert dict(re.findall(r'(\w+): "([^"]*)"', table)) == REASON_WORDS


def test_serve_with_tls_serves_the_page_over_https(tmp_path):
    pytest.importorskip("cryptography")
    from chatlab.tls import client_context, make_lab_pki

    paths = make_lab_pki(tmp_path)
    proc = serve("--web-port", "0", "--tls", "--cert", str(paths["cert"]), "--key", str(paths["key"]))
    try:
        lines = read_until(proc, "Press Ctrl+C")
        [url] = [re.search(r"https://\S+", line)[0] for line in lines if "Chat in a browser" in line]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        context = client_context(paths["ca"])
        page = urllib.request.urlopen(f"https://localhost:{port}/", context=context, timeout=5).read()
        assert b"<title>chatlab</title>" in page
        with WebSocketClient("localhost", port, tls=context) as web:  # wss, the same certificate
            assert web.register("secure")["name"] == "secure"
    finally:
        stop(proc)



# ------------------------------------------------------------ the instructor view


def test_the_instructor_view_needs_its_key():
    from chatlab.instructor import StatusBoard

    board = StatusBoard(CoreDriver().core)

    def get(target: str, **options: Any) -> bytes:
        [reply] = WebPort(Limits(), **options).feed(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return reply.data

    view = {"status": board.status, "status_key": board.key}
    assert get(f"/instructor?key={board.key}", **view).startswith(b"HTTP/1.1 200 ")
    assert b'"connections"' in get(f"/status?key={board.key}", **view)
    for target in ["/instructor", "/instructor?key=", f"/instructor?key={board.key}x", "/status", "/status?key=guess"]:
        assert get(target, **view).startswith(b"HTTP/1.1 404 "), target  # the same as a page that is not there
    assert get(f"/instructor?key={board.key}").startswith(b"HTTP/1.1 404 ")  # a port without the view


def test_the_board_counts_connections_by_dialect_and_messages_a_second():
    from chatlab.instructor import StatusBoard

    room = CoreDriver(limits=Limits(rate_limit=0))
    clock = [100.0]
    board = StatusBoard(room.core, clock=lambda: clock[0])
    room.register(1, "ada")  # frames
    browser = upgraded(room, 2)
    room.send(2, browser.text({"type": "hello", "name": "webby"}))
    room.connect(3, dialect=WebPort(Limits()))  # an HTTP request on its way
    first = board.status()
    assert first["connections"] == {"frames": 1, "websocket": 1, "http": 1}
    assert [(u["name"], u["dialect"], u["rooms"]) for u in first["users"]] == [("ada", "frames", ["lobby"]),
                                                                                ("webby", "websocket", ["lobby"])]
    assert first["messages_per_second"] == 0  # nothing measured yet
    for i in range(20):
        room.send_msg(1, {"type": "say", "text": f"m{i}"})
    clock[0] += 4.0
    assert board.status()["messages_per_second"] == 5.0  # 20 messages in 4 s
    for i in range(10):
        room.send_msg(1, {"type": "say", "text": f"n{i}"})
    clock[0] += 4.0
    assert board.status()["messages_per_second"] == 3.75  # 30 in the 8 s since the first look
    clock[0] += 20.0
    assert board.status()["messages_per_second"] == 0.0  # quiet for longer than the window: the old looks go


def test_serve_prints_the_instructor_view_and_it_answers():
    proc = serve("--web-port", "0")
    try:
        lines = read_until(proc, "Press Ctrl+C")
        [url] = [re.search(r"http://\S+", line)[0] for line in lines if "Instructor view" in line]
        assert "/instructor?key=" in url
        status = json.loads(urllib.request.urlopen(url.replace("/instructor?", "/status?"), timeout=5).read())
        assert status["connections"] == {"http": 1}  # the request asking
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url.split("?")[0], timeout=5)  # no key, no view
    finally:
        stop(proc)
