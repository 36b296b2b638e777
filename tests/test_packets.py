"""The packet parser against tshark's dissection of the same captures, field by field.

The captures in tests/data are real (tests/data/make_captures.py made them
on loopback): a frames-mode chat over IPv4, a lines-mode chat over IPv6
ended by a reset, a retransmission, UDP and ICMP.  A few packets are built
by hand for what loopback never shows (a VLAN tag, an IPv6 extension
header, IPv4 options, SACK blocks, a truncated header).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from chatlab.net import packets as pk
from chatlab.net.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter

pytestmark = pytest.mark.timeout(60)
DATA = Path(__file__).parent / "data"
CAPTURES = sorted(DATA.glob("*.pcap"))
needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (apt-get install tshark)")

# tshark field -> how to get the same from a parsed packet ("" when absent, as tshark prints it).
FIELDS = {
    "eth.src": lambda p: p.link.src if p.link else "",
    "eth.dst": lambda p: p.link.dst if p.link else "",
    # With a VLAN tag tshark's eth.type is the tag's (0x8100); ours is what the frame carries.
    "eth.type": lambda p: f"0x{0x8100 if p.link.vlan is not None else p.link.ethertype:04x}" if p.link else "",
    "vlan.id": lambda p: str(p.link.vlan) if p.link and p.link.vlan is not None else "",
    "ip.hdr_len": lambda p: v4(p, "header_length"),
    "ip.len": lambda p: v4(p, "total_length"),
    "ip.id": lambda p: f"0x{p.ip.identification:04x}" if isinstance(p.ip, pk.IPv4) else "",
    "ip.flags.df": lambda p: str(int(p.ip.dont_fragment)) if isinstance(p.ip, pk.IPv4) else "",
    "ip.ttl": lambda p: v4(p, "ttl"),
    "ip.proto": lambda p: v4(p, "protocol"),
    "ip.src": lambda p: v4(p, "src"),
    "ip.dst": lambda p: v4(p, "dst"),
    "ip.dsfield.dscp": lambda p: v4(p, "dscp"),
    "ip.checksum": lambda p: f"0x{p.ip.checksum:04x}" if isinstance(p.ip, pk.IPv4) else "",
    "ip.checksum.status": lambda p: str(int(p.ip.checksum_ok)) if isinstance(p.ip, pk.IPv4) else "",
    "ipv6.src": lambda p: v6(p, "src"),
    "ipv6.dst": lambda p: v6(p, "dst"),
    "ipv6.plen": lambda p: v6(p, "payload_length"),
    "ipv6.hlim": lambda p: v6(p, "hop_limit"),
    "ipv6.flow": lambda p: f"0x{p.ip.flow_label:06x}" if isinstance(p.ip, pk.IPv6) else "",
    "tcp.srcport": lambda p: tcp(p, "src_port"),
    "tcp.dstport": lambda p: tcp(p, "dst_port"),
    "tcp.seq_raw": lambda p: tcp(p, "seq"),
    "tcp.ack_raw": lambda p: tcp(p, "ack"),
    "tcp.hdr_len": lambda p: tcp(p, "header_length"),
    "tcp.flags": lambda p: f"0x{p.tcp.flags:04x}" if p.tcp else "",
    "tcp.window_size_value": lambda p: tcp(p, "window"),
    "tcp.len": lambda p: str(len(p.tcp.payload)) if p.tcp else "",
    "tcp.checksum": lambda p: f"0x{p.tcp.checksum:04x}" if p.tcp else "",
    "tcp.checksum.status": lambda p: str(int(pk.transport_checksum_ok(p))) if p.tcp else "",
    "tcp.options.mss_val": lambda p: opt(p, "mss"),
    "tcp.options.wscale.shift": lambda p: opt(p, "window_scale"),
    "tcp.options.sack_perm": lambda p: "yes" if p.tcp and p.tcp.options.sack_permitted else "",
    "tcp.options.timestamp.tsval": lambda p: stamp(p, 0),
    "tcp.options.timestamp.tsecr": lambda p: stamp(p, 1),
    "tcp.options.sack_le": lambda p: ",".join(str(le) for le, _ in p.tcp.options.sack) if p.tcp else "",
    "tcp.options.sack_re": lambda p: ",".join(str(re) for _, re in p.tcp.options.sack) if p.tcp else "",
    "tcp.payload": lambda p: p.tcp.payload.hex() if p.tcp else "",
    "udp.srcport": lambda p: str(p.udp.src_port) if p.udp else "",
    "udp.dstport": lambda p: str(p.udp.dst_port) if p.udp else "",
    "udp.length": lambda p: str(p.udp.length) if p.udp else "",
    "udp.checksum.status": lambda p: str(int(pk.transport_checksum_ok(p))) if p.udp else "",
    "icmp.type": lambda p: str(p.icmp.type) if p.icmp and p.icmp.version == 4 else "",
    "icmp.code": lambda p: str(p.icmp.code) if p.icmp and p.icmp.version == 4 else "",
    "icmpv6.type": lambda p: str(p.icmp.type) if p.icmp and p.icmp.version == 6 else "",
}


def v4(p: pk.Packet, name: str) -> str:
    return str(getattr(p.ip, name)) if isinstance(p.ip, pk.IPv4) else ""


def v6(p: pk.Packet, name: str) -> str:
    return str(getattr(p.ip, name)) if isinstance(p.ip, pk.IPv6) else ""


def tcp(p: pk.Packet, name: str) -> str:
    return str(getattr(p.tcp, name)) if p.tcp else ""


def stamp(p: pk.Packet, which: int) -> str:
    return str(p.tcp.options.timestamps[which]) if p.tcp and p.tcp.options.timestamps else ""


def opt(p: pk.Packet, name: str) -> str:
    value = getattr(p.tcp.options, name) if p.tcp else None
    return "" if value is None else str(value)


def tshark(path: Path, fields: list[str]) -> list[dict[str, str]]:
    """tshark's dissection: one dict per packet, field -> value as tshark prints it ("" if absent)."""
    command = ["tshark", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
               "-o", "udp.check_checksum:TRUE", "-o", "tcp.relative_sequence_numbers:FALSE",
               "-T", "fields", "-E", "occurrence=a"]
    for name in fields:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    rows = [dict(zip(fields, line.split("\t"))) for line in out.splitlines()]
    for row in rows:
        if row.get("tcp.options.sack_perm"):
            row["tcp.options.sack_perm"] = "yes"  # tshark prints the option's bytes; presence is what matters
    return rows


def compare(path: Path) -> int:
    """Every field of every packet the same as tshark's; returns how many fields were compared."""
    ours = pk.read_packets(path)
    theirs = tshark(path, list(FIELDS))
    assert len(ours) == len(theirs)
    compared = 0
    for number, (packet, row) in enumerate(zip(ours, theirs), 1):
        for name, get in FIELDS.items():
            # tshark reads the headers *inside* an ICMP error too (the packet that caused it);
            # it then prints two values for ip.src and the rest: the first is the outer header.
            expected = row[name].split(",")[0] if packet.icmp and "," in row[name] else row[name]
            if packet.icmp and get(packet) == "" and expected:
                continue  # a field of the quoted packet alone (its UDP ports): we do not parse inside ICMP
            assert get(packet) == expected, f"packet {number}, {name}: ours {get(packet)!r}, tshark {expected!r}"
            compared += bool(expected)
    return compared


@needs_tshark
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_every_field_matches_tshark(path: Path) -> None:
    assert compare(path) > 50


# ------------------------------------------------ what loopback never shows


def ipv4(payload: bytes, protocol: int = 6, options: bytes = b"", src: bytes = b"\x0a\x00\x00\x01",
         dst: bytes = b"\x0a\x00\x00\x02", frag: int = 0x4000) -> bytes:
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), 7, frag, 64, protocol, 0, src, dst)
    header += options
    checksum = pk.internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def tcp_segment(flags: int, options: bytes = b"", payload: bytes = b"", seq: int = 1000, ack: int = 2000) -> bytes:
    offset = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 40000, 5050, seq, ack, offset << 4, flags, 512, 0, 0) + options + payload


def with_tcp_checksum(packet: bytes) -> bytes:
    """Fill in the TCP checksum: over a pseudo-header (addresses, protocol, length) and the segment."""
    segment = packet[20:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(segment))
    checksum = pk.internet_checksum(pseudo + segment)
    return packet[:36] + struct.pack("!H", checksum) + packet[38:]


@needs_tshark
def test_hand_built_packets_match_tshark(tmp_path: Path) -> None:
    sack = b"\x01\x01\x05\x12" + struct.pack("!IIII", 3000, 3100, 3200, 3300)  # two SACK blocks
    vlan = bytes(6) + bytes.fromhex("020000000001") + b"\x81\x00" + struct.pack("!HH", 42, 0x0800)
    hop_by_hop = bytes([6, 0]) + bytes([1, 4, 0, 0, 0, 0])  # next header TCP, 8 bytes, a PadN option
    ipv6 = struct.pack("!IHBB16s16s", 0x60000000, 8 + 20, 0, 64, b"\xfd" + bytes(14) + b"\x01",
                       b"\xfd" + bytes(14) + b"\x02") + hop_by_hop + tcp_segment(pk.SYN)
    path = tmp_path / "built.pcap"
    with PcapWriter(path, LINKTYPE_ETHERNET) as pcap:
        pcap.write(vlan + ipv4(tcp_segment(pk.ACK, sack)), 1.0)
        pcap.write(bytes(12) + b"\x86\xdd" + ipv6, 2.0)
        pcap.write(bytes(12) + b"\x08\x00" + ipv4(tcp_segment(pk.PSH | pk.ACK, payload=b"hi"),
                                                  options=b"\x01\x01\x01\x00"), 3.0)  # NOPs and an END
        pcap.write(bytes(12) + b"\x08\x00" + with_tcp_checksum(ipv4(tcp_segment(pk.ACK, payload=b"odd"))), 4.0)
    assert compare(path) > 20
    first, second, third, fourth = pk.read_packets(path)
    assert pk.transport_checksum_ok(fourth) and not pk.transport_checksum_ok(third)
    assert first.link.vlan == 42 and first.tcp.options.sack == ((3000, 3100), (3200, 3300))
    assert second.ip.extensions == (pk.IPV6_HOP_BY_HOP,) and second.tcp.syn
    assert third.ip.header_length == 24 and third.tcp.payload == b"hi"


def test_each_layer_says_what_it_found() -> None:
    packet = pk.parse(ipv4(tcp_segment(pk.SYN | pk.ACK, b"\x02\x04\x05\xb4\x01\x03\x03\x07")), LINKTYPE_RAW)
    assert packet.ip.src == "10.0.0.1" and packet.ip.dont_fragment and packet.ip.checksum_ok
    assert packet.tcp.flag_names == "SYN, ACK" and packet.tcp.segment_length == 1
    assert packet.tcp.options.mss == 1460 and packet.tcp.options.window_scale == 7
    assert packet.summary().startswith("10.0.0.1:40000 > 10.0.0.2:5050 TCP [SYN, ACK] seq=1000 ack=2000")


def test_a_damaged_header_is_reported_not_raised() -> None:
    whole = ipv4(tcp_segment(pk.ACK))
    cut = pk.parse(whole[:30])  # the TCP header cut off after 10 bytes
    assert cut.ip is not None and cut.tcp is None and "TCP header needs 20 bytes" in cut.error
    flipped = bytearray(whole)
    flipped[8] ^= 0x01  # one bit of the TTL: the IPv4 checksum catches it
    assert not pk.parse(bytes(flipped)).ip.checksum_ok
    assert "version field says 7" in pk.parse(b"\x70" + bytes(30)).error
    assert "impossible IPv4 lengths" in pk.parse(b"\x44" + bytes(30)).error  # IHL 4: shorter than 20 bytes


def test_a_later_fragment_has_no_ports() -> None:
    packet = pk.parse(ipv4(b"rest of the datagram", frag=0x0003))  # offset 3 * 8 = 24 bytes
    assert packet.tcp is None and packet.ip.fragment_offset == 24 and "fragment" in packet.error
