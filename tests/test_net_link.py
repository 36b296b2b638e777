"""What a link does to packets (chatlab.net.link), driven by hand with made-up times: no network, no root."""

from __future__ import annotations

import random
import struct

import pytest

from chatlab.net.link import LOST, QUEUE_FULL, Direction, GilbertElliott, Impairment
from chatlab.net.router import destination, one_hop_less

pytestmark = pytest.mark.timeout(30)


def link(**settings) -> Direction:
    return Direction(Impairment(**settings), seed="test")


def test_a_perfect_link_delivers_at_once_and_a_delay_adds_its_time() -> None:
    assert link().send(100, 5.0).times == [5.0]
    assert link(delay=0.02).send(100, 5.0).times == [pytest.approx(5.02)]


def test_jitter_varies_the_delay_within_its_bounds_but_never_reorders() -> None:
    d = link(delay=0.010, jitter=0.005)
    outs = [d.send(100, i * 0.001).times[0] for i in range(2000)]
    assert outs == sorted(outs), "jitter must not reorder packets"
    delays = [out - i * 0.001 for i, out in enumerate(outs)]
    assert min(delays) >= 0.005 - 1e-9 and max(delays) <= 0.015 + 1e-9
    assert max(delays) - min(delays) > 0.008, "the delay should really vary"


def test_random_loss_loses_that_fraction_on_average() -> None:
    d = link(loss=0.1)
    fates = [d.send(100, i * 0.001) for i in range(20000)]
    lost = sum(f.dropped == LOST for f in fates)
    assert 0.09 < lost / 20000 < 0.11
    assert d.stats(20.0)[LOST] == lost and d.stats(20.0)["delivered"] == 20000 - lost


def runs_of_losses(fates) -> list[int]:
    runs, current = [], 0
    for fate in fates:
        if fate.dropped:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_burst_losses_keep_the_rate_and_come_in_runs_of_the_burst_length() -> None:
    independent = link(loss=0.05)
    bursty = link(loss=0.05, burst=4)
    plain = [independent.send(100, i) for i in range(50000)]
    bursts = [bursty.send(100, i) for i in range(50000)]
    for fates in (plain, bursts):
        assert 0.04 < sum(bool(f.dropped) for f in fates) / 50000 < 0.06
    mean = lambda runs: sum(runs) / len(runs)  # noqa: E731
    assert mean(runs_of_losses(plain)) < 1.2  # independent: two in a row is rare (p = 5 %)
    assert 3.5 < mean(runs_of_losses(bursts)) < 4.5


def test_gilbert_elliott_from_a_rate_spends_that_fraction_of_its_time_bad() -> None:
    model = GilbertElliott.from_rate(0.02, 4)
    assert model.r == pytest.approx(0.25) and model.p / (model.p + model.r) == pytest.approx(0.02)
    rng = random.Random(1)
    lost = sum(model.lose(rng) for _ in range(100000))
    assert 0.017 < lost / 100000 < 0.023


def test_a_slow_link_sends_one_packet_at_a_time_at_its_rate() -> None:
    d = link(rate=1_000_000, delay=0.001)  # 1 Mbit/s: 1250 bytes take 10 ms
    outs = [d.send(1250, 0.0).times[0] for _ in range(5)]
    assert outs == pytest.approx([0.011, 0.021, 0.031, 0.041, 0.051])
    assert d.queued(0.0) == 5 and d.queued(0.025) == 3 and d.queued(0.06) == 0


def test_a_full_queue_drops_what_arrives_tail_drop() -> None:
    d = link(rate=1_000_000, queue=3)
    fates = [d.send(1250, 0.0) for _ in range(10)]
    assert [f.dropped for f in fates] == [None] * 3 + [QUEUE_FULL] * 7
    assert [f.queued for f in fates[:4]] == [0, 1, 2, 3]
    assert d.send(1250, 0.0101).dropped is None  # the first has left: room for one more
    assert d.stats(0.0101)[QUEUE_FULL] == 7 and d.stats(0.0101)["max_queued"] == 3


def test_duplication_delivers_a_second_copy_just_after() -> None:
    fate = link(duplicate=1.0, delay=0.01).send(100, 0.0)
    assert len(fate.times) == 2 and 0 < fate.times[1] - fate.times[0] < 0.001


def test_reordering_holds_a_packet_back_so_the_next_ones_overtake_it() -> None:
    d = link(reorder=0.3, reorder_delay=0.02)
    outs = [d.send(100, i * 0.001).times[0] for i in range(1000)]
    held = [i for i, out in enumerate(outs) if out > i * 0.001 + 0.01]
    assert 250 < len(held) < 350 and d.stats(2.0)["reordered"] == len(held)
    overtaken = [i for i in range(999) if outs[i] > outs[i + 1]]
    assert len(overtaken) > 150  # a held packet is overtaken by the next, unless that one is held too


def test_changing_a_link_keeps_the_packets_already_on_it() -> None:
    d = link(delay=0.05)
    first = d.send(100, 0.0).times[0]
    d.set(Impairment(delay=0.0))
    assert d.send(100, 0.001).times[0] >= first, "a packet must not overtake the one before because a link changed"


@pytest.mark.parametrize("bad", [dict(loss=1.5), dict(loss=-0.1), dict(delay=-1), dict(burst=0.5), dict(rate=0),
                                 dict(queue=0), dict(duplicate=2), dict(loss=1, burst=3)])
def test_nonsense_settings_are_refused_with_the_reason(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad)) if "burst" not in bad else "burst|loss"):
        Impairment(**bad)


# ---------------------------------------------------------------- the router's two packet functions


def ipv4_header(ttl: int, rng: random.Random) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, rng.randrange(65536), 0x4000, ttl, 6, 0,
                                   rng.randbytes(4), rng.randbytes(4)))
    header[10:12] = checksum_of(bytes(header)).to_bytes(2, "big")
    return bytes(header) + bytes(40)


def checksum_of(header: bytes) -> int:
    """The IPv4 header checksum computed from scratch (RFC 791), the field itself counted as 0."""
    header = header[:10] + b"\0\0" + header[12:20]
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_one_hop_less_patches_the_ipv4_checksum_exactly_as_recomputing_it_would() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        packet = ipv4_header(rng.randrange(2, 256), rng)
        onward = one_hop_less(packet)
        assert onward is not None and onward[8] == packet[8] - 1
        assert onward[10:12] == checksum_of(onward).to_bytes(2, "big") or (
            # 0x0000 and 0xFFFF are the same number in one's complement; both are valid
            {onward[10:12], checksum_of(onward).to_bytes(2, "big")} == {b"\0\0", b"\xff\xff"})
        assert onward[12:] == packet[12:]


def test_one_hop_less_stops_a_packet_whose_ttl_runs_out_and_counts_ipv6_hops() -> None:
    rng = random.Random(1)
    assert one_hop_less(ipv4_header(1, rng)) is None
    v6 = bytes([0x60, 0, 0, 0, 0, 0, 17, 64]) + bytes(32)
    assert one_hop_less(v6)[7] == 63 and one_hop_less(v6[:7] + b"\x01" + v6[8:]) is None


def test_destination_reads_the_address_of_either_version() -> None:
    v4 = ipv4_header(64, random.Random(2))[:16] + bytes([10, 0, 0, 2]) + bytes(40)
    assert destination(v4) == bytes([10, 0, 0, 2])
    v6 = bytes([0x60]) + bytes(23) + bytes(15) + b"\x02"
    assert destination(v6) == bytes(15) + b"\x02"
    assert destination(b"\x00" * 40) is None and destination(b"\x45") is None
