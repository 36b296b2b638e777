"""pcap files: written by chatlab and read by tshark, written by Wireshark's tools and read by chatlab."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from chatlab.net.pcap import (
    LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapError, PcapReader, PcapWriter, read_pcap,
)

pytestmark = pytest.mark.timeout(60)

needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (apt-get install tshark)")


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", seq: int = 1) -> bytes:
    """A plain IPv4 + TCP packet (checksums left zero: tshark does not check them by default)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return ip + tcp


def ethernet(packet: bytes) -> bytes:
    return bytes.fromhex("020000000002") + bytes.fromhex("020000000001") + b"\x08\x00" + packet


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *sum((["-e", f] for f in fields), [])],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_round_trip_keeps_every_packet_and_its_time(tmp_path: Path) -> None:
    packets = [ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 5050, b"x" * n) for n in (0, 1, 100, 1400)]
    times = [1700000000.000001, 1700000000.5, 1700000001.999999, 1700000002.25]
    with PcapWriter(tmp_path / "a.pcap", LINKTYPE_RAW) as pcap:
        for packet, ts in zip(packets, times):
            pcap.write(packet, ts)
    linktype, records = read_pcap(tmp_path / "a.pcap")
    assert linktype == LINKTYPE_RAW
    assert [r.data for r in records] == packets
    assert [r.ts for r in records] == pytest.approx(times, abs=1e-6)
    assert [r.orig_len for r in records] == [len(p) for p in packets]


def test_a_fraction_that_rounds_up_carries_into_the_seconds() -> None:
    f = io.BytesIO()
    with PcapWriter(f, close=False) as pcap:
        pcap.write(b"\x45" + bytes(19), ts=1.9999999)
    seconds, micros = struct.unpack("=II", f.getvalue()[24:32])
    assert (seconds, micros) == (2, 0)


def test_snaplen_cuts_the_packet_and_keeps_its_real_length(tmp_path: Path) -> None:
    packet = ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2, b"y" * 500)
    with PcapWriter(tmp_path / "cut.pcap", snaplen=60) as pcap:
        pcap.write(packet, 1.0)
    (record,) = read_pcap(tmp_path / "cut.pcap")[1]
    assert record.data == packet[:60] and record.orig_len == len(packet)


@needs_tshark
@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_ETHERNET])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_tshark_reads_what_we_write(tmp_path: Path, linktype: int, nanoseconds: bool) -> None:
    path = tmp_path / "ours.pcap"
    sent = [("10.0.0.1", "10.0.0.2", 40000 + i, 5050, b"hello %d" % i, 1700000000 + i * 0.125) for i in range(5)]
    with PcapWriter(path, linktype, snaplen=70, nanoseconds=nanoseconds) as pcap:
        for src, dst, sport, dport, payload, ts in sent:
            packet = ipv4_tcp(src, dst, sport, dport, payload)
            pcap.write(ethernet(packet) if linktype == LINKTYPE_ETHERNET else packet, ts)
        pcap.write(ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2, b"z" * 300) if linktype == LINKTYPE_RAW
                   else ethernet(ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2, b"z" * 300)), 1700000001.0)
    rows = tshark_fields(path, "frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
                         "frame.len", "frame.cap_len", "frame.encap_type")
    assert len(rows) == 6
    for row, (src, dst, sport, dport, payload, ts) in zip(rows, sent):
        assert float(row[0]) == pytest.approx(ts, abs=1e-6)
        assert row[1:5] == [src, dst, str(sport), str(dport)]
    # The long packet was cut at the snap length, and tshark knows how long it really was.
    head = 14 if linktype == LINKTYPE_ETHERNET else 0
    assert rows[5][5:7] == [str(head + 340), "70"]
    # tshark's own name for the link type: 1 is Ethernet, 7 is raw IP.
    assert rows[0][7] == ("1" if linktype == LINKTYPE_ETHERNET else "7")


@needs_tshark
@pytest.mark.parametrize("format", ["pcap", "nsecpcap"])
def test_we_read_what_wiresharks_tools_write(tmp_path: Path, format: str) -> None:
    """text2pcap (Wireshark's) writes pcapng from a hex dump, which we refuse with the fix; editcap
    converts it to pcap, with micro- or nanosecond timestamps, which we read."""
    packet = ipv4_tcp("192.168.1.20", "192.168.1.30", 5050, 51000, b"chat")
    dump = tmp_path / "dump.txt"
    dump.write_text("".join(f"{offset:06x} {packet[offset:offset + 16].hex(' ')}\n"
                            for offset in range(0, len(packet), 16)))
    first = tmp_path / "text2pcap.pcapng"
    subprocess.run(["text2pcap", "-q", "-l", str(LINKTYPE_RAW), str(dump), str(first)],
                   check=True, timeout=30, capture_output=True)
    with pytest.raises(PcapError, match="editcap -F pcap"):
        read_pcap(first)
    converted = tmp_path / f"{format}.pcap"
    subprocess.run(["editcap", "-F", format, str(first), str(converted)], check=True, timeout=30, capture_output=True)
    linktype, records = read_pcap(converted)
    assert linktype == LINKTYPE_RAW and [r.data for r in records] == [packet]
    with PcapReader(converted) as reader:
        assert reader.nanoseconds == (format == "nsecpcap")


def test_a_big_endian_file_reads_the_same() -> None:
    packet = b"\x45" + bytes(39)
    data = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    data += struct.pack(">IIII", 1700000000, 250000, len(packet), len(packet)) + packet
    linktype, records = read_pcap(io.BytesIO(data))
    assert linktype == LINKTYPE_RAW
    assert records == [(1700000000.25, packet, len(packet))]


def test_a_capture_cut_short_ends_at_the_last_whole_packet(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    with PcapWriter(path) as pcap:
        for n in range(3):
            pcap.write(ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2, b"p" * n), float(n))
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])
    assert len(read_pcap(path)[1]) == 2


def test_not_a_pcap_file_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(PcapError, match="pcapng"):
        read_pcap(io.BytesIO(b"\x0a\x0d\x0d\x0a" + bytes(40)))
    with pytest.raises(PcapError, match="not a pcap file"):
        read_pcap(io.BytesIO(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    with pytest.raises(PcapError, match="shorter"):
        read_pcap(io.BytesIO(b"\xd4\xc3\xb2\xa1"))


def test_the_modules_example_runs() -> None:
    import doctest

    import chatlab.net.pcap

    assert doctest.testmod(chatlab.net.pcap).failed == 0
