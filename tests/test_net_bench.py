"""chatlab net bench: the router's forwarding rate and delay accuracy, measured (and printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatlab.net import bench
from net_support import needs_network

pytestmark = [needs_network, pytest.mark.timeout(90)]


def test_the_forwarding_rate_is_measured_from_what_really_crossed() -> None:
    rate = bench.forwarding_rate(seconds=0.3, capture=False)
    print(f"forwarded {rate['forwarded_per_s']:,.0f} packets/s")
    assert rate["forwarded_per_s"] > 0 and rate["received_per_s"] > 0
    # What the receiver got went through the router: it cannot have got more.
    assert rate["received_per_s"] <= rate["forwarded_per_s"] <= rate["sent_per_s"]


def test_a_round_trip_is_never_shorter_than_the_delay_set() -> None:
    rows = bench.delay_accuracy(delays=(0.0, 0.005), pings=10)
    print(rows)
    assert [row["delay_ms"] for row in rows] == [0.0, 5.0]
    assert rows[1]["p10_rtt_ms"] >= 10.0 and rows[1]["median_rtt_ms"] > rows[0]["median_rtt_ms"]


def test_chatlab_net_bench_prints_both_tables() -> None:
    done = subprocess.run([sys.executable, "-m", "chatlab", "net", "bench", "--seconds", "0.2"], capture_output=True,
                          text=True, timeout=80)
    assert done.returncode == 0, done.stderr
    assert "packets/s forwarded" in done.stdout and "Delay accuracy" in done.stdout
    print(done.stdout)
