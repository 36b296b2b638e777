"""A router is a program that moves packets.

This is the lab's router, the whole of it.  Each host of a network has one
interface, ``eth0``; the other end of that interface is a *TUN device*, a
file this program holds open.  Whatever the host sends out of ``eth0`` --
an IPv4 or IPv6 packet, headers and all -- this program reads from the
file, one ``read()`` per packet; whatever it writes to the file arrives at
the host as if from a wire.  In between, it does what every router does:

1. read a packet from one interface;
2. look at its destination address, and look that up in the routing table
   to choose the interface that leads there (no entry: drop it);
3. count one more hop: lower the packet's TTL (IPv4) or hop limit (IPv6) by
   one, so that a packet caught in a loop dies instead of circling for ever;
4. put it in the queue of the link towards that interface, which delays it,
   and may lose, duplicate or reorder it (``link.py`` decides, per packet);
5. when its time comes, write it to the outgoing interface.

It also keeps a capture of each interface, in pcap files that Wireshark,
tshark and ``chatlab.net.pcap`` read: ``HOST.pcap`` holds every packet that
crossed that host's wire, both ways, with the time it did; ``drops.pcap``
(and ``drops.log``, which says why) every packet the router dropped.

It runs as a process of its own (``python -m chatlab.net.router``), so the
packets keep moving while the notebook that made the network is busy, and
so that nothing it does can stall the notebook.  The network (``topology.py``)
talks to it over a control socket: a UNIX socket of the SEQPACKET kind, so
that each message arrives whole, one JSON object per message; new interfaces
arrive as file descriptors attached to a message (SCM_RIGHTS).  When that
socket closes -- the network stopped, or its process died -- the router
writes out its captures and exits.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import select
import socket
import sys
import time
from pathlib import Path

from .link import Direction, Impairment
from .pcap import LINKTYPE_RAW, PcapWriter

#: Most bytes one read from a TUN device can return: the largest IP packet.
MAX_PACKET = 65535
#: Packets read from one interface before looking at the others (so one busy host cannot starve the rest).
BATCH = 64
#: Packets read from each interface before answering a command: more than a TUN device queues (500), so
#: everything sent before the question is counted, yet bounded, so a flood cannot keep the answer waiting.
DRAIN = 1024
#: Bytes of whole packets a capture file keeps; past it, only the first HEADERS_ONLY bytes of each
#: (the IP and TCP headers) -- a bulk transfer would otherwise fill the disk.
CAPTURE_LIMIT = 64 << 20
HEADERS_ONLY = 128
#: Bytes of one control message, at most.
CONTROL_MESSAGE = 65536

#: Seconds before a packet is due that the router wakes up, to wait out the rest awake (see ``serve``).
EARLY = 0.0003

NO_ROUTE = "no route"  # no interface leads to that address
TTL_EXPIRED = "ttl expired"  # the packet has crossed too many routers


def destination(packet: bytes) -> bytes | None:
    """The destination address of an IP packet, as bytes: 4 for IPv4, 16 for IPv6.

    The first half-byte of every IP packet is its version.  In IPv4 the
    destination is bytes 16-19 of the header, in IPv6 bytes 24-39.
    """
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return packet[16:20]
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        return packet[24:40]
    return None


def one_hop_less(packet: bytes) -> bytes | None:
    """The packet with its TTL (IPv4) or hop limit (IPv6) lowered by one; None if it reached 0.

    IPv4 protects its header with a checksum, so changing the TTL means
    changing the checksum too.  No need to add up the whole header again:
    the TTL is the high byte of the 16-bit word at offset 8, so that word
    went down by 0x0100, and a one's-complement sum goes up by the same
    amount (RFC 1624, eqn. 3 -- the way routers do it in hardware).
    IPv6 has no header checksum at all: routers should not have to do this.
    """
    if packet[0] >> 4 == 6:
        if packet[7] <= 1:
            return None
        return packet[:7] + bytes([packet[7] - 1]) + packet[8:]
    if packet[8] <= 1:
        return None
    checksum = int.from_bytes(packet[10:12], "big") + 0x0100
    checksum = (checksum & 0xFFFF) + (checksum >> 16)  # the carry goes back in at the bottom
    return packet[:8] + bytes([packet[8] - 1]) + packet[9:10] + checksum.to_bytes(2, "big") + packet[12:]


class Capture:
    """One pcap file, with a limit on the bytes of whole packets it keeps."""

    def __init__(self, path: Path):
        self.pcap = PcapWriter(path, LINKTYPE_RAW)
        self.kept = 0

    def write(self, packet: bytes) -> None:
        if self.kept > CAPTURE_LIMIT:
            self.pcap.write(packet[:HEADERS_ONLY], time.time(), orig_len=len(packet))
        else:
            self.pcap.write(packet, time.time())
            self.kept += len(packet)


class Port:
    """One interface of the router: the TUN device whose other end is a host's eth0."""

    def __init__(self, name: str, fd: int, addresses: list[str], capture: Capture | None):
        self.name, self.fd, self.capture = name, fd, capture
        self.addresses = [socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in addresses]
        os.set_blocking(fd, False)  # read until there is nothing left, then go back to waiting


class Router:
    """The routing table, the links between interfaces, and the packets on their way."""

    def __init__(self, captures: Path | None, seed: str = "0"):
        self.captures, self.seed = captures, seed
        self.ports: dict[str, Port] = {}
        self.by_fd: dict[int, Port] = {}
        self.table: dict[bytes, Port] = {}  # destination address -> the interface that leads there
        self.links: dict[tuple[str, str], Direction] = {}  # (from, to) -> what the link does that way
        self.on_the_way: list[tuple[float, int, Port, bytes]] = []  # a heap: (when it is due out, n, where, packet)
        self.order = itertools.count()  # breaks ties in the heap, so equal times keep arrival order
        self.dropped: dict[str, int] = {}
        self.forwarded = 0
        self.late = [0, 0.0, 0.0]  # packets written, their total and their largest lateness (seconds)
        self.drop_capture = Capture(captures / "drops.pcap") if captures else None
        self.drop_log = open(captures / "drops.log", "w") if captures else None

    # ----------------------------------------------------------- set-up

    def add_port(self, name: str, fd: int, addresses: list[str]) -> None:
        capture = Capture(self.captures / f"{name}.pcap") if self.captures else None
        port = self.ports[name] = self.by_fd[fd] = Port(name, fd, addresses, capture)
        for address in port.addresses:
            self.table[address] = port  # a host route: this address is behind this interface

    def link(self, a: str, b: str) -> Direction:
        """What the link from host ``a`` to host ``b`` does (nothing at all, until told otherwise)."""
        if (a, b) not in self.links:
            self.links[a, b] = Direction(Impairment(), seed=f"{self.seed}/{a}>{b}")
        return self.links[a, b]

    # ----------------------------------------------------------- moving packets

    def receive(self, port: Port, packet: bytes, now: float) -> None:
        """A packet came in on ``port``: route it, then hand it to the link that leads there."""
        if port.capture:
            port.capture.write(packet)  # as it left the host
        address = destination(packet)
        out = self.table.get(address) if address else None
        if out is None:
            return self.drop(port.name, "?", packet, NO_ROUTE)
        onward = one_hop_less(packet)
        if onward is None:
            return self.drop(port.name, out.name, packet, TTL_EXPIRED)
        packet = onward
        fate = self.link(port.name, out.name).send(len(packet), now)
        if fate.dropped:
            return self.drop(port.name, out.name, packet, fate.dropped)
        for due in fate.times:  # none, one, or two (a duplicate)
            heapq.heappush(self.on_the_way, (due, next(self.order), out, packet))

    def deliver(self, now: float) -> None:
        """Write out every packet whose time has come, in the order they are due."""
        while self.on_the_way and self.on_the_way[0][0] <= now:
            due, _, out, packet = heapq.heappop(self.on_the_way)
            self.late[0] += 1
            self.late[1] += now - due
            self.late[2] = max(self.late[2], now - due)
            try:
                os.write(out.fd, packet)
            except OSError:  # the host's interface is down or gone: the packet falls on the floor
                self.dropped["interface down"] = self.dropped.get("interface down", 0) + 1
                continue
            self.forwarded += 1
            if out.capture:
                out.capture.write(packet)  # as it arrived at the host

    def next_due(self) -> float | None:
        return self.on_the_way[0][0] if self.on_the_way else None

    def drop(self, src: str, dst: str, packet: bytes, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1
        if self.drop_capture:
            self.drop_capture.write(packet)
            self.drop_log.write(f"{time.time():.6f} {src} {dst} {why}\n")  # type: ignore[union-attr]

    # ----------------------------------------------------------- what the network asks

    def command(self, message: dict, fds: list[int], now: float) -> dict:
        """Carry out one command from the control socket; the answer goes back on it."""
        what = message.get("command")
        if what == "port":
            self.add_port(message["name"], fds[0], message["addresses"])
        elif what == "link":  # {"from": "a", "to": "b", "impairment": {...}}: one direction
            self.link(message["from"], message["to"]).set(Impairment(**message["impairment"]))
        elif what == "lose":  # {"from": "a", "to": "b", "count": 1, "longer_than": 0}: the next ones are lost
            self.link(message["from"], message["to"]).lose_next(message["count"], message.get("longer_than", 0))
        elif what == "stats":  # also makes the captures readable up to this moment
            self.flush()
            late, total, most = self.late
            return {"ok": True, "forwarded": self.forwarded, "dropped": self.dropped,
                    "late_count": late, "late_total": total, "late_max": most,
                    "links": {f"{a}>{b}": d.stats(now) for (a, b), d in self.links.items()}}
        else:
            return {"ok": False, "error": f"unknown command {what!r}"}
        return {"ok": True}

    def flush(self) -> None:
        for capture in [p.capture for p in self.ports.values()] + [self.drop_capture]:
            if capture:
                capture.pcap.flush()
        if self.drop_log:
            self.drop_log.flush()

    def close(self) -> None:
        self.flush()
        for port in self.ports.values():
            os.close(port.fd)  # the TUN device goes away with its last descriptor
            if port.capture:
                port.capture.pcap.close()
        if self.drop_capture:
            self.drop_capture.pcap.close()
            self.drop_log.close()  # type: ignore[union-attr]


def read_packets(router: Router, port: Port, now: float, most: int) -> None:
    """Read the packets waiting on one interface (at most ``most``), and hand each to the router."""
    for _ in range(most):
        try:
            packet = os.read(port.fd, MAX_PACKET)
        except BlockingIOError:
            return  # nothing more waiting on this interface
        router.receive(port, packet, now)


def serve(router: Router, control: socket.socket) -> None:
    """The main loop: wait for a packet, a command, or the next packet's time; then do it."""
    while True:
        # Sleep until a packet or a command arrives, or until just before
        # the next packet is due.  select(), not epoll or poll: those count
        # their timeout in whole milliseconds, select() in microseconds.
        due = router.next_due()
        timeout = None if due is None else max(0.0, due - time.monotonic() - EARLY)
        readable, _, _ = select.select([*router.by_fd, control], [], [], timeout)
        now = time.monotonic()
        for ready in readable:
            if ready is not control:
                read_packets(router, router.by_fd[ready], now, BATCH)
        if control in readable:
            # Whatever a host sent before the network asked is already
            # waiting in a TUN device: read it all first, so that the answer
            # (the counters, the captures) includes it.
            for port in list(router.ports.values()):
                read_packets(router, port, now, DRAIN)
            message, fds, _, _ = socket.recv_fds(control, CONTROL_MESSAGE, 1)
            if not message:
                return  # the network is gone: so are we
            answer = router.command(json.loads(message), fds, now)
            control.send(json.dumps(answer).encode())
        # A sleeping process wakes up late: on this 2-core virtual machine
        # by 0.1-0.2 ms, more the longer it slept.  So the router woke EARLY
        # and waits out the last fraction of a millisecond awake, by
        # reading the clock: every delay then comes out within a few
        # microseconds, for at most EARLY seconds of CPU per wake-up.
        due = router.next_due()
        if due is not None and due - time.monotonic() < EARLY:
            while time.monotonic() < due:
                pass
        router.deliver(time.monotonic())


def wake_on_time() -> None:
    """Ask the kernel to wake us when asked, not up to 50 microseconds later (its default "timer slack").

    The kernel may delay a sleeping process's wake-up a little, to wake
    several at once and save power; for a router that holds packets for a
    set delay, that slack is an error in every delay.  prctl(PR_SET_TIMERSLACK)
    sets it to 1 ns for this process.  (Python has no os.prctl; libc has.)
    """
    try:
        import ctypes

        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK = 29
    except (OSError, AttributeError):
        pass  # not Linux: the delays are a little less exact, that is all


def main(argv: list[str]) -> int:
    """``python -m chatlab.net.router CONTROL_FD [CAPTURE_DIR] [SEED]``."""
    wake_on_time()
    control = socket.socket(fileno=int(argv[0]))
    captures = Path(argv[1]) if len(argv) > 1 and argv[1] != "-" else None
    router = Router(captures, argv[2] if len(argv) > 2 else "0")
    try:
        serve(router, control)
    except KeyboardInterrupt:
        pass  # Ctrl+C in a terminal that ran the notebook: stop like the network would
    finally:
        router.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
