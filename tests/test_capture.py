"""Capturing for real: a raw socket on a lab host of its own, checked against dumpcap and tshark.

Each test captures on a host of a fresh lab network (``chatlab.net.Network``:
namespaces with random names, removed at the end), so the machine's other
traffic never gets in and two runs never meet.  Without root the live tests
skip; the unprivileged error is tested by running the command as ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chatlab.net.capture import Capture, CaptureError, bpf_port_filter
from chatlab.net.conversation import conversations
from chatlab.net.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, read_pcap
from net_support import needs_network, network  # noqa: F401 - network is a fixture

pytestmark = pytest.mark.timeout(60)
DATA = Path(__file__).parent / "data"
needs_dumpcap = pytest.mark.skipif(not shutil.which("dumpcap"),
                                   reason="dumpcap is not installed (apt-get install tshark)")
needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (apt-get install tshark)")


@pytest.fixture
def host(network):
    """A lab host of our own: its loopback carries only what the test sends."""
    return network.host("cap")


def udp_listener(on, address: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A UDP socket on host ``on``, bound to ``address``."""
    sock = on.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    return sock


def send_datagrams(on, port: int, texts: list[bytes], address: str = "127.0.0.1") -> None:
    with on.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for text in texts:
            udp.sendto(text, (address, port))


def wait_line(stream, what: str, lines: list[str] | None = None) -> str:
    """Read lines until one contains ``what`` (the test's timeout bounds it); keep them in ``lines``."""
    while True:
        line = stream.readline()
        if lines is not None:
            lines.append(line)
        if not line:
            raise AssertionError(f"the process ended before printing {what!r}; it printed {lines}")
        if what in line:
            return line


# ------------------------------------------------------------ the instrument


@needs_network
@needs_dumpcap
def test_we_capture_the_same_packets_as_dumpcap(host, tmp_path: Path) -> None:
    """The same datagrams, byte for byte, with the same kernel timestamps (to within a millisecond).

    dumpcap says "Capturing on" before it really is, so datagrams go one at
    a time, each waited for in our capture, until dumpcap has its 20 and
    exits: its 20 are then 20 consecutive ones of ours.
    """
    receiver = udp_listener(host)
    port = receiver.getsockname()[1]
    theirs = tmp_path / "dumpcap.pcap"
    dumpcap = subprocess.Popen(["ip", "netns", "exec", host.namespace, "dumpcap", "-q", "-i", "lo",
                                "-f", f"udp port {port}", "-c", "20", "-P", "-w", str(theirs)],
                               stderr=subprocess.DEVNULL)
    try:
        with Capture("lo", port=port, path=tmp_path / "ours.pcap", netns=host.namespace) as cap, \
                host.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(2000):
                udp.sendto(b"datagram %d " % i + b"x" * (i % 20) * 40, ("127.0.0.1", port))
                assert cap.wait(lambda ps: len(ps) == i + 1)
                try:
                    dumpcap.wait(timeout=0.005)  # has it got its 20?
                    break
                except subprocess.TimeoutExpired:
                    pass
        assert dumpcap.wait(timeout=20) == 0
    finally:
        dumpcap.kill()
        dumpcap.wait()
        receiver.close()
    linktype, ours = read_pcap(tmp_path / "ours.pcap")
    their_linktype, their_records = read_pcap(theirs)
    assert linktype == their_linktype == LINKTYPE_ETHERNET
    assert len(their_records) == 20 and len(ours) >= 20
    first = [r.data for r in ours].index(their_records[0].data)
    # Each once, in the same order: loopback's second copy of each packet is dropped, as dumpcap does.
    assert [r.data for r in ours[first:first + 20]] == [r.data for r in their_records]
    for mine, dumpcaps in zip(ours[first:], their_records):
        assert abs(mine.ts - dumpcaps.ts) < 0.001


@needs_network
@needs_tshark
def test_a_chat_captured_is_a_whole_conversation(host, tmp_path: Path) -> None:
    from chatlab.client import ChatClient

    server = host.start_server("threads", "127.0.0.1")
    with Capture("lo", port=server.address[1], path=tmp_path / "chat.pcap", netns=host.namespace) as cap:
        ada = host.call(ChatClient, *server.address, name="ada")
        ada.say("is anyone on the wire?")
        ada.wait_for(lambda m: m.get("type") == "message")
        ada.close()
        assert cap.wait(lambda ps: sum(1 for p in ps if p.tcp.fin) == 2 and ps[-1].tcp.flags == 0x10)
    out = subprocess.run(["tshark", "-r", str(tmp_path / "chat.pcap"), "-T", "fields", "-e", "tcp.analysis.flags"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    assert len(out) == len(cap.packets)
    assert not any(out), "tshark sees duplicates or retransmissions: a packet captured twice?"
    (conv,) = conversations(cap.packets)
    assert "say 'is anyone on the wire?'" in [text for _, _, text in conv.messages()]
    assert conv.closed == "FIN both ways"


@needs_network
def test_the_kernel_filter_passes_only_the_port_asked_for(host) -> None:
    wanted, other = udp_listener(host), udp_listener(host)
    port = wanted.getsockname()[1]
    wanted6 = udp_listener(host, "::1", port)
    try:
        for bpf in (True, False):
            with Capture("lo", port=port, netns=host.namespace, bpf=bpf) as cap:
                send_datagrams(host, other.getsockname()[1], [b"not this one"] * 5)
                send_datagrams(host, port, [b"this one"] * 3)
                send_datagrams(host, port, [b"and this, over IPv6"], "::1")
                assert cap.wait(lambda ps: len(ps) == 4)
            assert [p.payload for p in cap.packets] == [b"this one"] * 3 + [b"and this, over IPv6"]
            if bpf:  # the kernel handed us nothing else
                assert cap.seen == 4
            else:  # Python saw the other port's datagrams too, and dropped them
                assert cap.seen == 9
    finally:
        for sock in (wanted, other, wanted6):
            sock.close()


def test_the_filter_program_jumps_only_forward_and_ends_in_returns() -> None:
    for linktype in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
        program = bpf_port_filter(5050, linktype)
        assert program[-1] == (0x06, 0, 0, 0) and program[-2][0] == 0x06  # drop, keep
        for i, (code, jt, jf, k) in enumerate(program):
            if code != 0x06:  # every jump lands on an instruction of the program, further on
                assert i + 1 + max(jt, jf) < len(program)


@needs_network
def test_a_count_or_a_duration_ends_the_capture(host) -> None:
    receiver = udp_listener(host)
    port = receiver.getsockname()[1]
    try:
        with Capture("lo", port=port, count=3, netns=host.namespace) as cap:
            send_datagrams(host, port, [b"one", b"two", b"three", b"four", b"five"])
            assert cap.done.wait(5)
        assert [p.payload for p in cap.packets] == [b"one", b"two", b"three"]
        with Capture("lo", port=port, duration=0.2, netns=host.namespace) as cap:
            assert cap.done.wait(5)  # nothing came: it ends on its own at the deadline
        assert cap.packets == []
    finally:
        receiver.close()


@needs_network
def test_stop_takes_in_what_the_kernel_still_holds(host) -> None:
    """Packets that arrived before stop() are kept, even those the capture's thread had not read yet."""
    receiver = udp_listener(host)
    port = receiver.getsockname()[1]
    try:
        receiver.settimeout(5)
        cap = Capture("lo", port=port, netns=host.namespace)
        try:
            send_datagrams(host, port, [b"%d" % i for i in range(100)])
            for _ in range(100):  # delivered to the receiver, so already copied to the capture's socket
                receiver.recv(100)
        finally:
            cap.stop()
        assert [p.payload for p in cap.packets] == [b"%d" % i for i in range(100)]
    finally:
        receiver.close()


@needs_network
def test_stop_all_stops_a_capture(host) -> None:
    from chatlab.lab import running, stop_all

    cap = Capture("lo", port=9, netns=host.namespace)
    assert cap in running()
    stop_all()
    assert cap.done.is_set() and cap not in running()


@needs_network
@needs_tshark
def test_a_hosts_own_interface_carries_raw_ip(network, tmp_path: Path) -> None:
    """A lab host's eth0 is a TUN device: IP packets with no link header, written as raw IP."""
    a, b = network.host("a"), network.host("b")
    receiver = udp_listener(a, a.address)
    port = receiver.getsockname()[1]
    try:
        with Capture("eth0", port=port, path=tmp_path / "eth0.pcap", netns=a.namespace) as cap:
            send_datagrams(b, port, [b"across the router"], a.address)
            assert cap.wait(lambda ps: len(ps) == 1)
    finally:
        receiver.close()
    (packet,) = cap.packets
    assert cap.linktype == LINKTYPE_RAW and packet.link is None and packet.ip.src == b.address
    out = subprocess.run(["tshark", "-r", str(tmp_path / "eth0.pcap"), "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
                          "-e", "udp.dstport"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.split() == [b.address, a.address, str(port)]


def test_a_missing_namespace_or_interface_is_said_plainly() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to get past the privilege check")
    with pytest.raises(CaptureError, match="no network namespace 'chl-none-such'"):
        Capture("lo", netns="chl-none-such")
    with pytest.raises(CaptureError, match="cannot capture on 'nosuch0'.*ip link"):
        Capture("nosuch0")


# --------------------------------------------------------- chatlab capture


def chatlab(*args: str, netns: str | None = None, user: str | None = None, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "chatlab", *args]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    if user:
        command = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *command]  # numeric ids
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


@needs_network
@needs_tshark
def test_chatlab_capture_stops_after_a_count_and_on_ctrl_c(host, tmp_path: Path) -> None:
    receiver = udp_listener(host)
    port = receiver.getsockname()[1]
    try:
        for stop in ("count", "ctrl-c"):
            path = tmp_path / f"{stop}.pcap"
            args = ["capture", "--port", str(port), "-w", str(path)] + (["-c", "2"] if stop == "count" else [])
            process = chatlab(*args, netns=host.namespace)
            try:
                lines: list[str] = []
                wait_line(process.stdout, "Capturing on lo", lines)
                send_datagrams(host, port, [b"first", b"second"])
                wait_line(process.stdout, "UDP len=6", lines)  # "second" printed: both were taken
                if stop == "ctrl-c":
                    process.send_signal(signal.SIGINT)
                out, err = process.communicate(timeout=20)
            finally:
                process.kill()
                process.wait()
            assert process.returncode == 0, f"{stop}: exit {process.returncode}\n{''.join(lines)}{out}\n{err}"
            assert f"2 packets written to {path}" in out
            shown = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True, timeout=30).stdout
            assert len(shown.splitlines()) == 2 and "UDP" in shown
    finally:
        receiver.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become 'nobody'")
def test_without_privileges_one_clear_error(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    process = chatlab("capture", "-w", str(tmp_path / "x.pcap"), user="65534", cwd=tmp_path)  # nobody
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.strip().splitlines() == [err.strip()]  # one line, no traceback
    assert "needs root (or the CAP_NET_RAW capability)" in err and "sudo" in err


def test_chatlab_capture_reads_a_file_without_root() -> None:
    process = chatlab("capture", "--read", str(DATA / "retransmission.pcap"))
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "retransmission" in out and "lost: retransmitted later" in out and "say 'message 5'" in out
    process = chatlab("capture", "--read", str(DATA / "make_captures.py"))
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "not a pcap file" in err
