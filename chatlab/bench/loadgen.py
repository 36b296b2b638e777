"""The load generator: many chat clients in one process, on one event loop.

A benchmark client must cost less than the server it measures, or it
measures itself.  A thread per client would spend the machine on context
switches, so the generator is one ``selectors`` loop over non-blocking
sockets, in a process of its own (the server under test runs in another).
Its own ceiling is measured too, against a trivial relay
(``chatlab.bench.relay``), and reported next to the servers.

It speaks two dialects:

* ``lines`` -- chatlab's lines mode (the chatlab servers, the naive server,
  the relay): a banner line, a name line, a welcome line, then one chat
  message per line.  Lines mode is chosen over frames because counting
  messages is then one C-speed ``bytes.count()`` per ``recv()``, while
  frames would mean decoding every JSON object in Python: the generator's
  ceiling would drop several times and hide the servers' differences.  The
  server's own work is nearly the same in both modes (the chat core encodes
  a broadcast once per mode, not once per listener).
* ``redis`` -- Redis pub/sub (RESP): receivers ``SUBSCRIBE``, senders
  ``PUBLISH``.

Every benchmark message carries a 10-digit sequence number followed by
``@``, a byte that appears nowhere else on the wire (not in banners, names,
join notices nor RESP framing).  Counting ``@`` counts delivered messages;
the digits before it give the message's scheduled send time for latency.

Scenarios (``run()``): ``fanout`` (one sender, R receivers, the sender at
most ``window`` messages ahead of the slowest receiver), ``latency`` (open
loop at a fixed rate; each latency is measured from the message's
*scheduled* send time, so a late sender cannot hide queueing), ``many`` (R
clients all sending at once), ``stalled`` (fanout plus one registered
client that never reads) and ``scale`` (N idle registered connections:
time to register them all, and the server's resident memory).

Run as ``python -m chatlab.bench.loadgen``: the scenario as JSON on stdin,
the result as one JSON object on stdout.
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import struct
import sys
import time
from typing import Any, Callable

from .procstat import cpu_seconds, own_cpu_seconds, raise_fd_limit, rss_bytes

RECV_SIZE = 256 * 1024
MESSAGE_SIZE = 100  # bytes of text in each benchmark message
MARK = b"@"  # ends every benchmark message, and nothing else
SEQ = re.compile(rb"(\d{10})@")
BATCH = 2000  # messages built into one send() at most
CHANNEL = b"bench"
# Close with a reset, not a FIN: a benchmark opens tens of thousands of
# connections, and each FIN-closed one would hold its port in TIME_WAIT for
# a minute, until connect() fails with "address not available".
LINGER_RESET = struct.pack("ii", 1, 0)
# Source addresses to spread connections over, when the server is on
# 127.0.0.1.  A connection is named by its four-tuple, so one source address
# can reach one server port from each of its ~28,000 ephemeral ports; as they
# fill, the kernel searches longer and longer for a free one (Redis took 6.5 s
# to register 19,000 clients from one address, 1.6 s from eight).  The whole
# of 127.0.0.0/8 is loopback: connections from 127.0.0.2 ... need no set-up.
SOURCES = [f"127.0.0.{n}" for n in range(1, 9)]
# Linux: bind() to an address without choosing the port yet; connect() picks
# one free for *this* destination, so every source address has all its ports.
BIND_NO_PORT: int | None = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", None)


class Failed(Exception):
    """The run cannot go on (the server refused us, or went away)."""


# ----------------------------------------------------------------- dialects


def _line_end(buf: bytearray, start: int = 0) -> int:
    """Index just past the first complete line at or after ``start``, or -1."""
    end = buf.find(b"\n", start)
    return -1 if end < 0 else end + 1


def _welcome_end(buf: bytearray) -> int:
    """After the banner, the server's answer to the name line."""
    banner = _line_end(buf)
    if banner < 0:
        return -1
    end = _line_end(buf, banner)
    if end > 0 and buf[banner : banner + 1] == b"!":
        raise Failed(f"the server refused the name: {bytes(buf[banner:end]).decode(errors='replace').strip()}")
    return end


def _subscribed_end(buf: bytearray) -> int:
    # *3 $9 subscribe $5 bench :1 -- six lines, each ending in CRLF.
    pos = 0
    for _ in range(6):
        pos = _line_end(buf, pos)
        if pos < 0:
            return -1
    return pos


def _pong_end(buf: bytearray) -> int:
    end = buf.find(b"+PONG\r\n")
    return -1 if end < 0 else end + 7


class Dialect:
    """How to join, and what one message looks like on the wire."""

    def __init__(self, name: str):
        self.name = name
        text = b"x" * (MESSAGE_SIZE - 11) + b"%010d@"
        if name == "lines":
            self.template = text + b"\n"
        elif name == "redis":
            self.template = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (
                len(CHANNEL), CHANNEL, MESSAGE_SIZE) + text + b"\r\n"
        else:
            raise ValueError(f"unknown dialect {name!r}")

    def greeting(self, role: str, name: str) -> tuple[bytes, Callable[[bytearray], int]]:
        """What a new connection sends, and how to find the end of the server's answer."""
        if self.name == "lines":
            return name.encode() + b"\n", _welcome_end
        if role == "sender":
            return b"PING\r\n", _pong_end
        return b"SUBSCRIBE " + CHANNEL + b"\r\n", _subscribed_end

    def messages(self, first: int, count: int) -> bytes:
        template = self.template
        return b"".join([template % seq for seq in range(first, first + count)])


# -------------------------------------------------------------- connections


class Conn:
    """One client connection and what the generator knows about it."""

    __slots__ = ("sock", "name", "role", "ready", "greeting", "answer_end", "buf",
                 "count", "out", "sent", "tail", "done_at", "stall")

    def __init__(self, sock: socket.socket, name: str, role: str, dialect: Dialect, stall: bool = False):
        self.sock, self.name, self.role, self.stall = sock, name, role, stall
        self.greeting, self.answer_end = dialect.greeting(role, name)
        self.ready = False  # joined: banner read, name accepted / subscribed
        self.buf = bytearray()  # the server's answer while joining
        self.count = 0  # benchmark messages received
        self.out = bytearray()  # bytes the kernel would not take yet
        self.sent = 0  # benchmark messages sent (senders)
        self.tail = b""  # the start of a message not yet complete (latency)
        self.done_at = 0.0


class LoadGenerator:
    def __init__(self, host: str, port: int, dialect: str, deadline: float):
        self.address = (host, port)
        self.dialect = Dialect(dialect)
        self.selector = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.joining = 0  # connections not yet ready
        self.deadline = time.monotonic() + deadline
        self.sources = SOURCES if host == "127.0.0.1" and BIND_NO_PORT is not None else []
        self.on_message: Callable[[Conn, bytes, float], None] = self._count
        self.expected = 0  # messages each receiver must get
        self.unfinished = 0  # receivers that have not got them all yet
        self.last_delivery = 0.0

    # ------------------------------------------------------------ joining

    def open(self, name: str, role: str, rcvbuf: int = 0, stall: bool = False) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        if rcvbuf:
            # A small receive buffer, set before connecting, fills quickly:
            # the stalled client's window closes after a few kilobytes.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.sources and BIND_NO_PORT is not None:
            sock.setsockopt(socket.IPPROTO_IP, BIND_NO_PORT, 1)
            sock.bind((self.sources[len(self.conns) % len(self.sources)], 0))
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise Failed(f"connect to {self.address[0]}:{self.address[1]}: {errno.errorcode.get(err, err)}")
        conn = Conn(sock, name, role, self.dialect, stall)
        self.conns.append(conn)
        self.joining += 1
        # Writable means connected (or failed: SO_ERROR says which).
        self.selector.register(sock, selectors.EVENT_WRITE, conn)
        return conn

    def _connected(self, conn: Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise Failed(f"connect: {errno.errorcode.get(err, err)} ({len(self.conns)} connections open)")
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        if self.dialect.name == "redis":
            self.send(conn, conn.greeting)  # Redis does not speak first
            conn.greeting = b""

    def _joining_data(self, conn: Conn, data: bytes, now: float) -> None:
        conn.buf += data
        if conn.greeting and b"\n" in conn.buf:
            self.send(conn, conn.greeting)  # the banner arrived: say our name
            conn.greeting = b""
        end = conn.answer_end(conn.buf)
        if end < 0:
            return
        conn.ready = True
        self.joining -= 1
        rest = bytes(conn.buf[end:])
        conn.buf = bytearray()
        if conn.stall:
            # From now on this client never reads: its receive window fills,
            # then the server's send buffer for it, then (in a naive server)
            # everyone else waits.
            self.selector.unregister(conn.sock)
        elif rest:
            self.on_message(conn, rest, now)

    # ------------------------------------------------------------ the loop

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for sockets, and handle every one that is ready."""
        events = self.selector.select(timeout)
        now = time.perf_counter()
        for key, mask in events:
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                if conn.out:
                    self._flush(conn)
                else:
                    self._connected(conn)
                    continue
            if mask & selectors.EVENT_READ:
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    raise Failed(f"{conn.name}: {exc}") from None
                if not data:
                    raise Failed(f"the server closed {conn.name}'s connection")
                if conn.ready:
                    self.on_message(conn, data, now)
                else:
                    self._joining_data(conn, data, now)

    def run_until(self, done: Callable[[], bool], step: Callable[[], float] | None = None) -> bool:
        """Pump until ``done()`` or the deadline; ``step()`` runs each round and says how long to wait."""
        while not done():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait = step() if step else 0.05
            self.pump(min(wait, remaining, 0.05))
        return True

    def join_all(self, specs: list[tuple[str, str]], concurrency: int = 200) -> float:
        """Open and join connections (``(name, role)``), at most ``concurrency`` joining at once."""
        started = time.perf_counter()
        pending = list(reversed(specs))

        def step() -> float:
            while pending and self.joining < concurrency:
                self.open(*pending.pop())
            return 0.05

        if not self.run_until(lambda: not pending and not self.joining, step):
            raise Failed(f"only {len(self.conns) - self.joining} of {len(specs)} clients joined in time")
        return time.perf_counter() - started

    # ------------------------------------------------------------ sending

    def send(self, conn: Conn, data: bytes) -> None:
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise Failed(f"{conn.name}: {exc}") from None
        if sent < len(data):
            conn.out += data[sent:]
            self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise Failed(f"{conn.name}: {exc}") from None
        del conn.out[:sent]
        if not conn.out:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def send_messages(self, conn: Conn, count: int, first: int | None = None) -> None:
        first = conn.sent if first is None else first
        self.send(conn, self.dialect.messages(first, count))
        conn.sent += count

    # ------------------------------------------------------------ receiving

    def _count(self, conn: Conn, data: bytes, now: float) -> None:
        if conn.role == "sender":
            return  # a sender's own traffic (join notices, Redis's replies)
        conn.count += data.count(MARK)
        if conn.count >= self.expected and not conn.done_at and self.expected:
            conn.done_at = now
            self.last_delivery = now
            self.unfinished -= 1

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.sock.close()
            except OSError:
                pass
        self.selector.close()


# ---------------------------------------------------------------- scenarios


def _cpu_reader(pid: int | None) -> Callable[[], float | None]:
    return (lambda: cpu_seconds(pid)) if pid else (lambda: None)


def _measure(gen: LoadGenerator, spec: dict[str, Any], work: Callable[[], bool], deliveries: Callable[[], int],
             started: float | None = None) -> dict[str, Any]:
    """Run ``work`` and report deliveries, rate and the server's CPU per delivery."""
    server_cpu = _cpu_reader(spec.get("server_pid"))
    cpu0, own0 = server_cpu(), own_cpu_seconds()
    t0 = time.perf_counter()
    completed = work()
    t1 = gen.last_delivery if completed and gen.last_delivery else time.perf_counter()
    cpu1, own1 = server_cpu(), own_cpu_seconds()
    delivered = deliveries()
    seconds = max(t1 - t0, 1e-9)
    server_cpu_s = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {
        "completed": completed,
        "delivered": delivered,
        "seconds": seconds,
        "rate": delivered / seconds,
        "server_cpu_s": server_cpu_s,
        "server_cpu_per_delivery_us": (server_cpu_s / delivered * 1e6) if server_cpu_s is not None and delivered else None,
        "generator_cpu_s": own1 - own0,
    }


def windowed(gen: LoadGenerator, sender: Conn, readers: list[Conn], messages: int, window: int) -> Callable[[], float]:
    """The step of a one-sender run: send on while at most ``window`` messages ahead of the slowest reader."""
    gen.expected, gen.unfinished = messages, len(readers)
    slowest = 0

    def step() -> float:
        nonlocal slowest
        if sender.out or sender.sent >= messages:
            return 0.05
        if sender.sent - slowest >= window:
            slowest = min(c.count for c in readers)  # O(R), only when the window is used up
        room = min(slowest + window - sender.sent, messages - sender.sent, BATCH)
        if room > 0:
            gen.send_messages(sender, room)
        return 0.05

    return step


def fanout(gen: LoadGenerator, spec: dict[str, Any], stall: bool = False) -> dict[str, Any]:
    receivers, messages, window = spec["receivers"], spec["messages"], spec["window"]
    specs = [(f"r{i}", "receiver") for i in range(receivers)] + [("sender", "sender")]
    gen.join_all(specs, spec.get("concurrency", 200))
    if stall:
        gen.open("stalled", "receiver", rcvbuf=4096, stall=True)
        gen.run_until(lambda: not gen.joining)
    sender = next(c for c in gen.conns if c.role == "sender")
    readers = [c for c in gen.conns if c.role == "receiver" and not c.stall]
    step = windowed(gen, sender, readers, messages, window)
    result = _measure(gen, spec, lambda: gen.run_until(lambda: gen.unfinished == 0, step),
                      lambda: sum(c.count for c in readers))
    result.update(receivers=receivers, messages=messages, window=window, expected=receivers * messages,
                  sent=sender.sent, stalled_client=stall)
    return result


def many(gen: LoadGenerator, spec: dict[str, Any]) -> dict[str, Any]:
    """R clients all sending at once (in Redis, R publishers and R subscribers)."""
    clients, messages, window = spec["receivers"], spec["messages"], spec["window"]
    if clients < 2:
        raise Failed("the many-senders scenario needs at least 2 clients")
    if gen.dialect.name == "lines":
        specs = [(f"c{i}", "both") for i in range(clients)]
    else:
        specs = [(f"r{i}", "receiver") for i in range(clients)] + [(f"s{i}", "sender") for i in range(clients)]
    gen.join_all(specs, spec.get("concurrency", 200))
    senders = [c for c in gen.conns if c.role in ("both", "sender")]
    readers = [c for c in gen.conns if c.role in ("both", "receiver")]
    # A receiver hears every sender but itself: lines mode does not echo a
    # person's own lines (Redis's publishers are connections of their own).
    heard = clients if gen.dialect.name == "redis" else clients - 1
    gen.expected, gen.unfinished = heard * messages, len(readers)
    # Each sender stays at most `window` messages ahead of what the slowest
    # receiver has had from an average sender.
    each = max(1, window // clients)
    progress = 0

    def step() -> float:
        nonlocal progress
        progress = min(c.count for c in readers) // heard
        for conn in senders:
            if not conn.out and conn.sent < messages:
                room = min(progress + each - conn.sent, messages - conn.sent)
                if room > 0:
                    gen.send_messages(conn, room)
        return 0.05

    result = _measure(gen, spec, lambda: gen.run_until(lambda: gen.unfinished == 0, step),
                      lambda: sum(c.count for c in readers))
    result.update(receivers=clients, senders=clients, messages=messages, window=each,
                  expected=len(readers) * gen.expected)
    return result


def latency(gen: LoadGenerator, spec: dict[str, Any]) -> dict[str, Any]:
    receivers, rate, duration = spec["receivers"], spec["rate"], spec["duration"]
    messages = max(1, round(rate * duration))
    specs = [(f"r{i}", "receiver") for i in range(receivers)] + [("sender", "sender")]
    gen.join_all(specs, spec.get("concurrency", 200))
    sender = next(c for c in gen.conns if c.role == "sender")
    readers = [c for c in gen.conns if c.role == "receiver"]
    # What each recv() brought: (arrival - start, first seq, last seq).  One
    # receiver gets one sender's messages in order, so a recv() holds a run
    # of consecutive ones, which arrived together: their latencies are worked
    # out after the run.  Parsing every message during it (at a million
    # deliveries a second) would make the generator the thing measured.
    arrivals: list[tuple[float, int, int]] = []
    start = time.perf_counter() + 0.05

    def parse(conn: Conn, data: bytes, now: float) -> None:
        if conn.role == "sender":
            return
        data = conn.tail + data
        end = data.rfind(MARK) + 1
        if not end:
            conn.tail = data
            return
        conn.tail = data[end:]
        first_mark = data.find(MARK)
        first, last = int(data[first_mark - 10:first_mark]), int(data[end - 11:end - 1])
        count = data.count(MARK, 0, end)
        if count == last - first + 1:
            arrivals.append((now - start, first, last))
        else:  # not one run (no server here does that): each message on its own
            arrivals.extend((now - start, seq, seq) for seq in map(int, SEQ.findall(data, 0, end)))
        conn.count += count
        if conn.count >= messages and not conn.done_at:
            conn.done_at = now
            gen.last_delivery = now
            gen.unfinished -= 1

    gen.on_message = parse
    gen.expected, gen.unfinished = messages, len(readers)

    def step() -> float:
        # Open loop: send every message whose time has come, late or not.
        # (A closed loop would wait for replies, and a slow server would
        # then be asked for less: "coordinated omission".)
        now = time.perf_counter()
        if sender.sent < messages and now >= start:
            due = min(messages, int((now - start) * rate) + 1)
            if due > sender.sent:
                gen.send_messages(sender, due - sender.sent)
        if sender.sent < messages:
            return max(0.0, start + sender.sent / rate - time.perf_counter())
        return 0.05

    gen.deadline = min(gen.deadline, time.monotonic() + duration + spec.get("grace", 10.0))
    result = _measure(gen, spec, lambda: gen.run_until(lambda: gen.unfinished == 0, step),
                      lambda: sum(c.count for c in readers))
    latencies = sorted(base - seq / rate for base, first, last in arrivals for seq in range(first, last + 1))

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else None

    result.update(receivers=receivers, rate=rate, duration=duration, messages=messages,
                  expected=receivers * messages, lost=receivers * messages - len(latencies),
                  p50_ms=pct(0.50), p99_ms=pct(0.99), max_ms=latencies[-1] * 1000 if latencies else None)
    # Deliveries a second from the first scheduled send to the last delivery:
    # the offered load, if the server kept up with it.
    if result["completed"] and gen.last_delivery > start:
        result["achieved"] = result["delivered"] / (gen.last_delivery - start)
    if spec.get("timeline"):
        # Each message's slowest delivery, in send order: stalls show as spikes.
        worst = [float("nan")] * messages
        for base, first, last in arrivals:
            for seq in range(first, last + 1):
                if not worst[seq] >= base - seq / rate:  # NaN (none yet) compares False
                    worst[seq] = base - seq / rate
        result["timeline_ms"] = [round(w * 1000, 3) for w in worst]
    return result


def scale(gen: LoadGenerator, spec: dict[str, Any]) -> dict[str, Any]:
    """N idle registered connections: how long to register them, and the server's memory."""
    count = spec["connections"]
    pid = spec.get("server_pid")
    rss0 = rss_bytes(pid) if pid else None
    cpu0 = cpu_seconds(pid) if pid else None
    role = "receiver"  # Redis: subscribers; chatlab: registered names
    seconds = gen.join_all([(f"u{i}", role) for i in range(count)], spec.get("concurrency", 200))
    rss1 = rss_bytes(pid) if pid else None
    cpu1 = cpu_seconds(pid) if pid else None
    return {
        "completed": True,
        "connections": count,
        "seconds": seconds,
        "rate": count / seconds,
        "rss_before": rss0,
        "rss_after": rss1,
        "bytes_per_connection": (rss1 - rss0) / count if rss0 is not None and rss1 is not None else None,
        "server_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
    }


SCENARIOS = {
    "fanout": fanout,
    "stalled": lambda gen, spec: fanout(gen, spec, stall=True),
    "many": many,
    "latency": latency,
    "scale": scale,
}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario against one server already listening; return what was measured."""
    raise_fd_limit(spec.get("connections", 0) + spec.get("receivers", 0) * 2 + 100)
    gen = LoadGenerator(spec["host"], spec["port"], spec["dialect"], spec.get("deadline", 60.0))
    try:
        return SCENARIOS[spec["scenario"]](gen, spec)
    except Failed as exc:
        return {"completed": False, "error": str(exc)}
    finally:
        gen.close()


def main() -> None:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(run(spec)), flush=True)


if __name__ == "__main__":
    main()
