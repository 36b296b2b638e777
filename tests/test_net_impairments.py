"""Each impairment, through the real router between two real hosts: delay, loss, bursts, rate and queue,
duplication, reordering, jitter; TCP over a lossy link; tshark reading the retransmissions."""

from __future__ import annotations

import hashlib
import socket
import statistics
import struct
import threading
import time

import pytest

from chatlab import lab, net
from net_support import needs_network, needs_tshark, network, tshark_fields  # noqa: F401 (fixture)

pytestmark = [needs_network, pytest.mark.timeout(90)]

PORT = 9000


class Udp:
    """Numbered datagrams from host a to host b, and what b received (in the order it did)."""

    def __init__(self, network: net.Network, a: net.Host, b: net.Host):
        self.network, self.a, self.b = network, a, b
        self.rx = b.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("0.0.0.0", PORT))
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.tx = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.connect((b.address, PORT))
        self.sent = 0

    def send(self, count: int, size: int = 64, batch: int = 100) -> None:
        """Send ``count`` numbered datagrams; between batches, wait until the router has read them all.

        (A sender faster than the router would otherwise lose datagrams in
        its own interface's queue, before the router ever sees them.)
        """
        seen = self.packets_seen()
        for start in range(0, count, batch):
            n = min(batch, count - start)
            for _ in range(n):
                self.tx.send(struct.pack("!I", self.sent).ljust(size, b"."))
                self.sent += 1
            seen += n
            deadline = time.monotonic() + 10
            while self.packets_seen() < seen:
                assert time.monotonic() < deadline, "the router did not read what was sent"

    def packets_seen(self) -> int:
        return self.network.stats()["links"].get(f"{self.a.name}>{self.b.name}", {}).get("packets", 0)

    def receive(self, expected: int, quiet: float = 0.3) -> list[tuple[int, float]]:
        """(number, time received) of each datagram, until ``expected`` came or none came for ``quiet`` s."""
        got = []
        self.rx.settimeout(quiet)
        while len(got) < expected:
            try:
                data = self.rx.recv(2048)
            except TimeoutError:
                break
            got.append((struct.unpack("!I", data[:4])[0], time.monotonic()))
        return got

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@pytest.fixture
def pair(network: net.Network):
    a, b = network.host("a"), network.host("b")
    udp = Udp(network, a, b)
    yield network, a, b, udp
    udp.close()


def test_the_round_trip_takes_the_set_delay_twice(pair) -> None:
    network, a, b, udp = pair
    echo = threading.Thread(target=lambda: [udp.rx.sendto(*udp.rx.recvfrom(2048)) for _ in range(20 * 3)],
                            daemon=True, name="chatlab-test-echo")
    echo.start()
    udp.tx.settimeout(5)
    for delay in (0.002, 0.010, 0.030):
        network.link(a, b, delay=delay)
        rtts = []
        for _ in range(20):
            start = time.perf_counter()
            udp.tx.send(b"ping")
            udp.tx.recv(100)
            rtts.append(time.perf_counter() - start)
        median = statistics.median(rtts)
        print(f"one-way delay {delay * 1000:.0f} ms: median RTT {median * 1000:.3f} ms (set {2 * delay * 1000:.0f})")
        assert min(rtts) >= 2 * delay, "a round trip faster than the delay set: the router did not hold the packets"
        assert median < 2 * delay + 0.010, "far slower than set (is the machine very busy?)"
    echo.join(5)


def test_loss_drops_that_fraction_and_the_router_counts_each_one(pair) -> None:
    network, a, b, udp = pair
    network.link(a, b, loss=0.1)
    udp.send(2000)
    got = udp.receive(2000)
    stats = network.stats()["links"]["a>b"]
    assert stats["packets"] == 2000 and stats["lost"] + len(got) == 2000 and stats["delivered"] == len(got)
    assert 0.07 < stats["lost"] / 2000 < 0.13
    assert len(network.drops()) == stats["lost"] and {d.why for d in network.drops()} == {"lost"}


def test_burst_loss_loses_runs_of_packets(pair) -> None:
    network, a, b, udp = pair
    network.link(a, b, loss=0.1, burst=5)
    udp.send(3000)
    got = {number for number, _ in udp.receive(3000)}
    runs, current = [], 0
    for number in range(3000):
        if number not in got:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert 0.05 < (3000 - len(got)) / 3000 < 0.15
    assert sum(runs) / len(runs) > 3, f"losses should come in runs of about 5, not {sum(runs) / len(runs):.1f}"


def test_a_slow_link_paces_packets_and_its_full_queue_drops_the_rest(pair) -> None:
    network, a, b, udp = pair
    network.link(a, b, rate=1_000_000, queue=10)  # 1 Mbit/s: a 1028-byte datagram takes 8.2 ms
    udp.send(50, size=1000, batch=50)
    got = udp.receive(50, quiet=0.5)
    stats = network.stats()["links"]["a>b"]
    assert stats["queue full"] >= 35 and stats["delivered"] == len(got) and len(got) <= 15
    assert stats["max_queued"] == 10
    gaps = [t2 - t1 for (_, t1), (_, t2) in zip(got, got[1:])]
    assert statistics.median(gaps) >= 0.9 * 1028 * 8 / 1e6, "the packets came faster than the link's rate"


def test_duplication_delivers_each_packet_twice(pair) -> None:
    network, a, b, udp = pair
    network.link(a, b, duplicate=1.0)
    udp.send(20)
    got = [number for number, _ in udp.receive(40)]
    assert sorted(got) == sorted(list(range(20)) * 2)


def test_reordering_lets_later_packets_overtake(pair) -> None:
    network, a, b, udp = pair
    network.link(a, b, reorder=0.25, reorder_delay=0.05)
    udp.send(200)
    got = [number for number, _ in udp.receive(200)]
    assert sorted(got) == list(range(200)), "reordering must lose nothing"
    assert got != sorted(got)
    held = network.stats()["links"]["a>b"]["reordered"]
    assert 20 < held < 80 and sum(1 for i, number in enumerate(got) if number < i) >= held - 5


def test_jitter_varies_the_delay_but_keeps_the_order(pair) -> None:
    network, a, b, udp = pair
    network.link(a, b, delay=0.005, jitter=0.004)
    udp.send(200, batch=10)
    got = [number for number, _ in udp.receive(200)]
    assert got == list(range(200))


def test_a_link_changes_at_once_and_one_direction_alone(pair) -> None:
    network, a, b, udp = pair
    link = network.link(a, b, loss=1.0)
    udp.send(10)
    assert udp.receive(10, quiet=0.2) == []
    link.set(loss=0.0)
    udp.send(10)
    assert len(udp.receive(10)) == 10
    link.set(only=b, loss=1.0)  # only b -> a loses: a -> b still works
    udp.send(10)
    assert len(udp.receive(10)) == 10
    assert link.impairments["b", "a"].loss == 1.0 and link.impairments["a", "b"].loss == 0.0
    with pytest.raises(ValueError, match="not an end"):
        link.set(only="c", loss=0)


def test_tcp_delivers_everything_over_a_lossy_link_by_retransmitting(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    network.link(a, b, loss=0.05, delay=0.002)
    listener = b.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    data = bytes(range(256)) * 1200  # 300 KB
    received = bytearray()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    server = threading.Thread(target=serve, daemon=True, name="chatlab-test-sink")
    server.start()
    with listener:
        client = a.connect((b.address, listener.getsockname()[1]))
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)  # the end of the data: the server's recv() returns b""
        server.join(30)
        info = lab.tcp_info(client)  # now that everything arrived, every retransmission is counted
        client.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest(), "TCP lost or changed bytes"
    lost = network.stats()["links"]
    assert lost["a>b"]["lost"] > 0 and info["total_retrans"] > 0
    print(f"300 KB over 5 % loss: {lost['a>b']['lost']} segments lost, {info['total_retrans']} retransmitted")


@needs_tshark
def test_tshark_sees_the_retransmissions_in_the_senders_capture(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    link = network.link(a, b)
    srv = b.start_server("threads", limits=lab.no_defences())
    ada = a.bot((b.address, srv.address[1]), "ada")
    # Not a random loss, which now and then would spare every segment: the
    # next two segments from a that carry data are lost, whatever happens.
    link.lose_next(2, only=a, longer_than=80)
    for i in range(20):
        ada.say(f"message {i}")
    ada.wait_for(lambda m: m.get("type") == "message" and m.get("text") == "message 19", timeout=30)
    # The router captures a packet as it leaves its host, before losing it, so
    # a's capture holds the lost originals and then their second sending: a
    # segment carrying bytes already seen.  tshark flags it "retransmission",
    # or -- when it follows the original within its out-of-order window
    # (~3 ms: a fast recovery on a quick, idle path) -- "suspected
    # out-of-order".  Either is tshark seeing the resend.
    rows = tshark_fields(network.pcap(a), "frame.number", "tcp.seq", "tcp.len", "tcp.analysis.retransmission",
                         "tcp.analysis.out_of_order", display_filter=f"ip.src == {a.address} && tcp.len > 0")
    resent, highest = [], 0
    for number, seq, length, retransmission, out_of_order in rows:
        if int(seq) < highest:
            resent.append((number, bool(retransmission or out_of_order)))
        highest = max(highest, int(seq) + int(length))
    assert resent, "two data segments lost and not one sent again in a's capture?"
    assert all(flagged for _, flagged in resent), f"tshark did not flag these resent frames: {resent}"
    lost_from_a = [d for d in network.drops() if d.src == "a"]
    assert lost_from_a, "the router dropped nothing from a"


def test_lose_next_loses_exactly_the_next_packets_longer_than_asked(pair) -> None:
    network, a, b, udp = pair
    link = network.link(a, b)
    link.lose_next(3, only=a, longer_than=80)
    udp.send(2, size=20)  # 48-byte packets: spared
    udp.send(5, size=100)  # 128 bytes: the first three are lost
    got = [number for number, _ in udp.receive(7)]
    assert got == [0, 1, 5, 6]
    assert [d.why for d in network.drops()] == ["lost"] * 3


def test_a_bulk_transfer_is_held_to_the_links_rate(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    network.link(a, b, delay=0.005).set(only=a, rate=5_000_000, queue=50)
    result = net.bulk_transfer(a, b, 2.0, warmup=0.5)
    print(f"{result.congestion} over a 5 Mbit/s link: {result.bits_per_s / 1e6:.2f} Mbit/s")
    assert result.received > 0 and result.arrivals
    assert result.bits_per_s <= 5_000_000, "more data than the link carries in that time: the rate is not applied"
    assert network.stats()["links"]["a>b"]["max_queued"] > 1, "a bulk transfer should fill the queue"


def test_a_bulk_transfer_stops_even_when_its_reset_is_lost(network: net.Network) -> None:
    # The sender ends with a reset, one packet that TCP never sends again.
    # With the link losing everything the receiver never hears of it: stop()
    # must end the receiving thread itself, not wait for the reset.
    a, b = network.host("a"), network.host("b")
    link = network.link(a, b)
    transfer = net.Bulk(a, b)
    deadline = time.monotonic() + 10
    while not transfer.arrivals:  # the first bytes arrived: the connection is up
        assert time.monotonic() < deadline, "nothing arrived"
        time.sleep(0.01)
    link.set(loss=1.0)
    started = time.monotonic()
    result = transfer.stop()
    assert result.received > 0
    assert "chatlab-bulk-sink" not in lab.leftover_threads(), "the receiver still waits for the lost reset"
    assert time.monotonic() - started < lab.TIMEOUT, "stop() waited for a reset that was lost"
