"""A host of the lab's network, and running things on it: servers, clients, bots, commands.

There are two ways to run something "on" a host, and the lab uses both:

* **In this process** (``host.call``, ``start_server``, ``bot``,
  ``connect``): a socket belongs to the namespace it was created in, so a
  function run by a thread that entered the host's namespace
  (``netns.call_in``) makes sockets that live on that host -- and the
  notebook then uses them like any other.  The lab's instruments (servers,
  bots, the recorder, ``tcp_info``) work unchanged, their results are
  Python objects in the notebook, and nothing needs starting up.
* **In a child process** (``host.popen``, ``run``, ``serve``): ``ip netns
  exec NAMESPACE COMMAND``, the very command you would type in a terminal.
  For programs that are not Python functions (``chatlab serve``,
  ``chatlab chat``, ``nft``, ``tshark``), and for a server whose process
  should stand alone.  (Entering the namespace in the child between fork
  and exec would save starting ``ip``, but running Python code there is
  unsafe in a process with threads, as a Jupyter kernel is.)

Everything started here is stopped when the network stops, newest first.
"""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

from ..lab.live import LiveServer
from ..lab.measure import tcp_info
from ..lab.registry import TIMEOUT, Instrument, clock
from . import netns

if TYPE_CHECKING:
    from .topology import Network

#: Output lines a child process keeps.
OUTPUT_LINES = 2000
#: Seconds a child process has to stop after SIGTERM before it is killed.
STOP_GRACE = 5.0


class Process(Instrument):
    """A command running on a host (``ip netns exec``), its output kept line by line (stdout and stderr)."""

    def __init__(self, namespace: str, command: list[str], **popen: Any):
        self.command = command
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(["ip", "netns", "exec", namespace, *command], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
        self.pid = self.proc.pid  # ip netns exec becomes the command (exec), so this is the command's PID
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"chatlab-netns-output-{self.pid}")
        self._reader.start()
        self._register()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            if len(self.lines) < OUTPUT_LINES:
                self.lines.append(line)
            self._new.put(line)
        self._new.put(None)  # the end of the output: the process closed it, or ended

    def wait_for_line(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """Wait until the process prints a line matching ``pattern`` (a regular expression); return the match."""
        deadline = clock() + timeout
        while True:
            left = deadline - clock()
            try:
                line = self._new.get(timeout=max(left, 0))
            except queue.Empty:
                line = ""
                left = 0
            if line is None or left <= 0:
                said = "\n".join(self.lines[-10:]) or "(nothing)"
                why = "ended" if line is None else f"printed no line matching {pattern!r} within {timeout} s"
                raise RuntimeError(f"{' '.join(self.command)} {why}; its last lines:\n{said}")
            match = re.search(pattern, line)
            if match:
                return match

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(TIMEOUT)
        return code

    def stop(self) -> None:
        """SIGTERM (a chatlab server stops gracefully on it), then SIGKILL if it has not ended in time."""
        self._unregister()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(TIMEOUT)
        self.proc.stdout.close()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exit {self.proc.returncode}"
        return f"<Process {' '.join(self.command)} pid {self.pid} {state}>"


class ServerProcess(Process):
    """``chatlab serve`` running on a host; ``.address`` is where it listens, ``.port`` the port it got."""

    def __init__(self, namespace: str, options: list[str], timeout: float):
        super().__init__(namespace, [sys.executable, "-m", "chatlab", "serve", *options])
        try:
            found = self.wait_for_line(r"listening on \[?([^\]]+?)\]?:(\d+)$", timeout)
        except BaseException:
            self.stop()
            raise
        self.address = (found.group(1), int(found.group(2)))
        self.port = self.address[1]


class TcpInfoSampler(Instrument):
    """Reads ``tcp_info`` of a socket every ``interval`` seconds, on a thread; ``.rows`` has one dict per reading.

    Each row is the kernel's ``tcp_info`` (``rtt_us``, ``snd_cwnd``,
    ``total_retrans``, ``unacked``, ...) plus ``t``, seconds since the
    sampler started.  Works on a socket of any host: a socket carries its
    namespace with it.
    """

    def __init__(self, sock: socket.socket, interval: float = 0.01, limit: int = 100_000):
        self.sock, self.interval, self.limit = sock, interval, limit
        self.rows: list[dict[str, float]] = []
        self.t0 = clock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="chatlab-tcpinfo")
        self._thread.start()
        self._register()

    def _loop(self) -> None:
        while not self._done.is_set() and len(self.rows) < self.limit:
            try:
                info = tcp_info(self.sock)
            except OSError:  # the socket was closed
                return
            if info is None:
                return
            self.rows.append({"t": clock() - self.t0, **info})
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._unregister()
        self._done.set()
        self._thread.join(TIMEOUT)


class Host:
    """One host: a network namespace with ``eth0``, an IPv4 ``address`` and an IPv6 ``address6``."""

    def __init__(self, network: "Network", name: str, namespace: str, address: str, address6: str,
                 started: list[Any]):
        self.network, self.name, self.namespace = network, name, namespace
        self.address, self.address6 = address, address6
        self._started = started  # the network's list: what it stops at the end

    @property
    def addresses(self) -> list[str]:
        return [self.address, self.address6]

    def _keep(self, thing: Any) -> Any:
        self._started.append(thing)
        return thing

    # ------------------------------------------------------------ in this process

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` run on this host: the sockets it creates live here.

        Anything it starts that the network should stop at the end, pass
        to the host's ``keep()``; ``start_server`` and ``bot`` do that already.
        """
        return netns.call_in(self.namespace, fn, *args, **kwargs)

    def keep(self, thing: Any) -> Any:
        """Have the network stop ``thing`` (anything with ``stop()``) when it stops; returns ``thing``."""
        return self._keep(thing)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket on this host (not yet bound or connected)."""
        return self.call(socket.socket, family, kind)

    def connect(self, address: tuple[str, int], timeout: float = TIMEOUT) -> socket.socket:
        """A TCP connection from this host to ``address`` (``socket.create_connection``, run here)."""
        return self.call(socket.create_connection, address, timeout)

    def start_server(self, server: Any = "threads", host: str = "0.0.0.0", port: int = 0, limits: Any = None,
                     log: bool = True) -> LiveServer:
        """A chatlab server on this host, in this process (``lab.start_server``, run here).

        It listens on every address of the host (``0.0.0.0``) unless told
        ``host="127.0.0.1"``, which only the host itself can reach.
        """
        return self._keep(self.call(LiveServer, server, host, port, limits, log))

    def bot(self, address: tuple[str, int], name: str, recorder: Any = None, *, join: bool = True,
            **options: Any) -> Any:
        """A ``lab.Bot`` connected from this host (and registered as ``name`` when ``join``).

        ``recorder`` and the other options are ``lab.Bot``'s (``mode="lines"``, ...).
        """
        from ..lab.bots import Bot

        def make() -> Bot:
            bot = Bot(address, name, recorder, **options)
            try:
                return bot.join() if join else bot.connect()
            except BaseException:
                bot.stop()
                raise
        return self._keep(self.call(make))

    # ------------------------------------------------------------ child processes

    def popen(self, command: list[str], **popen: Any) -> Process:
        """Start a command on this host (``ip netns exec``); its output is kept in ``.lines``."""
        return self._keep(Process(self.namespace, command, **popen))

    def run(self, command: list[str], timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command on this host to its end; return what it printed (``.stdout``, ``.stderr``)."""
        done = subprocess.run(["ip", "netns", "exec", self.namespace, *command], capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} on {self.name} failed: {(done.stderr or done.stdout).strip()}")
        return done

    def serve(self, *options: str, host: str = "0.0.0.0", port: int = 0, timeout: float = 20.0) -> ServerProcess:
        """``chatlab serve --host HOST --port PORT OPTIONS`` on this host, in a process of its own.

        Returns once it listens; ``.address`` is where, ``.lines`` what it printed.
        """
        return self._keep(ServerProcess(self.namespace, ["--host", host, "--port", str(port), *options], timeout))

    # ------------------------------------------------------------ its network settings

    def ip(self, *args: str) -> str:
        """What ``ip ARGS`` says on this host: ``host.ip("address")``, ``host.ip("route")``."""
        return netns.ip(*args, namespace=self.namespace)

    def nft(self, ruleset: str) -> None:
        """Load nftables rules into this host's firewall (``nft -f -``, run here)."""
        done = subprocess.run(["ip", "netns", "exec", self.namespace, "nft", "-f", "-"], input=ruleset,
                              capture_output=True, text=True, timeout=netns.COMMAND_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"nft on {self.name} refused the rules: {done.stderr.strip()}")

    def block(self, port: int) -> None:
        """A firewall on this host that drops every TCP connection attempt to ``port``, without a word.

        Incoming SYNs are dropped, so the client hears nothing: no RST
        ("refused"), no answer at all.  Its kernel sends the SYN again,
        waiting twice as long each time, until it gives up (a timeout).
        """
        self.nft(f"""
            table inet chatlab_firewall {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    tcp dport {port} tcp flags & (syn | ack) == syn counter drop
                }}
            }}
        """)

    def unblock(self) -> None:
        """Remove the firewall ``block()`` made."""
        self.nft("delete table inet chatlab_firewall")

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} {self.address6}>"
