"""``python3 tasks.py lab`` as a student meets it: JupyterLab on the whole course, with chatlab on its PATH.

A real JupyterLab server is started the way tasks.py starts it (on a free
port, without a browser); its file browser must show exercises/, notebooks/
and docs/, and a terminal opened in it must find the venv's ``chatlab`` and
``python`` first -- what notebook 00 tells the student to type there.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402  (tasks.py is a script at the top of the repository)

pytest.importorskip("jupyterlab")
websocket = pytest.importorskip("tornado.websocket")

pytestmark = pytest.mark.timeout(120)


def test_lab_opens_the_welcome_notebook_rooted_at_the_project():
    command = [str(part) for part in tasks.lab_command([])]
    assert f"--ServerApp.root_dir={ROOT}" in command
    assert command[-1] == str(Path("notebooks") / "00_welcome.ipynb") and (ROOT / command[-1]).exists()
    env = tasks.lab_environment()
    assert env["PATH"].split(tasks.os.pathsep)[0] == str(tasks.BIN)


@pytest.fixture
def lab_server():
    """JupyterLab started as tasks.py starts it, on a free port; stopped whatever happens."""
    if not (tasks.BIN / "jupyter").exists():
        pytest.skip(f"no {tasks.BIN / 'jupyter'}: run 'python3 tasks.py setup' first")
    tasks.write_lab_config()
    token = secrets.token_hex(16)
    extra = ["--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={token}",
             "--ServerApp.port_retries=0"]
    proc = subprocess.Popen([str(c) for c in tasks.lab_command(extra)], cwd=ROOT, env=tasks.lab_environment(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: dict[str, str] = {}
    ready = threading.Event()
    log: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            log.append(line)
            match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/", line)
            if match and "port" not in found:
                found["port"] = match.group(1)
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60) and "port" in found, "JupyterLab did not start:\n" + "".join(log[-30:])
        # Jupyter prints its address a moment before it listens there: wait for the port to accept.
        port, deadline = int(found["port"]), time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None, "".join(log[-30:])
                time.sleep(0.05)
        yield f"127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(10)


def api(where: str, token: str, path: str, method: str = "GET") -> object:
    request = urllib.request.Request(f"http://{where}{path}", method=method,
                                     headers={"Authorization": f"token {token}"},
                                     data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=20) as answer:
        return json.loads(answer.read() or b"null")


def test_the_file_browser_and_a_terminal_see_the_course_and_chatlab(lab_server):
    where, token = lab_server
    names = {item["name"] for item in api(where, token, "/api/contents/")["content"]}
    assert {"exercises", "notebooks", "docs"} <= names, names

    terminal = api(where, token, "/api/terminals", "POST")["name"]

    async def ask() -> str:
        connection = await websocket.websocket_connect(
            f"ws://{where}/terminals/websocket/{terminal}?token={token}")
        try:
            connection.write_message(json.dumps(
                # "MA""RK" in what is typed, MARK in what is printed: the echo of the line never matches.
                ["stdin", "echo MA\"\"RK:$(command -v chatlab):$(command -v python):$VIRTUAL_ENV:END\r"]))
            seen = ""
            while True:
                message = await asyncio.wait_for(connection.read_message(), 30)
                assert message is not None, f"the terminal closed; it printed:\n{seen}"
                kind, *rest = json.loads(message)
                if kind == "stdout":
                    seen += rest[0]
                    match = re.search(r"MARK:([^:\r\n]*):([^:\r\n]*):([^:\r\n]*):END", seen)
                    if match:
                        return (*match.groups(), seen)
        finally:
            connection.close()

    try:
        chatlab, python, venv, seen = asyncio.run(ask())
    finally:
        api(where, token, f"/api/terminals/{terminal}", "DELETE")
    assert chatlab == str(tasks.BIN / "chatlab"), seen
    assert python == str(tasks.BIN / "python"), python
    assert venv == str(tasks.VENV)
