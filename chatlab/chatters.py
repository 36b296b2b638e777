"""Chatters: a control group that keeps chatting while something goes wrong.

A defence is only half proved when the offender is refused or dropped.  The
other half is that nobody else noticed: no message lost, none twice, none
out of order, none held up.  ``Chatters`` is that other half.  Ten clients
(by default) talk at a steady, human pace in the background while a test or
a notebook does its worst to the server; ``check()`` then proves, message by
message, that every chatter received every chatter's messages exactly once,
in the order they were sent, each within ``bound`` seconds::

    with Chatters(server.address) as room:
        flood_the_server()               # the fault under test
        report = room.check()            # raises AssertionError, saying what went wrong
    print(report.messages, "delivered; slowest", report.slowest, "s")

Everything here is timed with one monotonic clock in this process, and every
wait is bounded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .client import ChatClient

PACE = 0.25  # seconds between one chatter's messages: 4 a second, under the default rate limit
QUICK_START = 3  # the first rounds go 20 ms apart (well within the rate limit's burst), so that
                 # even a short test has the chatters talking while it runs
BOUND = 5.0  # seconds: a functional bound on delivery ("not held up"), not a speed claim


@dataclass
class Report:
    """What ``Chatters.check()`` found (all of it good, or it would have raised)."""

    chatters: int
    rounds: int  # messages each chatter sent
    messages: int  # deliveries checked: chatters x chatters x rounds
    slowest: float  # seconds, the longest a message took to reach a chatter
    latencies: list[float] = field(repr=False, default_factory=list)
    events: list[tuple[float, int, dict[str, Any]]] = field(repr=False, default_factory=list)


class Chatters:
    """``n`` registered ChatClients saying a numbered message every ``pace`` seconds each."""

    def __init__(self, address: tuple[str, int], n: int = 10, pace: float = PACE, bound: float = BOUND,
                 prefix: str = "chatter", min_rounds: int = QUICK_START, **client_options: Any):
        self.address, self.n, self.pace, self.bound = address, n, pace, bound
        self.client_options = client_options  # for ChatClient: tls=..., timeout=...
        self.prefix, self.min_rounds = prefix, min_rounds
        self.names = [f"{prefix}{i}" for i in range(n)]
        self.clients: list[ChatClient] = []
        self.sent: dict[tuple[int, int], float] = {}  # (chatter, seq) -> when it was said
        self.events: list[tuple[float, int, dict[str, Any]]] = []  # (when, chatter, event) as received
        self.rounds = 0
        self._counts: dict[tuple[int, Any], int] = {}  # (chatter, sender name) -> messages received
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._pacer: threading.Thread | None = None

    # ---------------------------------------------------------------- life

    def start(self) -> "Chatters":
        try:
            for i, name in enumerate(self.names):
                self.clients.append(ChatClient(*self.address, name=name, on_event=self._hear(i),
                                               **self.client_options))
        except BaseException:
            self.close()
            raise
        self._pacer = threading.Thread(target=self._chat, name="chatters-pacer", daemon=True)
        self._pacer.start()
        return self

    def _hear(self, i: int):
        def on_event(event: dict[str, Any]) -> None:  # runs on chatter i's receive thread
            with self._changed:
                self.events.append((time.monotonic(), i, event))
                if event.get("type") == "message":
                    key = (i, event.get("from"))
                    self._counts[key] = self._counts.get(key, 0) + 1
                self._changed.notify_all()
        return on_event

    def _chat(self) -> None:
        seq = 0
        while not self._stop.is_set():
            for i, client in enumerate(self.clients):
                self.sent[(i, seq)] = time.monotonic()
                client.say(f"{self.names[i]} #{seq}")
            seq += 1
            with self._changed:
                self.rounds = seq
                self._changed.notify_all()
            self._stop.wait(self.pace if seq >= QUICK_START else 0.02)

    def close(self) -> None:
        self._stop.set()
        if self._pacer is not None:
            self._pacer.join(5)
        for client in self.clients:
            client.close()

    def __enter__(self) -> "Chatters":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_heard(self, sender: str, count: int, timeout: float = 20.0) -> bool:
        """Wait until every chatter has received ``count`` messages from ``sender``.

        A loud test client can pace itself with this, so that it never runs
        ahead of the slowest healthy chatter.
        """
        def heard() -> bool:
            return all(self._counts.get((i, sender), 0) >= count for i in range(self.n))

        with self._changed:
            return self._changed.wait_for(heard, timeout)

    # ------------------------------------------------------------ checking

    def _delivered(self) -> dict[tuple[int, int], list[int]]:
        """(receiver, sender) -> the sequence numbers received, in arrival order."""
        got: dict[tuple[int, int], list[int]] = {}
        index = {name: j for j, name in enumerate(self.names)}
        for _, i, event in self.events:
            if event.get("type") == "message" and event.get("from") in index:
                seq = int(event["text"].rsplit("#", 1)[1])
                got.setdefault((i, index[event["from"]]), []).append(seq)
        return got

    def check(self, timeout: float = 20.0) -> Report:
        """Stop chatting, wait for the last messages, and prove the deliveries were perfect."""
        deadline = time.monotonic() + timeout
        with self._changed:  # chat for at least a couple of rounds, so the fault had company
            self._changed.wait_for(lambda: self.rounds >= self.min_rounds, max(0.0, deadline - time.monotonic()))
        self._stop.set()
        if self._pacer is not None:
            self._pacer.join(5)
        rounds = self.rounds
        expected = self.n * self.n * rounds

        def complete() -> bool:
            heard = sum(self._counts.get((i, name), 0) for i in range(self.n) for name in self.names)
            return heard >= expected or any(e.get("type") == "disconnected" for _, _, e in self.events)

        with self._changed:
            self._changed.wait_for(complete, max(0.0, deadline - time.monotonic()))
            events = list(self.events)
        problems: list[str] = []
        for when, i, event in events:
            if event.get("type") == "disconnected":
                problems.append(f"{self.names[i]} was disconnected: {event.get('reason')}")
            elif event.get("type") == "left" and event.get("name") in self.names:
                problems.append(f"{self.names[i]} was told that {event['name']} left ({event.get('reason')})")
        got = self._delivered()
        for i in range(self.n):
            for j in range(self.n):
                seqs = got.get((i, j), [])
                if seqs != list(range(rounds)):
                    missing = sorted(set(range(rounds)) - set(seqs))
                    twice = sorted({s for s in seqs if seqs.count(s) > 1})
                    problems.append(f"{self.names[i]} got {len(seqs)} of {rounds} messages from {self.names[j]}"
                                    f" (missing {missing[:10]}, twice {twice[:10]}, "
                                    f"in order: {seqs == sorted(seqs)})")
        latencies = []
        index = {name: j for j, name in enumerate(self.names)}
        for when, i, event in events:
            if event.get("type") == "message" and event.get("from") in index:
                seq = int(event["text"].rsplit("#", 1)[1])
                latencies.append(when - self.sent[(index[event["from"]], seq)])
        slowest = max(latencies, default=0.0)
        if slowest > self.bound:
            late = sum(1 for t in latencies if t > self.bound)
            problems.append(f"{late} messages took longer than {self.bound:g} s (the slowest {slowest:.2f} s)")
        if problems:
            raise AssertionError("the chatters noticed:\n  " + "\n  ".join(problems[:20]))
        return Report(self.n, rounds, expected, slowest, latencies, events)
