"""The lab instruments, over real sockets on 127.0.0.1: what the notebooks rely on."""

from __future__ import annotations

import gc
import socket
import sys
import textwrap
import time

import pytest

from chatlab import framing, lab
from chatlab.servers import ThreadedServer, open_listener
from chatlab.testing import chatlab_threads

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Every test starts and ends with no instrument running and no chatlab thread."""
    before = chatlab_threads()
    yield
    leaked = lab.running()
    lab.stop_all()
    assert not leaked, f"instruments left running: {leaked}"
    assert chatlab_threads() <= before, f"threads left running: {lab.leftover_threads()}"


def refused(address: tuple[str, int]) -> bool:
    """Is nothing listening there any more?"""
    try:
        socket.create_connection(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# ---------------------------------------------------------------- live servers


def test_live_server_releases_its_port_even_when_the_body_raises(model):
    with pytest.raises(RuntimeError, match="the cell failed"):
        with lab.live_server(model) as srv:
            address = srv.address
            with lab.Bot(address, "ada").join() as ada:
                ada.say("hi")
                assert ada.wait_for("message")["text"] == "hi"  # really served, before the cell fails
                raise RuntimeError("the cell failed")
    assert refused(address)
    # The port is free: a new server can listen on exactly that port.
    open_listener(*address).close()
    assert lab.running() == []


def test_live_server_also_releases_on_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt):
        with lab.live_server("threads") as srv:
            address = srv.address
            raise KeyboardInterrupt  # what an interrupted cell raises
    assert refused(address)


def test_live_server_takes_a_class_or_a_factory():
    with lab.live_server(ThreadedServer) as by_class, \
            lab.live_server(lambda host, port: ThreadedServer(host=host, port=port)) as by_factory:
        for srv in (by_class, by_factory):
            with lab.Bot(srv.address, "ada").join() as ada:
                ada.say(f"hi from {srv.name}")
                assert ada.wait_for("message")["text"] == f"hi from {srv.name}"
    with pytest.raises(ValueError, match="unknown server model"):
        lab.start_server("carrier-pigeon")


def test_live_server_keeps_the_server_log():
    with lab.live_server("threads") as srv:
        with lab.Bot(srv.address, "ada").join():
            pass
    assert any("registered as ada" in line for line in srv.log), srv.log


def test_stop_all_stops_everything_the_notebook_started():
    srv = lab.start_server("threads")
    echo = lab.EchoServer()
    relay = lab.Relay(srv.address)
    bot = lab.Bot(relay.address, "ada").join()
    crowd = lab.Crowd(srv.address)
    crowd.grow(3)
    addresses = [srv.address, echo.address, relay.address]
    assert set(lab.running()) == {srv, echo, relay, bot, crowd}
    assert lab.stop_all() == 5
    assert lab.running() == []
    assert lab.leftover_threads() == []
    assert all(refused(a) for a in addresses)
    assert bot.closed.is_set()


def test_a_forgotten_server_handle_stops_its_server():
    srv = lab.start_server("threads")
    address = srv.address
    del srv  # a cell re-run rebinds the variable: the old handle is gone
    gc.collect()
    assert refused(address)


def test_server_in_a_child_process_is_measured_and_stopped():
    with lab.ServerProcess("threads") as child:
        with lab.Bot(child.address, "ada").join() as ada:
            ada.say("hi")
            assert ada.wait_for("message")["text"] == "hi"
        if sys.platform.startswith("linux"):
            assert child.memory() > 1 << 20  # a Python process holds megabytes
            assert child.threads() >= 2  # main thread and the accept thread
    assert child.proc.poll() is not None
    assert refused(child.address)


# ------------------------------------------------------------------- recorder


def test_recorder_events_are_in_monotonic_order_with_every_kind():
    recorder = lab.Recorder()
    with lab.live_server("threads") as srv:
        lab.run_plan(srv.address, lab.chat_plan(bots=4, messages=3, gap=0.01, stagger=0.01), recorder)
    events = recorder.events
    times = [e.t for e in events]
    assert times == sorted(times), "events recorded by several threads must come out in time order"
    assert {e.kind for e in events} == set(lab.KINDS)
    for client in recorder.clients():
        kinds = [e.kind for e in events if e.client == client]
        assert kinds[0] == lab.CONNECT_STARTED and kinds[1] == lab.CONNECTED and kinds[-1] == lab.CLOSED
        assert kinds.index(lab.REGISTERED) < kinds.index(lab.CLOSED)
    # Every message reached every other bot (frames bots leave only after a ping barrier).
    deliveries = [d for d in recorder.deliveries() if d["from"] != d["to"]]
    assert len(deliveries) == 4 * 3 * 3
    assert all(d["latency"] > 0 for d in deliveries)


@pytest.mark.parametrize("mode", ["frames", "lines"])
def test_a_plan_keeps_its_order_when_a_bot_falls_behind(monkeypatch, mode):
    """On a busy machine a bot may register after its scheduled time; nobody may miss a message."""
    register = lab.Bot.register

    def late_register(self, *args, **kwargs):
        if self.name == "bot3":
            time.sleep(0.3)  # stands for a machine too busy to run bot3 on time
        return register(self, *args, **kwargs)

    monkeypatch.setattr(lab.Bot, "register", late_register)
    recorder = lab.Recorder()
    with lab.live_server("threads") as srv:
        lab.run_plan(srv.address, lab.chat_plan(bots=3, messages=2, gap=0.01, stagger=0.01), recorder, mode=mode)
    pairs = [(d["from"], d["to"]) for d in recorder.deliveries() if d["from"] != d["to"]]
    assert len(pairs) == 3 * 2 * 2, sorted(pairs)


def test_bots_in_lines_mode_chat_like_nc():
    recorder = lab.Recorder()
    with lab.live_server("threads") as srv:
        lab.run_plan(srv.address, lab.chat_plan(bots=3, messages=2, gap=0.02, stagger=0.02), recorder, mode="lines")
    deliveries = recorder.deliveries()
    assert {(d["from"], d["to"]) for d in deliveries} == {(a, b) for a in ("bot1", "bot2", "bot3")
                                                          for b in ("bot1", "bot2", "bot3") if a != b}
    assert len(deliveries) == 3 * 2 * 2


def test_server_lines_read_back_as_frames():
    assert lab.parse_server_line("<ada> hi> there") == {"type": "message", "from": "ada", "text": "hi> there"}
    assert lab.parse_server_line("* bob left (quit)") == {"type": "left", "name": "bob", "reason": "quit"}
    assert lab.parse_server_line("* bob left (said goodbye)") == {"type": "left", "name": "bob", "reason": "quit"}
    assert lab.parse_server_line("! the name ada is taken; try another name (name_taken)")["code"] == "name_taken"
    assert lab.parse_server_line("anything else")["type"] == "line"


def test_percentile_is_a_measured_value():
    values = [float(v) for v in range(1, 101)]
    assert lab.percentile(values, 50) == 50
    assert lab.percentile(values, 99) == 99
    assert lab.percentile([7.0], 99) == 7


# -------------------------------------------------------------------- network


def test_relay_recuts_the_stream_but_never_changes_it():
    messages = [f"message number {i} {'x' * (i % 5)}\n".encode() for i in range(30)]
    sent = b"".join(messages)
    with lab.EchoServer() as echo, lab.Relay(echo.address, min_piece=1, max_piece=7, pause=0) as relay:
        with socket.create_connection(relay.address, timeout=5) as sock:
            for m in messages:
                sock.sendall(m)
            back = lab.recv_exactly(sock, len(sent))
        echo.wait_bytes(len(sent))
    assert back == sent  # through the relay and back again: not one byte changed
    assert b"".join(c.data for c in echo.chunks) == sent
    assert relay.stream("c2s") == sent and relay.stream("s2c") == sent
    pieces = [c for c in relay.chunks if c.direction == "c2s"]
    assert all(1 <= len(c.data) <= 7 for c in pieces)
    assert len(pieces) > len(messages)  # messages of 18+ bytes cannot pass in pieces of 7 unsplit


def test_relay_without_capture_keeps_no_bytes():
    with lab.EchoServer() as echo, lab.Relay(echo.address, capture=False) as relay:
        assert lab.echo_once(relay.address, b"secret") == b"secret"
    assert relay.stream("c2s") == b"" and relay.chunks


def test_crowd_hears_a_message_once_per_member():
    with lab.live_server("threads") as srv, lab.Crowd(srv.address) as crowd:
        crowd.grow(20)
        with lab.Bot(srv.address, "sender", mode="lines").join() as sender:
            sender.say("hello crowd")
            arrivals = crowd.wait_all("hello crowd")
    assert len(arrivals) == 20


def test_reference_send_all_and_recv_exactly_over_a_real_connection():
    with lab.EchoServer() as echo, socket.create_connection(echo.address, timeout=5) as sock:
        data = bytes(range(256)) * 1000
        lab.send_all(sock, data)
        assert lab.recv_exactly(sock, len(data)) == data
        sock.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError, match="after 0 of 1 bytes"):
            lab.recv_exactly(sock, 1)


@pytest.mark.skipif(not lab.HAS_TCP_INFO, reason="TCP_INFO is Linux only")
def test_tcp_info_sees_the_connection():
    with lab.EchoServer() as echo, socket.create_connection(echo.address, timeout=5) as sock:
        for _ in range(20):
            assert lab.echo_once(echo.address, b"x") == b"x"
            sock.sendall(b"ping")
            lab.recv_exactly(sock, 4)
        info = lab.tcp_info(sock)
    assert info["state"] == 1  # TCP_ESTABLISHED
    assert info["rtt_us"] > 0 and info["snd_cwnd"] >= 1
    assert info["bytes_acked"] >= 20 * 4


# --------------------------------------------------------- choosing the implementation


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A throw-away course folder, made the current directory; sys.path and modules restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("ex0")]:
        del sys.modules[name]


def write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))


def test_pick_an_exercise_not_done_yet_falls_back_to_the_reference(course, capsys):
    write(course / "exercises", "ex03_lines.py", """
        class LineDecoder:
            def __init__(self, max_length=4096):
                pass
            def feed(self, data):
                raise NotImplementedError("split the data at each newline")
    """)
    assert lab.pick("exercises", "ex03_lines", "LineDecoder") is framing.LineDecoder
    out = capsys.readouterr().out
    assert "exercise 3 not done yet" in out and "hint: split the data at each newline" in out


def test_pick_a_done_exercise_uses_the_students_code(course, capsys):
    write(course / "exercises", "ex03_lines.py", """
        class LineDecoder:
            def __init__(self, max_length=4096):
                self.rest = b""
            def feed(self, data):
                *lines, self.rest = (self.rest + data).split(b"\\n")
                return lines
    """)
    chosen = lab.pick("exercises", "ex03_lines", "LineDecoder")
    assert chosen is not framing.LineDecoder and chosen.__module__ == "ex03_lines"
    assert "using your LineDecoder" in capsys.readouterr().out


def test_pick_a_server_exercise_that_hangs_falls_back(course, capsys):
    write(course / "exercises", "ex06_names.py", """
        import socket
        class ChatServer:
            def __init__(self, host="127.0.0.1", port=0):
                self.sock = socket.create_server((host, port))
                self.address = self.sock.getsockname()
            def start(self):
                return self  # listens, but never accepts: a client waits for a banner in vain
            def stop(self):
                self.sock.close()
    """)
    assert lab.pick("exercises", "ex06_names", "ChatServer") is ThreadedServer
    said = capsys.readouterr()
    assert "sent no banner" in said.err and "NOT from your code" in said.err  # broken code is said loudly


def test_pick_without_any_course_folder_still_works(course, capsys, monkeypatch):
    # Patched where pick() looks it up: in the module both live in.
    monkeypatch.setattr(lab.choosing, "course_folder", lambda kind="exercises": None)
    assert lab.pick("exercises", "ex04_frames", "FrameDecoder") is framing.FrameDecoder
    assert "no exercises/ folder" in capsys.readouterr().out  # said, not raised
    assert lab.pick("reference", "ex01_echo", "EchoServer") is lab.EchoServer
    with pytest.raises(ValueError, match="IMPLEMENTATION"):
        lab.pick("mine", "ex03_lines", "LineDecoder")


def test_the_instruments_need_no_matplotlib():
    """Only chatlab.plots imports matplotlib; the lab works (and reports) without it."""
    import subprocess

    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from chatlab import lab\n"
            "with lab.live_server('threads') as srv, lab.Bot(srv.address, 'ada').join() as ada:\n"
            "    ada.ping()\n"
            "print(dict(lab.setup_report())['matplotlib'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "matplotlib" not in done.stderr
