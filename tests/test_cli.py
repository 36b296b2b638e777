"""The ``chatlab`` command, run as a real child process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from chatlab.servers import ThreadedServer
from chatlab.testing import frames_client

pytestmark = pytest.mark.timeout(60)

CHATLAB = [sys.executable, "-m", "chatlab"]


def start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*CHATLAB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


@pytest.fixture
def processes():
    """Child processes a test starts; all killed at the end, whatever happened."""
    started: list[subprocess.Popen] = []

    def track(proc: subprocess.Popen) -> subprocess.Popen:
        started.append(proc)
        return proc

    yield track
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe and not pipe.closed:
                pipe.close()


def listening_address(proc: subprocess.Popen) -> tuple[str, int]:
    line = proc.stdout.readline()  # the server prints its address first
    match = re.search(r"listening on ([\d.]+):(\d+)", line)
    assert match, f"no address in {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
    return match.group(1), int(match.group(2))


def free_port() -> int:
    """A port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_version():
    out = subprocess.run([*CHATLAB, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("chatlab ")


@pytest.mark.skipif(os.name == "nt", reason="SIGINT to a child is POSIX-only")
def test_serve_then_ctrl_c_stops_gracefully(processes, tmp_path):
    log = tmp_path / "server.log"
    proc = processes(start("serve", "--port", "0", "--log", str(log)))
    address = listening_address(proc)
    client = frames_client(address, "ada")
    try:
        client.send_frame({"type": "say", "text": "logged"})
        client.expect("message", text="logged")
        proc.send_signal(signal.SIGINT)  # what Ctrl+C does
        started = time.monotonic()
        client.expect("closing", reason="shutdown")
        client.expect_closed()
    finally:
        client.close()
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 2.5
    err = proc.stderr.read()
    assert "Traceback" not in err
    text = log.read_text()
    for event in ["connected", "registered as ada", "message 1 from ada in lobby: logged", "closed (shutdown)"]:
        assert event in text, f"{event!r} missing from the log"
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text)  # timestamped


@pytest.mark.skipif(os.name == "nt", reason="SIGINT to a child is POSIX-only")
@pytest.mark.parametrize("model", ["selectors", "asyncio"])
def test_serve_an_event_loop_model_then_ctrl_c(processes, model):
    proc = processes(start("serve", "--port", "0", "--model", model))
    address = listening_address(proc)
    client = frames_client(address, "ada")
    try:
        client.send_frame({"type": "say", "text": f"served by {model}"})
        client.expect("message", text=f"served by {model}")
        proc.send_signal(signal.SIGINT)  # what Ctrl+C does
        client.expect("closing", reason="shutdown")
        client.expect_closed()
    finally:
        client.close()
    assert proc.wait(timeout=5) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err
    # The log names the model that really ran, from start to stop.
    assert f"{model} server listening on" in err and f"{model} server stopped" in err


def test_address_already_in_use_is_explained(processes):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = processes(start("serve", "--port", str(port)))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "already in use" in err and "--port" in err
    assert "Traceback" not in err


def test_connection_refused_is_explained(processes):
    proc = processes(start("chat", "--name", "ada", f"127.0.0.1:{free_port()}"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "connection refused" in err and "server running" in err
    assert "Traceback" not in err


def test_host_not_found_is_explained(processes):
    proc = processes(start("chat", "--name", "ada", "no-such-host.invalid:5050"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "could not find the host" in err
    assert "Traceback" not in err


def test_chat_from_a_pipe_sends_and_leaves(processes):
    with ThreadedServer(port=0) as server:
        watcher = frames_client(server.address, "watcher")
        try:
            proc = processes(start("chat", "--name", "bob", "%s:%d" % server.address, stdin=subprocess.PIPE))
            watcher.expect("joined", name="bob")
            proc.stdin.write("hello from the terminal\n/who\n")
            proc.stdin.close()  # end of input: the client says bye
            watcher.expect("message", text="hello from the terminal", **{"from": "bob"})
            watcher.expect("left", name="bob", reason="quit")
            assert proc.wait(timeout=10) == 0
        finally:
            watcher.close()


def test_chat_reports_a_taken_name(processes):
    with ThreadedServer(port=0) as server:
        holder = frames_client(server.address, "bob")
        try:
            proc = processes(start("chat", "--name", "BOB", "%s:%d" % server.address, stdin=subprocess.PIPE))
            out, err = proc.communicate("", timeout=30)
            assert proc.returncode == 1
            assert "taken" in err and "Traceback" not in err
        finally:
            holder.close()


def test_chat_notices_the_server_going_away(processes):
    with ThreadedServer(port=0) as server:
        probe = frames_client(server.address, "probe")
        try:
            proc = processes(start("chat", "--name", "ada", "%s:%d" % server.address, stdin=subprocess.PIPE))
            probe.expect("joined", name="ada")  # wait on an event, not a clock
        finally:
            probe.close()
    # The server has stopped under the client, whose input is still open.
    out, err = proc.communicate("", timeout=10)
    assert "shutting down" in out
    assert "Traceback" not in err
    assert proc.returncode == 0


def test_chat_rooms_private_messages_and_files_from_the_terminal(processes, tmp_path):
    from chatlab.client import ChatClient

    shared = tmp_path / "notes.txt"
    shared.write_bytes(b"lecture notes\n" * 1000)
    with ThreadedServer(port=0) as server, ChatClient(*server.address, name="watcher") as watcher:
        watcher.send({"type": "join", "room": "games"})
        watcher.wait_for("joined")
        proc = processes(start("chat", "--name", "bob", "%s:%d" % server.address, stdin=subprocess.PIPE))
        proc.stdin.write("/join games\nin games\n/msg watcher psst\n" f"/send watcher {shared}\n")
        proc.stdin.flush()
        assert watcher.wait_for(lambda e: e["type"] == "message" and e["from"] == "bob")["room"] == "games"
        assert watcher.wait_for(lambda e: e["type"] == "message" and "to" in e)["text"] == "psst"
        offer = watcher.wait_for("file_offer")
        assert watcher.accept_file(offer["file"]) == shared.read_bytes()
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
