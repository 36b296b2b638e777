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

Then ``Guard``, the component of ``ChatCore`` that uses them: who may
connect, rate limits, timeouts and keep-alive pings, and what to do when a
bug bites.  (Passwords have a component of their own: ``logins.py``.)
Like the rest of the core, nothing here reads a clock or touches a socket:
every call is given ``now`` (a monotonic clock: a wall clock stepped by an
hour would fire every timeout at once), and answers with effects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .dialects import Dialect, Message, Reply
from .effects import ClientId, Close, Effect, Send
from .errors import ProtocolError
from .limits import Limits
from .protocol import RATE_LIMITED
from .session import Client, Out, Services

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

    def take(self, now: float, cost: float = 1) -> bool:
        """Spend ``cost`` tokens (one, unless said) if there are that many."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
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
        if limits.max_per_address and self.open.get(host, 0) >= limits.max_per_address:
            return ("too_many_connections",
                    f"{limits.max_per_address} connections from {host} are open already; close one first")
        if self.full:
            return "server_full", f"the server is full ({limits.max_clients} connections); try again later"
        self.enter(host)
        return None

    @property
    def full(self) -> bool:
        return bool(self.limits.max_clients) and self.connections >= self.limits.max_clients

    @property
    def pressed(self) -> bool:
        """Nine tenths full or more: time to hurry those who have not said hello."""
        return bool(self.limits.max_clients) and self.connections * 10 >= self.limits.max_clients * 9

    def enter(self, host: str) -> None:
        """Count a connection from ``host`` as open."""
        self.open[host] = self.open.get(host, 0) + 1
        self.connections += 1

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


# --------------------------------------------------- the core's guard


# Messages that answer the server rather than start something: a pong to its
# keep-alive ping, and the pieces of a file transfer, which the server itself
# paces (one chunk asked for, one sent).  Such a message costs no rate-limit
# token -- but only as an answer the server asked for (``Guard.asked``):
# unasked, or one more than asked, it counts like any other, so that a flood
# of any type is cut off.
RATE_FREE = frozenset({"pong", "file_chunk", "file_get"})
# A bye costs nothing at all: it only ends the connection (refusing it would
# keep a client that wants to go), and there can be only one.
ALWAYS_FREE = frozenset({"bye"})

KEEPALIVE: Message = {"type": "ping", "id": "keepalive"}

#: Seconds between the log's summaries of refused connections.
REFUSAL_SUMMARY = 10.0

#: Seconds a connection has to say hello while the server is nine tenths full
#: (instead of ``register_timeout``): enough for a program, and for a person
#: who types their name at once.
PRESSED_REGISTER_TIMEOUT = 10


@dataclass(eq=False)
class Watch:
    """What the guard notes about one connection."""

    host: str  # where it comes from, for the per-address limits
    last_heard: float  # when bytes last arrived from it
    pinged_at: float  # when the server last sent it a keep-alive ping
    bucket: TokenBucket | None  # its allowance of messages (None: no rate limit)
    strikes: int = 0  # messages refused for rate since its bucket was last full
    owed: int = 0  # answers the server asked it for (a ping, a chunk to upload, a chunk sent) and has not had


class Guard:
    """The chat core's defences against a busy, broken or hostile client.

    * ``admit``: who may connect at all (``Doorman``), refusals logged in summary.
    * ``screen``: each unit a client sent, parsed by its dialect, then let
      through within the sender's rate limit; a flood is refused message by
      message, then cut off.
    * ``keep_time``: on every tick, each connection's clocks -- registration
      timeout, idle timeout, keep-alive pings.
    * ``crashed``: a bug met while serving one client drops that client alone.
    """

    def __init__(self, limits: Limits, chat: Services):
        self.limits = limits
        self.chat = chat
        self.reset()

    def reset(self) -> None:
        """Forget every connection (the server stopped)."""
        self.doorman = Doorman(self.limits)
        self._refused: dict[str, int] = {}  # address -> connections refused since its last summary, unlogged
        self._summed_at: float | None = None  # when refusals were last summed up in the log
        self._relayed: dict[str, TokenBucket] = {}  # address -> its allowance of bytes relayed

    # ------------------------------------------------------------ arrival

    def admit(self, cid: ClientId, peer: str, dialect: Dialect, now: float, out: Out) -> bool:
        """Whether the connection may come in; ``out`` gets the effects that refuse it (or that made room)."""
        host = host_of(peer)
        refusal = self.doorman.admit(host, now)
        if refusal is not None and refusal[0] == "server_full" and self.make_room(host, now, out):
            self.doorman.enter(host)
            return True
        if refusal is None:
            return True
        reason, message = refusal
        # A flood of connections must not become a flood of log lines: the
        # first refusal of an address is logged, the rest are counted and
        # summed up on the next tick.
        if host not in self._refused:
            self._refused[host] = 0
            log.warning("%s refused (%s): %s", peer, reason, message)
        else:
            self._refused[host] += 1
        # The dialect says how a refusal reads before anything else was said
        # (on the main port: one line in place of the banner, protocol.md section 1).
        out += [Send((cid,), dialect.refusal(reason, message)), Close(cid, reason)]
        return False

    def make_room(self, host: str, now: float, out: Out) -> bool:
        """The server is full and someone from ``host`` knocks: close one connection for it, if one is fair to close.

        A full server must still let someone in, or whoever filled it first
        (a script, a crowd of silent connections) keeps everyone else out.
        In this order:

        1. the oldest connection that has not said hello: it has the least
           claim to its place, and a newcomer is as likely to be a person;
        2. else, when one address holds more connections than the newcomer's
           by at least two, that address's newest connection -- so that the
           places are shared out between addresses, never taken by one.

        Otherwise nobody is closed, and the newcomer is refused.
        """
        clients = list(self.chat.clients.values())
        silent = [c for c in clients if c.name is None]
        if silent:
            victim = min(silent, key=lambda c: c.connected_at)
        else:
            counts = self.doorman.open
            heaviest = max(counts, key=lambda h: counts[h], default=None)
            if heaviest is None or counts[heaviest] < counts.get(host, 0) + 2:
                return False
            victim = max((c for c in clients if c.watch.host == heaviest), key=lambda c: c.connected_at)
        log.warning("%s closed to make room for a connection from %s (the server is full)", victim, host)
        self.chat.close(victim, "server_full", "the server is full: your place was given to a newcomer "
                        f"({'you had not said hello' if victim.name is None else 'your address holds the most places'})",
                        now, out)
        return True

    def watch(self, peer: str, now: float) -> Watch:
        limits = self.limits
        bucket = TokenBucket(limits.rate_limit, limits.rate_burst, now) if limits.rate_limit else None
        return Watch(host_of(peer), last_heard=now, pinged_at=now, bucket=bucket)

    def forget(self, client: Client) -> None:
        """The connection is closed: it no longer counts against its address."""
        self.doorman.leave(client.watch.host)

    # ----------------------------------------------------------- messages

    def screen(self, client: Client, unit: bytes, now: float, out: Out) -> Message | Reply | None:
        """One unit as a message to handle (or the dialect's own Reply), or None if it is to be dropped."""
        try:
            msg = client.dialect.parse(unit)
        except ProtocolError:
            if self.within_rate(client, now, out):
                raise  # answered with its error, like any other message
            return None
        if isinstance(msg, dict) and msg["type"] in ALWAYS_FREE:
            return msg
        if isinstance(msg, dict) and msg["type"] in RATE_FREE and client.watch.owed > 0:
            client.watch.owed -= 1  # the answer the server asked for: free
            return msg
        return msg if self.within_rate(client, now, out) else None

    def asked(self, client: Client) -> None:
        """The server asked ``client`` for one answer (a pong, a chunk): that answer will cost no token."""
        client.watch.owed += 1

    def within_relay(self, client: Client, size: int, now: float, out: Out) -> bool:
        """Spend ``size`` bytes of the sender's address's allowance for relaying text; refuse when it is spent.

        Refused like a message over the rate (``rate_limited``, a strike
        towards ``flooding``): the message reaches nobody.
        """
        limits = self.limits
        if not limits.relay_rate:
            return True
        host = client.watch.host
        bucket = self._relayed.get(host)
        if bucket is None:
            bucket = self._relayed[host] = TokenBucket(limits.relay_rate, limits.relay_burst, now)
        if bucket.take(now, size):
            return True
        return self._refuse(client, f"slow down: connections from {host} may send {limits.relay_rate:g} bytes "
                                    f"of text a second, in bursts of {limits.relay_burst}; that one was dropped",
                            now, out)

    def within_rate(self, client: Client, now: float, out: Out) -> bool:
        """Spend a token for one message; refuse it, or end a flood, when there is none."""
        watch, limits = client.watch, self.limits
        if watch.bucket is None:
            return True
        if watch.bucket.full(now):
            watch.strikes = 0  # quiet long enough to refill: any earlier burst is forgiven
        if watch.bucket.take(now):
            return True
        return self._refuse(client, f"slow down: at most {limits.rate_limit:g} messages a second, in bursts of "
                                    f"{limits.rate_burst}; that one was dropped", now, out)

    def _refuse(self, client: Client, why: str, now: float, out: Out) -> bool:
        """One message refused for rate: answered, or, at the flood limit, the client cut off."""
        watch, limits = client.watch, self.limits
        watch.strikes += 1
        if limits.flood_limit and watch.strikes >= limits.flood_limit:
            log.warning("%s: flooding: %d messages over the rate limit; disconnecting", client, watch.strikes)
            self.chat.close(client, "flooding",
                            f"disconnected for flooding: {watch.strikes} messages over the limit", now, out)
        else:
            self.chat.error(client, RATE_LIMITED, why, out)
        return False

    def on_pong(self, client: Client, msg: Message, now: float, out: Out) -> None:
        """A client answered a keep-alive ping.  Hearing it was the point: nothing else to do."""

    # --------------------------------------------------------------- time

    def keep_time(self, now: float, out: Out) -> None:
        """Every tick: each connection's clocks, and the summary of refused connections."""
        limits = self.limits
        pressed = self.doorman.pressed  # as the tick starts: closing the first must not spare the rest
        if limits.register_timeout or limits.idle_timeout or limits.ping_interval:
            for client in list(self.chat.clients.values()):
                try:
                    self._check_clocks(client, now, out, pressed)
                except Exception:
                    out += self.crashed(client, now)
        self.doorman.tidy(now)
        for host in [h for h, bucket in self._relayed.items() if bucket.full(now)]:
            del self._relayed[host]  # no different from a stranger now: the table stays small
        # Refusals are summed up every REFUSAL_SUMMARY seconds: a flood that
        # lasts writes two lines per address per summary, however fast it knocks.
        if self._summed_at is None:
            self._summed_at = now
        if now - self._summed_at >= REFUSAL_SUMMARY:
            for host, more in self._refused.items():
                if more:
                    log.warning("refused %d more connections from %s in %.0f s", more, host, now - self._summed_at)
            self._refused.clear()
            self._summed_at = now

    def _check_clocks(self, client: Client, now: float, out: Out, pressed: bool = False) -> None:
        limits, watch = self.limits, client.watch
        quiet = now - watch.last_heard
        # A dialect may want a shorter deadline of its own (an HTTP request
        # must arrive whole within seconds): the shorter of the two applies.
        patience = limits.register_timeout
        if patience and client.dialect.register_timeout is not None:
            patience = min(patience, client.dialect.register_timeout)
        if patience and pressed:
            patience = min(patience, PRESSED_REGISTER_TIMEOUT)  # a nearly full server hurries the silent
        if client.name is None and patience and now - client.connected_at >= patience:
            self.chat.close(client, "register_timeout", f"no name given within {patience:g} seconds; goodbye",
                            now, out)
        elif limits.idle_timeout and quiet >= limits.idle_timeout:
            self.chat.close(client, "idle", f"nothing heard from you for {limits.idle_timeout:g} seconds; goodbye",
                            now, out)
        elif (limits.ping_interval and client.dialect.keepalive and quiet >= limits.ping_interval
              and now - watch.pinged_at >= limits.ping_interval):
            # A quiet connection may be a dead one (a laptop closed, a cable
            # pulled: no FIN ever comes).  A ping makes the client answer if it
            # is there; if it is not, the silence runs on into the idle timeout.
            watch.pinged_at = now
            self.asked(client)
            self.chat.send(client, KEEPALIVE, out)

    # --------------------------------------------------------------- bugs

    def crashed(self, client: Client, now: float) -> list[Effect]:
        """A bug met while serving ``client``: log it, drop that client alone, carry on.

        The effects of the message being handled are thrown away: it may
        have stopped half-way, and half a broadcast is worse than none.
        """
        log.exception("internal error while serving %s; dropping that client alone", client)
        out: Out = []
        try:
            self.chat.close(client, "server_error", "the server failed while handling your message "
                            "(the details are in its log); sorry", now, out)
            return out
        except Exception:
            log.exception("could not close %s cleanly either; forgetting it", client)
            self.chat.clients.pop(client.id, None)
            return [Close(client.id, "server_error")]


__all__ = ["TokenBucket", "Doorman", "Guard", "Watch", "host_of", "KEEPALIVE", "RATE_FREE"]
