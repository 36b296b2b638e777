"""The chat page in real headless Chromium, on every server model.

Each test opens real browsers (Debian's chromium, driven by Playwright;
browser_support.py) on a real server, and drives the page as a person
does -- by the accessible names the issue promises: a textbox "Name"
(Enter joins), a textbox "Message" (Enter sends), a button "Send", the
messages in the element with role "log".  Next to the browsers sit the
other kinds of client: ``chatlab chat`` in a terminal, ``nc`` (or, where
it is not installed, a socket typing lines exactly as nc would), and
Python programs.

A failing test leaves a screenshot of every page in test-screenshots/.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("wsproto")

from browser_support import DESKTOP, PHONE, Browsers, LineProcess, chromium, in_log, join, say  # noqa: E402

from chatlab.accounts import Accounts, add_account  # noqa: E402
from chatlab.client import ChatClient  # noqa: E402
from chatlab.dialects.web import WebPort  # noqa: E402
from chatlab.servers import Listener  # noqa: E402
from chatlab.testing import RawClient, Transcript  # noqa: E402

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    chromium()  # skips the module's tests without it
    with playwright_api.sync_playwright() as pw:
        yield pw


@pytest.fixture
def browsers(playwright: Any, request: pytest.FixtureRequest) -> Iterator[Browsers]:
    opened = Browsers(playwright, request.node.name)
    failures = request.session.testsfailed
    try:
        yield opened
        assert not opened.problems, f"the page reported script errors: {opened.problems}"
    finally:
        # The call's report is counted before teardown runs: a rise means this test failed.
        opened.close(failed=request.session.testsfailed > failures)


def web_server(start_server: Any, **options: Any) -> tuple[Any, str]:
    """A server of the current model with a web port; (server, the page's URL)."""
    server = start_server(listeners=(Listener("web", "127.0.0.1", 0, WebPort),), **options)
    host, port = server.addresses["web"]
    return server, f"http://{host}:{port}/"


@pytest.fixture
def terminals() -> Iterator[list[LineProcess]]:
    started: list[LineProcess] = []
    yield started
    for proc in started:
        proc.stop()


def chatlab_chat(terminals: list[LineProcess], server: Any, name: str) -> LineProcess:
    host, port = server.address
    proc = LineProcess([sys.executable, "-m", "chatlab", "chat", "--name", name, f"{host}:{port}"], "chatlab chat")
    terminals.append(proc)
    proc.expect(f"Joined as {name}")
    return proc


class NcLines:
    """A person at nc: the real nc where installed, else a socket sending exactly the bytes nc would."""

    def __init__(self, terminals: list[LineProcess], server: Any):
        host, port = server.address
        self.proc = self.raw = None
        if shutil.which("nc"):
            self.proc = LineProcess(["nc", "-N", host, str(port)], "nc")
            terminals.append(self.proc)
            self.proc.expect("chatlab/1")
        else:
            self.raw = RawClient(server.address, "nc", Transcript())
            self.raw.recv_banner()

    def send(self, line: str) -> None:
        if self.proc:
            self.proc.send(line)
        else:
            self.raw.send_line(line)

    def expect(self, text: str, timeout: float = 10.0) -> str:
        if self.proc:
            return self.proc.expect(text, timeout)
        deadline = time.monotonic() + timeout
        while True:
            line = self.raw.recv_line(max(0.1, deadline - time.monotonic()))
            if text in line:
                return line

    def close(self) -> None:
        if self.raw:
            self.raw.close()


def log_order(page: Any, *texts: str) -> list[float]:
    """Where each text sits in the log, top to bottom (y of its element)."""
    return [in_log(page, text).bounding_box()["y"] for text in texts]


# ------------------------------------------------------------------ one room


def test_two_browsers_a_terminal_and_nc_chat_in_one_room(start_server, browsers, terminals):
    server, url = web_server(start_server)
    ada = browsers.open("ada-desktop", url, **DESKTOP)
    join(ada, "ada")
    carol = chatlab_chat(terminals, server, "carol")
    in_log(ada, "carol joined")
    bob = browsers.open("bob-phone", url, **PHONE)
    join(bob, "bob")
    in_log(bob, "Online: ada, carol, bob")
    in_log(ada, "bob joined")
    dave = NcLines(terminals, server)
    try:
        dave.send("dave")
        dave.expect("Welcome, dave!")
        in_log(bob, "dave joined")

        say(ada, "hello from the desktop")  # Enter sends
        for seen in (bob, ada):
            line = in_log(seen, "hello from the desktop").locator("xpath=..")
            assert "ada" in line.inner_text()  # each message shows its sender
        carol.expect("<ada> hello from the desktop")
        dave.expect("<ada> hello from the desktop")

        bob.get_by_role("textbox", name="Message", exact=True).fill("hi from the phone")
        bob.get_by_role("button", name="Send", exact=True).tap()  # a finger on the Send button
        in_log(ada, "hi from the phone")
        carol.expect("<bob> hi from the phone")
        dave.expect("<bob> hi from the phone")

        carol.send("from the terminal")
        dave.send("from nc")
        for page in (ada, bob):
            in_log(page, "from the terminal")
            in_log(page, "from nc")
        carol.expect("<dave> from nc")

        # A private message: only bob sees it, in a conversation of its own.
        say(ada, "/msg bob just between us")
        assert ada.get_by_role("tab", name="@bob").get_attribute("aria-selected") == "true"  # /msg opens it
        ada.get_by_role("tab", name="lobby").click()
        tab = bob.get_by_role("tab", name=re.compile(r"^@ada"))
        tab.wait_for()
        assert "unread" in tab.inner_text()
        tab.tap()
        assert "ada" in in_log(bob, "just between us").locator("xpath=..").inner_text()
        # Hostile text is text: no element made, no script run, on either page.
        carol.send('<img src=x onerror="window.pwned=1">')
        carol.send("<script>window.pwned=2</script>")
        bob.get_by_role("tab", name=re.compile(r"^lobby")).tap()
        for page in (ada, bob):
            in_log(page, '<img src=x onerror="window.pwned=1">')
            in_log(page, "<script>window.pwned=2</script>")
            assert page.evaluate("window.pwned") is None
            assert page.locator("#log img, #log script").count() == 0
        carol.send("is that all?")
        carol.expect("<carol> is that all?")
        assert not any("just between us" in line for line in carol.seen)  # the private message stayed private
        with ChatClient(*server.address, name="erin") as erin:
            in_log(ada, "erin joined")
            erin.send({"type": "bye", "text": "see you tomorrow"})  # a farewell, told to the room
            in_log(ada, "erin left (said goodbye): see you tomorrow")
    finally:
        dave.close()


# --------------------------------------------------------- rooms and history


def test_rooms_history_and_scrolling_back(start_server, browsers):
    server, url = web_server(start_server, rate_limit=0)
    with ChatClient(*server.address, name="eve") as eve:
        for i in range(1, 31):
            eve.say(f"old message {i:02d}")
        eve.wait_for(lambda m: m["type"] == "message" and m["text"] == "old message 30")
        ada = browsers.open("ada-desktop", url, **DESKTOP)
        join(ada, "ada")
        in_log(ada, "old message 30")
        in_log(ada, "old message 11")  # joining shows the last 20...
        assert ada.get_by_role("log").get_by_text("old message 10").count() == 0
        ada.get_by_role("button", name="Older messages").click()  # ... and scrolling back asks for more
        in_log(ada, "That is the start of lobby's history.")
        assert log_order(ada, "old message 01", "old message 10", "old message 11") == sorted(
            log_order(ada, "old message 01", "old message 10", "old message 11"))

        # A room, joined from the Rooms panel; another, from the phone, by command.
        ada.get_by_role("button", name="Rooms").click()
        ada.get_by_role("textbox", name="Room").fill("games")
        ada.get_by_role("button", name="Join room").click()
        in_log(ada, "You are in games: ada")
        assert ada.get_by_role("tab", name="games").get_attribute("aria-selected") == "true"
        bob = browsers.open("bob-phone", url, **PHONE)
        join(bob, "bob")
        in_log(bob, "old message 30")
        bob.set_viewport_size({"width": 390, "height": 560})  # a smaller phone: twenty lines overflow the log
        assert bob.evaluate("document.getElementById('log').scrollHeight > document.getElementById('log').clientHeight")
        box = bob.locator("#log").bounding_box()
        bob.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        bob.mouse.wheel(0, -20_000)  # scrolling back to the top asks for the older messages by itself
        in_log(bob, "old message 01")
        bob.set_viewport_size(PHONE["viewport"])
        say(bob, "/join games")
        in_log(bob, "You are in games: ada, bob")
        in_log(ada, "bob joined")
        say(bob, "good game")
        in_log(ada, "good game")
        eve.say("meanwhile in the lobby")
        lobby = ada.get_by_role("tab", name=re.compile(r"^lobby"))
        ada.locator("#tabs .badge").wait_for()
        assert "unread" in lobby.inner_text()
        assert ada.get_by_role("log").get_by_text("meanwhile in the lobby").count() == 0  # not in games
        lobby.click()
        in_log(ada, "meanwhile in the lobby")
        assert ada.get_by_role("log").get_by_text("good game").count() == 0  # that was said in games

        # The lists: rooms with their members, people with a button each.
        ada.get_by_role("button", name="Rooms").click()
        ada.get_by_role("button", name="Join games").wait_for()
        assert "games: ada, bob" in ada.locator("#room-list").inner_text()
        ada.get_by_role("button", name="People").click()
        ada.get_by_role("button", name="Private chat with bob").wait_for()

        bob.get_by_role("button", name="Leave room").tap()
        in_log(bob, "You left games.")
        ada.get_by_role("tab", name="games").click()
        in_log(ada, "bob left (left the room)")


def test_a_long_listing_of_rooms_comes_a_page_at_a_time(start_server, browsers):
    server, url = web_server(start_server, max_frame=1024)  # small frames: the listing must be paged
    owners = [ChatClient(*server.address, name=f"owner{i}") for i in range(5)]
    try:
        rooms = [f"room-{n:02d}-with-a-long-name" for n in range(40)]
        for n, room in enumerate(rooms):
            owners[n // 8].send({"type": "join", "room": room})  # 8 each, with the lobby within 10 rooms
        for owner, last in zip(owners, rooms[7::8]):
            owner.wait_for(lambda m: m["type"] == "joined" and m.get("room") == last and "members" in m)
        ada = browsers.open("ada-desktop", url, **DESKTOP)
        join(ada, "ada")
        ada.get_by_role("button", name="Rooms").click()
        ada.get_by_role("button", name="Join room-00-with-a-long-name").wait_for()
        assert ada.get_by_role("button", name=f"Join {rooms[-1]}").count() == 0  # not on the first page
        rows = ada.locator("#room-list li:not(.more-rooms)")
        for _ in range(len(rooms)):  # a page at a time, each asked for by the button
            if ada.get_by_role("button", name=f"Join {rooms[-1]}").count():
                break
            listed = rows.count()
            ada.get_by_role("button", name="More rooms").click()
            ada.locator(f"#room-list li:not(.more-rooms) >> nth={listed}").wait_for()  # the next page came
        ada.get_by_role("button", name=f"Join {rooms[-1]}").wait_for()
        assert ada.locator("#room-list li").count() >= len(rooms)  # every page kept, in order
    finally:
        for owner in owners:
            owner.close()


# --------------------------------------------------------------------- files


def test_a_file_both_ways_checked_by_sha256(start_server, browsers, tmp_path):
    server, url = web_server(start_server)
    ada = browsers.open("ada-desktop", url, **DESKTOP)
    join(ada, "ada")
    bob = browsers.open("bob-phone", url, **PHONE)
    join(bob, "bob")
    upload = tmp_path / "notes.bin"
    upload.write_bytes(os.urandom(100_000))  # four chunks: pulled one at a time
    # Browser to browser, in a private chat.
    say(ada, "/msg bob a file is coming")
    ada.get_by_label("File to send").set_input_files(str(upload))
    in_log(ada, "notes.bin is uploaded and offered to bob.")
    bob.get_by_role("tab", name=re.compile(r"^@ada")).tap()
    in_log(bob, "ada offers the file notes.bin (100,000 bytes)")
    bob.get_by_role("button", name="Accept notes.bin").tap()
    with bob.expect_download() as download:
        bob.get_by_role("link", name="Save notes.bin").tap()
    assert Path(download.value.path()).read_bytes() == upload.read_bytes()
    assert "SHA-256 checked" in in_log(bob, "Received, SHA-256 checked").inner_text()
    in_log(ada, "bob accepted file")

    with ChatClient(*server.address, name="erin") as erin:
        # A program to a browser...
        data = bytes(range(256)) * 300
        erin.send_file(data, "from-erin.dat", to="ada")
        ada.get_by_role("tab", name=re.compile(r"^@erin")).click()
        ada.get_by_role("button", name="Accept from-erin.dat").click()
        with ada.expect_download() as download:
            ada.get_by_role("link", name="Save from-erin.dat").click()
        assert Path(download.value.path()).read_bytes() == data
        # ... and a browser to a room, where a program takes it.
        ada.get_by_role("tab", name=re.compile(r"^lobby")).click()
        ada.get_by_label("File to send").set_input_files(str(upload))
        offer = erin.wait_for(lambda m: m["type"] == "file_offer" and m["name"] == "notes.bin")
        assert offer["room"] == "lobby" and offer["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
        assert erin.accept_file(offer["file"]) == upload.read_bytes()


def test_the_pages_own_sha256_where_crypto_subtle_is_missing(start_server, browsers):
    """On http://LAN-ADDRESS a page is not a "secure context": no crypto.subtle.  Its own SHA-256 must agree."""
    from chatlab.weblink import lan_addresses

    server = start_server(listeners=(Listener("web", "0.0.0.0", 0, WebPort),))  # every interface
    port = server.addresses["web"][1]
    addresses = lan_addresses(ipv6=False)
    url = f"http://{addresses[0]}:{port}/" if addresses else f"http://127.0.0.1:{port}/"
    page = browsers.open("sha-desktop", url, **DESKTOP)
    vectors = {n: bytes((i * 31 + 7) & 255 for i in range(n)) for n in (0, 1, 55, 56, 63, 64, 65, 1000, 1 << 20)}
    got = page.evaluate("""(sizes) => sizes.map((n) => {
        const bytes = new Uint8Array(n);
        for (let i = 0; i < n; i++) bytes[i] = (i * 31 + 7) & 255;
        return chatlabSha256(bytes);
    })""", list(vectors))
    assert got == [hashlib.sha256(v).hexdigest() for v in vectors.values()]
    assert page.evaluate("chatlabSha256(new TextEncoder().encode('abc'))") == hashlib.sha256(b"abc").hexdigest()
    if not addresses:
        return  # no LAN address to make an insecure context with: the function alone was checked
    assert page.evaluate("window.isSecureContext") is False and page.evaluate("!!(crypto && crypto.subtle)") is False
    join(page, "ada")
    other = browsers.open("sha-phone", url, **PHONE)
    join(other, "bob")
    say(page, "/msg bob here it comes")
    page.get_by_label("File to send").set_input_files(files=[{"name": "lan.txt", "mimeType": "text/plain",
                                                                "buffer": b"checked without crypto.subtle\n" * 999}])
    other.get_by_role("tab", name=re.compile(r"^@ada")).tap()
    other.get_by_role("button", name="Accept lan.txt").tap()
    assert "this page's own SHA-256" in in_log(other, "Received, SHA-256 checked").inner_text()


# ------------------------------------------------------------ another origin


class EvilSite(http.server.BaseHTTPRequestHandler):
    """Another site's page that tries to drive the student's chat from the student's browser."""

    target = ""

    def do_GET(self) -> None:
        page = f"""<!doctype html><title>evil</title><body>
<iframe id="frame" src="http://{self.target}/"></iframe>
<script>
window.result = {{events: []}};
const ws = new WebSocket("ws://{self.target}/chat");
ws.onopen = () => {{ window.result.events.push("open"); ws.send(JSON.stringify({{type: "hello", name: "mallory"}})); }};
ws.onmessage = (e) => window.result.events.push("message " + e.data);
ws.onclose = (e) => {{ window.result.events.push("close " + e.code); window.result.done = true; }};
fetch("http://{self.target}/").then(() => window.result.read = true, () => window.result.read = false);
</script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_page_from_another_origin_is_refused(start_server, browsers):
    server, url = web_server(start_server)
    host, port = server.addresses["web"]
    EvilSite.target = f"{host}:{port}"
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EvilSite)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        with ChatClient(*server.address, name="ada") as ada:
            page = browsers.open("evil-site", f"http://127.0.0.1:{evil.server_address[1]}/", **DESKTOP)
            page.wait_for_function("window.result && window.result.done && window.result.read !== undefined")
            result = page.evaluate("window.result")
            assert result["events"] == ["close 1006"]  # refused at the handshake (403): never open
            assert result["read"] is False  # nor may it read the page (no CORS header)
            frame = page.frame_locator("#frame")
            assert frame.locator("#name").count() == 0  # frame-ancestors 'none': the page will not be framed
            ada.who()
            users = ada.wait_for("users")["users"]
            assert users == ["ada"]  # mallory never joined
            # The same browser, on the chat's own page, is let in.
            own = browsers.open("own-page", url, **DESKTOP)
            join(own, "zed")
    finally:
        evil.shutdown()
        evil.server_close()


# ------------------------------------------------------------- reconnecting


def serve_process(model: str, db: Path, port: int = 0, web_port: int | None = 0) -> tuple[subprocess.Popen, int, int]:
    """``chatlab serve`` in a process of its own (to be stopped as a person would, with a signal)."""
    web = ["--web-port", str(web_port)] if web_port is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "chatlab", "serve", "--model", model, "--db", str(db),
                             "--port", str(port), "--rate-limit", "0", *web],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    chat, web_at = None, None if web else 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (chat is None or web_at is None):
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
            chat = int(m[1])
        if m := re.search(r"Chat in a browser: http://127\.0\.0\.1:(\d+)/", line):
            web_at = int(m[1])
    if chat is None or web_at is None:
        stop_process(proc)
        raise AssertionError("chatlab serve did not say where it listens")
    return proc, chat, web_at


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # as Ctrl+C: every client is told, the history committed
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


MISSED = 130  # messages said while a page was away: more than one history page (100) holds


def test_reconnect_after_a_server_restart_with_db_misses_nothing(model, browsers, tmp_path):
    db = tmp_path / "chat.db"
    proc, port, web_port = serve_process(model, db)
    try:
        ada = browsers.open("ada-desktop", f"http://127.0.0.1:{web_port}/", **DESKTOP)
        join(ada, "ada")
        say(ada, "/join games")
        in_log(ada, "You are in games: ada")
        with ChatClient("127.0.0.1", port, name="fred") as fred:
            fred.send({"type": "join", "room": "games"})
            fred.say("before the restart")
            in_log(ada, "fred joined")
            fred.send({"type": "say", "room": "lobby", "text": "lobby before the restart"})
            in_log(ada, "before the restart")
        stop_process(proc)
        in_log(ada, "Server closing the connection: the server is shutting down")
        ada.get_by_text(re.compile("Disconnected; trying again")).wait_for()
        # The server comes back, but for a while without its web port: the chat goes on without ada...
        proc, _, _ = serve_process(model, db, port, web_port=None)
        with ChatClient("127.0.0.1", port, name="fred") as fred:
            for i in range(1, MISSED + 1):  # more than one answer holds: the page must ask page after page
                fred.say(f"said while you were away {i}")
            fred.send({"type": "join", "room": "games"})
            fred.send({"type": "say", "room": "games", "text": "games while you were away"})
            fred.wait_for(lambda m: m["type"] == "message" and m["text"] == "games while you were away")
        stop_process(proc)
        # ... and then with it: the page, still trying by itself, gets back in and catches up.
        proc, _, _ = serve_process(model, db, port, web_port)
        in_log(ada, "Reconnected as ada", timeout=30_000)  # the backoff may have grown to 8 s
        in_log(ada, "1 message arrived in games while you were away.")
        in_log(ada, "games while you were away")
        in_log(ada, "before the restart")
        ada.get_by_role("tab", name=re.compile(r"^lobby")).click()
        in_log(ada, f"{MISSED} messages arrived in lobby while you were away.")
        away = ada.locator("#log .missed")
        assert away.count() == MISSED
        assert [away.nth(i).locator(".text").inner_text() for i in (0, MISSED - 1)] == [
            "said while you were away 1", f"said while you were away {MISSED}"]  # all of them, in order
        assert ada.get_by_role("log").get_by_text("lobby before the restart").count() == 1  # not twice
        where = log_order(ada, "lobby before the restart", f"{MISSED} messages arrived", "said while you were away 1")
        assert where == sorted(where)
        ada.get_by_role("tab", name=re.compile(r"^games")).click()
        with ChatClient("127.0.0.1", port, name="fred") as fred:
            fred.send({"type": "join", "room": "games"})
            in_log(ada, "fred joined")
            say(ada, "back again")
            heard = fred.wait_for(lambda m: m["type"] == "message" and m["text"] == "back again")
            assert heard["room"] == "games"
    finally:
        stop_process(proc)


# -------------------------------------------------------------------- phones


@pytest.mark.parametrize("width", [360, 390])
def test_a_phone_needs_no_sideways_scrolling_and_has_big_targets(start_server, browsers, width):
    server, url = web_server(start_server)
    page = browsers.open(f"phone-{width}", url, **{**PHONE, "viewport": {"width": width, "height": 780}})
    assert_fits(page, width)
    join(page, "a_rather_long_name_of_32_chars__")
    with ChatClient(*server.address, name="other") as other:
        other.say("x" * 300)  # one unbroken word, wider than any phone
        other.say("a normal message, for the screenshot")
        in_log(page, "a normal message")
        for panel in ("Rooms", "People"):
            page.get_by_role("button", name=panel).tap()
        page.get_by_role("button", name="Private chat with other").wait_for()
        assert_fits(page, width)
        page.get_by_role("button", name="Rooms").tap()
        page.get_by_role("button", name="People").tap()
        # The on-screen keyboard takes the bottom half: the message box and Send stay in sight.
        page.get_by_role("textbox", name="Message", exact=True).tap()
        page.set_viewport_size({"width": width, "height": 390})
        for control in (page.get_by_role("textbox", name="Message", exact=True),
                        page.get_by_role("button", name="Send", exact=True)):
            box = control.bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 390, box
        newest, log = in_log(page, "a normal message").bounding_box(), page.locator("#log").bounding_box()
        assert log["y"] <= newest["y"] and newest["y"] + newest["height"] <= log["y"] + log["height"] + 1, (newest, log)
        browsers.look(page, "keyboard-up")
        say(page, "typed with the keyboard up")
        in_log(page, "typed with the keyboard up")
        page.set_viewport_size({"width": width, "height": 780})


def assert_fits(page: Any, width: int) -> None:
    """No sideways scrolling, and every control a finger can hit: at least 44 x 44 CSS pixels."""
    sideways = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert sideways <= 0, f"the page scrolls sideways by {sideways} px at {width} px"
    small = page.evaluate("""() => [...document.querySelectorAll('button, input, a, label.file-button')]
        .filter((e) => !e.classList.contains('sr') && e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
        .map((e) => [e.id || e.textContent.trim(), e.getBoundingClientRect()])
        .filter(([, r]) => r.width < 44 || r.height < 44)
        .map(([what, r]) => `${what}: ${Math.round(r.width)}x${Math.round(r.height)}`)""")
    assert not small, f"controls smaller than 44 x 44 px: {small}"


# --------------------------------------------------------- the instructor


def test_the_instructor_view_shows_who_is_connected_by_dialect(start_server, browsers):
    from chatlab.cli import web_listener
    from chatlab.instructor import StatusBoard

    board = StatusBoard()
    server = start_server(listeners=(web_listener("127.0.0.1", 0, None, board),), rate_limit=0)
    board.core = server.core
    url = f"http://127.0.0.1:{server.addresses['web'][1]}/"
    student = browsers.open("student-phone", url, **PHONE)
    join(student, "ada")
    with ChatClient(*server.address, name="bob") as bob:
        teacher = browsers.open("instructor", f"{url}instructor?key={board.key}", **DESKTOP)
        users = teacher.locator("#users")
        users.get_by_text("ada").wait_for()
        assert "browsers (WebSocket)" in users.locator("tr", has_text="ada").inner_text()
        assert "chatlab chat and programs (frames)" in users.locator("tr", has_text="bob").inner_text()
        for i in range(50):
            bob.say(f"busy {i}")
        teacher.locator("#rate").filter(has_not_text=re.compile(r"^(0\.0|-)$")).wait_for()  # a rate, measured
        browsers.look(teacher, "instructor-view")
        wrong = browsers.open("no-key", f"{url}instructor?key=guess", **DESKTOP)
        assert wrong.locator("#users").count() == 0  # without the key, no page at all


# ------------------------------------------------------------------- TLS


def test_the_page_over_https_and_its_socket_over_wss(start_server, browsers, tmp_path):
    pytest.importorskip("cryptography")
    from chatlab.cli import web_listener
    from chatlab.tls import make_lab_pki, server_context

    paths = make_lab_pki(tmp_path)  # for localhost, 127.0.0.1 and ::1
    tls = server_context(paths["cert"], paths["key"])
    server = start_server(tls=tls, listeners=(web_listener("127.0.0.1", 0, tls),))
    url = f"https://localhost:{server.addresses['web'][1]}/"
    # The lab's authority is not one Chromium knows: told to accept its certificate, as a student
    # who installed ca.pem would have.
    ada = browsers.open("ada-https", url, **DESKTOP, ignore_https_errors=True)
    assert ada.evaluate("location.protocol") == "https:" and ada.evaluate("window.isSecureContext") is True
    join(ada, "ada")
    with ChatClient(*server.address, name="bob", tls=True, cafile=str(paths["ca"])) as bob:
        bob.say("over TLS, both ways")
        in_log(ada, "over TLS, both ways")
        say(ada, "and back, over wss")
        assert bob.wait_for(lambda m: m["type"] == "message" and m["from"] == "ada")["text"] == "and back, over wss"


# ----------------------------------------------------------------- passwords


def test_the_page_asks_for_the_password_of_a_name_with_an_account(start_server, browsers, tmp_path):
    users = tmp_path / "users.txt"
    add_account(str(users), "ada", "correct horse")
    server, url = web_server(start_server, accounts=Accounts.load(str(users)), auth_delay=0.2)
    page = browsers.open("ada-desktop", url, **DESKTOP)
    page.get_by_role("textbox", name="Name", exact=True).fill("ada")
    page.get_by_role("textbox", name="Name", exact=True).press("Enter")
    page.get_by_text("ada has an account: type its password.").wait_for()
    browsers.look(page, "password-asked")
    page.get_by_label("Password").fill("wrong")
    page.get_by_label("Password").press("Enter")
    page.get_by_role("alert").get_by_text("wrong name or password").wait_for()  # errors shown as words
    page.get_by_label("Password").fill("correct horse")
    page.get_by_label("Password").press("Enter")
    in_log(page, "Welcome, ada!")
