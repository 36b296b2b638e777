"""``chatlab bench`` runs, once, at its tiny size: proof that it works, not a speed test.

Benchmarks are not timed tests: nothing here asserts a speed.  The run is
a real one (servers and load generator in their own processes, over
loopback TCP); the test checks that every scenario reported sane figures
for every server, and that nothing the benchmark started is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from chatlab.servers import MODELS

pytestmark = pytest.mark.timeout(240)

SCENARIOS = {"fanout", "latency", "many", "stalled", "scale", "joins"}


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment holds ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # gone, or not ours to read
    return found


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[dict, str]:
    """One tiny benchmark run: its JSON and its terminal output."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    marker = f"CHATLAB_BENCH_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatlab", "bench", "--size", "tiny", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, key: value},
    )
    try:
        stdout, stderr = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    left = processes_with(marker) if sys.platform.startswith("linux") else []
    assert left == [], f"the benchmark left processes running: {left}"
    assert proc.returncode == 0, f"chatlab bench failed:\n{stderr[-3000:]}"
    return json.loads(out.read_text()), stdout


def test_every_target_ran_every_scenario(tiny):
    result, _ = tiny
    expected = {"relay", "naive", *MODELS} | ({"redis"} if shutil.which("redis-server") else set())
    assert set(result["config"]["targets"]) == expected
    for target in expected:
        ran = {r["scenario"] for r in result["records"] if r["target"] == target}
        wanted = {"fanout", "latency", "many", "scale"} if target == "relay" else SCENARIOS
        assert ran == wanted, f"{target} ran {sorted(ran)}"
    if not shutil.which("redis-server"):
        assert any("redis-server is not installed" in note for note in result["notes"])


def test_every_run_completed_with_sane_figures(tiny):
    result, _ = tiny
    for r in result["records"]:
        where = f"{r['target']} {r['scenario']}"
        if r["scenario"] == "stalled":
            # The run *with* a stalled reader may be cut short (that is the point);
            # the one without must complete.
            assert r["without"]["completed"], (where, r["without"])
            assert r["rate_without"] > 0 and r["rate_with"] > 0, where
            continue
        assert r["completed"], (where, r.get("error"))
        assert r["seconds"] > 0, where
        if r["scenario"] in ("fanout", "many"):
            assert r["delivered"] == r["expected"] > 0, where
            # The generator read every delivery: it cannot have used no CPU at all.
            assert r["rate"] > 0 and r["generator_cpu_s"] > 0, where
            assert r["server_cpu_per_delivery_us"] is None or r["server_cpu_per_delivery_us"] >= 0, where
        elif r["scenario"] == "latency":
            assert r["lost"] == 0, where
            assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], where
        else:  # scale, joins
            assert r["connections"] > 0 and r["rate"] > 0, where
            if sys.platform.startswith("linux"):
                assert r["rss_after"] > 0, where


def test_the_report_has_every_table_and_the_targets(tiny):
    result, stdout = tiny
    for title in ("Fan-out", "Many senders", "Latency", "A stalled reader", "Scale", "Registration time",
                  "Headline", "Targets (issue 7)"):
        assert title in stdout, title
    assert {v["target"] for v in result["verdicts"]} >= {"efficiency", "stalled reader", "latency"}
    assert result["machine"]["cpus"] >= 1 and result["machine"]["python"]
    assert [h["target"] for h in result["headline"]] == list(MODELS)


def test_bad_options_are_refused_with_a_message():
    proc = subprocess.run([sys.executable, "-m", "chatlab", "bench", "--targets", "nginx"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown target(s) nginx" in proc.stderr
