"""A packet taken apart, header by header: Ethernet, IPv4 or IPv6, then TCP, UDP or ICMP.

Every layer of the network adds a header in front of what the layer above
handed it, and a receiver peels them off in the same order.  A chat message
sent from a laptop on Wi-Fi or Ethernet leaves as::

    | Ethernet (14 B) | IPv4 (20+ B) or IPv6 (40 B) | TCP (20-60 B) | chat bytes ... |
      which machine     which host, across networks   which program    the message
      on this link      (routers read this part)      (ports), in order

Each header is a fixed layout of fields in *network byte order* (big-endian:
the most significant byte first), so ``struct`` reads it in one call: ``!``
means network order, ``B`` one byte, ``H`` two, ``I`` four, ``4s`` four raw
bytes.  The few fields smaller than a byte (IPv4's version and header length
share one) are taken out with shifts and masks.  Each header also says how
long it is, or what comes next: IPv4's *protocol* and IPv6's *next header*
(6 is TCP, 17 UDP, 1 ICMP, 58 ICMPv6), Ethernet's *EtherType* (0x0800 IPv4,
0x86DD IPv6), so a parser never guesses.

``parse(data, linktype)`` does it all for one captured packet and returns a
``Packet``; ``read_packets("chat.pcap")`` for every packet of a capture;
``tcp_packets(packets)`` keeps those that carry TCP (their ``.ip`` and
``.tcp`` never None).  The ``parse_*`` functions each take one layer's bytes
and return its header and what follows, the way a network stack would.
What this parser does not handle (IP fragments after the first, IPv4
options' meaning, TCP's checksum offloaded on loopback), it leaves visible
and says so.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, NamedTuple

from .pcap import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, PcapReader

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTOCOL_NAMES = {PROTO_ICMP: "ICMP", PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMPV6: "ICMPv6"}

# IPv6 extension headers a parser must step over to reach TCP (each says its own length).
IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_FRAGMENT, IPV6_DESTINATION = 0, 43, 44, 60

# TCP's flags, one bit each, from the lowest bit; named SYN and FIN first, as Wireshark lists them ("SYN, ACK").
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (1 << bit for bit in range(8))
FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"), (URG, "URG"),
              (ECE, "ECE"), (CWR, "CWR"))

# TCP option kinds (RFC 9293 section 3.2, RFC 7323, RFC 2018).
OPT_END, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERMITTED, OPT_SACK, OPT_TIMESTAMPS = 0, 1, 2, 3, 4, 5, 8


class PacketError(ValueError):
    """A header is cut short or says something impossible (a length shorter than the header itself)."""


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise PacketError(f"{what} needs {size} bytes, only {len(data)} captured")


# ================================================================== Ethernet


ETHERNET = struct.Struct("!6s6sH")  # destination MAC, source MAC, EtherType: 14 bytes


@dataclass(frozen=True)
class Ethernet:
    """The link layer: which network card on this one link sent the frame, and to which."""

    dst: str  # "02:00:00:00:00:01"; on loopback both are 00:00:00:00:00:00
    src: str
    ethertype: int  # what the payload is: 0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP
    vlan: int | None = None  # an 802.1Q tag's VLAN id, if the frame had one
    header_length: int = ETHERNET.size


def mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_ethernet(data: bytes) -> tuple[Ethernet, bytes]:
    _need(data, ETHERNET.size, "an Ethernet header")
    dst, src, ethertype = ETHERNET.unpack_from(data)
    offset, vlan = ETHERNET.size, None
    if ethertype == ETHERTYPE_VLAN:  # a 4-byte tag inserted before the real EtherType
        _need(data, offset + 4, "an 802.1Q tag")
        tci, ethertype = struct.unpack_from("!HH", data, offset)
        vlan, offset = tci & 0x0FFF, offset + 4
    return Ethernet(mac(dst), mac(src), ethertype, vlan, offset), data[offset:]


LINUX_SLL = struct.Struct("!HHH8sH")  # packet type, ARPHRD type, address length, address, protocol: 16 bytes


def parse_linux_sll(data: bytes) -> tuple[Ethernet, bytes]:
    """Linux's "cooked" header (a capture on ``any``): the source address and the EtherType; no destination."""
    _need(data, LINUX_SLL.size, "a Linux cooked header")
    _, _, length, address, protocol = LINUX_SLL.unpack_from(data)
    return Ethernet("", mac(address[:min(length, 8)]), protocol, None, LINUX_SLL.size), data[LINUX_SLL.size:]


# ====================================================================== IPv4


IPV4 = struct.Struct("!BBHHHBBH4s4s")  # 20 bytes without options


@dataclass(frozen=True)
class IPv4:
    """The network layer, version 4: from which host to which, across any number of routers."""

    src: str
    dst: str
    protocol: int  # what the payload is: 6 TCP, 17 UDP, 1 ICMP
    ttl: int  # hops left: each router takes one, and drops the packet at 0 (so loops end)
    total_length: int  # header + payload, in bytes
    header_length: int  # 20, or more with options (the IHL field counts 32-bit words)
    identification: int  # the same for every fragment of one datagram
    dont_fragment: bool  # DF: routers must not cut it up (TCP sets it: path MTU discovery)
    more_fragments: bool  # MF: another fragment follows
    fragment_offset: int  # where this fragment's data starts in the datagram, in bytes
    dscp: int  # differentiated services: a priority class
    ecn: int  # explicit congestion notification: 0 not capable, 1-2 capable, 3 congestion seen
    checksum: int
    checksum_ok: bool  # the header's own checksum adds up (routers recompute it as the TTL changes)
    options: bytes = b""
    version: int = 4


def parse_ipv4(data: bytes) -> tuple[IPv4, bytes]:
    _need(data, IPV4.size, "an IPv4 header")
    (version_ihl, tos, total_length, identification, flags_fragment, ttl, protocol, checksum,
     src, dst) = IPV4.unpack_from(data)
    version, ihl = version_ihl >> 4, version_ihl & 0x0F  # two 4-bit fields in one byte
    if version != 4:
        raise PacketError(f"not IPv4: the version field says {version}")
    header_length = ihl * 4  # IHL counts 32-bit words: 5 (20 bytes) without options
    if header_length < IPV4.size or total_length < header_length:
        raise PacketError(f"impossible IPv4 lengths: header {header_length}, total {total_length}")
    _need(data, header_length, "the IPv4 header with its options")
    header = IPv4(
        src=str(ipaddress.IPv4Address(src)), dst=str(ipaddress.IPv4Address(dst)), protocol=protocol, ttl=ttl,
        total_length=total_length, header_length=header_length, identification=identification,
        dont_fragment=bool(flags_fragment & 0x4000), more_fragments=bool(flags_fragment & 0x2000),
        fragment_offset=(flags_fragment & 0x1FFF) * 8,  # counted in units of 8 bytes
        dscp=tos >> 2, ecn=tos & 0x03, checksum=checksum,
        checksum_ok=internet_checksum(data[:header_length]) == 0, options=bytes(data[IPV4.size:header_length]),
    )
    # The payload ends where total_length says, not where the capture does:
    # Ethernet pads frames shorter than 60 bytes with zeros that are not data.
    return header, data[header_length:total_length]


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words.

    Over a header that includes its own checksum, the result is 0 when the
    header arrived intact.  Cheap enough for a 1970s router to recompute at
    every hop; it catches a flipped bit, not a deliberate change.
    """
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:  # fold the carries back in: that is the "ones' complement" part
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ====================================================================== IPv6


IPV6 = struct.Struct("!IHBB16s16s")  # 40 bytes, always: options live in extension headers


@dataclass(frozen=True)
class IPv6:
    """The network layer, version 6: 128-bit addresses, a fixed header, no checksum, no fragmenting routers."""

    src: str  # compressed form, as Wireshark shows it: "fd00::1"
    dst: str
    protocol: int  # the last "next header": what the payload finally is (6 TCP, 17 UDP, 58 ICMPv6)
    hop_limit: int  # IPv4's TTL under its honest name
    payload_length: int  # everything after the fixed 40 bytes, extension headers included
    header_length: int  # 40, plus any extension headers stepped over
    traffic_class: int
    flow_label: int
    extensions: tuple[int, ...] = ()  # the extension headers stepped over, by number
    fragment_offset: int = 0
    more_fragments: bool = False
    version: int = 6

    @property
    def ttl(self) -> int:
        return self.hop_limit

    @property
    def total_length(self) -> int:
        return IPV6.size + self.payload_length


def parse_ipv6(data: bytes) -> tuple[IPv6, bytes]:
    _need(data, IPV6.size, "an IPv6 header")
    first_word, payload_length, next_header, hop_limit, src, dst = IPV6.unpack_from(data)
    version = first_word >> 28  # 4 bits version, 8 bits traffic class, 20 bits flow label
    if version != 6:
        raise PacketError(f"not IPv6: the version field says {version}")
    end = IPV6.size + payload_length
    offset, extensions, fragment_offset, more = IPV6.size, [], 0, False
    # Step over extension headers: each starts with its own "next header" and length.
    while next_header in (IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_DESTINATION, IPV6_FRAGMENT):
        _need(data, offset + 8, "an IPv6 extension header")
        extensions.append(next_header)
        if next_header == IPV6_FRAGMENT:  # fixed 8 bytes: next, reserved, offset and M flag, id
            following, _, offset_flags, _ = struct.unpack_from("!BBHI", data, offset)
            fragment_offset, more, length = offset_flags & 0xFFF8, bool(offset_flags & 1), 8
        else:  # length in 8-byte units, not counting the first 8
            following, units = struct.unpack_from("!BB", data, offset)
            length = (units + 1) * 8
        next_header, offset = following, offset + length
    header = IPv6(
        src=str(ipaddress.IPv6Address(src)), dst=str(ipaddress.IPv6Address(dst)), protocol=next_header,
        hop_limit=hop_limit, payload_length=payload_length, header_length=offset,
        traffic_class=(first_word >> 20) & 0xFF, flow_label=first_word & 0xFFFFF,
        extensions=tuple(extensions), fragment_offset=fragment_offset, more_fragments=more,
    )
    return header, data[offset:end]


# ======================================================================= TCP


TCP_HEADER = struct.Struct("!HHIIBBHHH")  # 20 bytes without options


@dataclass(frozen=True)
class TCPOptions:
    """What the two ends tell each other in the options, mostly in the SYN and SYN-ACK."""

    mss: int | None = None  # maximum segment size: the most payload bytes per segment this end accepts
    window_scale: int | None = None  # shift the window field left by this many bits (windows over 64 KiB)
    sack_permitted: bool = False  # this end understands selective acknowledgements
    sack: tuple[tuple[int, int], ...] = ()  # blocks received beyond the ACK number: (left edge, right edge)
    timestamps: tuple[int, int] | None = None  # (TSval, TSecr): RTT measurement, protection against old segments
    unknown: tuple[int, ...] = ()  # kinds this parser does not read

    def describe(self) -> str:
        parts = [f"mss={self.mss}"] if self.mss is not None else []
        if self.window_scale is not None:
            parts.append(f"ws={self.window_scale}")
        if self.sack_permitted:
            parts.append("sack_perm")
        parts += [f"sack={left}-{right}" for left, right in self.sack]
        if self.timestamps:
            parts.append(f"tsval={self.timestamps[0]} tsecr={self.timestamps[1]}")
        return " ".join(parts)


def parse_tcp_options(raw: bytes) -> TCPOptions:
    """Options are kind, length, value -- except the one-byte END and NOP (padding to 32 bits)."""
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted = False
    sack: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None
    unknown: list[int] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            raise PacketError(f"TCP option {kind} has a bad length")
        length = raw[i + 1]
        value = raw[i + 2:i + length]
        if kind == OPT_MSS and length == 4:
            (mss,) = struct.unpack("!H", value)
        elif kind == OPT_WSCALE and length == 3:
            window_scale = value[0]
        elif kind == OPT_SACK_PERMITTED and length == 2:
            sack_permitted = True
        elif kind == OPT_SACK and (length - 2) % 8 == 0:
            edges = struct.unpack(f"!{(length - 2) // 4}I", value)
            sack = tuple(zip(edges[::2], edges[1::2]))
        elif kind == OPT_TIMESTAMPS and length == 10:
            timestamps = struct.unpack("!II", value)
        else:
            unknown.append(kind)
        i += length
    return TCPOptions(mss, window_scale, sack_permitted, sack, timestamps, tuple(unknown))


@dataclass(frozen=True)
class TCP:
    """The transport layer: which program (ports), and where these bytes sit in the stream (seq, ack)."""

    src_port: int
    dst_port: int
    seq: int  # the stream offset of the first payload byte (plus the random initial number)
    ack: int  # with ACK set: the next byte this end expects from the other (all before it arrived)
    flags: int  # SYN, ACK, FIN, RST, PSH, ... as bits: test with ``tcp.flags & SYN``
    window: int  # bytes the sender can still take in, before scaling (shift by the SYN's window_scale)
    header_length: int  # 20, up to 60 with options (the data offset field counts 32-bit words)
    checksum: int
    urgent: int
    options: TCPOptions
    payload: bytes = field(repr=False)

    @property
    def flag_names(self) -> str:
        """``"SYN, ACK"``: the flags set, SYN and FIN first, then the rest as Wireshark lists them."""
        return ", ".join(name for bit, name in FLAG_NAMES if self.flags & bit) or "none"

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & ACK)

    @property
    def segment_length(self) -> int:
        """Sequence numbers this segment uses: its payload, plus one each for SYN and FIN."""
        return len(self.payload) + self.syn + self.fin


def parse_tcp(data: bytes) -> TCP:
    _need(data, TCP_HEADER.size, "a TCP header")
    src_port, dst_port, seq, ack, offset_byte, flags, window, checksum, urgent = TCP_HEADER.unpack_from(data)
    header_length = (offset_byte >> 4) * 4  # the top 4 bits: the header's length in 32-bit words
    if header_length < TCP_HEADER.size:
        raise PacketError(f"impossible TCP header length {header_length}")
    _need(data, header_length, "the TCP header with its options")
    # The low bit of the offset byte is the old NS (nonce) flag; the low byte is the classic eight.
    return TCP(src_port, dst_port, seq, ack, flags, window, header_length, checksum, urgent,
               parse_tcp_options(data[TCP_HEADER.size:header_length]), bytes(data[header_length:]))


# ================================================================ UDP, ICMP


@dataclass(frozen=True)
class UDP:
    """Ports and a length, nothing else: no connection, no order, no retransmission."""

    src_port: int
    dst_port: int
    length: int  # header (8) + payload
    checksum: int
    payload: bytes = field(repr=False)
    header_length: int = 8


def parse_udp(data: bytes) -> UDP:
    _need(data, 8, "a UDP header")
    src_port, dst_port, length, checksum = struct.unpack_from("!HHHH", data)
    return UDP(src_port, dst_port, length, checksum, bytes(data[8:length] if length >= 8 else data[8:]))


ICMP_NAMES = {(0, 0): "echo reply", (8, 0): "echo request", (3, 3): "port unreachable", (11, 0): "TTL exceeded",
              (3, 1): "host unreachable", (3, 0): "network unreachable", (3, 13): "administratively prohibited"}
ICMPV6_NAMES = {(128, 0): "echo request", (129, 0): "echo reply", (1, 4): "port unreachable",
                (3, 0): "hop limit exceeded", (1, 3): "address unreachable", (1, 1): "administratively prohibited",
                (135, 0): "neighbour solicitation", (136, 0): "neighbour advertisement"}


@dataclass(frozen=True)
class ICMP:
    """The network's own messages: echo (ping), "unreachable", "TTL exceeded" (traceroute)."""

    type: int
    code: int
    checksum: int
    rest: bytes = field(repr=False)  # for echo: identifier and sequence number; for errors: the offending header
    version: int = 4
    header_length: int = 4

    @property
    def name(self) -> str:
        names = ICMP_NAMES if self.version == 4 else ICMPV6_NAMES
        return names.get((self.type, self.code), f"type {self.type} code {self.code}")


def parse_icmp(data: bytes, version: int = 4) -> ICMP:
    _need(data, 4, "an ICMP header")
    kind, code, checksum = struct.unpack_from("!BBH", data)
    return ICMP(kind, code, checksum, bytes(data[4:]), version)


# ================================================================== a packet


@dataclass
class Packet:
    """One captured packet, every layer parsed that could be: ``packet.ip.src``, ``packet.tcp.seq``."""

    ts: float  # when it was captured, seconds since 1970 (pcap's clock)
    length: int  # its length on the wire
    link: Ethernet | None = None  # None for raw IP captures (a TUN device, the lab's router)
    ip: IPv4 | IPv6 | None = None
    transport: TCP | UDP | ICMP | None = None
    error: str = ""  # what stopped the parser, if anything did
    raw: bytes = field(default=b"", repr=False)  # the bytes as captured

    @property
    def tcp(self) -> TCP | None:
        return self.transport if isinstance(self.transport, TCP) else None

    @property
    def udp(self) -> UDP | None:
        return self.transport if isinstance(self.transport, UDP) else None

    @property
    def icmp(self) -> ICMP | None:
        return self.transport if isinstance(self.transport, ICMP) else None

    @property
    def payload(self) -> bytes:
        """What the transport layer carries: the application's bytes."""
        return getattr(self.transport, "payload", b"")

    def summary(self) -> str:
        """One line, tcpdump-style: ``10.0.0.1:40000 > 10.0.0.2:5050 TCP [SYN] seq=... len=0``."""
        if self.ip is None:
            kind = f"EtherType 0x{self.link.ethertype:04x}" if self.link else "not IP"
            return f"{kind} {self.length} B {self.error}".strip()
        tcp, udp, icmp = self.tcp, self.udp, self.icmp
        ported = tcp or udp  # the transports that name ports
        ends = (f"{_host(self.ip.src)}:{ported.src_port} > {_host(self.ip.dst)}:{ported.dst_port}"
                if ported else f"{self.ip.src} > {self.ip.dst}")
        if tcp:
            text = (f"{ends} TCP [{tcp.flag_names}] seq={tcp.seq} ack={tcp.ack} win={tcp.window} "
                    f"len={len(tcp.payload)} {tcp.options.describe()}")
        elif udp:
            text = f"{ends} UDP len={len(udp.payload)}"
        elif icmp:
            text = f"{ends} {'ICMP' if icmp.version == 4 else 'ICMPv6'} {icmp.name}"
        else:
            text = f"{ends} {PROTOCOL_NAMES.get(self.ip.protocol, f'protocol {self.ip.protocol}')}"
        return f"{text} {self.error}".strip()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def parse_ip(data: bytes) -> tuple[IPv4 | IPv6, bytes]:
    """An IP header of either version: the first 4 bits say which."""
    _need(data, 1, "an IP header")
    version = data[0] >> 4
    if version == 4:
        return parse_ipv4(data)
    if version == 6:
        return parse_ipv6(data)
    raise PacketError(f"not an IP packet: the version field says {version}")


def parse(data: bytes, linktype: int = LINKTYPE_RAW, ts: float = 0.0, length: int | None = None) -> Packet:
    """Every header of one captured packet that can be read; ``.error`` says why it stopped early."""
    packet = Packet(ts, len(data) if length is None else length, raw=bytes(data))
    try:
        if linktype in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL):
            packet.link, data = (parse_ethernet if linktype == LINKTYPE_ETHERNET else parse_linux_sll)(data)
            if packet.link.ethertype not in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
                return packet  # ARP and others: a link-layer matter, no IP inside
        elif linktype != LINKTYPE_RAW:
            raise PacketError(f"link type {linktype} is not one this parser reads")
        packet.ip, data = parse_ip(data)
        if packet.ip.fragment_offset:
            # Only the first fragment holds the TCP or UDP header; reassembly is the receiver's job.
            packet.error = f"(an IP fragment at offset {packet.ip.fragment_offset})"
            return packet
        protocol = packet.ip.protocol
        if protocol == PROTO_TCP:
            packet.transport = parse_tcp(data)
        elif protocol == PROTO_UDP:
            packet.transport = parse_udp(data)
        elif protocol in (PROTO_ICMP, PROTO_ICMPV6):
            packet.transport = parse_icmp(data, packet.ip.version)
    except PacketError as exc:
        packet.error = f"({exc})"
    return packet


def read_packets(path_or_file: str | os.PathLike | BinaryIO) -> list[Packet]:
    """Every packet of a pcap file, parsed."""
    with PcapReader(path_or_file) as reader:
        return [parse(data, reader.linktype, ts, orig_len) for ts, data, orig_len in reader]


def iter_packets(path_or_file: str | os.PathLike | BinaryIO) -> Iterator[Packet]:
    """The same, one at a time, for a capture too large to hold."""
    with PcapReader(path_or_file) as reader:
        for ts, data, orig_len in reader:
            yield parse(data, reader.linktype, ts, orig_len)


class TCPPacket(NamedTuple):
    """A packet known to carry TCP: its ``ip`` and ``tcp`` headers, as on the ``Packet``, but never None."""

    packet: Packet
    ip: IPv4 | IPv6
    tcp: TCP


def tcp_packets(packets: Iterable[Packet]) -> list[TCPPacket]:
    """The packets that carry a TCP segment, in order: ``for p in tcp_packets(packets): p.tcp.seq``.

    Left out: ARP, UDP, ICMP, an IP fragment after the first (the TCP header
    is in the first), and a packet cut short before its TCP header ended.
    """
    return [TCPPacket(p, p.ip, p.tcp) for p in packets if p.ip is not None and p.tcp is not None]


# ============================================================== checksums


def transport_checksum_ok(packet: Packet) -> bool | None:
    """Whether the TCP or UDP checksum adds up; None when it cannot be told (no TCP/UDP, or cut short).

    Unlike IPv4's, this checksum covers the payload and a *pseudo-header*
    (the IP addresses, the protocol and the length), so a segment delivered
    to the wrong address fails it.  On loopback, and on a sending machine
    whose network card computes checksums itself ("offload"), captured
    outgoing segments carry an unfinished checksum: Wireshark then shows
    them as bad too, and its advice is the same -- ignore it there.
    """
    ip, transport = packet.ip, packet.transport
    if ip is None or not isinstance(transport, (TCP, UDP)) or packet.length != len(packet.raw):
        return None
    segment = _transport_bytes(packet, ip)
    if isinstance(ip, IPv4):
        pseudo = struct.pack("!4s4sBBH", ipaddress.IPv4Address(ip.src).packed, ipaddress.IPv4Address(ip.dst).packed,
                             0, ip.protocol, len(segment))
    else:
        pseudo = struct.pack("!16s16sIxxxB", ipaddress.IPv6Address(ip.src).packed,
                             ipaddress.IPv6Address(ip.dst).packed, len(segment), ip.protocol)
    if isinstance(transport, UDP) and transport.checksum == 0:
        return True if isinstance(ip, IPv4) else False  # "no checksum" is allowed in IPv4 only
    return internet_checksum(pseudo + segment) == 0


def _transport_bytes(packet: Packet, ip: IPv4 | IPv6) -> bytes:
    """The TCP or UDP header and payload, exactly as captured (options included); ``ip`` is the packet's."""
    start = (packet.link.header_length if packet.link else 0) + ip.header_length
    return packet.raw[start:start + ip.total_length - ip.header_length]
