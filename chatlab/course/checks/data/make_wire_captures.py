"""Make the captures exercise 10's checks read (as root: python -m chatlab.course.checks.data.make_wire_captures).

The checks grade a student's header parser and connection follower
against these files, so they are fixed and committed rather than captured
afresh: every student gets the same packets, ``chatlab check 10`` needs no
root, and they hold the cases a live capture would only show by chance
(IPv4 options, sequence numbers that wrap).  Each is a real capture of
real chatlab traffic between two hosts of the lab network
(``chatlab.net.Network``), taken on the server host's interface (``eth0``,
a TUN device: raw IP packets, as the lab's router records them), except
``wrapped.pcap``, which is ``chat_frames.pcap`` with every sequence and
acknowledgement number shifted so that both initial sequence numbers sit
just below 2**32 (checksums recomputed): a connection may start anywhere,
and this one wraps within its first few hundred bytes.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from ....client import ChatClient
from ....net import Network
from ....net.capture import Capture
from ....net.packets import internet_checksum, parse, tcp_packets
from ....net.pcap import LINKTYPE_RAW, PcapWriter, read_pcap

HERE = Path(__file__).resolve().parent


def closed(packets) -> bool:
    """Both FINs seen, and the ACK of the second: the connection is over."""
    fins = [p for p in packets if p.tcp and p.tcp.fin]
    return len(fins) >= 2 and packets[-1].tcp.flags == 0x10 and packets[-1].tcp.ack == fins[1].tcp.seq + 1


def chat_frames(a, b, port: int, path: Path) -> None:
    """A ChatClient from a: hello, one message, bye; the server answers 'closing' and closes first."""
    with Capture("eth0", port=port, path=path, netns=b.namespace) as cap:
        ada = a.call(ChatClient, b.address, port, name="ada")
        ada.say("hello from host a")
        ada.wait_for(lambda m: m.get("type") == "message")
        ada.close()
        assert cap.wait(closed)


def chat_lines_options(a, b, port: int, path: Path) -> None:
    """Lines mode from a, its packets carrying IPv4 options (four bytes: three NOPs and an END, so a
    24-byte header); the client says goodbye by closing its side first (shutdown: a FIN)."""
    with Capture("eth0", port=port, path=path, netns=b.namespace) as cap:
        sock = a.socket()
        sock.settimeout(5)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x01\x01\x01\x00")
        sock.connect((b.address, port))
        assert sock.recv(200).startswith(b"chatlab/1")
        sock.sendall(b"cleo\n")
        assert sock.recv(500).startswith(b"* Welcome")
        sock.sendall(b"hi, this is cleo\n")
        sock.shutdown(socket.SHUT_WR)  # our FIN first: the server reads end of stream, and closes too
        while sock.recv(500):
            pass
        sock.close()
        assert cap.wait(closed)


def refused(a, b, path: Path) -> None:
    """A connection to a port where nothing listens: SYN, then the server's reset."""
    with socket.socket() as spare:  # a port the kernel gave and took back: nobody listens there
        spare.bind(("0.0.0.0", 0))
        port = spare.getsockname()[1]
    with Capture("eth0", port=port, path=path, netns=b.namespace) as cap:
        sock = a.socket()
        sock.settimeout(5)
        try:
            sock.connect((b.address, port))
        except ConnectionRefusedError:
            pass
        finally:
            sock.close()
        assert cap.wait(lambda ps: any(p.tcp.rst for p in ps))


def wrapped(source: Path, path: Path) -> None:
    """``source`` with both initial sequence numbers moved to just below 2**32."""
    _, records = read_pcap(source)
    packets = tcp_packets(parse(r.data, LINKTYPE_RAW, r.ts) for r in records)
    if len(packets) != len(records):
        raise ValueError(f"{source} holds packets other than TCP: it should be one connection's capture")
    client = (packets[0].ip.src, packets[0].tcp.src_port)
    syn_ack = next(p for p in packets if p.tcp.syn and p.tcp.has_ack)
    shift = {client: (2**32 - 20 - packets[0].tcp.seq) % 2**32,
             (syn_ack.ip.src, syn_ack.tcp.src_port): (2**32 - 3 - syn_ack.tcp.seq) % 2**32}
    with PcapWriter(path, LINKTYPE_RAW) as pcap:
        for record, packet in zip(records, packets):
            sender = (packet.ip.src, packet.tcp.src_port)
            other = next(end for end in shift if end != sender)
            data = bytearray(record.data)
            start = packet.ip.header_length
            seq = (packet.tcp.seq + shift[sender]) % 2**32
            ack = (packet.tcp.ack + shift[other]) % 2**32 if packet.tcp.has_ack else 0
            struct.pack_into("!II", data, start + 4, seq, ack)
            struct.pack_into("!H", data, start + 16, 0)
            segment = bytes(data[start:packet.ip.total_length])
            pseudo = bytes(data[12:20]) + struct.pack("!BBH", 0, 6, len(segment))  # IPv4: the two addresses
            struct.pack_into("!H", data, start + 16, internet_checksum(pseudo + segment))
            pcap.write(bytes(data), record.ts)


def main() -> None:
    with Network() as network:
        a, b = network.host("a"), network.host("b")
        server = b.start_server("threads")
        port = server.address[1]
        chat_frames(a, b, port, HERE / "chat_frames.pcap")
        chat_lines_options(a, b, port, HERE / "chat_lines_options.pcap")
        refused(a, b, HERE / "refused.pcap")
    wrapped(HERE / "chat_frames.pcap", HERE / "wrapped.pcap")
    for name in ("chat_frames", "chat_lines_options", "refused", "wrapped"):
        print("wrote", HERE / f"{name}.pcap")


if __name__ == "__main__":
    main()
