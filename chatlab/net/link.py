"""What a link does to the packets that cross it: delay, jitter, loss, duplication, reordering, a slow queue.

A real path between two machines is not a perfect pipe.  Each packet waits
its turn behind the others (a *queue* in front of a link of limited *rate*),
takes time to travel (the *delay*, which varies a little: *jitter*), and is
sometimes lost -- one here and there, or several in a row when a radio link
fades or a queue overflows (*bursts*).  Now and then a packet arrives twice
(*duplication*) or after one sent later (*reordering*).  TCP was designed
for exactly such paths; this module makes one.

Nothing here touches a socket or a clock: ``Direction.send(size, now)``
takes a packet's size and the time it arrived, and answers when it comes
out at the other end (a list of times: none when it is lost, two when it is
duplicated) or why it was dropped.  The router (``router.py``) does the
reading, waiting and writing; a test can drive a direction by hand with
made-up times.  The kernel's own tool for this, ``netem``, is missing from
many kernels (this machine's included), which is one reason the lab brings
its own.

Each direction of a link has its own queue and its own random numbers: the
data going one way and the ACKs coming back never wait behind each other,
as on a real full-duplex link.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from dataclasses import dataclass

#: Packets a link's queue holds when no ``queue`` is given (Linux's default ``txqueuelen`` is 1000;
#: a small home router's is often about this).
DEFAULT_QUEUE = 100
#: How much longer than the others a reordered packet is held, when ``reorder_delay`` is not given, in seconds.
DEFAULT_REORDER_DELAY = 0.010

# Why a packet did not make it (the router's drop log uses these words).
QUEUE_FULL = "queue full"  # tail drop: it arrived at a full queue
LOST = "lost"  # the link lost it (random or in a burst)


@dataclass(frozen=True)
class Impairment:
    """What one direction of a link does.  All times in seconds, all fractions from 0 to 1.

    * ``delay``: one-way propagation delay; a round trip over a link crosses it twice.
    * ``jitter``: the delay varies at random by up to this much either way (packets keep their order).
    * ``loss``: the fraction of packets lost, on average.
    * ``burst``: the average number of packets lost in a row (1: each loss independent of the last).
    * ``duplicate``: the fraction of packets delivered twice.
    * ``reorder``: the fraction of packets held back ``reorder_delay`` longer, so later ones overtake them.
    * ``rate``: the link's speed in bits per second (None: as fast as the router goes).
    * ``queue``: how many packets may wait for a slow link; one more is dropped (tail drop).
    """

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    burst: float = 1.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = DEFAULT_REORDER_DELAY
    rate: float | None = None
    queue: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        for name in ("delay", "jitter", "reorder_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0 seconds, not {getattr(self, name)}")
        for name in ("loss", "duplicate", "reorder"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a fraction from 0 to 1 (0.01 is 1 %), not {getattr(self, name)}")
        if self.loss == 1 and self.burst > 1:
            raise ValueError("loss=1 loses everything; bursts only make sense below that")
        if self.burst < 1:
            raise ValueError(f"burst is the average number of packets lost in a row, at least 1, not {self.burst}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate is in bits per second and must be positive (None: no limit), not {self.rate}")
        if self.queue < 1:
            raise ValueError(f"queue holds at least one packet, not {self.queue}")

    def replace(self, **changes: object) -> "Impairment":
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class GilbertElliott:
    """Losses that come in bursts: a link that is either Good or Bad, and switches now and then.

    The Gilbert-Elliott model (Gilbert 1960, Elliott 1963) is a two-state
    Markov chain.  In the Good state a packet is lost with probability
    ``good_loss`` (usually 0), in the Bad state with ``bad_loss`` (usually
    1); before each packet the link moves Good -> Bad with probability
    ``p`` and Bad -> Good with probability ``r``.  A Bad spell lasts
    ``1 / r`` packets on average, and the link spends ``p / (p + r)`` of
    its time in it.  ``from_rate`` picks ``p`` and ``r`` from what a person
    would say: "2 % loss, in bursts of 4 packets".
    """

    def __init__(self, p: float, r: float, good_loss: float = 0.0, bad_loss: float = 1.0):
        self.p, self.r, self.good_loss, self.bad_loss = p, r, good_loss, bad_loss
        self.bad = False

    @classmethod
    def from_rate(cls, loss: float, burst: float) -> "GilbertElliott":
        # With bad_loss = 1 and good_loss = 0, a loss burst is a Bad spell:
        # its mean length 1/r = burst, and the time spent Bad, p/(p+r), is the loss rate.
        r = 1 / burst
        p = loss * r / (1 - loss)
        return cls(p, r)

    def lose(self, rng: random.Random) -> bool:
        """Move the chain one packet on; True if that packet is lost."""
        if self.bad:
            self.bad = rng.random() >= self.r
        else:
            self.bad = rng.random() < self.p
        return rng.random() < (self.bad_loss if self.bad else self.good_loss)


@dataclass
class Fate:
    """What happens to one packet: the times it comes out (none if dropped), or why it was dropped."""

    times: list[float]
    dropped: str | None = None
    queued: int = 0  # packets already waiting in the queue when it arrived


class Direction:
    """One direction of a link: a queue in front of a wire of some rate and delay, that loses now and then."""

    def __init__(self, impairment: Impairment | None = None, seed: object = 0):
        self.impairment = impairment or Impairment()
        self.rng = random.Random(str(seed))  # a seeded generator: the same losses on every run
        self.bursts: GilbertElliott | None = None
        self.busy_until = 0.0  # when the wire finishes sending the last packet let into the queue
        self.leaving: collections.deque[float] = collections.deque()  # when each queued packet is sent
        self.last_out = 0.0  # when the last packet came out (jitter must not reorder)
        self.counts: collections.Counter[str] = collections.Counter()
        self.max_queued = 0
        self.doomed = 0  # the next this many packets are lost, whatever the settings (lose_next) ...
        self.doomed_longer_than = 0  # ... counting only packets longer than this many bytes
        self.set(self.impairment)

    def set(self, impairment: Impairment) -> None:
        """Change what the link does from now on; the packets already on it keep their times."""
        self.impairment = impairment
        if impairment.loss > 0 and impairment.burst > 1:
            self.bursts = GilbertElliott.from_rate(impairment.loss, impairment.burst)
        else:
            self.bursts = None

    def lose_next(self, count: int, longer_than: int = 0) -> None:
        """Lose the next ``count`` packets longer than ``longer_than`` bytes, for certain.

        A loss exactly where a lesson wants one.  ``longer_than`` lets the
        small packets through (a TCP segment with no data, a bare ACK, is
        52 bytes in IPv4), so that the loss falls on data.
        """
        self.doomed, self.doomed_longer_than = count, longer_than

    def queued(self, now: float) -> int:
        """Packets waiting for the wire (or on it, being sent) at time ``now``."""
        while self.leaving and self.leaving[0] <= now:
            self.leaving.popleft()
        return len(self.leaving)

    def send(self, size: int, now: float) -> Fate:
        """A packet of ``size`` bytes arrives at time ``now``: when does it come out at the other end?"""
        imp, rng = self.impairment, self.rng
        self.counts["packets"] += 1
        waiting = self.queued(now)

        # 1. The queue.  A link of limited rate sends one packet at a time;
        # the others wait in a queue of limited size.  A packet that finds
        # it full is dropped: "tail drop", the simplest policy, and the
        # usual reason for a loss on the Internet.
        if imp.rate is not None:
            if waiting >= imp.queue:
                self.counts[QUEUE_FULL] += 1
                return Fate([], QUEUE_FULL, waiting)
            start = max(now, self.busy_until)  # wait for the packets in front
            self.busy_until = start + size * 8 / imp.rate  # the time it takes to put the bits on the wire
            self.leaving.append(self.busy_until)
            self.max_queued = max(self.max_queued, waiting + 1)
            sent = self.busy_until
        else:
            sent = now

        # 2. Loss on the way: independent (each packet a coin toss) or in
        # bursts (Gilbert-Elliott).  A lost packet still used the wire.
        lost = self.bursts.lose(rng) if self.bursts else (imp.loss > 0 and rng.random() < imp.loss)
        if self.doomed and size > self.doomed_longer_than:
            self.doomed -= 1
            lost = True
        if lost:
            self.counts[LOST] += 1
            return Fate([], LOST, waiting)

        # 3. The delay, give or take the jitter.  A packet never overtakes
        # the one before it because of jitter: on a real link, a varying
        # delay comes from varying queues, and queues keep their order.
        out = sent + imp.delay
        if imp.jitter:
            out += rng.uniform(-imp.jitter, imp.jitter)
        out = max(out, self.last_out, sent)
        self.last_out = out

        # 4. Reordering: this one is held back, so the next ones overtake it.
        # (Two paths of different lengths, or a router that sends packets
        # of one flow over two links, do this.)
        if imp.reorder and rng.random() < imp.reorder:
            out += imp.reorder_delay
            self.counts["reordered"] += 1

        # 5. Duplication: a copy arrives just after the original (a link
        # layer that retransmitted a frame whose acknowledgement it missed).
        times = [out]
        if imp.duplicate and rng.random() < imp.duplicate:
            times.append(out + 1e-6)
            self.counts["duplicated"] += 1
        self.counts["delivered"] += 1
        return Fate(times, None, waiting)

    def stats(self, now: float) -> dict[str, int]:
        """What happened so far: packets, delivered, lost, queue full, reordered, duplicated; the queue (now, most)."""
        return {**self.counts, "queued": self.queued(now), "max_queued": self.max_queued}
