"""Capturing packets: a raw socket sees every packet an interface sends and receives.

An ordinary socket gets the payload of one connection, after the kernel has
checked, reordered and stripped every header.  A *packet socket*
(``AF_PACKET``, Linux) is handed a copy of every frame crossing an
interface, headers and all, in both directions -- what tcpdump and Wireshark
are built on.  It needs root (or the ``CAP_NET_RAW`` capability), because it
sees everyone's traffic.

Two filters keep a capture to what matters:

* in the kernel, a *classic BPF* program attached to the socket
  (``SO_ATTACH_FILTER``): a dozen instructions the kernel runs on every
  packet before copying it to us, so a busy machine's other traffic never
  reaches Python.  ``bpf_port_filter`` assembles the one for "TCP or UDP,
  this port, IPv4 or IPv6" -- the same idea as tcpdump's ``port 5050``;
* in Python, after parsing: the port and host asked for, checked again on
  every packet (so what is kept never depends on the BPF program being
  right, and the host filter needs no assembly).

On loopback each packet would be seen twice, once leaving and once arriving
(the kernel hands it back to itself); like libpcap we keep only the arrival.

``Capture`` is an instrument (like the lab's servers): a context manager,
stopped by ``chatlab.lab.stop_all()`` and when the kernel restarts::

    with Capture("lo", port=server.address[1], path="chat.pcap") as cap:
        ...  # chat
        cap.wait(lambda packets: sum(p.tcp.fin for p in packets if p.tcp) >= 2)
    cap.packets  # every packet, parsed (chatlab.net.packets)

``chatlab capture`` is the same from a terminal.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..lab.registry import Instrument
from .packets import Packet, parse
from .pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, SNAPLEN, PcapWriter

# Linux constants the socket module does not always name.
ETH_P_ALL = 0x0003  # "every protocol": IPv4, IPv6, ARP, ...
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35  # the kernel stamps each packet with when it saw it, in nanoseconds
PACKET_OUTGOING = 4  # a packet this machine sent (the address's pkttype field)
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE  # Ethernet, loopback, a TUN device (raw IP)

#: Bytes the kernel may queue for the capture socket before it drops packets (4 MiB, as tcpdump's default).
SOCKET_BUFFER = 4 << 20
#: Longest a wait on a capture lasts, in seconds, unless told otherwise.
WAIT_TIMEOUT = 5.0

NEEDS_ROOT = ("capturing packets needs root (or the CAP_NET_RAW capability): a raw socket sees everyone's "
              "traffic. Run it with sudo (sudo .venv/bin/chatlab capture ...), or read a capture someone "
              "made with 'chatlab capture --read FILE'.")
NEEDS_LINUX = ("capturing packets with chatlab needs Linux (its AF_PACKET raw socket). On macOS or Windows, "
               "capture with Wireshark, or run the lab in a Linux VM or container (docker run --cap-add NET_ADMIN "
               "--cap-add NET_RAW --device /dev/net/tun ...); 'chatlab capture --read FILE' works everywhere.")


class CaptureError(RuntimeError):
    """A capture could not start: no privileges, not Linux, no such interface or namespace."""


# ============================================================ the BPF filter

# Classic BPF: an accumulator A, an index register X, and instructions of
# 8 bytes (code, jump-if-true, jump-if-false, constant k).  A program reads
# the packet, compares and jumps (only forward, so it always ends), and
# returns how many bytes of the packet to keep: 0 means drop it.
LD_H_ABS, LD_B_ABS, LD_H_IND = 0x28, 0x30, 0x48  # A = 2 or 1 bytes at [k], or 2 bytes at [X + k]
LDX_B_MSH = 0xB1  # X = 4 * (byte at [k] & 0x0f): the IPv4 header's length, in one instruction
RSH_K = 0x74  # A >>= k
JEQ_K, JSET_K = 0x15, 0x45  # jump if A == k; jump if A & k
RET_K = 0x06  # keep k bytes (0: drop)

Instruction = tuple[int, int, int, int]  # (code, jump-if-true, jump-if-false, k): as the kernel reads it
Step = tuple[int, int, str | None, str | None]  # (code, k, label if true, label if false): before assembly


def bpf_port_filter(port: int, linktype: int = LINKTYPE_ETHERNET, snaplen: int = SNAPLEN) -> list[Instruction]:
    """A program keeping IPv4 and IPv6 TCP or UDP packets from or to ``port``: ``[(code, jt, jf, k), ...]``."""
    link = 14 if linktype == LINKTYPE_ETHERNET else 0  # where the IP header starts
    program: list[Step | str] = []  # steps, and the labels (strings) they jump to; resolved below
    emit = lambda code, k=0, yes=None, no=None: program.append((code, k, yes, no))
    if link:
        emit(LD_H_ABS, 12)  # the EtherType
        emit(JEQ_K, 0x0800, "ipv4", None)
        emit(JEQ_K, 0x86DD, "ipv6", "drop")
    else:
        emit(LD_B_ABS, 0)  # the IP version, in the top 4 bits
        emit(RSH_K, 4)
        emit(JEQ_K, 4, "ipv4", None)
        emit(JEQ_K, 6, "ipv6", "drop")
    program.append("ipv4")
    emit(LD_B_ABS, link + 9)  # the protocol
    emit(JEQ_K, 6, "tcp4", None)
    emit(JEQ_K, 17, "tcp4", "drop")
    program.append("tcp4")
    emit(LD_H_ABS, link + 6)  # flags and fragment offset: a later fragment has no ports
    emit(JSET_K, 0x1FFF, "drop", None)
    emit(LDX_B_MSH, link)  # X = the IPv4 header's length
    emit(LD_H_IND, link)  # the source port, X bytes into the IP packet
    emit(JEQ_K, port, "keep", None)
    emit(LD_H_IND, link + 2)  # the destination port
    emit(JEQ_K, port, "keep", "drop")
    program.append("ipv6")
    emit(LD_B_ABS, link + 6)  # the next header (extension headers are not followed: rare for TCP)
    emit(JEQ_K, 6, "tcp6", None)
    emit(JEQ_K, 17, "tcp6", "drop")
    program.append("tcp6")
    emit(LD_H_ABS, link + 40)
    emit(JEQ_K, port, "keep", None)
    emit(LD_H_ABS, link + 42)
    emit(JEQ_K, port, "keep", "drop")
    program.append("keep")
    emit(RET_K, snaplen)
    program.append("drop")
    emit(RET_K, 0)
    return _assemble(program)


def _assemble(program: list[Step | str]) -> list[Instruction]:
    """Turn labels into jump distances: a jump counts the instructions it skips (None: the next one)."""
    where: dict[str, int] = {}
    instructions: list[Step] = []
    index = 0
    for item in program:
        if isinstance(item, str):
            where[item] = index
        else:
            instructions.append(item)
            index += 1
    out = []
    for i, (code, k, yes, no) in enumerate(instructions):
        jt = where[yes] - i - 1 if yes else 0
        jf = where[no] - i - 1 if no else 0
        out.append((code, jt, jf, k))
    return out


def attach_filter(sock: socket.socket, program: list[Instruction]) -> None:
    """Hand the program to the kernel (it checks it, and runs it on every packet from now on)."""
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# ============================================================ the raw socket


def open_packet_socket(interface: str, netns: str | None = None) -> tuple[socket.socket, int]:
    """A packet socket on ``interface`` (``"any"``: every one) and the pcap link type of what it reads.

    With ``netns``, the interface of that network namespace (a lab host, as
    ``ip netns`` names it): a socket belongs for life to the namespace of
    the thread that made it, so a short-lived thread enters the namespace,
    makes it, and ends (``chatlab.net.netns.call_in``).
    """
    if netns is not None:
        return _in_namespace(netns, lambda: open_packet_socket(interface))
    if not hasattr(socket, "AF_PACKET"):
        raise CaptureError(NEEDS_LINUX)
    # Protocol 0 at first: the socket receives nothing until bind() says
    # which interface, so no packet from another interface slips in between.
    kind = socket.SOCK_DGRAM if interface == "any" else socket.SOCK_RAW
    try:
        sock = socket.socket(socket.AF_PACKET, kind, 0)
    except PermissionError:
        raise CaptureError(NEEDS_ROOT) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("" if interface == "any" else interface, 0))
        hatype = sock.getsockname()[3]
        if kind == socket.SOCK_DGRAM or hatype == ARPHRD_NONE:
            linktype = LINKTYPE_RAW  # no link header: the packet starts with IP
        elif hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            linktype = LINKTYPE_ETHERNET  # loopback has Ethernet headers too, with zero addresses
        else:
            sock.close()
            raise CaptureError(f"{interface} is not an Ethernet, loopback or TUN interface (hardware type "
                               f"{hatype}); capture on it with 'any'")
    except OSError as exc:
        sock.close()
        raise CaptureError(f"cannot capture on {interface!r}: {exc.strerror or exc} "
                           "('ip link' lists the interfaces)") from None
    except BaseException:
        sock.close()
        raise
    return sock, linktype


def start_receiving(sock: socket.socket, interface: str) -> None:
    """Begin: from this bind on, the socket gets every protocol's packets (after the filter, if any)."""
    sock.bind(("" if interface == "any" else interface, ETH_P_ALL))


def _in_namespace(netns: str, make: Callable):
    """Run ``make()`` in a thread that has entered the network namespace ``netns`` (``netns.call_in``)."""
    from .netns import call_in

    if not (Path("/var/run/netns") / netns).exists():
        raise CaptureError(f"no network namespace {netns!r} ('ip netns list' lists them)")
    try:
        return call_in(netns, make)
    except PermissionError as exc:
        raise CaptureError(f"{exc}. {NEEDS_ROOT}") from None


def receive(sock: socket.socket, snaplen: int) -> tuple[bytes, float, tuple]:
    """One packet, the kernel's timestamp of it (seconds since 1970), and its address (interface, direction...)."""
    data, ancillary, _, address = sock.recvmsg(snaplen, socket.CMSG_SPACE(16))
    ts = None
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanoseconds = struct.unpack("=qq", value[:16])
            ts = seconds + nanoseconds / 1e9
    return data, ts if ts is not None else time.time(), address


# ============================================================= the instrument


class Capture(Instrument):
    """Capture packets on an interface until stopped, ``count`` packets, or ``duration`` seconds.

    ``port`` and ``host`` keep only the packets from or to them.  ``path``
    writes a pcap file as packets arrive.  ``on_packet(packet)`` is called
    for each one kept (from the capture's thread).  ``packets`` holds them
    all, parsed.  Starts at once; ``stop()`` (or the end of a ``with``)
    takes in the packets still queued in the kernel, then closes.
    """

    def __init__(self, interface: str = "lo", *, port: int | None = None, host: str | None = None,
                 path: str | os.PathLike | None = None, count: int | None = None, duration: float | None = None,
                 netns: str | None = None, snaplen: int = SNAPLEN, bpf: bool = True,
                 on_packet: Callable[[Packet], None] | None = None):
        self.interface, self.port, self.host, self.netns = interface, port, host, netns
        self.count, self.duration, self.snaplen = count, duration, snaplen
        self.on_packet = on_packet
        self.packets: list[Packet] = []
        self.seen = 0  # packets the socket delivered, before the Python filter (with BPF: only matching ones)
        self.path = Path(path) if path is not None else None
        self.done = threading.Event()  # set when the capture has ended, for whatever reason
        self._changed = threading.Condition()
        self._stopping = False
        self._sock, self.linktype = open_packet_socket(interface, netns)
        try:
            if port is not None and bpf:
                attach_filter(self._sock, bpf_port_filter(port, self.linktype, snaplen))
            self._writer = PcapWriter(self.path, self.linktype, snaplen) if self.path else None
            self._wake_r, self._wake_w = socket.socketpair()
            start_receiving(self._sock, interface)
        except BaseException:
            self._sock.close()
            raise
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"chatlab-capture-{interface}")
        self._register()
        self._thread.start()

    # ---------------------------------------------------------------- reading

    def _run(self) -> None:
        deadline = None if self.duration is None else time.monotonic() + self.duration
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._sock, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._finished():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    ready = [key.fileobj for key, _ in selector.select(left)]
                    if self._sock in ready:
                        self._take(*receive(self._sock, self.snaplen))
                    if self._wake_r in ready:
                        break
            self._drain()
        finally:
            self.done.set()
            with self._changed:
                self._changed.notify_all()

    def _drain(self) -> None:
        """Take what the kernel still holds for us: packets that arrived before stop() was called."""
        self._sock.setblocking(False)
        while not self._count_reached():
            try:
                self._take(*receive(self._sock, self.snaplen))
            except (BlockingIOError, OSError):
                return

    def _take(self, data: bytes, ts: float, address: tuple) -> None:
        interface, _, direction = address[:3]
        if direction == PACKET_OUTGOING and interface == "lo":
            return  # loopback hands every packet back to itself: keep only its arrival
        self.seen += 1
        packet = parse(data, self.linktype, ts)
        if not self._wanted(packet) or self._count_reached():
            return
        if self._writer:
            self._writer.write(data, ts)
            self._writer.flush()  # a reader (tshark, Wireshark's "reload") sees it at once
        with self._changed:
            self.packets.append(packet)
            self._changed.notify_all()
        if self.on_packet:
            self.on_packet(packet)

    def _wanted(self, packet: Packet) -> bool:
        if self.port is not None:
            transport = packet.transport
            if getattr(transport, "src_port", None) != self.port and getattr(transport, "dst_port", None) != self.port:
                return False
        if self.host is not None:
            if packet.ip is None or self.host not in (packet.ip.src, packet.ip.dst):
                return False
        return True

    def _count_reached(self) -> bool:
        return self.count is not None and len(self.packets) >= self.count

    def _finished(self) -> bool:
        return self._stopping or self._count_reached()

    # --------------------------------------------------------------- waiting

    def wait(self, until: Callable[[list[Packet]], bool] | None = None, timeout: float = WAIT_TIMEOUT) -> bool:
        """Wait until ``until(packets)`` is true (default: until the capture ends); False if it timed out.

        Synchronise on what was captured, never on sleep: "both FINs seen",
        "20 packets", ``lambda ps: any(p.tcp and p.tcp.rst for p in ps)``.
        """
        with self._changed:
            if until is None:
                return self._changed.wait_for(self.done.is_set, timeout)
            self._changed.wait_for(lambda: until(self.packets) or self.done.is_set(), timeout)
            return until(self.packets)

    # -------------------------------------------------------------- stopping

    def stop(self) -> None:
        """Stop capturing (idempotent): take in what the kernel still queued, close the file and socket."""
        if self._stopping and not self._thread.is_alive():
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(WAIT_TIMEOUT)
        for closing in (self._writer.close if self._writer else None, self._sock.close, self._wake_r.close,
                        self._wake_w.close):
            if closing:
                closing()
        self._unregister()

    def __repr__(self) -> str:
        where = f"{self.interface} in {self.netns}" if self.netns else self.interface
        what = " ".join(filter(None, [f"port {self.port}" if self.port is not None else "",
                                      f"host {self.host}" if self.host else ""]))
        state = "stopped" if self.done.is_set() else "capturing"
        return f"<Capture {where}{' ' + what if what else ''}: {len(self.packets)} packets, {state}>"


def capture(interface: str = "lo", **options) -> Capture:
    """Start a ``Capture``; the same as ``Capture(interface, ...)``."""
    return Capture(interface, **options)


# ============================================================ chatlab capture


def show_file(path: str | os.PathLike, out=sys.stdout) -> int:
    """``chatlab capture --read FILE``: every packet of a capture, then each TCP conversation; no root needed."""
    from .conversation import conversations
    from .packets import read_packets
    from .pcap import LINKTYPE_NAMES, PcapError, PcapReader

    try:
        with PcapReader(path) as reader:
            linktype = reader.linktype
        packets = read_packets(path)
    except (OSError, PcapError) as exc:
        print(f"chatlab capture: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {len(packets)} packets ({LINKTYPE_NAMES.get(linktype, f'link type {linktype}')})", file=out)
    start = packets[0].ts if packets else 0.0
    for number, packet in enumerate(packets, 1):
        print(f"{number:5d} {(packet.ts - start) * 1000:10.3f} ms  {packet.summary()}", file=out)
    for conv in conversations(packets):
        print("\n" + conv.table(limit=10_000), file=out)
    return 0


def run(interface: str = "lo", port: int | None = None, host: str | None = None, path: str = "chatlab-capture.pcap",
        count: int | None = None, duration: float | None = None, netns: str | None = None, quiet: bool = False,
        out=sys.stdout) -> int:
    """``chatlab capture``: print each packet as it comes and write it to ``path``, until Ctrl+C, a count or a time."""
    start = time.time()

    def show(packet: Packet) -> None:
        if not quiet:
            print(f"{(packet.ts - start) * 1000:10.3f} ms  {packet.summary()}", file=out, flush=True)

    try:
        cap = Capture(interface, port=port, host=host, path=path, count=count, duration=duration, netns=netns,
                      on_packet=show)
    except CaptureError as exc:
        print(f"chatlab capture: {exc}", file=sys.stderr)
        return 1
    what = " and ".join(filter(None, [f"port {port}" if port is not None else "", f"host {host}" if host else ""]))
    until = ", ".join(filter(None, [f"{count} packets" if count else "", f"{duration:g} s" if duration else "",
                                    "Ctrl+C"]))
    try:  # from the first word printed on, Ctrl+C must end in stop(): the file closed, the count said
        print(f"Capturing on {interface}{' in ' + netns if netns else ''}{', ' + what if what else ''} "
              f"into {path}, until {until}.", file=out, flush=True)
        cap.done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cap.stop()
    print(f"\n{len(cap.packets)} packets written to {path}. See them with 'chatlab capture --read {path}', "
          f"or open the file in Wireshark.", file=out, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m chatlab.net.capture is chatlab capture
    from ..cli import main

    sys.exit(main(["capture", *sys.argv[1:]]))
