"""TCP connections read back from a capture: each segment in order, what it meant, and what it carried.

A capture is a flat list of packets from every connection at once.  To see
TCP at work, sort them into *conversations* (one per connection: the pair of
address-and-port ends) and read each segment the way the two ends did:

* **relative sequence numbers**: each end starts counting at a random
  *initial sequence number* (ISN) -- so an old segment from a previous
  connection, or an attacker guessing, cannot fit in -- and Wireshark shows
  ``seq - ISN`` instead; so do we.  A SYN and a FIN each use one number.
* **retransmission**: a segment whose sequence range was sent before.  The
  sender heard no ACK for it in time (a *timeout*), or saw three duplicate
  ACKs (a *fast retransmission*).  **Out of order**: one below the highest
  sent, but never seen before: the network reordered them.  **A gap**: a
  segment starting beyond anything seen: the bytes before it were lost
  before they reached the capture point.
* **duplicate ACK**: the same ACK number again, while data is outstanding:
  "I am still missing the byte at N" -- each one says another segment arrived
  beyond the hole.
* **delayed ACK**: a pure ACK sent a while after the data it acknowledges
  (Linux waits up to 40 ms or more for something to send with it: data, or a
  second segment to acknowledge).  The time is taken from the capture point,
  less the round trip from there to the acknowledging end, measured in the
  handshake.
* **the chat messages**: each direction's bytes are put back in order (the
  stream the application read) and cut into messages with chatlab's own
  decoders (``chatlab.framing``): a segment may carry part of a message,
  one, or several.  A message is shown on the segment that completed it,
  which is when the receiving program could read it -- after a loss, only
  when the retransmission fills the hole (*head-of-line blocking*).

``conversations(packets)`` returns them all; ``conversation(packets, port)``
the first with that port; ``print(conv.table())`` shows one as text, and
``chatlab.net.diagram.sequence_diagram(conv)`` draws it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..framing import FrameDecoder, FramingError, LineDecoder
from .packets import TCP, IPv4, IPv6, Packet, parse
from .pcap import LINKTYPE_RAW

#: A pure ACK sent this long after the data it acknowledges (beyond the round trip from the capture
#: point to the acknowledging end) counts as delayed: an immediate ACK takes well under a millisecond
#: to be sent; Linux's delayed ACK timer waits at least 40 ms.
DELAYED_ACK = 0.015
#: Duplicate ACKs after which a sender retransmits without waiting for its timer (RFC 5681).
FAST_RETRANSMIT_DUP_ACKS = 3
#: Longest the text of what a segment carried is shown (all its messages together).
TEXT_WIDTH = 60

CLIENT, SERVER = 0, 1  # a segment's direction: sent by the client (the end that sent the first SYN), or back


@dataclass
class Segment:
    """One TCP segment of a conversation, as numbers relative to the connection's start."""

    packet: Packet  # as captured
    tcp: TCP = field(repr=False)  # its TCP header: packet.tcp, known to be there
    t: float  # seconds since the conversation's first segment (at the capture point)
    direction: int  # CLIENT (client to server) or SERVER (back)
    flags: str  # "SYN, ACK"
    seq: int  # relative: the stream offset of its first payload byte, plus one (the SYN used 0)
    ack: int | None  # relative: the next byte expected from the other side; None without the ACK flag
    length: int  # payload bytes
    window: int  # bytes the sender can take in, scaled by the window-scale option
    messages: list[str] = field(default_factory=list)  # chat messages this segment completed (or carried again)
    again: bool = False  # the messages are ones an earlier segment delivered: this is a copy
    partial: bool = False  # it carries bytes of a message that is still incomplete at its end
    held: bool = False  # it arrived beyond a hole: the program can read it only once the hole is filled
    retransmission: bool = False  # its sequence range was sent before
    fast_retransmission: bool = False  # ... right after the duplicate ACKs that ask for it
    out_of_order: bool = False  # below the highest sequence number sent, never seen before
    gap_before: int = 0  # bytes missing just before it (not captured: lost before the capture point?)
    duplicate_ack: int = 0  # 1 for the first duplicate of an ACK, 2 for the second, ...
    delayed_ack: float | None = None  # seconds this pure ACK waited, when delayed
    lost: bool = False  # the network dropped it (known from the router that dropped it)
    presumed_lost: bool = False  # retransmitted later, never acknowledged before that: it did not arrive
    sack: tuple[tuple[int, int], ...] = ()  # relative SACK blocks: "I also have these bytes, beyond the hole"
    notes: list[str] = field(default_factory=list)  # the above in words, for labels and tables

    @property
    def end(self) -> int:
        """The relative sequence number just after this segment."""
        return self.seq + self.length + ("SYN" in self.flags) + ("FIN" in self.flags)

    @property
    def is_pure_ack(self) -> bool:
        return self.length == 0 and self.flags == "ACK"

    def label(self) -> str:
        """``"[PSH, ACK] seq=1 ack=83 len=16"``, as on an arrow of a sequence diagram."""
        text = f"[{self.flags}] seq={self.seq}"
        if self.ack is not None:
            text += f" ack={self.ack}"
        return text + f" len={self.length}"

    def says(self, width: int = TEXT_WIDTH) -> str:
        """What it carried, in words: the messages, or "part of a message"."""
        if self.held:
            return "(held: the bytes before it are missing)"
        messages = [("again: " if self.again else "") + m for m in self.messages]
        if len(messages) > 3:  # keep a label to one line: the first, the last, and how many between
            messages = [messages[0], f"... {len(messages) - 2} more ...", messages[-1]]
        each = max(16, (width - 2 * (len(messages) - 1)) // max(len(messages), 1))  # all of it within `width`
        parts = [_short(m, each) for m in messages]
        if self.partial:
            parts.append("(part of a message)" if not parts else "+ start of the next")
        return "; ".join(parts)


@dataclass
class Conversation:
    """Every segment of one TCP connection, in capture order."""

    client: tuple[str, int]  # (address, port) of the end that sent the first SYN
    server: tuple[str, int]
    segments: list[Segment] = field(default_factory=list)
    mode: str = "?"  # what the client spoke: "frames", "lines", "tls", or "?" before any byte
    isn: list[int | None] = field(default_factory=lambda: [None, None])  # each direction's initial sequence number
    start: float = 0.0  # when its first segment was captured (pcap time)
    rtt_to: list[float] = field(default_factory=lambda: [0.0, 0.0])  # capture point to client, to server, and back

    @property
    def name(self) -> str:
        return f"{_end(self.client)} > {_end(self.server)}"

    def ends(self) -> tuple[str, str]:
        return _end(self.client), _end(self.server)

    def messages(self) -> list[tuple[float, int, str]]:
        """Every chat message completed, as (time, direction, text), in order (retransmissions not counted)."""
        return [(s.t, s.direction, m) for s in self.segments if not s.again and not s.lost for m in s.messages]

    def count(self, what: str) -> int:
        """How many segments are ``"retransmission"``, ``"duplicate_ack"``, ``"delayed_ack"``, ``"lost"``..."""
        return sum(1 for s in self.segments if getattr(s, what))

    @property
    def handshake(self) -> list[Segment]:
        """The three segments that open it: SYN, SYN-ACK, ACK (fewer when the capture missed them)."""
        syn = next((s for s in self.segments if s.flags == "SYN"), None)
        syn_ack = next((s for s in self.segments if s.flags == "SYN, ACK"), None)
        ack = next((s for s in self.segments if s.direction == CLIENT and "SYN" not in s.flags and s.ack == 1), None)
        return [s for s in (syn, syn_ack, ack) if s is not None]

    @property
    def closed(self) -> str:
        """How it ended: "FIN both ways", "FIN from the client", "RST from the server", or "" (still open)."""
        fins = {s.direction for s in self.segments if "FIN" in s.flags and not s.lost}
        resets = [s.direction for s in self.segments if "RST" in s.flags and not s.lost]
        if resets:
            return f"RST from the {'client' if resets[0] == CLIENT else 'server'}"
        if len(fins) == 2:
            return "FIN both ways"
        if fins:
            return f"FIN from the {'client' if CLIENT in fins else 'server'}"
        return ""

    def table(self, limit: int = 60) -> str:
        """The conversation as text, one line a segment: time, direction, label, notes and messages."""
        lines = [f"{self.name}  ({self.mode} mode, {len(self.segments)} segments"
                 f"{', ' + self.closed if self.closed else ''})"]
        for i, s in enumerate(self.segments[:limit]):
            arrow = "->" if s.direction == CLIENT else "<-"
            extra = "; ".join(filter(None, [", ".join(s.notes), s.says()]))
            lines.append(f"{i:4d} {s.t * 1000:9.3f} ms  {arrow} {s.label():<40} {extra}")
        if len(self.segments) > limit:
            lines.append(f"  ... {len(self.segments) - limit} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Conversation {self.name}: {len(self.segments)} segments, {self.mode}>"


def _end(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# ============================================================ the streams


class _Stream:
    """One direction's bytes put back in order, cut into chat messages."""

    def __init__(self, banner_first: bool):
        self.next = 1  # the relative sequence number of the next byte in order (the SYN used 0)
        self.held: dict[int, bytes] = {}  # segments that arrived beyond a hole, by relative seq
        self.banner_first = banner_first  # the server's stream starts with its one-line banner
        self.head = b""  # bytes of the banner line so far
        self.banner_done = False
        self.decoder: FrameDecoder | LineDecoder | None = None
        self.mode = "?"
        self.broken = ""  # why decoding stopped, if it did
        self.ends: list[tuple[int, str]] = []  # (relative seq just after a message, its text)

    def take(self, seq: int, payload: bytes, mode_of_client: str) -> tuple[list[str], bool, bool]:
        """Add a segment's bytes; return the messages completed, whether a message is left unfinished,
        and whether the segment is held beyond a hole."""
        if seq > self.next:
            self.held[seq] = payload  # beyond a hole: the application cannot read it yet
            return [], False, True
        done: list[str] = []
        self._feed(payload[self.next - seq:], mode_of_client, done)
        while self.held:  # the hole is filled: what was waiting behind it follows at once
            waiting = min(self.held)
            if waiting > self.next:
                break
            data = self.held.pop(waiting)
            self._feed(data[self.next - waiting:], mode_of_client, done)
        return done, self._pending() > 0, False

    def _feed(self, data: bytes, mode_of_client: str, done: list[str]) -> None:
        if not data:
            return
        start = self.next
        self.next += len(data)
        if self.broken:
            return
        if self.mode == "?":
            self.mode = ("tls" if data[:1] == b"\x16" else "lines") if self.banner_first else \
                {b"\x00": "frames", b"\x16": "tls"}.get(data[:1], "lines")
        if self.mode == "tls":  # encrypted: the records are there, their messages cannot be read
            if not done:
                done.append("TLS (encrypted)")
            return
        if self.banner_first and not self.banner_done:  # the server's banner: always one line
            newline = data.find(b"\n")
            if newline < 0:
                self.head += data
                return
            self.head += data[:newline]
            self.banner_done = True
            self._done(start + newline + 1, "banner " + repr(self.head.decode("utf-8", "replace")), done)
            data, start = data[newline + 1:], start + newline + 1
            if not data:
                return
        if self.decoder is None:  # after the banner, the server speaks the mode the client chose
            mode = mode_of_client if self.banner_first else self.mode
            self.decoder = FrameDecoder() if mode == "frames" else LineDecoder()
        try:
            messages = self.decoder.feed(data)
        except FramingError as exc:
            messages, self.broken = exc.frames, f"not chatlab framing: {exc}"
        for message in messages:
            self._done(start + len(data) - self._pending(), _text(message, self.decoder), done)
        if self.broken:
            done.append(f"({self.broken})")

    def _done(self, end: int, text: str, done: list[str]) -> None:
        self.ends.append((end, text))
        done.append(text)

    def _pending(self) -> int:
        if self.banner_first and not self.banner_done and self.mode != "tls":
            return len(self.head)
        return self.decoder.pending if self.decoder else 0

    def carried(self, seq: int, end: int) -> list[str]:
        """The messages that ended within [seq, end): what a retransmission carries again."""
        return [text for stop, text in self.ends if seq < stop <= end]


def _text(message: bytes, decoder: FrameDecoder | LineDecoder) -> str:
    if isinstance(decoder, LineDecoder):
        return repr(message.decode("utf-8", "replace"))
    from ..lab.recorder import describe  # the same words the lab's tables and plots use

    try:
        msg = json.loads(message)
    except ValueError:
        return f"frame of {len(message)} bytes (not JSON)"
    return describe(msg, 200) if isinstance(msg, dict) else f"frame {message[:20]!r}"


# ====================================================== sorting and reading


def conversations(packets: Iterable[Packet], lost: Iterable[Any] = ()) -> list[Conversation]:
    """Every TCP connection in ``packets``, in the order each began.

    ``lost``: packets a router dropped (it knows), merged in by time and
    marked lost: sent, but never delivered.  Parsed ``Packet``s, or the lab
    router's drops as they are (``network.drops()``: anything with ``.ts``
    and ``.data``, raw IP)::

        conversations(read_packets(net.pcap(a)), lost=net.drops())
    """
    packets = list(packets)
    dropped = [p if isinstance(p, Packet) else parse(p.data, LINKTYPE_RAW, p.ts) for p in lost]
    # A capture taken before the drop (on the sender's wire) holds the dropped packet too: mark that
    # copy lost rather than add the drop a second time.  The TCP bytes are the same (a router changes
    # only the IP header: its TTL and checksum); the copy is the last one captured before the drop.
    marked: set[int] = set()
    extra: list[Packet] = []
    for drop in dropped:
        same = _same_segment(drop)
        copies = [i for i, p in enumerate(packets) if i not in marked and p.ts <= drop.ts and _same_segment(p) == same]
        if same is not None and copies:
            marked.add(copies[-1])
        else:
            extra.append(drop)
    everything = sorted([(p, i in marked) for i, p in enumerate(packets)] + [(p, True) for p in extra],
                        key=lambda item: item[0].ts)
    found: list[Conversation] = []
    current: dict[frozenset[tuple[str, int]], _Reader] = {}  # by the two ends, in either order
    readers: list[_Reader] = []
    for packet, was_lost in everything:  # first pass: each segment's numbers and what it means
        ip, tcp = packet.ip, packet.tcp
        if ip is None or tcp is None:
            continue  # not TCP
        a, b = (ip.src, tcp.src_port), (ip.dst, tcp.dst_port)
        ends = frozenset((a, b))
        reader = current.get(ends)
        fresh_syn = tcp.syn and not tcp.has_ack
        if reader is None or (fresh_syn and reader.is_new_connection(tcp.seq)):
            reader = current[ends] = _Reader(a if fresh_syn or tcp.dst_port < tcp.src_port else b,
                                             b if fresh_syn or tcp.dst_port < tcp.src_port else a, packet.ts)
            found.append(reader.conv)
            readers.append(reader)
        reader.add(packet, ip, tcp, was_lost)
    for reader in readers:  # second pass: the bytes that arrived, put in order and cut into messages
        reader.decode()
    return found


def _same_segment(packet: Packet) -> tuple[object, ...] | None:
    """What identifies one TCP segment whatever router it crossed: ends, numbers, flags, options, payload."""
    tcp = packet.tcp
    if tcp is None or packet.ip is None:
        return None
    return (packet.ip.src, packet.ip.dst, tcp.src_port, tcp.dst_port, tcp.seq, tcp.ack, tcp.flags, tcp.window,
            tcp.options, tcp.payload)


def conversation(packets: Iterable[Packet], port: int | None = None, lost: Iterable[Any] = ()) -> Conversation:
    """The first conversation (with ``port`` at either end, if given); ValueError if there is none."""
    found = [c for c in conversations(packets, lost) if port is None or port in (c.client[1], c.server[1])]
    if not found:
        raise ValueError(f"no TCP connection{f' with port {port}' if port is not None else ''} in the capture")
    return found[0]


class _Reader:
    """Reads one conversation's segments as they come, keeping what each end has sent and acknowledged."""

    def __init__(self, client: tuple[str, int], server: tuple[str, int], start: float):
        self.conv = Conversation(client, server, start=start)
        self.streams = [_Stream(banner_first=False), _Stream(banner_first=True)]
        self.sent: list[list[tuple[int, int]]] = [[], []]  # sequence ranges each direction has sent
        self.highest = [0, 0]  # the relative seq just after the highest byte each direction sent
        self.highest_time = [0.0, 0.0]  # when it was sent
        self.last_ack: list[tuple[int, int] | None] = [None, None]  # (ack, window) of each direction's last ACK
        self.dup_acks = [0, 0]
        self.data_times: list[list[tuple[int, float]]] = [[], []]  # (end, time) of each direction's data
        self.acked = [1, 1]  # the highest ACK each direction has sent (relative, of the other's stream)
        self.scale: list[int | None] = [None, None]  # window scale each end announced in its SYN
        self.syn_time: list[float | None] = [None, None]
        self.ended = False

    def is_new_connection(self, seq: int) -> bool:
        """A SYN on the same four numbers: a new connection if the old ended or the ISN differs."""
        return self.ended or (self.conv.isn[CLIENT] is not None and seq != self.conv.isn[CLIENT])

    def add(self, packet: Packet, ip: IPv4 | IPv6, tcp: TCP, lost: bool) -> None:
        """One more segment: ``packet``, with its IP and TCP headers."""
        conv = self.conv
        d = CLIENT if (ip.src, tcp.src_port) == conv.client else SERVER
        other = 1 - d
        isn, other_isn = conv.isn[d], conv.isn[other]
        if isn is None:  # no SYN seen: count from the first segment (as Wireshark does)
            isn = conv.isn[d] = tcp.seq if tcp.syn else tcp.seq - 1
        seq = (tcp.seq - isn) % 2**32  # sequence numbers wrap around at 2^32
        ack = (tcp.ack - other_isn) % 2**32 if tcp.has_ack and other_isn is not None else None
        if tcp.syn:
            self.scale[d] = tcp.options.window_scale
            self.syn_time[d] = packet.ts
        # The window field is scaled only once both ends announced a scale in their SYNs, and never in a SYN.
        scale, other_scale = self.scale[d], self.scale[other]
        window = tcp.window if tcp.syn or scale is None or other_scale is None else tcp.window << scale
        # The payload's length from the headers, not from what was captured: a capture may keep only the
        # first bytes of each packet (a snap length), and the segment was as long as IP says all the same.
        length = max(len(tcp.payload), ip.total_length - ip.header_length - tcp.header_length)
        s = Segment(packet, tcp, packet.ts - conv.start, d, tcp.flag_names, seq, ack, length, window, lost=lost)
        self._sequence_notes(s)
        self._ack_notes(s, packet.ts)
        if lost:
            s.notes.append("lost")
        client_syn, server_syn = self.syn_time
        if tcp.syn and d == SERVER and client_syn is not None:
            conv.rtt_to[SERVER] = packet.ts - client_syn
        if d == CLIENT and not tcp.syn and ack == 1 and server_syn is not None and not conv.rtt_to[CLIENT]:
            conv.rtt_to[CLIENT] = packet.ts - server_syn
        conv.segments.append(s)
        self.ended = conv.closed == "FIN both ways" or conv.closed.startswith("RST")

    def decode(self) -> None:
        """Feed each direction's segments that arrived (not the lost ones) to its stream, in capture order.

        Done once every segment is known, because a segment is known to be
        lost only when its retransmission comes: its bytes, and the messages
        behind it, reach the program only then.
        """
        conv = self.conv
        for s in conv.segments:
            if not s.length or s.lost or s.presumed_lost:
                continue
            payload, stream = s.tcp.payload, self.streams[s.direction]
            if len(payload) < s.length:  # cut short by the capture: the bytes are not there to read
                if not stream.broken:
                    stream.broken = "payload not captured"
                    s.notes.append("payload not captured: no messages from here on")
                stream.next = max(stream.next, s.end)
                continue
            if conv.mode == "?" and s.direction == CLIENT and s.seq == 1:
                conv.mode = {b"\x00": "frames", b"\x16": "tls"}.get(payload[:1], "lines")
            s.messages, s.partial, s.held = self.streams[s.direction].take(s.seq, payload, conv.mode)
            if not s.messages and s.retransmission:
                s.messages, s.again = self.streams[s.direction].carried(s.seq, s.end), True

    def _sequence_notes(self, s: Segment) -> None:
        """Retransmission, out of order, or a gap: compare its range with what this direction sent before."""
        d, uses = s.direction, s.end - s.seq
        if not uses:
            return
        seen_before = any(start < s.end and s.seq < stop for start, stop in self.sent[d])
        if seen_before:
            self._presume_lost(s)
            s.retransmission = True
            s.fast_retransmission = self.dup_acks[1 - d] >= FAST_RETRANSMIT_DUP_ACKS
            s.notes.append("fast retransmission" if s.fast_retransmission else "retransmission")
        elif s.seq < self.highest[d]:
            # Never seen, yet below what was: reordered on the way, or the original was lost
            # before the capture point and this is its retransmission.  A reordered segment
            # trails by less than a round trip; a retransmission by at least one.
            if s.packet.ts - self.highest_time[d] > sum(self.conv.rtt_to):
                s.retransmission = True
                s.notes.append("retransmission (the original never reached the capture point)")
            else:
                s.out_of_order = True
                s.notes.append("out of order")
        elif s.seq > self.highest[d] and self.highest[d]:
            s.gap_before = s.seq - self.highest[d]
            s.notes.append(f"{s.gap_before} bytes before it not captured")
        self.sent[d].append((s.seq, s.end))
        if s.end > self.highest[d]:
            self.highest[d], self.highest_time[d] = s.end, s.packet.ts
        if s.length and not s.lost:
            self.data_times[d].append((s.end, s.packet.ts))

    def _presume_lost(self, again: Segment) -> None:
        """The segment retransmitted now was lost if no ACK covered it before (else only its ACK was)."""
        d = again.direction
        for s in reversed(self.conv.segments):
            if s.direction == 1 - d and s.ack is not None and s.ack > again.seq:
                return  # acknowledged after all: this retransmission was not needed (spurious)
            if s.direction == d and s.seq <= again.seq < s.end and not s.lost and not s.presumed_lost:
                s.presumed_lost = True
                s.notes.append("lost: retransmitted later")
                return

    def _ack_notes(self, s: Segment, now: float) -> None:
        """Duplicate and delayed ACKs: compare with this direction's last ACK and the other's data."""
        d, other = s.direction, 1 - s.direction
        if s.ack is None or s.lost:
            return
        isn = self.conv.isn[other]
        if s.tcp.options.sack and isn is not None:
            s.sack = tuple(((left - isn) % 2**32, (right - isn) % 2**32) for left, right in s.tcp.options.sack)
            s.notes.append("SACK " + " ".join(f"{left}-{right}" for left, right in s.sack))
        last = self.last_ack[d]
        if s.is_pure_ack:
            outstanding = self.highest[other] > s.ack
            if last and last[0] == s.ack and last[1] != s.window:
                s.notes.append("window update")
            elif last == (s.ack, s.window) and outstanding:
                self.dup_acks[d] += 1
                s.duplicate_ack = self.dup_acks[d]
                s.notes.append(f"duplicate ACK #{s.duplicate_ack}")
            elif s.ack > self.acked[d]:
                self.dup_acks[d] = 0
                # The latest data segment this ACK is the first to acknowledge: when did it pass?  (The
                # latest: after a hole, the segments held behind it could not be acknowledged before the
                # retransmission that fills it came.)
                times = [t for end, t in self.data_times[other] if self.acked[d] < end <= s.ack]
                if times:
                    waited = now - max(times) - self.conv.rtt_to[d]
                    if waited > DELAYED_ACK:
                        s.delayed_ack = waited
                        s.notes.append(f"delayed ACK ({waited * 1000:.0f} ms)")
        elif s.ack != (last[0] if last else None):
            self.dup_acks[d] = 0
        if s.window == 0 and "RST" not in s.flags:
            s.notes.append("zero window")
        self.last_ack[d] = (s.ack, s.window)
        self.acked[d] = max(self.acked[d], s.ack)
