"""Packet captures in the pcap format: the file Wireshark, tshark and tcpdump read.

A capture file is as simple as a file format gets, which is why it has
lasted since tcpdump in 1988: a 24-byte *global header* saying how to read
the rest, then one record per packet, each a 16-byte header (when, how many
bytes kept, how long the packet really was) followed by the bytes kept::

    global header   magic  version  zone  sigfigs  snaplen  linktype
                    4 B    2+2 B    4 B   4 B      4 B      4 B
    record header   seconds  microseconds  kept length  original length
                    4 B      4 B           4 B          4 B
    record data     `kept length` bytes: the packet, starting at the link layer

The *magic number* ``a1 b2 c3 d4`` tells a reader the byte order the writer
used (it reads ``d4 c3 b2 a1`` on a machine of the other order) and the unit
of the second timestamp field (``a1 b2 3c 4d``: nanoseconds instead).  The
*link type* says what the first byte of every packet is: an Ethernet header
(``LINKTYPE_ETHERNET``), an IP header directly (``LINKTYPE_RAW``: what a TUN
device and netlab's router carry), or Linux's "cooked" header (``LINKTYPE_LINUX_SLL``).
The *snap length* is the most bytes kept of one packet; a longer packet is
cut, and its record says both how much was kept and how long it was.

This is the classic format, not its successor pcapng (blocks, several
interfaces per file, comments): every tool reads classic pcap, and it fits
in this one module.  Written in the machine's byte order, as libpcap does;
read in either, with either timestamp unit.

    >>> import io
    >>> f = io.BytesIO()
    >>> with PcapWriter(f, LINKTYPE_RAW, close=False) as pcap:
    ...     pcap.write(b"\\x45" + bytes(19), ts=1.5)
    >>> _ = f.seek(0)
    >>> linktype, records = read_pcap(f)
    >>> linktype == LINKTYPE_RAW, records[0].ts, len(records[0].data)
    (True, 1.5, 20)
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from typing import BinaryIO, Iterator, NamedTuple

# Link types: what each packet starts with (https://www.tcpdump.org/linktypes.html).
LINKTYPE_ETHERNET = 1  # a 14-byte Ethernet header: destination MAC, source MAC, EtherType
LINKTYPE_RAW = 101  # an IPv4 or IPv6 header, nothing before it (the version nibble tells which)
LINKTYPE_LINUX_SLL = 113  # Linux "cooked" capture: a 16-byte pseudo-header, for links without MACs

LINKTYPE_NAMES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP", LINKTYPE_LINUX_SLL: "Linux cooked"}

#: Most bytes kept of one packet: tcpdump's default.  Loopback packets can be
#: 64 KiB and more (its MTU is 65,536), so the old default of 65,535 is too small.
SNAPLEN = 262144

MAGIC_MICRO = 0xA1B2C3D4  # timestamps in seconds + microseconds
MAGIC_NANO = 0xA1B23C4D  # timestamps in seconds + nanoseconds
VERSION = (2, 4)  # unchanged since 1998

# "=" is the machine's own byte order (no padding); a reader picks "<" or ">" from the magic.
GLOBAL_HEADER = struct.Struct("=IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
RECORD_HEADER = struct.Struct("=IIII")  # seconds, micro- or nanoseconds, kept length, original length


class PcapError(ValueError):
    """The file is not a classic pcap capture, or it is cut short in a header."""


class Record(NamedTuple):
    """One captured packet: when (seconds since 1970, UTC), the bytes kept, and the packet's real length."""

    ts: float
    data: bytes
    orig_len: int


# -------------------------------------------------------------------- writing


class PcapWriter:
    """Write packets to a pcap file, one ``write()`` per packet.

    ``path_or_file`` is a path (the file is created, or replaced) or a binary
    file object opened for writing.  Use it as a context manager, or call
    ``close()``: the global header is written at once, so a capture cut short
    (a crash, Ctrl+C) is still a readable file with the packets written so
    far.  ``write()`` may be called from several threads.

    Timestamps are wall-clock time (``time.time()``), because that is what
    the format means: Wireshark shows them as dates.
    """

    def __init__(self, path_or_file: str | os.PathLike | BinaryIO, linktype: int = LINKTYPE_RAW,
                 snaplen: int = SNAPLEN, nanoseconds: bool = False, close: bool = True):
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise ValueError(f"snaplen must be positive, not {snaplen}")
        if isinstance(path_or_file, (str, os.PathLike)):
            self._file: BinaryIO = open(path_or_file, "wb")
            self._owns = True
        else:
            self._file = path_or_file
            self._owns = close
        self.path = os.fspath(path_or_file) if isinstance(path_or_file, (str, os.PathLike)) else None
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanoseconds = nanoseconds
        self.count = 0  # packets written
        self._lock = threading.Lock()
        self._file.write(GLOBAL_HEADER.pack(MAGIC_NANO if nanoseconds else MAGIC_MICRO, *VERSION,
                                            0, 0, snaplen, linktype))

    def write(self, packet: bytes, ts: float | None = None, orig_len: int | None = None) -> None:
        """Add one packet seen at ``ts`` (default: now); ``orig_len`` is its length on the wire if it was cut."""
        if ts is None:
            ts = time.time()
        kept = bytes(packet[: self.snaplen])
        # Split the time into whole seconds and a fraction *in integers*:
        # round once, then carry, so 1.9999999 never becomes "1 s + 1000000 us".
        scale = 1_000_000_000 if self.nanoseconds else 1_000_000
        ticks = round(ts * scale)
        seconds, fraction = divmod(ticks, scale)
        header = RECORD_HEADER.pack(seconds, fraction, len(kept), max(orig_len or 0, len(packet)))
        with self._lock:
            self._file.write(header + kept)
            self.count += 1

    def flush(self) -> None:
        """Push what was written to the file, so that a reader (tshark, Wireshark) sees it now."""
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file.closed:
                return
            self._file.flush()
            if self._owns:
                self._file.close()

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PcapWriter {self.path or self._file!r} {LINKTYPE_NAMES.get(self.linktype, self.linktype)}, " \
               f"{self.count} packets>"


# -------------------------------------------------------------------- reading


class PcapReader:
    """Read a pcap file: ``.linktype``, ``.snaplen``, and iterate for its ``Record``s, in file order.

    Either byte order and either timestamp unit.  A file cut off inside a
    packet (a capture still being written, or killed) ends at the last whole
    record; a file that is not pcap at all raises ``PcapError`` at once.
    """

    def __init__(self, path_or_file: str | os.PathLike | BinaryIO):
        if isinstance(path_or_file, (str, os.PathLike)):
            self._file: BinaryIO = open(path_or_file, "rb")
            self._owns = True
        else:
            self._file, self._owns = path_or_file, False
        try:
            head = self._file.read(GLOBAL_HEADER.size)
            if len(head) < GLOBAL_HEADER.size:
                raise PcapError(f"not a pcap file: {len(head)} bytes, shorter than the 24-byte header")
            order, self.nanoseconds = self._byte_order(head[:4])
            self._header = struct.Struct(order + RECORD_HEADER.format[1:])
            _, major, minor, _, _, self.snaplen, self.linktype = struct.unpack(order + GLOBAL_HEADER.format[1:], head)
        except BaseException:
            self.close()
            raise
        self.version = (major, minor)

    @staticmethod
    def _byte_order(magic: bytes) -> tuple[str, bool]:
        for order in "<>":
            value = struct.unpack(order + "I", magic)[0]
            if value in (MAGIC_MICRO, MAGIC_NANO):
                return order, value == MAGIC_NANO
        if magic == b"\x0a\x0d\x0d\x0a":
            raise PcapError("this is a pcapng file; save it as pcap (Wireshark: File > Save As > pcap, or "
                            "'editcap -F pcap in.pcapng out.pcap')")
        raise PcapError(f"not a pcap file: it starts with {magic.hex(' ')}, not a pcap magic number")

    def __iter__(self) -> Iterator[Record]:
        scale = 1e9 if self.nanoseconds else 1e6
        while True:
            header = self._file.read(self._header.size)
            if len(header) < self._header.size:
                return  # the end (or a header cut short: a capture still being written)
            seconds, fraction, kept, orig_len = self._header.unpack(header)
            data = self._file.read(kept)
            if len(data) < kept:
                return  # the last packet was cut short
            yield Record(seconds + fraction / scale, data, orig_len)

    def close(self) -> None:
        if self._owns:
            self._file.close()

    def __enter__(self) -> "PcapReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_pcap(path_or_file: str | os.PathLike | BinaryIO) -> tuple[int, list[Record]]:
    """The link type and every packet of a pcap file: ``linktype, records = read_pcap("chat.pcap")``.

    Each record is ``(ts, data, orig_len)``; ``for ts, data, _ in records``.
    """
    with PcapReader(path_or_file) as reader:
        return reader.linktype, list(reader)


if __name__ == "__main__":  # python -m chatlab.net.pcap FILE: a summary of a capture
    linktype, records = read_pcap(sys.argv[1])
    print(f"{sys.argv[1]}: {LINKTYPE_NAMES.get(linktype, f'link type {linktype}')}, {len(records)} packets")
    for ts, data, orig_len in records[:20]:
        print(f"  {ts:.6f}  {orig_len:5d} B  {data[:16].hex(' ')}")
