"""Make the small capture files the wire tests read without root (run as root: python tests/data/make_captures.py).

Each is a real capture, made by ``chatlab.net.capture`` on the loopback of
a lab host (``chatlab.net.Network``: a network namespace of its own, so no
other traffic gets in), of real chatlab servers and clients.  They are committed so that the parser and the
conversation reader are tested against tshark on every machine, root or
not; tests/test_capture.py checks the capturing itself, live.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository, for chatlab

from chatlab.client import ChatClient  # noqa: E402
from chatlab.limits import Limits  # noqa: E402
from chatlab.net import Network  # noqa: E402
from chatlab.net.capture import Capture  # noqa: E402
from chatlab.servers import make_server  # noqa: E402


def closed(packets) -> bool:
    """Both FINs and the last ACK seen, for every connection."""
    fins = sum(1 for p in packets if p.tcp and p.tcp.fin)
    return fins and fins % 2 == 0 and packets[-1].tcp.flags == 0x10


def acked(packets, ending: bytes) -> bool:
    """The segment whose payload ends so has been acknowledged by the other end."""
    data = next((p for p in reversed(packets) if p.payload.endswith(ending)), None)
    return data is not None and any(p.tcp.dst_port == data.tcp.src_port and
                                    p.tcp.ack == data.tcp.seq + len(data.payload) for p in packets)


def frames_ipv4(host, path: Path) -> None:
    """Two ChatClients (frames mode) over 127.0.0.1: join, say hello, leave."""
    server = make_server("threads", "127.0.0.1", 0)
    server.start()
    try:
        with Capture("lo", port=server.address[1], path=path, netns=host.namespace) as cap:
            ada = ChatClient(*server.address, name="ada")
            bob = ChatClient(*server.address, name="bob")
            ada.say("hello bob")
            bob.wait_for(lambda m: m.get("type") == "message")
            bob.say("hi ada! " * 30)  # a longer one
            ada.wait_for(lambda m: m.get("type") == "message" and m.get("from") == "bob")
            ada.close()
            bob.close()
            assert cap.wait(lambda ps: sum(1 for p in ps if p.tcp and p.tcp.fin) >= 4 and closed(ps))
    finally:
        server.stop()


def lines_ipv6(host, path: Path) -> None:
    """A person with nc, in effect: lines mode over ::1, a delayed ACK, a message in two pieces, then a reset
    (SO_LINGER 0)."""
    import struct

    server = make_server("threads", "::1", 0)
    server.start()
    try:
        with Capture("lo", port=server.address[1], path=path, netns=host.namespace) as cap:
            sock = socket.create_connection(server.address[:2])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            banner = sock.recv(200)
            assert banner.startswith(b"chatlab/1")
            # Ask the kernel not to acknowledge at once ("quick ACK" mode is on at a connection's start):
            # the welcome's ACK then waits for the delayed-ACK timer, 40 ms or more.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            sock.sendall(b"cleo\n")
            welcome = sock.recv(500)
            assert cap.wait(lambda ps: acked(ps, welcome[-20:]))
            sock.sendall(b"two pie")  # one line, cut in two segments
            assert cap.wait(lambda ps: any(p.payload == b"two pie" for p in ps))
            sock.sendall(b"ces\nand a second line\n")
            port = server.address[1]

            assert cap.wait(lambda ps: acked(ps, b"second line\n"))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # with linger 0: an RST instead of a FIN
            assert cap.wait(lambda ps: any(p.tcp and p.tcp.rst for p in ps))
    finally:
        server.stop()


def retransmission(host, path: Path) -> None:
    """Frames over 127.0.0.1 with the 4th data segment to the server dropped (nftables), after capture."""
    server = make_server("threads", "127.0.0.1", 0, Limits(rate_limit=0))
    server.start()
    port = server.address[1]
    # On loopback the capture sees a packet arriving before the input hook drops it:
    # the lost segment is in the capture, and so is its retransmission.
    host.nft(f"table inet lab {{\n chain input {{\n type filter hook input priority 0\n"
             f" tcp dport {port} ip length > 60 numgen inc mod 1000 == 3 drop\n }}\n}}\n")
    try:
        with Capture("lo", port=port, path=path, netns=host.namespace) as cap:
            ada = ChatClient(*server.address, name="ada")
            for i in range(6):
                ada.say(f"message {i}")
            for i in range(6):
                ada.wait_for(lambda m: m.get("type") == "message" and m.get("text") == f"message {i}")
            ada.close()
            assert cap.wait(closed)
    finally:
        server.stop()


def other_protocols(host, path: Path) -> None:
    """UDP to a closed port (an ICMP "port unreachable" comes back), over IPv4 and IPv6; a ping."""
    with Capture("lo", path=path, netns=host.namespace) as cap:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"anyone there?", (host, 9))
        from chatlab.net.packets import internet_checksum

        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as ping:
            echo = b"\x08\x00\x00\x00\x12\x34\x00\x01ping"  # type 8 (echo request), id 0x1234, seq 1
            ping.sendto(echo[:2] + internet_checksum(echo).to_bytes(2, "big") + echo[4:], ("127.0.0.1", 0))
        assert cap.wait(lambda ps: len(ps) >= 6)


MAKERS = {"frames_ipv4.pcap": frames_ipv4, "lines_ipv6_reset.pcap": lines_ipv6,
          "retransmission.pcap": retransmission, "udp_icmp.pcap": other_protocols}

if __name__ == "__main__":
    for name, make in MAKERS.items():
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        with Network() as network:
            host = network.host("cap")
            host.call(make, host, HERE / name)  # in a thread on the host: its sockets and threads live there
        print("wrote", HERE / name)
