"""Bulk traffic between two hosts: one TCP connection sending as fast as TCP lets it.

How fast a connection goes is decided by TCP itself: by its *congestion
control* (how much it dares to have in flight, and how it backs off after
a loss) and by the path (delay, loss, the slowest link).  ``Bulk`` opens a
connection from one host to another, keeps it full, and counts what
arrives when, so that a notebook can plot throughput against delay and
loss, or watch a queue fill behind a slow link.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..lab.measure import tcp_info
from ..lab.registry import TIMEOUT, Instrument, clock

if TYPE_CHECKING:
    from .host import Host

#: Bytes handed to one send() call.
CHUNK = 64 * 1024


@dataclass
class Throughput:
    """What a bulk transfer achieved."""

    congestion: str  # the congestion control the sender used: "reno", "cubic", "bbr", ...
    seconds: float  # how long it sent
    received: int  # bytes the receiver got in all
    bits_per_s: float  # the rate after the warm-up (slow start excluded), bits per second
    info: dict = field(default_factory=dict)  # the sender's TCP_INFO at the end (rtt_us, total_retrans, snd_mss, ...)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes received so far)


class Bulk(Instrument):
    """A TCP connection from ``sender`` to ``receiver`` kept full of data until ``stop()``.

    ``congestion`` picks the sender's congestion control for this one
    connection (``TCP_CONGESTION``: "reno", "cubic", "bbr", as the kernel
    offers them); None keeps the host's default.
    """

    def __init__(self, sender: "Host", receiver: "Host", congestion: str | None = None):
        self.listener = receiver.socket()
        self.listener.bind(("0.0.0.0", 0))
        self.listener.listen(1)
        self.arrivals: list[tuple[float, int]] = []
        self.received = 0
        self._stopping = threading.Event()
        self._conn: socket.socket | None = None  # the receiver's end, once accepted
        self._conn_lock = threading.Lock()
        self.t0 = clock()

        def connect() -> socket.socket:
            sock = socket.socket()
            try:
                if congestion:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
                sock.connect((receiver.address, self.listener.getsockname()[1]))
            except BaseException:
                sock.close()
                raise
            return sock

        self._sink = threading.Thread(target=self._receive, daemon=True, name="chatlab-bulk-sink")
        self._sink.start()
        try:
            self.sock = sender.call(connect)
        except BaseException:
            self._close_listener()
            raise
        self.congestion = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
        self._sender = threading.Thread(target=self._send, daemon=True, name="chatlab-bulk-send")
        self._sender.start()
        self._register()

    def _close_listener(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        self._sink.join(TIMEOUT)

    def _receive(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with self._conn_lock:
            if self._stopping.is_set():  # stopped before the connection was even accepted
                conn.close()
                return
            self._conn = conn
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 20)
                except OSError:  # reset by the sender when it stops: the end
                    return
                if not data:
                    return
                self.received += len(data)
                self.arrivals.append((clock() - self.t0, self.received))

    def _send(self) -> None:
        data = bytes(CHUNK)
        self.sock.settimeout(0.2)  # wake now and then to see whether to stop
        while not self._stopping.is_set():
            try:
                self.sock.send(data)
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self, warmup: float = 0.0) -> Throughput:
        """Stop sending; return the throughput, counted from ``warmup`` seconds after the start.

        The connection is closed with a reset (SO_LINGER 0): what still
        waits in the send buffer is thrown away instead of trickling out
        over a slow path for minutes.
        """
        self._unregister()
        seconds = clock() - self.t0
        self._stopping.set()
        self._sender.join(TIMEOUT)
        info = tcp_info(self.sock) or {}
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        # The reset is one packet, never sent again: on a lossy link it can be
        # lost, and the receiver would wait for more data forever.  So the
        # receiving end is shut down here too, not left to hear of it.
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.shutdown(socket.SHUT_RDWR)  # wakes the sink's recv()
                except OSError:
                    pass
        self._close_listener()
        arrivals = list(self.arrivals)
        # Counted between the end of the warm-up and the moment we stopped: what
        # was still on the way then (in the router's queue) arrives later, and
        # belongs to no measured interval.
        before = max((b for t, b in arrivals if t <= warmup), default=0)
        after = max((b for t, b in arrivals if t <= seconds), default=0)
        span = seconds - min(warmup, seconds)
        rate = (after - before) * 8 / span if span > 0 else 0.0
        return Throughput(self.congestion, seconds, self.received, rate, info, arrivals)


def bulk_transfer(sender: "Host", receiver: "Host", seconds: float, congestion: str | None = None,
                  warmup: float = 0.5) -> Throughput:
    """Send from ``sender`` to ``receiver`` for ``seconds``; the rate is counted after ``warmup`` seconds.

    The warm-up leaves out *slow start*, the first round trips in which a
    new connection is still finding out how fast it may go.
    """
    transfer = Bulk(sender, receiver, congestion)
    try:
        time.sleep(seconds)  # the transfer runs on its own threads meanwhile
    finally:
        result = transfer.stop(warmup)
    return result
