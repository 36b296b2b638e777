"""The server's log (chatlab/serverlog.py): every event, every message, timestamped, in order -- and cheap.

The cheapness is measured by ``chatlab bench`` (docs/performance.md), never
asserted here; these tests check what the log says and in which order.
"""

from __future__ import annotations

import io
import logging
import re
import signal
import subprocess
import sys

import pytest

from chatlab.serverlog import FORMAT, BatchedHandler, EveryLine
from chatlab.testing import CoreDriver, frames_client

pytestmark = pytest.mark.timeout(60)

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    ")


@pytest.fixture
def captured():
    """The chatlab loggers, written through serverlog's formatter and handler into a string."""
    stream = io.StringIO()
    handler = BatchedHandler(stream)
    handler.setFormatter(EveryLine(FORMAT))
    root = logging.getLogger("chatlab")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: (handler.flush(), stream.getvalue().splitlines())[1]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def test_every_line_of_a_burst_gets_its_timestamp_and_the_close_comes_after_it(captured):
    core = CoreDriver()
    core.connect("ada")
    core.send("ada", b"ada\n")  # lines mode: a person, by name
    # Three messages and a /quit in one recv(): one record for the messages, the close after them.
    core.send("ada", b"one\ntwo 100%\nthree\n/quit\n")
    lines = captured()
    said = [i for i, line in enumerate(lines) if " message " in line]
    assert [lines[i].split("INFO    ")[1] for i in said] == [
        "message 1 from ada in lobby: one", "message 2 from ada in lobby: two 100%",
        "message 3 from ada in lobby: three"]
    assert all(STAMP.match(line) for line in lines), lines
    closed = next(i for i, line in enumerate(lines) if "closed (quit)" in line)
    registered = next(i for i, line in enumerate(lines) if "registered as ada" in line)
    assert registered < said[0] and said[-1] < closed


def test_a_protocol_error_is_logged_after_what_was_said_before_it(captured):
    core = CoreDriver()
    core.connect("ada")
    core.send("ada", b"ada\n")
    core.send("ada", b"before\n/nosuchcommand\n")
    lines = captured()
    said = next(i for i, line in enumerate(lines) if "message 1 from ada in lobby: before" in line)
    error = next(i for i, line in enumerate(lines) if "unknown command" in line)
    assert said < error


def test_a_warning_is_written_at_once_with_what_waited_before_it():
    stream = io.StringIO()
    handler = BatchedHandler(stream)
    handler.setFormatter(EveryLine(FORMAT))
    log = logging.getLogger("chatlab.test-serverlog")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("first")
        log.warning("second")  # no flush() called: a warning does not wait
        assert [line.split()[-1] for line in stream.getvalue().splitlines()] == ["first", "second"]
    finally:
        log.removeHandler(handler)
        handler.close()


def serve_and_chat(tmp_path, *options: str) -> str:
    """Run ``chatlab serve`` with ``options``, say one thing, stop it; its log file."""
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "chatlab", "serve", "--port", "0", "--log", str(log), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        host, port = re.search(r"listening on ([\d.]+):(\d+)", line).groups()
        client = frames_client((host, int(port)), "ada")
        try:
            client.send_frame({"type": "say", "text": "logged?"})
            client.expect("message", text="logged?")
            proc.send_signal(signal.SIGINT)
            client.expect("closing", reason="shutdown")
        finally:
            client.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    return log.read_text()


def test_chatlab_serve_logs_every_message_by_default(tmp_path):
    text = serve_and_chat(tmp_path)
    assert "registered as ada" in text and "message 1 from ada in lobby: logged?" in text


def test_no_message_log_keeps_the_rest_of_the_log(tmp_path):
    text = serve_and_chat(tmp_path, "--no-message-log")
    assert "registered as ada" in text and "closed (shutdown)" in text
    assert "message 1 from" not in text
