"""Exercise 10 -- on the wire: read the IPv4 and TCP headers, follow a connection from SYN to FIN.

What you will learn
    Every chat message crosses the network inside headers that each layer
    put in front of it: IPv4 (which host, across routers), then TCP (which
    program, and where these bytes sit in the stream).  A header is a fixed
    layout of fields in *network byte order* -- big-endian, the most
    significant byte first -- which ``struct`` reads in one call.  Two
    lengths count 32-bit words, not bytes (IPv4's IHL, TCP's data offset),
    because both headers may carry options.  TCP's flags are single bits.
    And each side numbers its bytes from a random *initial sequence number*
    (ISN), so to read a connection you count from each side's ISN -- the SYN
    and the FIN each use one number, and the count wraps around at 2**32.

Read first
    notebooks/12_tcp_reliability.ipynb (section 1, the handshake on the
    wire) and notebooks/11_network.ipynb (ports on the wire); the header
    diagrams below (RFC 791 section 3.1, RFC 9293 section 3.1).  The kit's
    own parser, chatlab/net/packets.py, is worth reading once yours works.

Check it
    chatlab check 10

The packets the checks use are real captures (raw IPv4, as the lab's
router records them) in chatlab/course/checks/data/: open them in
Wireshark, or ``chatlab capture --read chatlab/course/checks/data/chat_frames.pcap``.

    IPv4 header (RFC 791), 20 bytes and any options:
     0      4      8              16                              32
    +------+------+---------------+-------------------------------+
    |ver 4 | IHL  |  DSCP / ECN   |         total length          |
    |         identification      |flags|     fragment offset     |
    |     TTL     |   protocol    |        header checksum        |
    |                       source address                        |
    |                    destination address                      |
    |                 options (IHL > 5) ...                       |

    TCP header (RFC 9293), 20 bytes and any options:
    |        source port          |       destination port        |
    |                       sequence number                       |
    |                    acknowledgment number                    |
    | offset | rsvd |    flags    |            window             |
    |         checksum            |        urgent pointer         |
    |                 options (offset > 5) ...                    |
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PROTO_TCP = 6  # IPv4's protocol field for TCP
FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20}  # the flags byte's bits
WRAP = 2**32  # sequence numbers are 32-bit: they count modulo 2**32


class IPv4(NamedTuple):
    version: int  # 4
    header_length: int  # in bytes: 20, or more with options
    total_length: int  # header and payload, in bytes
    ttl: int  # hops left
    protocol: int  # what the payload is: 6 for TCP
    src: str  # "10.0.0.1"
    dst: str


class TCP(NamedTuple):
    src_port: int
    dst_port: int
    seq: int  # the sequence number of the first payload byte (of the SYN or FIN, if set)
    ack: int  # the next byte expected from the other side (meaningful with the ACK flag)
    header_length: int  # in bytes: 20, or more with options
    flags: frozenset  # the names of the flags set: frozenset({"SYN", "ACK"})
    window: int
    payload: bytes


class Segment(NamedTuple):
    sender: str  # "client" (the side that sent the first SYN) or "server"
    flags: frozenset
    seq: int  # relative: counted from the sender's ISN (its SYN is 0, its first byte of data 1)
    ack: int | None  # relative: counted from the *other* side's ISN; None without the ACK flag
    length: int  # payload bytes


def parse_ipv4(packet: bytes) -> tuple[IPv4, bytes]:
    """The IPv4 header of ``packet`` and the payload it carries (the bytes after the header, up to
    ``total_length``)."""
    # TODO: 1. unpack the fixed 20 bytes: B is 1 byte, H 2, 4s 4 raw bytes; "!" for network byte order
    # TODO: 2. version and IHL share the first byte: shift and mask; the header length in bytes is IHL * 4
    # TODO: 3. an address is 4 bytes: ".".join(str(b) for b in them)
    # TODO: 4. the payload runs from the end of the header (options included) to total_length
    raise NotImplementedError(
        "struct.unpack_from(FORMAT, packet) reads the fixed 20 bytes: \"!\" first (network byte "
        "order), then B (1 byte), H (2), 4s (4 raw bytes) field by field; version and IHL share "
        "the first byte"
    )


def parse_tcp(segment: bytes) -> TCP:
    """The TCP header of ``segment`` (an IPv4 payload) and its payload."""
    # TODO: 1. unpack the fixed 20 bytes: ports (H), sequence and ACK numbers (I), offset, flags, window...
    # TODO: 2. the header length in bytes: (offset byte >> 4) * 4 -- options come before the payload
    # TODO: 3. the names of the flags whose bit is set (several may be: a SYN-ACK has two)
    raise NotImplementedError(
        "struct.unpack_from(FORMAT, segment): \"!\" first, H for a port, I for a 32-bit number; the "
        "data offset is the top 4 bits of byte 12, in 32-bit words; a flag is set when its bit is "
        "(test it with &)"
    )


def follow(packets: list[bytes]) -> list[Segment]:
    """The segments of one TCP connection, from its raw IPv4 packets in the order they were captured.

    The client is the side whose SYN (without ACK) comes first.  Each
    side's ISN is the sequence number of the first segment it sent (its
    SYN).  Numbers are relative and wrap: (number - ISN) modulo 2**32.
    """
    # TODO: 1. parse each packet; the client is the sender of the first SYN; note each side's ISN
    # TODO: 2. seq relative to the sender's ISN, ack relative to the other side's: modulo 2**32
    # TODO: 3. one Segment per packet: sender ("client" or "server"), flags, seq, ack, payload length
    raise NotImplementedError(
        "keep each side's ISN, keyed by its (address, port); seq = (tcp.seq - ISN of the sender) "
        "% WRAP, ack = (tcp.ack - ISN of the *other* side) % WRAP when \"ACK\" is in the flags, "
        "else None"
    )


def closing(segments: list[Segment]) -> str:
    """How the connection ended: "client" or "server" (whoever sent the first FIN: the active close),
    "reset by client" or "reset by server" (an RST), or "" if it has not ended."""
    # TODO: look for the first segment with "RST" or "FIN" in its flags: an RST says "reset by" its sender; otherwise the sender of the first FIN closed first
    raise NotImplementedError(
        "look for the first segment with \"RST\" or \"FIN\" in its flags: an RST says \"reset by\" its "
        "sender; otherwise the sender of the first FIN closed first"
    )
