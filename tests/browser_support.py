"""Real browsers and real terminal clients for the web tests.

* ``Browsers``: headless Chromium (Debian's ``chromium``, never a browser
  downloaded by ``playwright install``) driven by Playwright, each
  browser a process of its own with a fresh profile; desktop (1280 x 800)
  and phone (390 x 844, touch, a mobile user agent).  Every browser is
  closed at the end, and when the test failed, a screenshot of each page
  is saved first (``test-screenshots/<test>/``; CHATLAB_SCREENSHOTS=always
  saves them for passing tests too, to look at).
* ``LineProcess``: a program that chats in lines on stdin/stdout --
  ``chatlab chat`` and ``nc`` -- with a deadline on every read.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-screenshots"

#: How every browser is launched (the issue's list): no sandbox (root in a
#: container), no GPU, no QUIC, nothing fetched from the Internet behind our back.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2,
    "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/156.0.0.0 Mobile Safari/537.36",
}
STEP_TIMEOUT = 10_000  # ms: how long Playwright waits for any one thing on a page


def chromium() -> str:
    """The path of Debian's chromium, or skip (``.ci/run`` and ``tasks.py`` install it)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium; tasks.py does it as root)")
    return path


class Browsers:
    """Browsers opened by one test; all closed by ``close()`` (screenshots first if it failed)."""

    def __init__(self, playwright: Any, test_name: str):
        self.playwright = playwright
        self.test_name = re.sub(r"[^\w.-]+", "_", test_name)
        self.contexts: list[Any] = []
        self.pages: list[tuple[str, Any]] = []
        self.problems: list[str] = []  # script errors any page reported
        self._profiles: list[tempfile.TemporaryDirectory[str]] = []

    def open(self, label: str, url: str | None = None, **options: Any) -> Any:
        """A new browser (its own process and fresh profile) with one page; ``options``: DESKTOP or PHONE."""
        profile = tempfile.TemporaryDirectory(prefix="chatlab-chromium-")
        self._profiles.append(profile)
        context = self.playwright.chromium.launch_persistent_context(
            profile.name, executable_path=chromium(), args=CHROMIUM_FLAGS, headless=True, accept_downloads=True,
            **(options or DESKTOP))
        self.contexts.append(context)
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(STEP_TIMEOUT)
        page.on("pageerror", lambda exc: self.problems.append(f"{label}: {exc}"))
        self.pages.append((label, page))
        if url:
            page.goto(url)
        return page

    def look(self, page: Any, label: str) -> None:
        """A screenshot of one moment, for a person to look at (CHATLAB_SCREENSHOTS=always only)."""
        if os.environ.get("CHATLAB_SCREENSHOTS") == "always":
            folder = SCREENSHOTS / self.test_name
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"{label}.png"))

    def screenshots(self, why: str) -> list[Path]:
        folder = SCREENSHOTS / self.test_name
        folder.mkdir(parents=True, exist_ok=True)
        saved = []
        for label, page in self.pages:
            path = folder / f"{label}.png"
            try:
                page.screenshot(path=str(path), full_page=True, timeout=5000)
                saved.append(path)
            except Exception as exc:  # a crashed page: say so, save the others
                print(f"no screenshot of {label}: {exc}")
        print(f"screenshots ({why}): {', '.join(str(p) for p in saved)}")
        return saved

    def close(self, failed: bool) -> None:
        try:
            if failed or os.environ.get("CHATLAB_SCREENSHOTS") == "always":
                self.screenshots("the test failed" if failed else "CHATLAB_SCREENSHOTS=always")
        finally:
            for context in self.contexts:
                try:
                    context.close()
                except Exception:
                    pass  # already gone
            for profile in self._profiles:
                profile.cleanup()


def join(page: Any, name: str, password: str | None = None) -> None:
    """Type a name (and password) the way a person does: Enter in the Name box joins."""
    page.get_by_role("textbox", name="Name", exact=True).fill(name)
    if password is not None:
        page.get_by_role("textbox", name="Name", exact=True).press("Enter")
        page.get_by_label("Password").fill(password)
        page.get_by_label("Password").press("Enter")
    else:
        page.get_by_role("textbox", name="Name", exact=True).press("Enter")
    page.get_by_role("log").get_by_text(f"Welcome, {name}!").wait_for()


def say(page: Any, text: str, click: bool = False) -> None:
    """Type a message; Enter sends it (or the Send button, with ``click``)."""
    box = page.get_by_role("textbox", name="Message", exact=True)
    box.fill(text)
    if click:
        page.get_by_role("button", name="Send", exact=True).click()
    else:
        box.press("Enter")


def in_log(page: Any, text: str, timeout: float | None = None) -> Any:
    """Wait until the log shows ``text`` (``timeout`` in ms); the element that holds it."""
    found = page.get_by_role("log").get_by_text(text, exact=False).last
    found.wait_for(timeout=timeout)
    return found


class LineProcess:
    """A program that chats in lines (``chatlab chat``, ``nc``), read with a deadline on each line."""

    def __init__(self, command: list[str], label: str, env: dict[str, str] | None = None):
        self.label = label
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, encoding="utf-8", errors="replace", bufsize=1,
                                     env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, test: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """The first line (from now) that holds ``test`` (or satisfies it)."""
        match = (lambda line: test in line) if isinstance(test, str) else test
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.label}: no line with {test!r} within {timeout:g} s; "
                                     f"it printed: {self.seen[-15:]}") from None
            if line is None:
                raise AssertionError(f"{self.label} ended before printing {test!r}; it printed: {self.seen[-15:]}")
            self.seen.append(line)
            if match(line):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
