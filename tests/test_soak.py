"""The soak test: many clients joining, chatting and leaving at random, then an audit.

A server that passes every short test can still leak: a thread per departed
client that never ends, a dictionary entry per connection never removed, a
buffer that grows with every message.  Only a long run with constant churn
shows it.  Here a real ``chatlab serve`` runs in a child process (so that
its memory and threads are its own) while up to ``SLOTS`` clients at a time
join, chat at random moments, and leave -- politely with ``bye``, by closing
the socket, or with a TCP reset.  At the end:

* every client received the messages said while it was connected exactly
  once and in the server's one order: its message ids strictly increase, and
  every id that anyone received between its first and last is among its own;
* every sender's messages arrive in the order it sent them;
* once everyone has gone, the server's thread count is back to where it
  started, and its memory has stopped growing: within a margin of its level
  after a warm-up, and growing by no more than a little in the second half
  of the run (the figures are printed: ``pytest -s``).

By default it runs for a few seconds per server model, so that CI runs it
too.  ``pytest -m soak --soak-seconds 600`` (or ``CHATLAB_SOAK_SECONDS=600``)
soaks for ten minutes per model.  Linux only: it reads the child's
``/proc/PID/status``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatlab.client import ChatClient, ChatConnectionError

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]

SHORT = 2.0  # seconds of churn per model in the default run
SLOTS = 16  # clients connected at once, at most
MAX_SESSIONS = 5000  # a bound on the whole run, whatever its length
MiB = 1024 * 1024
# Memory does not come back to the byte: CPython and the C library keep freed
# memory for reuse, and SQLite's page cache fills up to 2 MiB as history is
# written.  So the checks are that the growth is bounded, and that it does not
# go on: a leak grows as much in the second half of a run as in the first.
MEMORY_MARGIN = 8 * MiB  # the most the RSS may end above its level after the warm-up
SECOND_HALF_MARGIN = 2 * MiB  # the most it may grow in the second half of the run
# One malloc arena per thread (the threads model makes many) would hide the
# server's own behaviour behind the allocator's; two are plenty for this.
SOAK_ENV = {"MALLOC_ARENA_MAX": "2"}


def soak_seconds(config: pytest.Config) -> float:
    given = config.getoption("--soak-seconds") or os.environ.get("CHATLAB_SOAK_SECONDS")
    return float(given) if given else SHORT


def proc_status(pid: int) -> dict[str, int]:
    """Resident memory (bytes) and thread count of a process, from Linux's /proc."""
    text = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024
    threads = int(re.search(r"Threads:\s+(\d+)", text).group(1))
    return {"rss": rss, "threads": threads}


@dataclass
class Session:
    """One client's life: what it said and what it heard."""

    name: str
    said: int = 0
    heard: list[tuple[int, str, str]] = field(default_factory=list)  # (id, from, text) of live messages
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "message":
            with self.lock:
                self.heard.append((event["id"], event["from"], event["text"]))


def live_session(address, name: str, rng: random.Random, deadline: float, sessions: list[Session]) -> None:
    session = Session(name)
    try:
        client = ChatClient(*address, name=name, on_event=session.on_event)
    except (ChatConnectionError, OSError, TimeoutError) as exc:
        raise AssertionError(f"{name} could not join: {exc}") from None
    sessions.append(session)
    try:
        # At most 10 messages, 4 a second on average: a person, not a flood.
        for seq in range(rng.randint(0, 10)):
            if time.monotonic() > deadline:
                break
            client.say(f"{name} {seq}")
            session.said += 1
            time.sleep(rng.uniform(0.02, 0.45))  # the workload's own pace, not a synchronisation
        how = rng.choice(["bye", "close", "reset"])
        if how == "close":  # no bye: the socket just closes (FIN)
            client.sock.shutdown(socket.SHUT_RDWR)
        elif how == "reset":  # no bye, no FIN: a TCP reset
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sock.shutdown(socket.SHUT_RD)
    finally:
        client.close()


def audit(sessions: list[Session]) -> dict[str, int]:
    """Exactly once, in order, for every client; each sender's order kept."""
    problems: list[str] = []
    everyone = sorted({m for s in sessions for m in s.heard})
    all_ids = [m[0] for m in everyone]
    assert len(all_ids) == len(set(all_ids)), "one id was used for two different messages"
    deliveries = 0
    for s in sessions:
        ids = [m[0] for m in s.heard]
        deliveries += len(ids)
        if ids != sorted(set(ids)):
            problems.append(f"{s.name}: ids not strictly increasing (duplicates or out of order)")
            continue
        if ids:
            # Every message anyone got while this client was there, it got too.
            window = [i for i in all_ids if ids[0] <= i <= ids[-1]]
            missing = sorted(set(window) - set(ids))
            if missing:
                problems.append(f"{s.name}: missed {len(missing)} messages said while it was connected: {missing[:5]}")
    per_sender: dict[str, list[int]] = {}
    for message_id, sender, text in everyone:
        per_sender.setdefault(sender, []).append(int(text.rsplit(" ", 1)[1]))
    for sender, seqs in per_sender.items():
        if seqs != sorted(seqs):
            problems.append(f"{sender}'s messages were reordered: {seqs}")
    assert not problems, "\n".join(problems[:20])
    return {"sessions": len(sessions), "messages": len(all_ids), "deliveries": deliveries}


def test_soak(model, request, tmp_path):
    seconds = soak_seconds(request.config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatlab", "serve", "--port", "0", "--model", model, "--db", str(tmp_path / "soak.db"),
         "--max-per-address", "0", "--accept-rate", "0", "--max-clients", "0"],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "server.log", "w"), text=True,
        env=dict(os.environ, **SOAK_ENV))
    budget = threading.Timer(seconds + 120, proc.kill)  # a hung run fails instead of hanging CI
    budget.start()
    try:
        host, port = proc.stdout.readline().rsplit(" ", 1)[-1].strip().rsplit(":", 1)
        address = (host, int(port))
        idle = proc_status(proc.pid)

        def run(duration: float, seed: int) -> list[Session]:
            rng = random.Random(seed)
            deadline = time.monotonic() + duration
            sessions: list[Session] = []
            failures: list[BaseException] = []
            running: list[threading.Thread] = []
            count = 0
            while time.monotonic() < deadline and count < MAX_SESSIONS:
                running = [t for t in running if t.is_alive()]
                if len(running) >= SLOTS:
                    running[0].join(1)
                    continue
                count += 1

                def one(name=f"s{seed}x{count}", rng=random.Random(rng.random())):
                    try:
                        live_session(address, name, rng, deadline, sessions)
                    except BaseException as exc:  # reported below, in the test's own thread
                        failures.append(exc)

                thread = threading.Thread(target=one, name=f"soak-{count}", daemon=True)
                thread.start()
                running.append(thread)
            for thread in running:
                thread.join(30)
            assert not any(t.is_alive() for t in running), "a client session hung"
            if failures:
                raise failures[0]
            return sessions

        def settled(threads: int, timeout: float = 20.0) -> dict[str, int]:
            """The server's status once its thread count is back to ``threads`` (bounded wait)."""
            end = time.monotonic() + timeout
            while (status := proc_status(proc.pid))["threads"] != threads and time.monotonic() < end:
                time.sleep(0.05)  # polling another process: there is no event to wait on
            return status

        run(min(1.0, seconds / 4), seed=1)  # warm-up: imports, caches, the database's first pages
        warm = settled(idle["threads"])
        sessions = run(seconds / 2, seed=2)
        middle = settled(idle["threads"])
        sessions += run(seconds / 2, seed=3)
        end = settled(idle["threads"])
        totals = audit(sessions)
        print(f"\nsoak {model}: {seconds:g} s, {totals['sessions']} sessions, {totals['messages']} messages, "
              f"{totals['deliveries']} deliveries checked; server threads {idle['threads']} -> {middle['threads']} "
              f"-> {end['threads']}; RSS idle {idle['rss'] / MiB:.1f} MiB, after warm-up {warm['rss'] / MiB:.1f}, "
              f"half-way {middle['rss'] / MiB:.1f}, at the end {end['rss'] / MiB:.1f}")
        assert totals["messages"] > 0 and totals["sessions"] > SLOTS
        assert middle["threads"] == end["threads"] == idle["threads"], "threads were left behind"
        assert end["rss"] <= warm["rss"] + MEMORY_MARGIN, "the server's memory grew with the churn"
        assert end["rss"] <= middle["rss"] + SECOND_HALF_MARGIN, "the server's memory kept growing"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        budget.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
