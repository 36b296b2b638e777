"""The IRC port over real TCP, on every server model, with real IRC clients.

Three kinds of IRC client meet the server here: a raw line client written
in the test (``irc_support.IrcPeer``, for exact bytes), the ``irc`` package
from PyPI (a third-party client library, with its own parser and its own
idea of registration), and irssi, a real IRC program, driven in tmux as a
person would drive it.  They share rooms with chatlab's own clients:
frames (``ChatClient``) and a person in lines mode.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from chatlab.accounts import Accounts, hash_password
from chatlab.client import ChatClient
from chatlab.limits import Limits
from chatlab.dialects.irc import IrcDialect
from chatlab.protocol import name_key
from chatlab.servers import Listener
from chatlab.testing import RawClient, frames_client, talk_until_dropped
from chatlab.tls import client_context, make_lab_pki, server_context
from irc_support import IrcPeer

pytestmark = pytest.mark.timeout(60)

irc_client = pytest.importorskip("irc.client")  # in the test extra; skipped only outside it
irc_connection = pytest.importorskip("irc.connection")


def irc_port(tls=None) -> tuple[Listener, ...]:
    return (Listener("irc", "127.0.0.1", 0, IrcDialect, tls),)


def heard(chat: ChatClient, kind: str = "message", timeout: float = 10.0, **fields):
    """The next event of this kind with these fields (a ChatClient also hears its own messages)."""
    return chat.wait_for(lambda m: m["type"] == kind and all(m.get(k) == v for k, v in fields.items()), timeout)


def read_until(person: RawClient, wanted: str) -> str:
    """Lines-mode lines until one that starts with ``wanted`` (each read has RawClient's deadline)."""
    while not (line := person.recv_line()).startswith(wanted):
        pass
    return line


@pytest.fixture
def irc_server(start_server):
    """A server of the current model with an IRC port beside its main port."""
    return start_server(listeners=irc_port())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_lab_pki(tmp_path_factory.mktemp("pki"))


# ------------------------------------------------------------ one room, three dialects


def test_irc_people_and_programs_share_one_room(irc_server):
    with ChatClient(*irc_server.address, name="ada") as ada, \
            IrcPeer(irc_server.addresses["irc"], "bob") as bob, \
            RawClient(irc_server.address, "cy") as cy:
        cy.recv_banner()
        cy.send_line("cy")
        assert cy.recv_line().startswith("* Welcome, cy!")
        burst = bob.register("bob")
        assert [line[1] for line in burst][:5] == ["001", "002", "003", "004", "005"]
        names = next(line for line in burst if line[1] == "353")
        assert names[2][1:3] == ["=", "#lobby"] and names[2][3].split() == ["ada", "cy", "bob"]
        assert heard(ada, "joined", name="bob")
        assert cy.recv_line() == "* bob joined"
        # IRC to the others...
        bob.send("PRIVMSG #lobby :hello from IRC")
        assert heard(ada, **{"from": "bob"})["text"] == "hello from IRC"
        assert cy.recv_line() == "<bob> hello from IRC"
        # ... and the others to IRC, in the one order of the room.
        ada.say("hello from frames")
        assert heard(ada, text="hello from frames")  # ada's own copy: the room has it
        cy.send_line("hello from nc")
        assert bob.expect("PRIVMSG")[0::2] == ("ada!ada@chatlab", ["#lobby", "hello from frames"])
        assert bob.expect("PRIVMSG")[0::2] == ("cy!cy@chatlab", ["#lobby", "hello from nc"])
        # Private messages both ways.
        bob.send("PRIVMSG ada :just you")
        assert heard(ada, to="ada")["text"] == "just you"
        ada.send({"type": "dm", "to": "bob", "text": "just you too"})
        assert bob.expect("PRIVMSG")[2] == ["bob", "just you too"]
        # Rooms: joins and leaves seen from every side.
        bob.send("JOIN #games")
        assert bob.expect("JOIN")[2] == ["#games"]
        ada.send({"type": "join", "room": "games"})
        assert bob.expect("JOIN")[0::2] == ("ada!ada@chatlab", ["#games"])
        bob.send("PRIVMSG #games :in games")
        assert heard(ada, room="games")["text"] == "in games"
        bob.send("PART #games")
        assert bob.expect("PART")[2][0] == "#games"
        assert heard(ada, "left", name="bob", room="games")
        # QUIT: ERROR, then the server closes; everyone sees bob go.
        bob.send("QUIT :bye")
        assert [line[1] for line in bob.expect_closed()][-1] == "ERROR"
        assert heard(ada, "left", name="bob")["reason"] == "quit"
        assert read_until(cy, "* bob left")


def test_nick_collisions_across_dialects(irc_server):
    with ChatClient(*irc_server.address, name="ada") as ada, IrcPeer(irc_server.addresses["irc"]) as twin:
        twin.send("NICK ADA", "USER ada 0 * :another ada")  # the same name, ignoring case
        assert twin.expect("433")[2][:2] == ["*", "ADA"]
        twin.send("NICK Ａｄａ")  # fullwidth: the same name once NFKC-normalised
        assert twin.expect("433")[2][1] == "Ａｄａ"
        twin.send("NICK bob")
        assert twin.expect("001")[2][0] == "bob"
        with frames_client(irc_server.address) as frames:
            frames.send_frame({"type": "hello", "name": "BOB"})
            assert frames.expect("error")["code"] == "name_taken"
        assert heard(ada, "joined", name="bob")


def test_two_irc_clients_racing_for_one_nick_get_one_001(irc_server):
    with IrcPeer(irc_server.addresses["irc"]) as one, IrcPeer(irc_server.addresses["irc"]) as two:
        one.send("NICK racer")
        two.send("NICK racer")
        one.send("USER r 0 * :one")
        two.send("USER r 0 * :two")
        answers = sorted([one.expect(("001", "433"))[1], two.expect(("001", "433"))[1]])
        assert answers == ["001", "433"]  # whichever the core handled first has the name


def test_the_server_pings_and_answers_pings_in_order(start_server):
    server = start_server(listeners=irc_port(), ping_interval=1)
    with IrcPeer(server.addresses["irc"]) as bob:
        bob.register("bob")
        bob.send("PING :one", "JOIN #a", "PING :two")
        # In order: the dialect's own answers and the core's interleave as asked.
        assert bob.expect("PONG")[2] == ["chatlab.server", "one"]
        assert bob.expect("JOIN")[2] == ["#a"]
        assert bob.expect("PONG")[2] == ["chatlab.server", "two"]
        assert bob.expect("PING", timeout=5)[2] == ["chatlab.server"]  # silence: the server asks
        bob.send("PONG :chatlab.server")
        bob.sync()


def test_the_512_byte_limit_closes_that_client_alone(irc_server):
    with ChatClient(*irc_server.address, name="ada") as ada, IrcPeer(irc_server.addresses["irc"]) as bob:
        bob.register("bob")
        bob.send(b"PRIVMSG #lobby :" + b"x" * 494)  # 510 bytes and the CR LF: exactly the limit
        assert len(heard(ada, **{"from": "bob"})["text"]) == 494
        bob.send(b"PRIVMSG #lobby :" + b"x" * 495)
        closing = [line[1] for line in bob.expect_closed()]
        assert closing[-2:] == ["417", "ERROR"]
        assert heard(ada, "left", name="bob")["reason"] == "protocol_error"
        ada.say("still here")
        assert heard(ada, text="still here")


def test_an_irc_client_that_never_reads_is_dropped_as_too_slow(start_server):
    server = start_server(Limits(outbox_bytes=64 * 1024, rate_limit=0, relay_rate=0), listeners=irc_port())
    sleeper = socket.socket()
    try:
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sleeper.settimeout(5)
        sleeper.connect(server.addresses["irc"])
        sleeper.sendall(b"NICK sleeper\r\nUSER s 0 * :never reads\r\n")
        heard = b""
        while b" 366 " not in heard:  # registered; from now on it never reads
            data = sleeper.recv(4096)
            assert data, f"closed before the welcome: {heard!r}"
            heard += data
        with ChatClient(*server.address, name="talker") as talker:
            left = talk_until_dropped(talker)
            assert left == {"type": "left", "name": "sleeper", "room": "lobby", "reason": "too_slow"}
    finally:
        sleeper.close()


def test_a_long_message_reaches_irc_split_and_whole(irc_server):
    with ChatClient(*irc_server.address, name="ada") as ada, IrcPeer(irc_server.addresses["irc"]) as bob:
        bob.register("bob")
        text = "".join(f"{i:04d}é " for i in range(700))[:4096]
        ada.say(text)
        got = ""
        while len(got) < len(text):
            got += bob.expect("PRIVMSG")[2][1]  # (IrcPeer checks that every line is within 512 bytes)
        assert got == text


def test_irc_over_tls(start_server, pki):
    server = start_server(tls=server_context(pki["cert"], pki["key"]),
                          listeners=irc_port(server_context(pki["cert"], pki["key"])))
    with ChatClient(*server.address, name="ada", tls=True, cafile=pki["ca"]) as ada, \
            IrcPeer(server.addresses["irc"], tls=client_context(pki["ca"])) as bob:
        assert bob.sock.version() in ("TLSv1.2", "TLSv1.3")
        bob.register("bob")
        bob.send("PRIVMSG #lobby :secret")
        assert heard(ada, **{"from": "bob"})["text"] == "secret"
        ada.say("secret back")
        assert bob.expect("PRIVMSG")[2] == ["#lobby", "secret back"]


def test_pass_carries_the_password_over_tcp(start_server):
    accounts = Accounts({name_key("ada"): ("ada", hash_password("lovelace", n=1 << 10))})
    server = start_server(listeners=irc_port(), accounts=accounts, auth_delay=0.2)
    with IrcPeer(server.addresses["irc"]) as wrong:
        wrong.send("PASS babbage", "NICK ada", "USER ada 0 * :Ada")
        assert "Password incorrect" in wrong.expect("464")[2][-1]
    with IrcPeer(server.addresses["irc"]) as nobody:
        nobody.send("NICK eve", "USER eve 0 * :Eve")  # every name needs an account here
        assert nobody.expect("464")
    with IrcPeer(server.addresses["irc"]) as ada:
        assert ada.register("ada", password="lovelace")[0][1] == "001"


# ------------------------------------------------------------ the irc package from PyPI


class LibraryClient:
    """The ``irc`` package's client, run by hand: ``wait(kind)`` turns its reactor until that event comes."""

    def __init__(self, address, nick, password=None, tls=None):
        self.reactor = irc_client.Reactor()
        self.events: list = []
        self.reactor.add_global_handler("all_events", lambda conn, event: self.events.append(event), -20)
        factory = irc_connection.Factory(
            wrapper=functools.partial(tls.wrap_socket, server_hostname="localhost")) if tls else irc_connection.Factory()
        self.conn = self.reactor.server().connect(address[0], address[1], nick, password=password,
                                                  connect_factory=factory)

    def wait(self, kind: str, test=lambda event: True, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for event in self.events[seen:]:
                seen += 1
                if event.type == kind and test(event):
                    return event
            self.reactor.process_once(0.05)
        raise AssertionError(f"no {kind} event; got {[(e.type, e.arguments) for e in self.events][-30:]}")

    def close(self):
        self.conn.close()


@pytest.fixture
def library_clients():
    made: list[LibraryClient] = []

    def make(*args, **kwargs) -> LibraryClient:
        made.append(LibraryClient(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_a_third_party_irc_library_registers_joins_chats_and_quits(irc_server, library_clients):
    with ChatClient(*irc_server.address, name="ada") as ada:
        bob = library_clients(irc_server.addresses["irc"], "bob")
        assert bob.wait("welcome").target == "bob"
        assert "NICKLEN" in bob.conn.features.__dict__ or bob.wait("endofmotd")
        names = bob.wait("namreply")
        assert names.arguments[1] == "#lobby" and set(names.arguments[2].split()) == {"ada", "bob"}
        bob.conn.join("#games")
        assert bob.wait("join", lambda e: e.target == "#games").source.nick == "bob"
        bob.conn.privmsg("#lobby", "hi from the irc package")
        assert heard(ada, **{"from": "bob"})["text"] == "hi from the irc package"
        ada.say("hi irc package")
        public = bob.wait("pubmsg")
        assert (public.source.nick, public.target, public.arguments) == ("ada", "#lobby", ["hi irc package"])
        ada.send({"type": "dm", "to": "bob", "text": "private"})
        private = bob.wait("privmsg")
        assert (private.source.nick, private.arguments) == ("ada", ["private"])
        bob.conn.action("#lobby", "waves")
        assert heard(ada, **{"from": "bob"})["text"] == "/me waves"
        bob.conn.ping("token42")
        assert bob.wait("pong").arguments == ["token42"]
        bob.conn.quit("later")
        assert "goodbye" in bob.wait("error").target
        bob.wait("disconnect")
        assert heard(ada, "left", name="bob")["reason"] == "quit"


def test_the_irc_library_gets_433_and_can_take_a_password_over_tls(start_server, pki, library_clients):
    accounts = Accounts({name_key("ada"): ("ada", hash_password("lovelace", n=1 << 10))}, required=False)
    server = start_server(tls=server_context(pki["cert"], pki["key"]), accounts=accounts,
                          listeners=irc_port(server_context(pki["cert"], pki["key"])))
    tls = client_context(pki["ca"])
    ada = library_clients(server.addresses["irc"], "ada", password="lovelace", tls=tls)
    assert ada.wait("welcome").target == "ada"
    twin = library_clients(server.addresses["irc"], "bob", tls=tls)
    twin.wait("welcome")
    clash = library_clients(server.addresses["irc"], "BOB", tls=tls)
    assert clash.wait("nicknameinuse").arguments[0] == "BOB"


# ------------------------------------------------------------ the chatlab command


def test_chatlab_serve_irc_port_prints_the_port_and_serves_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "chatlab", "serve", "--port", "0", "--irc-port", "0",
                             "--irc-name", "My.Little.Server"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "listening on" in lines[0] and lines[1].startswith("IRC on 127.0.0.1:"), lines
        port = int(lines[1].split(":")[1].split()[0])
        with IrcPeer(("127.0.0.1", port)) as bob:
            assert bob.register("bob")[0][0] == "My.Little.Server"  # the name the server was given
            bob.send("PING :abc")
            assert bob.expect("PONG")[:3] == ("My.Little.Server", "PONG", ["My.Little.Server", "abc"])
            bob.send("QUIT")
            assert bob.expect_closed()[-1][1] == "ERROR"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_chatlab_serve_refuses_a_server_name_irc_cannot_carry():
    done = subprocess.run([sys.executable, "-m", "chatlab", "serve", "--port", "0", "--irc-port", "0",
                           "--irc-name", "my server"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "cannot be a server name" in done.stderr


def test_chatlab_serve_irc_port_tls_speaks_tls_on_the_irc_port(pki):
    proc = subprocess.Popen([sys.executable, "-m", "chatlab", "serve", "--port", "0", "--irc-port", "0", "--tls",
                             "--cert", str(pki["cert"]), "--key", str(pki["key"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[1].startswith("IRC over TLS on 127.0.0.1:"), lines
        port = int(lines[1].split(":")[1].split()[0])
        with IrcPeer(("127.0.0.1", port), tls=client_context(pki["ca"])) as bob:
            assert bob.register("bob")[0][1] == "001"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


# ------------------------------------------------------------ irssi, a real IRC program


class Tmux:
    """One tmux server of our own (its own socket), so that nothing else's sessions are touched."""

    def __init__(self, folder: Path):
        self.socket = f"chl-{uuid.uuid4().hex[:6]}"
        self.folder = folder

    def run(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return done.stdout

    def start(self, command: list[str]) -> None:
        self.run("new-session", "-d", "-s", "main", "-x", "160", "-y", "50", " ".join(command))

    def keys(self, text: str) -> None:
        self.run("send-keys", "-t", "main", "-l", text)
        self.run("send-keys", "-t", "main", "Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "main", "-S", "-200")

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)  # polling the screen: tmux has no event to wait on
        raise AssertionError(f"irssi never showed {text!r}; its screen:\n{self.screen()}")

    def stop(self) -> None:
        self.run("kill-server")


@pytest.fixture
def tmux(tmp_path):
    if not shutil.which("tmux") or not shutil.which("irssi"):
        pytest.skip("needs tmux and irssi (apt-get install tmux irssi; .ci/run installs them)")
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.stop()  # irssi is a child of this tmux server: it goes with it


@pytest.mark.timeout(90)
def test_irssi_registers_joins_and_chats_both_ways(irc_server, tmux, tmp_path):
    host, port = irc_server.addresses["irc"]
    home = tmp_path / "irssi"
    home.mkdir()
    env = f"TERM=screen HOME={home}"
    tmux.start(["env", env, "irssi", "--home", str(home), "-n", "irssibob", "-c", host, "-p", str(port)])
    with ChatClient(*irc_server.address, name="ada") as ada:
        assert heard(ada, "joined", name="irssibob", timeout=20)  # irssi registered
        tmux.wait_for("End of /MOTD")
        tmux.keys("/join #games")
        tmux.wait_for("irssibob [irssibob@chatlab] has joined #games")
        ada.send({"type": "join", "room": "games"})
        tmux.wait_for("ada [ada@chatlab] has joined #games")
        tmux.keys("hello from irssi")
        assert heard(ada, room="games", timeout=15)["text"] == "hello from irssi"
        ada.send({"type": "say", "room": "games", "text": "hello irssi"})
        tmux.wait_for("< ada> hello irssi")
        tmux.keys("/msg ada a secret")
        assert heard(ada, to="ada", timeout=15)["text"] == "a secret"
        tmux.keys("/quit gone")
        assert heard(ada, "left", name="irssibob", timeout=15)["reason"] == "quit"
    assert os.path.isdir(home)
