"""TLS over real sockets: encrypted chat, a verified server, and what goes wrong."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys

import pytest

from chatlab.client import ChatClient, ChatConnectionError
from chatlab.lab import Relay
from chatlab.limits import Limits
from chatlab.protocol import encode_message
from chatlab.servers import MODELS, make_server
from chatlab.testing import talk_until_dropped
from chatlab.tls import TLSLayer, client_context, handshake_over, make_lab_pki, server_context

pytestmark = pytest.mark.timeout(60)

# TLS is a transport of the shared shell (chatlab/transport.py): every model serves it.
TLS_MODELS = sorted(MODELS)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_lab_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=TLS_MODELS)
def tls_server(request, pki):
    server = make_server(request.param, "127.0.0.1", 0, tls=server_context(pki["cert"], pki["key"]))
    server.start()
    yield server
    server.stop()


def test_chat_over_tls(tls_server, pki):
    with ChatClient(*tls_server.address, name="ada", tls=True, cafile=pki["ca"]) as ada, \
            ChatClient(*tls_server.address, name="bob", tls=True, cafile=pki["ca"]) as bob:
        assert ada.tls.version in ("TLSv1.2", "TLSv1.3")
        ada.say("over TLS")
        assert bob.wait_for("message")["text"] == "over TLS"
        data = bytes(range(256)) * 300  # a file, through the same encrypted pipe
        ada.send_file(data, "blob.bin", to="bob")
        assert bob.accept_file(bob.wait_for("file_offer")["file"]) == data


def test_chat_over_tls_1_2(tls_server, pki):
    # In TLS 1.2 the server's Finished and the banner can arrive in one segment.
    old = client_context(pki["ca"])
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with ChatClient(*tls_server.address, name="ada", tls=old) as ada, \
            ChatClient(*tls_server.address, name="bob", tls=True, cafile=pki["ca"]) as bob:
        assert ada.tls.version == "TLSv1.2"
        ada.say("over TLS 1.2")
        assert bob.wait_for("message")["text"] == "over TLS 1.2"


def test_an_eavesdropper_sees_the_text_without_tls_and_not_with_it(pki):
    secret = "meet me at the library at 5"
    plain = make_server("threads", "127.0.0.1", 0).start()
    tls = make_server("threads", "127.0.0.1", 0, tls=server_context(pki["cert"], pki["key"])).start()
    try:
        for server, use_tls in ((plain, False), (tls, True)):
            with Relay(server.address, min_piece=4096, max_piece=4096, pause=0) as relay:
                with ChatClient(*relay.address, name="ada", tls=use_tls, cafile=pki["ca"]) as ada:
                    ada.say(secret)
                    ada.wait_for("message")
                seen = relay.stream("c2s") + relay.stream("s2c")
            assert (secret.encode() in seen) is not use_tls
            assert seen  # the relay did see the traffic, encrypted or not
    finally:
        plain.stop()
        tls.stop()


def test_a_client_that_does_not_trust_the_server_refuses_it(tls_server):
    with pytest.raises(ChatConnectionError, match="not trusted"):
        ChatClient(*tls_server.address, name="ada", tls=True)  # the system CAs do not know the lab CA


def test_the_certificate_must_name_the_host(tmp_path, pki):
    other = make_lab_pki(tmp_path / "other", hosts=["chat.example.invalid"])
    server = make_server("threads", "127.0.0.1", 0, tls=server_context(other["cert"], other["key"])).start()
    try:
        with pytest.raises(ChatConnectionError, match="not trusted"):
            ChatClient(*server.address, tls=client_context(other["ca"]))  # we dialled 127.0.0.1
    finally:
        server.stop()


def test_plain_text_to_the_tls_port_gets_a_hint_and_is_logged(tls_server, caplog):
    caplog.set_level(logging.WARNING, logger="chatlab")
    with socket.create_connection(tls_server.address, timeout=5) as sock:
        sock.sendall(b"ada\n")  # a person with nc, on the wrong port
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert b"speaks TLS" in received
    assert any("plain text" in r.getMessage() for r in caplog.records)


def test_a_stalled_handshake_is_cut_off_and_others_carry_on(tls_server, pki, caplog):
    caplog.set_level(logging.WARNING, logger="chatlab")
    tls_server.tls_handshake_timeout = 3.0
    with socket.create_connection(tls_server.address, timeout=10) as staller:
        # Connected, says nothing: the server must not wait for it forever,
        # nor make anyone else wait while it waits.
        with ChatClient(*tls_server.address, name="ada", tls=True, cafile=pki["ca"]) as ada:
            ada.say("served")
            assert ada.wait_for("message")["text"] == "served"
            staller.setblocking(False)
            with pytest.raises(BlockingIOError):  # ... while the stalled handshake is still pending
                staller.recv(1)
            staller.setblocking(True)
        assert staller.recv(1) == b""  # then closed by the server
    assert any("handshake" in r.getMessage() for r in caplog.records)


def test_the_server_ends_with_close_notify(tls_server, pki):
    # suppress_ragged_eofs=False: a TCP FIN without TLS's close_notify before
    # it raises SSLEOFError instead of passing for a clean end of the stream.
    with socket.create_connection(tls_server.address, timeout=5) as raw, \
            client_context(pki["ca"]).wrap_socket(raw, server_hostname="127.0.0.1",
                                                  suppress_ragged_eofs=False) as sock:
        sock.sendall(b"ada\n/quit\n")  # lines mode: a name, then leave
        received = b""
        while chunk := sock.recv(4096):  # b"" only after a close_notify
            received += chunk
    assert received.startswith(b"chatlab/1 ") and b"goodbye" in received.lower(), received


@pytest.mark.parametrize("model", TLS_MODELS)
def test_a_tls_client_that_never_reads_is_dropped_as_too_slow(model, pki):
    # What waits for a TLS client is encrypted records: the outbox limit must
    # count them, or a client that stops reading makes the server's memory grow.
    limits = Limits(outbox_bytes=64 * 1024, rate_limit=0, relay_rate=0)
    server = make_server(model, "127.0.0.1", 0, limits, tls=server_context(pki["cert"], pki["key"])).start()
    sleeper = socket.socket()
    try:
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.settimeout(5)
        sleeper.connect(server.address)
        layer = TLSLayer(client_context(pki["ca"]), server_side=False, server_hostname="127.0.0.1")
        handshake_over(sleeper, layer, timeout=5)
        layer.send(encode_message({"type": "hello", "name": "sleeper"}))
        sleeper.sendall(layer.outgoing())
        heard = b""
        while b'"welcome"' not in heard:  # registered; from now on it never reads
            data = sleeper.recv(4096)
            assert data, f"the server closed the sleeper's connection before welcoming it: {heard!r}"
            heard += layer.receive(data)
        with ChatClient(*server.address, name="talker", tls=True, cafile=pki["ca"]) as talker:
            left = talk_until_dropped(talker)
            assert left == {"type": "left", "name": "sleeper", "room": "lobby", "reason": "too_slow"}
    finally:
        sleeper.close()
        server.stop()


@pytest.mark.parametrize("model", TLS_MODELS)
def test_a_full_tls_server_refuses_in_clear_at_the_door(model, pki):
    server = make_server(model, "127.0.0.1", 0, Limits(max_clients=1),
                         tls=server_context(pki["cert"], pki["key"])).start()
    try:
        with ChatClient(*server.address, name="ada", tls=True, cafile=pki["ca"]) as ada:
            with socket.create_connection(server.address, timeout=5) as late:
                # No handshake is spent on a connection that will not be served:
                # the one-line refusal comes at once, unencrypted, then the end.
                received = b""
                while chunk := late.recv(4096):
                    received += chunk
            assert received.startswith(b"chatlab/1 closing server_full: "), received
            ada.say("still here")  # the one inside is still served, over TLS
            assert ada.wait_for("message")["text"] == "still here"
    finally:
        server.stop()


def test_certs_serve_and_chat_commands(tmp_path):
    folder = tmp_path / "certs"
    made = subprocess.run([sys.executable, "-m", "chatlab", "certs", "--out", str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert {p.name for p in folder.iterdir()} == {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem"}
    proc = subprocess.Popen([sys.executable, "-m", "chatlab", "serve", "--port", "0", "--tls",
                             "--cert", str(folder / "server.pem"), "--key", str(folder / "server-key.pem")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "TLS" in line
        port = int(line.rsplit(":", 1)[1])
        with ChatClient("127.0.0.1", port, name="watcher", tls=True, cafile=str(folder / "ca.pem")) as watcher:
            chat = subprocess.run([sys.executable, "-m", "chatlab", "chat", "--name", "bob", "--cafile",
                                   str(folder / "ca.pem"), f"127.0.0.1:{port}"],
                                  input="secure hello\n", capture_output=True, text=True, timeout=30)
            assert chat.returncode == 0, chat.stderr
            assert watcher.wait_for("message")["text"] == "secure hello"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
