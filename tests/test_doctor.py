"""chatlab doctor, each failure built for real and diagnosed: never mocked.

Every case starts what a student would meet -- nothing, a second process on
the port, a web server, a program that accepts and says nothing, a TLS
server, a server on 127.0.0.1 dialled from another host, a firewall -- and
runs ``chatlab doctor`` as a command against it.  The network cases use the
lab's hosts (``chatlab.net.Network``) and skip without root.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from net_support import needs_network, needs_nft, network  # noqa: F401 - network is a fixture

pytestmark = pytest.mark.timeout(90)
DOCTOR = [sys.executable, "-m", "chatlab", "doctor"]


def doctor(*args: str, host=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``chatlab doctor ARGS`` to its end (on a lab host, if given)."""
    command = [*DOCTOR, *args]
    if host is not None:
        return host.run(command, timeout=timeout, check=False)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def start() -> Iterator[Callable[..., tuple[subprocess.Popen, re.Match]]]:
    """Start a process and wait for the line (a regular expression) that says it is ready; all killed at the end."""
    started: list[subprocess.Popen] = []

    def run(command: list[str], ready: str, **popen) -> tuple[subprocess.Popen, re.Match]:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
        started.append(process)
        seen = []
        for line in process.stdout:  # bounded by the test's timeout
            seen.append(line)
            match = re.search(ready, line)
            if match:
                return process, match
        raise AssertionError(f"{command} ended before printing {ready!r}: {''.join(seen)}")

    yield run
    for process in started:
        process.kill()
        process.wait()
        process.stdout.close()


def serve(start, *options: str) -> tuple[subprocess.Popen, int]:
    process, match = start([sys.executable, "-m", "chatlab", "serve", "--port", "0", *options],
                           r"listening on \S+:(\d+)$")
    return process, int(match.group(1))


def free_port() -> int:
    """A port nothing listens on (the kernel gave it, we closed it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SILENT_LISTENER = """
import socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print("listening on", listener.getsockname()[1], flush=True)
held = []
while True:
    held.append(listener.accept()[0])  # accept, and never say a word
"""


# --------------------------------------------------------------- on this machine


def test_a_chatlab_server_answers(start) -> None:
    _, port = serve(start)
    done = doctor(f"127.0.0.1:{port}")
    assert done.returncode == 0, done.stdout
    assert "banner: 'chatlab/1" in done.stdout and "ping frame: pong in" in done.stdout
    assert f"Good: a chatlab server answered on 127.0.0.1:{port}." in done.stdout


def test_nothing_listening_is_refused() -> None:
    port = free_port()
    done = doctor(f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "refused after" in done.stdout and "reset (RST)" in done.stdout
    assert f"Diagnosis: nothing listens on 127.0.0.1:{port}: connection refused." in done.stdout
    assert f"chatlab serve --port {port}" in done.stdout


def test_a_name_that_does_not_resolve() -> None:
    done = doctor("no-such-host.invalid:5050")  # .invalid never resolves (RFC 2606)
    assert done.returncode == 1
    assert "Diagnosis: the name 'no-such-host.invalid' does not resolve to any address." in done.stdout
    assert "use the server's IP address" in done.stdout


def test_a_web_server_is_not_a_chatlab_server(start) -> None:
    _, match = start([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"], r"port (\d+)")
    done = doctor(f"127.0.0.1:{match.group(1)}")
    assert done.returncode == 1
    assert "sent an HTTP request: it answered 'HTTP/1.0 200 OK'" in done.stdout and "SimpleHTTP" in done.stdout
    assert "Diagnosis: a web (HTTP) server answers" in done.stdout


def test_a_silent_listener_is_named(start) -> None:
    _, match = start([sys.executable, "-c", SILENT_LISTENER], r"listening on (\d+)")
    done = doctor(f"127.0.0.1:{match.group(1)}")
    assert done.returncode == 1
    assert "it said nothing (a chatlab server speaks first)" in done.stdout
    assert "accepts connections but says nothing, ever" in done.stdout


IMPOSTOR = """
import socket
listener = socket.create_server(("127.0.0.1", 0))
print("listening on", listener.getsockname()[1], flush=True)
held = []
while True:
    conn = listener.accept()[0]
    conn.sendall(b"chatlab/1 I only look like one\\n")  # the banner, then nothing, whatever it is sent
    held.append(conn)
"""


def test_a_banner_without_a_pong_is_not_enough(start) -> None:
    _, match = start([sys.executable, "-c", IMPOSTOR], r"listening on (\d+)")
    done = doctor(f"127.0.0.1:{match.group(1)}")
    assert done.returncode == 1
    assert "banner: 'chatlab/1 I only look like one'" in done.stdout and "ping frame: no pong" in done.stdout
    assert "sends a chatlab banner, but does not answer a ping" in done.stdout


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    pytest.importorskip("cryptography")
    subprocess.run([sys.executable, "-m", "chatlab", "certs", "--out", str(tmp_path / "certs")], check=True,
                   capture_output=True, timeout=60)
    return tmp_path / "certs"


def test_tls_on_the_server_only(start, certs: Path) -> None:
    _, port = serve(start, "--tls", "--cert", str(certs / "server.pem"), "--key", str(certs / "server-key.pem"))
    done = doctor(f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "sent a TLS ClientHello: it answered with a TLS handshake" in done.stdout
    assert "TLS on the server's side only" in done.stdout and "(a chatlab server)" in done.stdout
    assert "--tls --cafile ca.pem" in done.stdout
    # With TLS but without the lab's CA: the certificate is not trusted.
    done = doctor("--tls", f"localhost:{port}")
    assert done.returncode == 1 and "certificate is not trusted" in done.stdout and "--cafile" in done.stdout
    # With the CA file: all is well, encrypted.
    done = doctor("--cafile", str(certs / "ca.pem"), f"localhost:{port}")
    assert done.returncode == 0, done.stdout
    assert "certificate trusted for localhost" in done.stdout and "banner, over TLS" in done.stdout
    assert "answered on 127.0.0.1:%d over TLS" % port in done.stdout


def test_tls_on_the_client_only(start) -> None:
    _, port = serve(start)
    done = doctor("--tls", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "TLS on your side only: the server on 127.0.0.1:%d speaks plain TCP" % port in done.stdout
    assert "connect without --tls" in done.stdout


def test_a_port_held_by_another_program_names_it(start) -> None:
    process, match = start([sys.executable, "-c", SILENT_LISTENER], r"listening on (\d+)")
    port = int(match.group(1))
    done = doctor("--port", str(port))
    assert done.returncode == 1
    assert f"bind 0.0.0.0:{port}: address already in use" in done.stdout
    assert f"PID {process.pid} ({sys.executable} -c" in done.stdout
    assert f"port {port} is held by another program" in done.stdout and f"kill {process.pid}" in done.stdout


def test_a_port_held_by_a_chatlab_server_says_so(start) -> None:
    process, port = serve(start)
    done = doctor("--port", str(port))
    assert done.returncode == 0, done.stdout
    assert f"PID {process.pid} (" in done.stdout and "chatlab serve" in done.stdout
    assert f"a chatlab server already runs on port {port}" in done.stdout


def test_a_free_port_is_free() -> None:
    port = free_port()
    done = doctor("--port", str(port))
    assert done.returncode == 3
    assert f"Result: port {port} is free" in done.stdout


def test_an_address_and_a_port_together_is_a_usage_error() -> None:
    done = doctor("127.0.0.1:5050", "--port", "5050")
    assert done.returncode == 2 and "not both" in done.stderr


# ------------------------------------------------------------ across the lab network


@needs_network
def test_a_chatlab_server_answers_from_another_host(network) -> None:
    a, b = network.host("a"), network.host("b")
    server = b.serve(host="0.0.0.0")
    done = doctor(f"{b.address}:{server.port}", host=a)
    assert done.returncode == 0, done.stdout
    assert f"this end is {a.address}:" in done.stdout  # the client's address and its ephemeral port


@needs_network
def test_a_server_on_loopback_only_dialled_from_another_host(network) -> None:
    a, b = network.host("a"), network.host("b")
    server = b.serve(host="127.0.0.1")
    # From a: b's kernel answers the SYN with a reset; the doctor cannot see b's sockets, and says what to try.
    done = doctor(f"{b.address}:{server.port}", host=a)
    assert done.returncode == 1
    assert "refused" in done.stdout and "--host 0.0.0.0" in done.stdout
    assert f"it probably listens on 127.0.0.1 only" in done.stdout
    # On b itself, dialling its own network address: the doctor sees the listener on 127.0.0.1, and names it.
    done = doctor(f"{b.address}:{server.port}", host=b)
    assert done.returncode == 1
    assert f"a server listens on 127.0.0.1:{server.port} only, the loopback address" in done.stdout
    assert f"PID {server.pid} (" in done.stdout
    assert f"restart the server with --host 0.0.0.0" in done.stdout


@needs_network
@needs_nft
def test_a_firewall_that_drops_syns_is_no_answer(network) -> None:
    a, b = network.host("a"), network.host("b")
    server = b.serve(host="0.0.0.0")
    b.block(server.port)  # nftables on b: incoming SYNs to the port are dropped, without a word
    done = doctor("--timeout", "2", f"{b.address}:{server.port}", host=a)
    assert done.returncode == 1
    assert "no answer within 2 s" in done.stdout and "neither a SYN-ACK nor a reset" in done.stdout
    assert "the SYNs were dropped on the way (a firewall" in done.stdout
    b.unblock()
    assert doctor(f"{b.address}:{server.port}", host=a).returncode == 0  # and it was the firewall
