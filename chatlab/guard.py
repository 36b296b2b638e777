"""The chat core's defences against a busy, broken or hostile client, sans-IO.

A classroom is full of curious people who will try things: open a thousand
connections, paste a novel, send a frame that claims to be 4 GB, connect
and say nothing, guess a friend's password.  Each defence below turns one
of those into a clear answer or a closed connection *for that client*, and
nothing at all for everyone else.  ``docs/security.md`` lists them all.

Two small tools come first:

* ``TokenBucket``, the classic rate limiter (routers police traffic with it,
  and so do most web APIs).  A bucket holds at most ``burst`` tokens and
  gains ``rate`` tokens a second; each message costs one.  So a client may
  send a burst -- a pasted paragraph, a reconnect -- and then keeps to the
  steady rate.  The bucket needs no timer: it works out how much it has
  refilled from the time it is given, whenever it is asked.

* ``Doorman``, who decides at ``accept()`` whether a new connection may come
  in: not past the server's capacity, not too many from one address, and
  not too many new ones a second from one address (a connection flood).
  A refused connection costs the server one short write and a close.

Then ``Defences``, the part of ``ChatCore`` that uses them: rate limits,
timeouts and keep-alive pings, passwords, and what to do when a bug bites.
Like the rest of the core, nothing here reads a clock or touches a socket:
every call is given ``now``, and answers with effects.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .limits import Limits
from .protocol import AUTH_FAILED, AUTH_REQUIRED, FRAMES, LINES, RATE_LIMITED, ProtocolError, refusal_line

if TYPE_CHECKING:
    from .accounts import Accounts

log = logging.getLogger("chatlab.core")


class TokenBucket:
    """``burst`` tokens at most, ``rate`` more each second; ``take()`` spends one.

    >>> bucket = TokenBucket(rate=1, burst=2, now=0.0)
    >>> [bucket.take(0.0), bucket.take(0.0), bucket.take(0.0), bucket.take(1.0)]
    [True, True, False, True]
    """

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = rate, burst
        self.tokens = burst  # a newcomer starts with a full bucket
        self.stamp = now

    def _refill(self, now: float) -> None:
        # Only time that moves forward counts: a clock stepped backwards
        # must not mint tokens.
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled completely (the client has been quiet a while)."""
        self._refill(now)
        return self.tokens >= self.burst


def host_of(peer: str) -> str:
    """The address part of ``HOST:PORT`` or ``[IPv6]:PORT``: what "one address" means."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return host[1:-1] if host.startswith("[") else host


class Doorman:
    """Admission at ``accept()``: capacity, connections per address, new connections per second."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.open: dict[str, int] = {}  # address -> connections open from it
        self.arrivals: dict[str, TokenBucket] = {}  # address -> its allowance of new connections
        self.connections = 0  # admitted and still open, from everywhere

    def admit(self, host: str, now: float) -> tuple[str, str] | None:
        """Let a connection from ``host`` in (None), or say why not: ``(reason, message)``."""
        limits = self.limits
        if limits.accept_rate:
            # Every attempt costs a token, refused or not: a flood that keeps
            # hammering stays refused instead of getting in on each refill.
            bucket = self.arrivals.get(host)
            if bucket is None:
                bucket = self.arrivals[host] = TokenBucket(limits.accept_rate, limits.accept_burst, now)
            if not bucket.take(now):
                return ("connecting_too_fast",
                        f"too many new connections from {host}: at most {limits.accept_rate:g} a second "
                        f"(bursts of {limits.accept_burst}); wait a moment and try again")
        if limits.max_clients and self.connections >= limits.max_clients:
            return "server_full", f"the server is full ({limits.max_clients} connections); try again later"
        if limits.max_per_address and self.open.get(host, 0) >= limits.max_per_address:
            return ("too_many_connections",
                    f"{limits.max_per_address} connections from {host} are open already; close one first")
        self.open[host] = self.open.get(host, 0) + 1
        self.connections += 1
        return None

    def leave(self, host: str) -> None:
        """A connection that was admitted has closed."""
        if host not in self.open:
            return
        self.connections -= 1
        left = self.open[host] - 1
        if left > 0:
            self.open[host] = left
        else:
            self.open.pop(host, None)

    def tidy(self, now: float) -> None:
        """Forget addresses whose bucket is full again: they are no different from strangers.

        This keeps the table as small as the set of addresses seen recently,
        however many come and go over a long run.
        """
        for host in [h for h, bucket in self.arrivals.items() if bucket.full(now)]:
            del self.arrivals[host]


# ------------------------------------------------- the core's defences


# Messages that answer the server rather than start something: a pong to its
# keep-alive ping, and the pieces of a file transfer, which the server itself
# paces (one chunk asked for, one sent).  They cost no rate-limit token.
RATE_FREE = frozenset({"pong", "file_chunk", "file_get"})

KEEPALIVE = {"type": "ping", "id": "keepalive"}


@dataclass(eq=False)
class Watch:
    """What the defences note about one connection."""

    host: str  # where it comes from, for the per-address limits
    last_heard: float  # when bytes last arrived from it
    pinged_at: float  # when the server last sent it a keep-alive ping
    bucket: TokenBucket | None  # its allowance of messages (None: no rate limit)
    strikes: int = 0  # messages refused for rate since its bucket was last full
    login: str | None = None  # lines mode: the name whose password the next line is
    auth_failures: int = 0  # wrong passwords on this connection


class Defences:
    """The chat core's defences, as a mixin of ``ChatCore`` (``core.py`` calls them by name).

    * ``_admit``: who may connect at all (``Doorman``).
    * ``_screen``: each frame or line, parsed, then let through within the
      sender's rate limit; a flood is refused message by message, then cut off.
    * ``_keep_time``: on every tick, the clocks -- registration timeout, idle
      timeout, keep-alive pings, and wrong-password answers whose delay is up.
    * ``_authenticate``: a password for a name that has an account.
    * ``_crashed``: a bug met while serving one client drops that client alone.
    """

    # What ChatCore provides (declared for readers and type checkers).
    limits: Limits
    clients: dict
    accounts: Accounts | None

    def _init_defences(self) -> None:
        self.doorman = Doorman(self.limits)
        self._answers_due: deque[tuple[float, Any, str]] = deque()  # (when, client id, host): wrong passwords
        self._checking: set[str] = set()  # addresses with a wrong-password answer pending
        self._refused: dict[str, int] = {}  # address -> connections refused since the last tick, unlogged

    # ------------------------------------------------------------ arrival

    def _admit(self, cid: Any, peer: str, now: float) -> list | None:
        """None to let the connection in; else the effects that refuse it."""
        from .core import Close, Send

        refusal = self.doorman.admit(host_of(peer), now)
        if refusal is None:
            return None
        reason, message = refusal
        # A flood of connections must not become a flood of log lines: the
        # first refusal of an address is logged, the rest are counted and
        # summed up on the next tick.
        host = host_of(peer)
        if host not in self._refused:
            self._refused[host] = 0
            log.warning("%s refused (%s): %s", peer, reason, message)
        else:
            self._refused[host] += 1
        # The mode is not known yet, so the refusal takes the banner's place:
        # one line that a person and a program can both read (protocol.md, section 1).
        return [Send((cid,), refusal_line(reason, message)), Close(cid, reason)]

    def _watch(self, peer: str, now: float) -> Watch:
        limits = self.limits
        bucket = TokenBucket(limits.rate_limit, limits.rate_burst, now) if limits.rate_limit else None
        return Watch(host_of(peer), last_heard=now, pinged_at=now, bucket=bucket)

    def _forget(self, client: Any) -> None:
        """The connection is closed: it no longer counts against its address."""
        self.doorman.leave(client.watch.host)

    # ----------------------------------------------------------- messages

    def _screen(self, client: Any, item: bytes, now: float, out: list) -> dict[str, Any] | None:
        """One frame or line as a message to handle, or None if it is to be dropped."""
        try:
            if client.watch.login is not None:
                msg = self._password_line(client, item)
            else:
                msg = client.wire.parse(item, registered=client.name is not None)
        except ProtocolError:
            if self._within_rate(client, now, out):
                raise  # answered with its error, like any other message
            return None
        if msg is not None and msg["type"] in RATE_FREE:
            return msg
        return msg if self._within_rate(client, now, out) else None

    def _within_rate(self, client: Any, now: float, out: list) -> bool:
        """Spend a token for one message; refuse it, or end a flood, when there is none."""
        watch, limits = client.watch, self.limits
        if watch.bucket is None:
            return True
        if watch.bucket.full(now):
            watch.strikes = 0  # quiet long enough to refill: any earlier burst is forgiven
        if watch.bucket.take(now):
            return True
        watch.strikes += 1
        if limits.flood_limit and watch.strikes >= limits.flood_limit:
            log.warning("%s: flooding: %d messages over the rate limit; disconnecting", client, watch.strikes)
            self._close(client, "flooding",
                        f"disconnected for flooding: {watch.strikes} messages over the limit of "
                        f"{limits.rate_limit:g} a second", now, out)
        else:
            self._reply_error(client, RATE_LIMITED,
                              f"slow down: at most {limits.rate_limit:g} messages a second, in bursts of "
                              f"{limits.rate_burst}; that one was dropped", out)
        return False

    def _on_pong(self, client: Any, msg: dict[str, Any], now: float, out: list) -> None:
        """A client answered a keep-alive ping.  Hearing it was the point: nothing else to do."""

    # --------------------------------------------------------------- time

    def _keep_time(self, now: float) -> list:
        """Every tick: the answers whose delay is up, then each connection's clocks."""
        out: list = []
        while self._answers_due and self._answers_due[0][0] <= now:
            _, cid, host = self._answers_due.popleft()
            self._checking.discard(host)
            client = self.clients.get(cid)
            if client is not None:
                self._answer_wrong_password(client, now, out)
        limits = self.limits
        if limits.register_timeout or limits.idle_timeout or limits.ping_interval:
            for client in list(self.clients.values()):
                try:
                    self._check_clocks(client, now, out)
                except Exception:
                    out += self._crashed(client, now)
        self.doorman.tidy(now)
        for host, more in self._refused.items():
            if more:
                log.warning("refused %d more connections from %s", more, host)
        self._refused.clear()
        return out

    def _check_clocks(self, client: Any, now: float, out: list) -> None:
        limits, watch = self.limits, client.watch
        quiet = now - watch.last_heard
        if client.name is None and limits.register_timeout and now - client.connected_at >= limits.register_timeout:
            self._close(client, "register_timeout",
                        f"no name given within {limits.register_timeout:g} seconds; goodbye", now, out)
        elif limits.idle_timeout and quiet >= limits.idle_timeout:
            self._close(client, "idle", f"nothing heard from you for {limits.idle_timeout:g} seconds; goodbye",
                        now, out)
        elif (limits.ping_interval and client.wire.mode == FRAMES and quiet >= limits.ping_interval
              and now - watch.pinged_at >= limits.ping_interval):
            # A quiet connection may be a dead one (a laptop closed, a cable
            # pulled: no FIN ever comes).  A ping makes the client answer if it
            # is there; if it is not, the silence runs on into the idle timeout.
            watch.pinged_at = now
            self._send(client, KEEPALIVE, out)

    # ----------------------------------------------------------- accounts

    def _authenticate(self, client: Any, name: str, key: str, msg: dict[str, Any], now: float, out: list) -> bool:
        """True if ``name`` may be taken: it needs no password, or the right one came."""
        if self.accounts is None or not self.accounts.needs_password(key):
            return True
        password = msg.get("password")
        if password is None:
            if client.wire.mode == LINES:
                client.watch.login = name  # the next line is the password
                message = (f"type the password for {name} on the next line (it shows as you type; "
                           "'chatlab chat' hides it)")
            else:
                message = f'{name} needs a password: send it in the "password" field of hello'
            self._reply_error(client, AUTH_REQUIRED, message, out)
            return False
        host = client.watch.host
        # One password check at a time per address: while a wrong answer is
        # pending, another attempt from there is refused unchecked.  So each
        # address gets at most one guess per auth_delay, and a crowd of
        # connections cannot make the server spend all its time hashing.
        right = host not in self._checking and self.accounts.verify(key, password)
        if right:
            log.info("%s gave the right password for %s", client.peer, name)
            return True
        client.watch.auth_failures += 1
        log.warning("%s: wrong password for %s (try %d)", client.peer, name, client.watch.auth_failures)
        if self.limits.auth_delay:
            self._checking.add(host)
            self._answers_due.append((now + self.limits.auth_delay, client.id, host))
        else:
            self._answer_wrong_password(client, now, out)
        return False

    def _answer_wrong_password(self, client: Any, now: float, out: list) -> None:
        # One answer for an unknown name and for a wrong password: which of
        # the two it was would tell a guesser which names are worth attacking.
        self._reply_error(client, AUTH_FAILED, "wrong name or password", out)
        if self.limits.auth_tries and client.watch.auth_failures >= self.limits.auth_tries:
            self._close(client, "auth_failed", f"{client.watch.auth_failures} wrong passwords; goodbye", now, out)

    def _password_line(self, client: Any, item: bytes) -> dict[str, Any]:
        """Lines mode: the line after a name that has an account is its password."""
        name, client.watch.login = client.watch.login, None
        try:
            password = item.decode("utf-8")
        except UnicodeDecodeError:
            password = ""  # cannot be right; answered like any wrong password
        return {"type": "hello", "name": name, "password": password}

    # --------------------------------------------------------------- bugs

    def _crashed(self, client: Any, now: float) -> list:
        """A bug met while serving ``client``: log it, drop that client alone, carry on.

        The effects of the message being handled are thrown away: it may
        have stopped half-way, and half a broadcast is worse than none.
        """
        from .core import Close

        log.exception("internal error while serving %s; dropping that client alone", client)
        out: list = []
        try:
            self._close(client, "server_error", "the server failed while handling your message "
                        "(the details are in its log); sorry", now, out)
            return out
        except Exception:
            log.exception("could not close %s cleanly either; forgetting it", client)
            self.clients.pop(client.id, None)
            return [Close(client.id, "server_error")]
