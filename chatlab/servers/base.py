"""What every chatlab server shares: its listening sockets and the start/stop life cycle.

The three server models (threads, selectors, asyncio) differ only in how
they wait for many sockets at once.  Everything else -- binding, the
addresses they report, being a context manager that always releases its
ports -- lives here, and the policy around the chat core in ``shell.py``,
so that a notebook can swap one model for another.

A server listens on one or more ports (``Listener``): the main port, with
its banner and its choice of frames or lines by the first byte, and any
others a dialect needs (a web port for browsers, an IRC port).  Each port
names the dialect its connections start in, and may have TLS of its own.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..accounts import Accounts
from ..backplane import Backplane, Unavailable, make_backplane
from ..core import ChatCore
from ..dialects import Dialect, MainPort
from ..history import History
from ..limits import Limits
from ..tls import HANDSHAKE_TIMEOUT

log = logging.getLogger("chatlab.server")

DEFAULT_HOST = "127.0.0.1"  # loopback: only this machine can connect
DEFAULT_PORT = 5050
BACKLOG = 1024  # connections the kernel may hold for us before accept()


class ServerError(Exception):
    """A failure with a message that says what to check next (no traceback needed)."""


def format_address(address: tuple) -> str:
    """``127.0.0.1:5050`` or, for IPv6, ``[::1]:5050`` (brackets keep the port apart)."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_listener(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening.

    ``port=0`` asks the kernel for any free port (ask the socket which one
    with ``getsockname()``): tests and notebooks use it so that they never
    collide with each other or with a server left running.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerError(f"cannot listen on {host!r}: host not found ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Without SO_REUSEADDR, restarting a server right after stopping it
        # fails with "address already in use" for a minute or two: the old
        # connections linger in TIME_WAIT.  (Windows' SO_REUSEADDR means
        # something more dangerous, so there it is left alone.)
        if hasattr(socket, "SO_REUSEADDR") and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and address[0] == "::":
            # "::" means every IPv6 address; clearing IPV6_V6ONLY lets the
            # same socket take IPv4 clients too (as ::ffff:a.b.c.d).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        where = format_address((host, port))
        if exc.errno == errno.EADDRINUSE:
            raise ServerError(
                f"address {where} is already in use: another server (maybe an earlier chatlab) "
                "is listening there. Stop it, or pick another port with --port."
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ServerError(
                f"cannot listen on {where}: {host} is not an address of this machine. "
                "Use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
            ) from None
        if exc.errno == errno.EACCES:
            raise ServerError(
                f"permission denied for {where}: ports below 1024 need administrator rights; "
                "use a port above 1024."
            ) from None
        raise ServerError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


@dataclass(frozen=True)
class Listener:
    """One port a server listens on, and the dialect each of its connections starts in.

    ``dialect`` makes a new connection's dialect from the server's limits
    (a dialect class will do).  ``tls``: that port speaks TLS.
    """

    name: str  # "chat" for the main port; "web", "irc", ...: how the address is looked up
    host: str
    port: int
    dialect: Callable[[Limits], Dialect] = MainPort
    tls: ssl.SSLContext | None = None


class BaseServer:
    """A chat server's life cycle: ``start()``, ``address``, ``stop()``.

    Use it as a context manager so that the ports are released whatever
    happens inside the ``with`` block::

        with ThreadedServer(port=0) as server:
            print("listening on", server.address)
    """

    model = "base"

    def __init__(
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, limits: Limits | None = None, db: str | None = None,
        accounts: Accounts | None = None, tls: ssl.SSLContext | None = None, listeners: tuple[Listener, ...] = (),
        redis: str | None = None, backplane: Backplane | None = None,
    ):
        self.tls = tls  # an ssl.SSLContext (see chatlab/tls.py), or None for plain TCP
        self.tls_handshake_timeout = HANDSHAKE_TIMEOUT
        self.host, self.port = host, port
        self.limits = limits or Limits()
        # The main port first, then any others (``chatlab serve --web-port``, ``--irc-port``).
        self.listeners: tuple[Listener, ...] = (Listener("chat", host, port, MainPort, tls), *listeners)
        # Message history: in memory, or in the SQLite file ``db`` (kept across restarts).
        # Accounts: the names that need a password (``chatlab serve --users FILE``).
        # Shared with other servers: ``redis=URL`` (``chatlab serve --redis``; docs/scaling.md).
        self.backplane = backplane if backplane is not None else make_backplane(redis)
        self.core = ChatCore(self.limits, history=History(db or ":memory:"), accounts=accounts,
                             backplane=self.backplane)
        self.sockets: list[tuple[socket.socket, Listener]] = []  # each listening socket and its port
        self._stopped = threading.Event()

    @property
    def listener(self) -> socket.socket | None:
        """The main port's listening socket (None until started)."""
        return self.sockets[0][0] if self.sockets else None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) of the main port: with port 0, the port the kernel chose."""
        return self.addresses["chat"]

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Every port's (host, port), by listener name."""
        if not self.sockets:
            raise RuntimeError("the server is not started")
        return {listener.name: sock.getsockname()[:2] for sock, listener in self.sockets}

    def start(self) -> "BaseServer":
        try:
            self._connect_backplane()
            for listener in self.listeners:
                self.sockets.append((open_listener(listener.host, listener.port), listener))
        except BaseException:
            for sock, _ in self.sockets:
                sock.close()
            self.sockets.clear()
            raise
        self._start()
        self.backplane.start(self.post)
        for sock, listener in self.sockets:
            log.info("%s server listening on %s%s", self.model, format_address(sock.getsockname()),
                     "" if listener.name == "chat" else f" ({listener.name})")
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Tell every client, close every socket, join every thread: within ``timeout``."""
        if not self.sockets or self._stopped.is_set():
            return
        started = time.monotonic()
        self._stop(timeout)
        self.backplane.stop()  # a shared chat: the others hear that our users left
        for sock, _ in self.sockets:
            sock.close()
        self.core.history.close()
        self._stopped.set()
        log.info("%s server stopped in %.2f s", self.model, time.monotonic() - started)

    def serve_forever(self) -> None:
        """Block until ``stop()`` is called (from another thread) or Ctrl+C."""
        # A short, repeated wait keeps Ctrl+C responsive on every platform.
        while not self._stopped.wait(0.25):
            pass

    def __enter__(self) -> "BaseServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _connect_backplane(self) -> None:
        try:
            self.backplane.connect()
        except Unavailable as exc:
            raise ServerError(str(exc)) from None

    def post(self, event: Callable[[float], list]) -> None:
        """Hand ``event(now)`` to the core's thread (the shell's, in every model)."""
        raise NotImplementedError

    # What each model provides.
    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self, timeout: float) -> None:
        raise NotImplementedError
