"""How fast and how exact the lab's router is, measured on this machine (``chatlab net bench``).

Two figures say how far to trust a network made of namespaces and a Python
router: how many packets a second it moves (past that, a link is slower
than its ``rate`` says), and how close a round trip comes to the delay that
was set (the rest is the time programs take to wake up and answer).
Both are measured with UDP, which adds nothing of its own: no
acknowledgements, no retransmissions, no congestion control.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

from .topology import Network

#: The UDP port the measurements use inside their own namespaces.
PORT = 9000
#: Bytes of each measuring datagram (a small chat message, give or take).
PAYLOAD = 64


def _echo(sock: socket.socket) -> None:
    """Send every datagram back where it came from, until told "stop"."""
    while True:
        try:
            data, sender = sock.recvfrom(2048)
        except OSError:
            return
        if data == b"stop":
            return
        sock.sendto(data, sender)


def forwarding_rate(seconds: float = 2.0, capture: bool = True) -> dict[str, float]:
    """Packets per second the router forwards when one host sends small UDP datagrams as fast as it can.

    The sender and the receiver run in this process, the router in its own;
    on a 2-core machine they compete for the same cores, as they do in the
    lab.  Returns what was sent, forwarded and received, per second.
    """
    with Network(capture=capture) as n:
        a, b = n.host("a"), n.host("b")
        rx = b.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        tx = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            rx.bind(("0.0.0.0", PORT))
            rx.setblocking(False)
            tx.connect((b.address, PORT))
            payload = bytes(PAYLOAD)
            before = n.stats()["forwarded"]
            sent = received = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                for _ in range(100):
                    try:
                        tx.send(payload)
                        sent += 1
                    except OSError:  # the interface's queue is full: the router is behind
                        pass
                try:
                    while True:
                        rx.recv(2048)
                        received += 1
                except BlockingIOError:
                    pass
            elapsed = time.perf_counter() - start
            forwarded = n.stats()["forwarded"] - before
        finally:
            rx.close()
            tx.close()
    return {"sent_per_s": sent / elapsed, "forwarded_per_s": forwarded / elapsed, "received_per_s": received / elapsed}


def delay_accuracy(delays: tuple[float, ...] = (0.0, 0.001, 0.005, 0.01, 0.05), pings: int = 50) -> list[dict]:
    """Round trips of a UDP echo across a link set to each one-way delay: set against measured, in ms.

    ``router_late_ms`` is how late, on average, the router itself wrote the
    delayed packets out; the rest of the difference is the sender and the
    echo waking up and answering.
    """
    rows = []
    with Network(capture=False) as n:
        a, b = n.host("a"), n.host("b")
        server = b.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        client = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("0.0.0.0", PORT))
        echo = threading.Thread(target=_echo, args=(server,), daemon=True, name="chatlab-net-echo")
        echo.start()
        try:
            client.settimeout(2 + 4 * max(delays))
            for delay in delays:
                n.link(a, b, delay=delay)
                before = n.stats()
                rtts = []
                for _ in range(pings):
                    start = time.perf_counter()
                    client.sendto(bytes(PAYLOAD), (b.address, PORT))
                    client.recvfrom(2048)
                    rtts.append(time.perf_counter() - start)
                after = n.stats()
                rtts.sort()
                rows.append({"delay_ms": delay * 1000, "set_rtt_ms": 2 * delay * 1000,
                             "median_rtt_ms": statistics.median(rtts) * 1000,
                             "p10_rtt_ms": rtts[len(rtts) // 10] * 1000, "p90_rtt_ms": rtts[len(rtts) * 9 // 10] * 1000,
                             "router_late_ms": _late_between(before, after) * 1000})
        finally:
            client.sendto(b"stop", (b.address, PORT))
            echo.join(5)
            server.close()
            client.close()
    return rows


def _late_between(before: dict, after: dict) -> float:
    """The router's mean lateness over the packets it wrote between two readings of its counters."""
    n0, n1 = before["late_count"], after["late_count"]
    return (after["late_total"] - before["late_total"]) / (n1 - n0) if n1 > n0 else 0.0


def report(seconds: float = 2.0) -> str:
    """Both measurements, as the text ``chatlab net bench`` prints."""
    lines = ["Forwarding rate: UDP datagrams of 64 bytes, one sender as fast as it can, for "
             f"{seconds:g} s (sender and receiver in this process, the router in its own)"]
    for capture in (False, True):
        r = forwarding_rate(seconds, capture)
        lines.append(f"  capture {'on ' if capture else 'off'}: {r['forwarded_per_s']:9,.0f} packets/s forwarded "
                     f"({r['sent_per_s']:,.0f}/s offered, {r['received_per_s']:,.0f}/s received)")
    lines.append("Delay accuracy: round trips of a UDP echo, 50 per setting (ms)")
    lines.append("  one-way delay   set RTT   median    p10     p90    router late")
    for row in delay_accuracy():
        lines.append(f"  {row['delay_ms']:10.1f}   {row['set_rtt_ms']:9.2f} {row['median_rtt_ms']:8.3f} "
                     f"{row['p10_rtt_ms']:7.3f} {row['p90_rtt_ms']:7.3f}   {row['router_late_ms']:8.3f}")
    return "\n".join(lines)
