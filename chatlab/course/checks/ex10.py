"""Checks of exercise 10: IPv4 and TCP headers read from real captures, a connection followed SYN to FIN.

No sockets and no root: the packets come from capture files made once on
the lab network and committed (``data/``, see ``data/make_wire_captures.py``),
so every student is graded on the same bytes, including the cases a live
capture shows only by chance (IPv4 options, numbers that wrap at 2**32).
The expected values come from the kit's own parser (``chatlab.net.packets``),
itself checked field by field against tshark (tests/test_packets.py).

Each hint names the classic mistake the wrong value points to: the byte
order, a length in words taken for bytes, options forgotten, flags compared
with ``==``, an ACK counted from the wrong side's ISN, numbers that do not
wrap.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from ...net.packets import parse
from ...net.pcap import LINKTYPE_RAW, read_pcap
from ..harness import Context, check, diagnose, short, show_bytes

DATA = Path(__file__).resolve().parent / "data"
WRAP = 2**32

BYTE_ORDER = ("network byte order: the fields are big-endian, most significant byte first -- put \"!\" at the "
              "start of the struct format (without it, struct reads this machine's order)")
WORDS = "IHL counts 32-bit words, not bytes: the header length in bytes is (first byte & 0x0F) * 4"
OFFSET_WORDS = "the data offset counts 32-bit words, not bytes: the header length is (byte 12 >> 4) * 4"
IP_OPTIONS = ("this header has options: it is longer than 20 bytes, so the payload starts at header_length "
              "(IHL * 4), not at byte 20")
TCP_OPTIONS = ("TCP options (MSS, timestamps...) come between the 20 fixed bytes and the payload: the payload "
               "starts at the data offset, header_length, not at byte 20")

FORMAT = ("the struct format says the size of each field, in order: \"!\" then B (1 byte), H (2), I (4), "
          "4s (4 raw bytes); the IPv4 header's fixed part is 20 bytes, so is TCP's: count what yours adds up to")

# What the exceptions a student's code raises usually mean (harness.diagnose).
DIAGNOSES = [
    diagnose(struct.error, FORMAT, where=("parse_ipv4", "parse_tcp")),
    diagnose(KeyError, "each side's ISN is known once it has sent its first segment: note it (isn.setdefault) "
                       "before you use it", where="follow"),
    diagnose((TypeError, AttributeError), "parse_ipv4 returns a pair (IPv4(...), payload) and parse_tcp a TCP(...): "
                                          "follow uses them as they are", where="follow"),
]


def packets(name: str) -> list[bytes]:
    """The raw IPv4 packets of one of the committed captures, in capture order."""
    path = DATA / name
    try:
        linktype, records = read_pcap(path)
    except OSError as exc:  # pragma: no cover - an installation without the data files
        raise RuntimeError(f"the capture {path} is missing ({exc}): reinstall chatlab with 'pip install -e .'")
    assert linktype == LINKTYPE_RAW, f"{path} should hold raw IP packets"
    return [record.data for record in records]


def reference(packet: bytes):
    """What the kit's parser reads in ``packet``."""
    return parse(packet, LINKTYPE_RAW)


def header_dump(packet: bytes, size: int) -> str:
    return show_bytes(packet[:size])


def swapped(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "big"), "little")


def call(ctx: Context, what: str, function, *args: Any) -> Any:
    ctx.step(what)
    return function(*args)


# ---------------------------------------------------------------------- IPv4


def expect_ipv4(ctx: Context, ex: Any, packet: bytes, number: int) -> None:
    ref = reference(packet).ip
    got = call(ctx, f"parse_ipv4(packet {number}: {len(packet)} bytes)", ex.parse_ipv4, packet)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise ctx.fail("a pair: (IPv4 header, payload)", short(got, 200), "return header, payload")
    header, payload = got
    wanted = {"version": 4, "header_length": ref.header_length, "total_length": ref.total_length, "ttl": ref.ttl,
              "protocol": ref.protocol, "src": ref.src, "dst": ref.dst}
    for field, value in wanted.items():
        have = getattr(header, field, None)
        if have == value:
            continue
        hint = {"version": "version and IHL share the first byte: version is its top 4 bits (byte >> 4)",
                "header_length": WORDS if have == ref.header_length // 4 else
                                 IP_OPTIONS if have == 20 else WORDS,
                "src": "an address is 4 bytes, written as 4 numbers: \".\".join(str(b) for b in the_4_bytes)",
                "dst": "an address is 4 bytes, written as 4 numbers: \".\".join(str(b) for b in the_4_bytes)",
                }.get(field, BYTE_ORDER if isinstance(have, int) and have == swapped(value, 2) else
                      "compare the field's position with the header diagram in the exercise")
        raise ctx.fail(f"{field} = {value!r}", f"{field} = {have!r}, from the header\n"
                       f"{header_dump(packet, ref.header_length)}", hint)
    expected_payload = packet[ref.header_length:ref.total_length]
    if payload != expected_payload:
        hint = IP_OPTIONS if payload == packet[20:ref.total_length] else \
            "the payload is packet[header_length:total_length]"
        raise ctx.fail(f"the payload: {len(expected_payload)} bytes from byte {ref.header_length}",
                       f"{show_bytes(bytes(payload)[:64]) if isinstance(payload, (bytes, bytearray)) else payload!r}",
                       hint)


@check("parse_ipv4 reads version, lengths, TTL, protocol and addresses, in network byte order", points=2,
       hint=BYTE_ORDER)
def ipv4_fields(ctx: Context) -> None:
    ex = ctx.load("ex10_wire")
    ctx.step("the 15 packets of data/chat_frames.pcap: a ChatClient on 10.0.0.1, the server on 10.0.0.2")
    for number, packet in enumerate(packets("chat_frames.pcap"), 1):
        expect_ipv4(ctx, ex, packet, number)


@check("parse_ipv4 finds the payload after IPv4 options (a 24-byte header)", points=1, hint=IP_OPTIONS)
def ipv4_options(ctx: Context) -> None:
    ex = ctx.load("ex10_wire")
    ctx.step("data/chat_lines_options.pcap: the client's packets carry 4 bytes of options (IHL 6)")
    for number, packet in enumerate(packets("chat_lines_options.pcap"), 1):
        expect_ipv4(ctx, ex, packet, number)


# ----------------------------------------------------------------------- TCP


def expect_tcp(ctx: Context, ex: Any, packet: bytes, number: int) -> None:
    ref = reference(packet)
    segment = packet[ref.ip.header_length:ref.ip.total_length]  # the TCP part, cut out by the kit's parser
    tcp = ref.tcp
    got = call(ctx, f"parse_tcp(the {len(segment)}-byte segment of packet {number}, [{tcp.flag_names}])",
               ex.parse_tcp, segment)
    wanted = {"src_port": tcp.src_port, "dst_port": tcp.dst_port, "seq": tcp.seq, "ack": tcp.ack,
              "header_length": tcp.header_length, "window": tcp.window}
    for field, value in wanted.items():
        have = getattr(got, field, None)
        if have == value:
            continue
        size = 4 if field in ("seq", "ack") else 2
        if field == "header_length":
            hint = OFFSET_WORDS if have == value // 4 else TCP_OPTIONS if have == 20 else OFFSET_WORDS
        else:
            hint = BYTE_ORDER if isinstance(have, int) and have == swapped(value, size) else \
                "compare the field's position with the header diagram in the exercise"
        raise ctx.fail(f"{field} = {value!r}", f"{field} = {have!r}, from the header\n"
                       f"{header_dump(segment, tcp.header_length)}", hint)
    names = frozenset(name for name in ("FIN", "SYN", "RST", "PSH", "ACK", "URG") if name in tcp.flag_names)
    have = getattr(got, "flags", None)
    if have != names:
        several = "; test each bit with &, not ==" if len(names) > 1 else ""
        raise ctx.fail(f"flags = {set(names)} (the flags byte is 0x{tcp.flags:02x})", f"flags = {have!r}",
                       "a frozenset of the names of the bits set: several flags may be set at once (a SYN-ACK "
                       f"has two){several}: frozenset(name for name, bit in FLAGS.items() if flags & bit)")
    payload = getattr(got, "payload", None)
    if payload != tcp.payload:
        hint = TCP_OPTIONS if payload == segment[20:] else "the payload is everything after the header"
        raise ctx.fail(f"the payload: {len(tcp.payload)} bytes from byte {tcp.header_length}",
                       f"{show_bytes(bytes(payload)[:64]) if isinstance(payload, (bytes, bytearray)) else payload!r}",
                       hint)


@check("parse_tcp reads ports, sequence and ACK numbers, flags, window, and the payload after the options",
       points=3, hint=TCP_OPTIONS)
def tcp_fields(ctx: Context) -> None:
    ex = ctx.load("ex10_wire")
    ctx.step("every TCP segment of data/chat_frames.pcap and data/chat_lines_options.pcap")
    for name in ("chat_frames.pcap", "chat_lines_options.pcap"):
        for number, packet in enumerate(packets(name), 1):
            expect_tcp(ctx, ex, packet, number)


# ------------------------------------------------------------------- follow


def reference_follow(raw: list[bytes]) -> list[tuple]:
    """The expected segments: (sender, flags, relative seq, relative ack or None, payload length)."""
    out: list[tuple] = []
    isn: dict[Any, int] = {}
    client = None
    for packet in raw:
        p = reference(packet)
        me, other = (p.ip.src, p.tcp.src_port), (p.ip.dst, p.tcp.dst_port)
        if client is None:
            client = me if p.tcp.syn and not p.tcp.has_ack else other
        isn.setdefault(me, p.tcp.seq)
        flags = frozenset(name for name in ("FIN", "SYN", "RST", "PSH", "ACK", "URG") if name in p.tcp.flag_names)
        ack = (p.tcp.ack - isn[other]) % WRAP if p.tcp.has_ack and other in isn else None
        out.append(("client" if me == client else "server", flags, (p.tcp.seq - isn[me]) % WRAP, ack,
                    len(p.tcp.payload)))
    return out


def show(segment: Any) -> str:
    try:
        sender, flags, seq, ack, length = segment
    except (TypeError, ValueError):
        return repr(segment)[:120]
    names = ", ".join(sorted(flags, key=["SYN", "FIN", "RST", "PSH", "ACK", "URG"].index)) if isinstance(
        flags, (set, frozenset)) and flags <= {"SYN", "FIN", "RST", "PSH", "ACK", "URG"} else repr(flags)
    return f"{sender}: [{names}] seq={seq} ack={ack} len={length}"


def expect_follow(ctx: Context, ex: Any, name: str, isn_note: str = "") -> None:
    raw = packets(name)
    wanted = reference_follow(raw)
    got = call(ctx, f"follow(the {len(raw)} packets of data/{name}){isn_note}", ex.follow, raw)
    if not isinstance(got, list) or len(got) != len(wanted):
        raise ctx.fail(f"a list of {len(wanted)} Segments", short(got, 200), "one Segment per packet, in order")
    for i, (have, want) in enumerate(zip(got, wanted)):
        if tuple(have) == want:
            ctx.step(f"  {i + 1:2d}. {show(have)}")
            continue
        sender, flags, seq, ack, length = (tuple(have) + (None,) * 5)[:5]
        packet = reference(raw[i]).tcp
        if sender != want[0]:
            hint = "the client is the side that sent the first SYN (without ACK); the other is the server"
        elif isinstance(seq, int) and seq < 0 or isinstance(ack, int) and ack < 0:
            hint = "sequence numbers wrap around at 2**32: take (number - ISN) % 2**32, never a negative number"
        elif seq != want[2] and seq == packet.seq:
            hint = "count from the sender's ISN (the sequence number of its SYN): seq - ISN"
        elif seq != want[2] and isinstance(seq, int) and abs(seq - want[2]) == 1:
            hint = "the ISN is the SYN's own sequence number: the SYN uses it, so the first data byte is ISN + 1"
        elif seq != want[2]:
            hint = "seq counts from the sender's own ISN: (seq - ISN of the sender) % 2**32"
        elif want[3] is None:
            hint = "without the ACK flag the acknowledgment number means nothing: ack is None"
        elif ack != want[3]:
            hint = ("an ACK number counts the other side's bytes: subtract the other side's ISN, "
                    "(ack - ISN of the other side) % 2**32")
        elif length != want[4]:
            hint = "length is the number of payload bytes (after the TCP header and its options)"
        else:
            hint = "flags: the names of the bits set, as parse_tcp returns them"
        raise ctx.fail(f"segment {i + 1}: {show(want)}", f"segment {i + 1}: {show(have)}", hint)


@check("follow numbers a connection from each side's ISN: the handshake reads 0, then 0/1, then 1/1", points=2,
       hint="seq counts from the sender's ISN, ack from the other side's ISN")
def follows(ctx: Context) -> None:
    ex = ctx.load("ex10_wire")
    for name in ("chat_frames.pcap", "chat_lines_options.pcap", "refused.pcap"):
        expect_follow(ctx, ex, name)


@check("follow keeps counting when the sequence numbers wrap around 2**32", points=1,
       hint="sequence numbers wrap around at 2**32: take (number - ISN) % 2**32")
def wraps(ctx: Context) -> None:
    ex = ctx.load("ex10_wire")
    isn = struct.unpack("!I", packets("wrapped.pcap")[0][24:28])[0]
    expect_follow(ctx, ex, "wrapped.pcap", f": the client's ISN is {isn}, {WRAP - isn} below 2**32")


# ------------------------------------------------------------------ closing


@check("closing names who closed first (the first FIN), or who reset the connection", points=1,
       hint="the side that sends the first FIN closes first (the active close); an RST is \"reset by\" its sender")
def closes(ctx: Context) -> None:
    ex = ctx.load("ex10_wire")
    cases = [("chat_frames.pcap", None, "server", "the client said bye; the server answered and sent the first FIN"),
             ("chat_lines_options.pcap", None, "client", "the client shut its side first (FIN), then the server"),
             ("refused.pcap", None, "reset by server", "nothing listened: the server's kernel answered with an RST"),
             ("chat_frames.pcap", 3, "", "only the handshake: still open")]
    for name, first, wanted, story in cases:
        segments = [ex.Segment(*s) for s in reference_follow(packets(name))][:first]
        got = call(ctx, f"closing(the {len(segments)} segments of data/{name}): {story}", ex.closing, segments)
        if got != wanted:
            fins = [f"{s.sender} FIN" for s in segments if "FIN" in s.flags]
            hint = ("the side that sends the first FIN closes first (the active close)" if wanted in
                    ("client", "server") else "an RST ends the connection at once: \"reset by\" its sender"
                    if wanted.startswith("reset") else "no FIN and no RST: the connection is still open, \"\"")
            raise ctx.fail(repr(wanted), f"{got!r} (the FINs, in order: {', '.join(fins) or 'none'})", hint)
