"""The ``chatlab`` command, run as a real child process."""

from __future__ import annotations

import os
import re
import secrets
import shutil
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
    # (A bare connect is logged at DEBUG: a connect flood must not flood the log, security.md 2.7.)
    for event in ["registered as ada", "message 1 from ada in lobby: logged", "closed (shutdown)"]:
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


@pytest.mark.parametrize("args", [("serve", "--port", "99999"), ("serve", "--port", "-1"),
                                  ("chat", "127.0.0.1:70000"), ("chat", "127.0.0.1:0"), ("chat", ":99999")])
def test_ports_outside_the_range_are_usage_errors(args):
    out = subprocess.run([*CHATLAB, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ports go from 1 to 65535" in out.stderr and "Traceback" not in out.stderr


def test_chat_send_says_only_what_the_server_answered(processes, tmp_path):
    shared = tmp_path / "notes.txt"
    shared.write_bytes(b"notes\n")
    with ThreadedServer(port=0) as server:
        proc = processes(start("chat", "--name", "bob", "%s:%d" % server.address, stdin=subprocess.PIPE))
        out, err = proc.communicate(f"/send nobody {shared}\n/send nobody {tmp_path / 'missing.txt'}\n"
                                    "/who\n", timeout=30)
    assert "nobody called nobody is here" in out
    assert "* Online: bob" in out  # the answer to the last line, shown before the client exits
    assert "(unknown_user)" not in out  # words for a person; the code is for programs
    assert "offering" not in out  # no promise before the server's answer
    assert f"there is no file {tmp_path / 'missing.txt'}" in out and "Errno" not in out + err


def tmux_screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_screen(session: str, test, what: str, timeout: float = 15.0) -> str:
    """Poll the terminal's screen until ``test(screen)``: the event is what the person would see."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = tmux_screen(session)
        if test(screen):
            return screen
        time.sleep(0.05)
    raise AssertionError(f"the terminal never showed {what}; it shows:\n{tmux_screen(session)}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux drives a real terminal")
def test_chat_in_a_terminal_has_one_prompt_and_quits_cleanly():
    session = f"chl-{secrets.token_hex(3)}-chat"
    with ThreadedServer(port=0) as server:
        command = " ".join([*CHATLAB, "chat", "--name", "ada", "%s:%d" % server.address]) + "; echo EXITED; sleep 30"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "30", command], check=True)
        try:
            screen = wait_screen(session, lambda s: "* Joined as ada" in s and s.rstrip().endswith(">"),
                                 "the welcome and a prompt")
            assert "> >" not in screen and screen.count("> ") <= 1, screen
            subprocess.run(["tmux", "send-keys", "-t", session, "/quit", "Enter"], check=True)
            screen = wait_screen(session, lambda s: "EXITED" in s, "the client exiting")
            assert "EXITED" in [line.strip() for line in screen.splitlines()], screen  # not glued to a prompt
            assert "Press Enter" not in screen
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
