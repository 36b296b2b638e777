"""Logins: a password for a name that has an account, checked without stopping the chat.

Checking a password is slow on purpose: the accounts file holds scrypt
hashes (accounts.py), which cost ~40 ms of CPU each so that a stolen file
is slow to crack.  A server that checked one on its event loop would stop
every other conversation for those 40 ms -- a crowd of guessers would stop
the room.  So the check is *work*: the core asks the server's shell to run
it elsewhere (a worker thread), and gets the verdict back as an event
(``effects.Work``).  Meanwhile that client's further messages wait, in
order, and everyone else chats on.

Guessing is slowed down too: a wrong password is answered only after a
delay (``auth_delay``), and while a check runs for an address or its wrong
answer is pending, another password from there is not checked at all -- it
is answered as wrong, after the same delay.  A guess whose connection hangs up while it is checked
still holds its address for the delay: so one address gets at most one
guess per delay, however it behaves.  And in all, one check runs at a time
(the rest wait their turn, in order): a crowd of guessers from many
addresses costs the server at most one core, never the chat's.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from .accounts import Accounts
from .effects import ClientId, Effect, Work
from .limits import Limits
from .protocol import AUTH_FAILED, AUTH_REQUIRED, look_alikes
from .session import Client, Out, Services

log = logging.getLogger("chatlab.core")

#: The verdict of ``Logins.check``: a name may be taken (True), the client was
#: answered already (False), or a slow check is to be run (the callable).
Verdict = bool | Callable[[], bool]


class Logins:
    """Passwords for the names that have accounts (None: nobody needs one)."""

    def __init__(self, accounts: Accounts | None, limits: Limits, chat: Services):
        self.accounts, self.limits, self.chat = accounts, limits, chat
        self._answers_due: deque[tuple[float, ClientId]] = deque()  # (when, client id): wrong passwords to answer
        self._checking: set[str] = set()  # addresses with a check running or waiting its turn
        # Address -> until when nothing from there is checked: the delay after a
        # wrong verdict, or after a check whose guesser hung up.  Only a check's
        # verdict holds an address: an answer to a guess never looked at does not
        # release it early (one time per address, not one flag shared by many).
        self._held: dict[str, float] = {}
        self._failures: dict[ClientId, int] = {}  # wrong passwords on each connection
        self._running = False  # one check at a time, in all
        self._account_looks: dict[str, tuple[str, str]] | None = None  # look-alike form -> (key, name) of an account
        self._waiting: deque[tuple[Client, Work]] = deque()  # checks waiting their turn, in order

    def look_alike_account(self, name: str, key: str) -> str | None:
        """The name of an account that ``name`` could pass for (not its own), if any."""
        if self.accounts is None or not self.accounts.entries:
            return None
        if self._account_looks is None:  # worked out once: the accounts are read at start
            self._account_looks = {form: (k, shown) for k, (shown, _) in self.accounts.entries.items()
                                   for form in look_alikes(shown)}
        for form in look_alikes(name):
            owner = self._account_looks.get(form)
            if owner is not None and owner[0] != key:
                return owner[1]
        return None

    def check(self, client: Client, name: str, key: str, password: str | None, now: float, out: Out) -> Verdict:
        """Whether ``name`` may be taken now; or the slow check to run for it."""
        accounts = self.accounts
        if accounts is None or not accounts.needs_password(key):
            return True
        if password is None:
            # "name" tells a lines client which name the next line is the password for.
            self.chat.send(client, {"type": "error", "code": AUTH_REQUIRED, "name": name,
                                    "message": f'{name} needs a password: send it in the "password" field of hello'},
                           out)
            return False
        host = client.watch.host
        if host in self._checking or self._held.get(host, now) > now:
            # Another password from this address is being checked, or was
            # wrong and not yet answered: this one is not even looked at.
            self._wrong(client, name, host, now, out)
            return False
        self._checking.add(host)
        return lambda: accounts.verify(key, password)

    def checked(self, client: Client, name: str, right: object, now: float, out: Out) -> bool:
        """The verdict of a check run by ``check``: True if the name may be taken."""
        host = client.watch.host
        self._checking.discard(host)
        if right is True:
            log.info("%s gave the right password for %s", client.peer, name)
            return True
        if isinstance(right, BaseException):
            log.error("checking the password of %s failed: %r; answered as wrong", name, right)
        self._hold(host, now)  # no other check from there until this one is answered
        self._wrong(client, name, host, now, out)
        return False

    def _hold(self, host: str, now: float) -> None:
        if self.limits.auth_delay:
            self._held[host] = max(self._held.get(host, now), now + self.limits.auth_delay)

    def _wrong(self, client: Client, name: str, host: str, now: float, out: Out) -> None:
        failures = self._failures[client.id] = self._failures.get(client.id, 0) + 1
        log.warning("%s: wrong password for %s (try %d)", client.peer, name, failures)
        if self.limits.auth_delay:
            self._answers_due.append((now + self.limits.auth_delay, client.id))
        else:
            self._answer_wrong(client, now, out)

    def keep_time(self, now: float, out: Out) -> None:
        """Every tick: the wrong-password answers whose delay is up, and addresses held no longer."""
        for host in [h for h, until in self._held.items() if now >= until]:
            del self._held[host]
        while self._answers_due and self._answers_due[0][0] <= now:
            _, cid = self._answers_due.popleft()
            client = self.chat.clients.get(cid)
            if client is not None:
                self._answer_wrong(client, now, out)

    def _answer_wrong(self, client: Client, now: float, out: Out) -> None:
        # One answer for an unknown name and for a wrong password: which of
        # the two it was would tell a guesser which names are worth attacking.
        self.chat.error(client, AUTH_FAILED, "wrong name or password", out)
        failures = self._failures.get(client.id, 0)
        if self.limits.auth_tries and failures >= self.limits.auth_tries:
            self.chat.close(client, "auth_failed", f"{failures} wrong passwords; goodbye", now, out)

    def cancel(self, client: Client, now: float) -> None:
        """A check ran for a client that has left meanwhile: nothing to answer.

        Its address still waits out the delay, as for a wrong answer: else a
        guesser who hangs up mid-check would get a check per connection.
        """
        host = client.watch.host
        self._checking.discard(host)
        self._hold(host, now)

    # -------------------------------------------------- one check at a time

    def run(self, client: Client, work: Work, out: list[Effect]) -> None:
        """Start ``work`` (a check for ``client``) now if no other check runs, else when its turn comes."""
        then = work.then

        def done(result: object, now: float) -> list[Effect]:
            return then(result, now) + self._next()

        work = Work(work.job, done, work.what)
        if self._running:
            self._waiting.append((client, work))
        else:
            self._running = True
            out.append(work)

    def _next(self) -> list[Effect]:
        """A check is done: the next one waiting, if any."""
        if self._waiting:
            return [self._waiting.popleft()[1]]
        self._running = False
        return []

    def forget(self, client: Client) -> None:
        self._failures.pop(client.id, None)
        if any(waiting is client for waiting, _ in self._waiting):
            # It left before its turn: the check never runs, its address is free.
            self._waiting = deque((c, w) for c, w in self._waiting if c is not client)
            self._checking.discard(client.watch.host)

    def reset(self) -> None:
        self._answers_due.clear()
        self._checking.clear()
        self._held.clear()
        self._failures.clear()
        self._waiting.clear()
        self._running = False
