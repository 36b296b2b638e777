"""Networks of hosts on one machine: ``with Network() as n: a = n.host("a"); b = n.host("b")``.

A ``Network`` is a router (``router.py``, a process of its own) and the
hosts around it.  Each host is a network namespace with one interface,
``eth0``, whose other end the router holds; each has an IPv4 address
(10.0.0.1, 10.0.0.2, ... by default) and an IPv6 one (fd00::1, fd00::2, ...),
and routes that send everything that is not its own out of ``eth0``, to the
router.  Every host can reach every other, as on a LAN; ``n.link(a, b,
delay=0.02, loss=0.01, rate=1e6)`` makes the path between two of them
slower or lossier (see ``link.Impairment`` for every setting)::

    from chatlab import net
    with net.Network() as n:
        server, ada = n.host("server"), n.host("ada")
        n.link(server, ada, delay=0.025)           # 25 ms each way: a 50 ms round trip
        srv = server.start_server("threads")       # listens on 0.0.0.0 inside "server"
        bot = ada.bot((server.address, srv.address[1]), "ada")
        print(bot.ping())                          # about 0.05 s
        packets = n.packets(ada)                   # what crossed ada's wire

Everything a network makes is removed when it stops: at the end of the
``with`` block however it ends (an exception, a cell interrupted), when the
handle is dropped, when ``chatlab.lab.stop_all()`` runs, and when the
interpreter exits (a kernel restarted).  What a crash leaves (a process
killed with SIGKILL cannot clean up) is removed by the next network, or by
``chatlab net clean``: see ``netns.py``.

Building networks needs Linux and root; anywhere else ``Network()`` raises
``NetworkUnavailable``, saying what is needed.  ``net.problem()`` asks
without raising, for a notebook cell that should skip.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from ..lab.registry import TIMEOUT, Instrument
from . import netns
from .host import Host
from .link import Impairment
from .pcap import Record, read_pcap

#: The addresses of a network's hosts, unless told otherwise: host 1 is 10.0.0.1 and fd00::1, and so on.
SUBNET = "10.0.0.0/24"
SUBNET6 = "fd00::/64"
#: Host names: short, lower case, so that ``chl-<token>-<name>`` is a valid namespace name.
HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}$")
#: Seconds the router has to exit after its control socket closes, before it is killed.
ROUTER_EXIT = 5.0


class Drop(NamedTuple):
    """A packet the router dropped: when, coming from which host, going to which, why, and the packet."""

    ts: float
    src: str
    dst: str
    why: str
    data: bytes


class Link:
    """The path between two hosts, both ways; ``set()`` changes what it does, at once."""

    def __init__(self, network: "Network", a: Host, b: Host):
        self.network, self.a, self.b = network, a, b
        self.impairments = {(a.name, b.name): Impairment(), (b.name, a.name): Impairment()}

    def set(self, only: "Host | str | None" = None, **changes: Any) -> "Link":
        """Change settings (``delay=0.05``, ``loss=0.01``, ...); ``only=a`` changes just the way from ``a``."""
        sender = getattr(only, "name", only)
        if sender is not None and sender not in (self.a.name, self.b.name):
            raise ValueError(f"{sender!r} is not an end of the link {self.a.name} - {self.b.name}")
        for (src, dst), impairment in self.impairments.items():
            if sender in (None, src):
                impairment = self.impairments[src, dst] = impairment.replace(**changes)
                self.network._ask({"command": "link", "from": src, "to": dst, "impairment": asdict(impairment)})
        return self

    def lose_next(self, count: int = 1, only: "Host | str | None" = None, longer_than: int = 0) -> "Link":
        """Lose the next ``count`` packets (each way, or ``only`` the way from that host), whatever the settings.

        A loss exactly where the lesson wants it: the next segment sent,
        then its retransmission, and so on.  ``longer_than=100`` spares the
        packets of 100 bytes or less, such as bare ACKs (52 bytes), so that
        the loss falls on the next segment that carries data.
        """
        sender = getattr(only, "name", only)
        if sender is not None and sender not in (self.a.name, self.b.name):
            raise ValueError(f"{sender!r} is not an end of the link {self.a.name} - {self.b.name}")
        for src, dst in self.impairments:
            if sender in (None, src):
                self.network._ask({"command": "lose", "from": src, "to": dst, "count": count,
                                   "longer_than": longer_than})
        return self

    def stats(self) -> dict[str, dict[str, int]]:
        """What each direction did: packets, delivered, lost, queue full, ..., and the queue's length now."""
        links = self.network.stats()["links"]
        return {key: links.get(key, {}) for key in (f"{self.a.name}>{self.b.name}", f"{self.b.name}>{self.a.name}")}

    def __repr__(self) -> str:
        return f"<Link {self.a.name} - {self.b.name} {self.impairments[self.a.name, self.b.name]}>"


class _Parts:
    """Everything a network has made, kept apart from the Network so a finalizer can tear it down.

    (A ``weakref.finalize`` must not hold the object it watches, or that
    object would never be collected.)
    """

    def __init__(self, record: netns.Record):
        self.record = record
        self.namespaces: list[str] = []
        self.started: list[Any] = []  # servers, bots, processes run on the hosts: each has stop()
        self.router: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.captures: Path | None = None
        self.temporary = False
        self.lock = threading.Lock()


def _teardown(parts: _Parts) -> None:
    """Stop everything on the hosts, then the router, then remove the namespaces and the record."""
    for thing in reversed(parts.started):  # newest first: clients before the servers they talk to
        try:
            thing.stop()
        except Exception as exc:
            print(f"chatlab.net: stopping {thing!r} failed: {exc}", file=sys.stderr)
    parts.started.clear()
    for name in parts.namespaces:
        netns.kill_processes_in(name)  # anything started some other way, e.g. with ip netns exec
    if parts.control is not None:
        parts.control.close()  # the router reads the end of its control socket, writes its captures, exits
    if parts.router is not None:
        try:
            parts.router.wait(ROUTER_EXIT)
        except subprocess.TimeoutExpired:
            parts.router.kill()
            parts.router.wait()
    for name in parts.namespaces:
        netns.delete(name)
    if not any(os.path.exists(f"/var/run/netns/{name}") for name in parts.namespaces):
        parts.record.remove()  # else keep it: once this process is gone, the next clean() finds them
    if parts.temporary and parts.captures:
        shutil.rmtree(parts.captures, ignore_errors=True)


class Network(Instrument):
    """A router and the hosts around it; ``host()`` adds a host, ``link()`` shapes the path between two.

    ``subnet`` and ``subnet6`` give the hosts' addresses.  ``captures`` is
    a folder to keep the pcap files in after the network stops (by default
    they go to a temporary folder, removed at the end).  ``capture=False``
    records nothing (for measuring the router's speed).  ``seed`` makes
    the random losses the same on every run.
    """

    def __init__(self, subnet: str = SUBNET, subnet6: str = SUBNET6, captures: str | os.PathLike | None = None,
                 capture: bool = True, seed: object = 0):
        netns.require()  # one clear error when this machine or process cannot do it
        netns.clean()  # what crashed networks left behind, if any
        self.token = secrets.token_hex(3)
        self.subnet, self.subnet6 = ipaddress.ip_network(subnet), ipaddress.ip_network(subnet6)
        self.hosts: dict[str, Host] = {}
        self.links: dict[frozenset[str], Link] = {}
        self._parts = parts = _Parts(netns.Record(self.token))
        self._finalizer = weakref.finalize(self, _teardown, parts)
        try:
            if capture:
                parts.temporary = captures is None
                folder = captures or tempfile.mkdtemp(prefix=f"chatlab-net-{self.token}-")
                parts.captures = Path(folder)
                parts.captures.mkdir(parents=True, exist_ok=True)
            parts.record.data.update(captures=str(parts.captures) if parts.captures else None,
                                     temporary=parts.temporary)
            parts.record.save()
            self._start_router(str(seed))
        except BaseException:
            self._finalizer()
            raise
        self._register()

    def _start_router(self, seed: str) -> None:
        parts = self._parts
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log = open(parts.captures / "router.log", "w") if parts.captures else subprocess.DEVNULL
        try:
            # A session of its own: a Ctrl+C in the terminal must not stop the
            # router before the network, which stops it in order.
            parts.router = subprocess.Popen(
                [sys.executable, "-m", "chatlab.net.router", str(theirs.fileno()), str(parts.captures or "-"), seed],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        finally:
            theirs.close()
            if log is not subprocess.DEVNULL:
                log.close()
        parts.control = ours
        ours.settimeout(TIMEOUT)
        parts.record.data.update(router=parts.router.pid, router_started=netns._start_time(parts.router.pid))
        parts.record.save()

    def _ask(self, message: dict, fds: list[int] = ()) -> dict:  # type: ignore[assignment]
        """Send the router one command and wait for its answer."""
        parts = self._parts
        if parts.control is None or not self._finalizer.alive:
            raise RuntimeError("this network has stopped")
        with parts.lock:  # one question at a time, so each answer goes to whoever asked
            try:
                socket.send_fds(parts.control, [json.dumps(message).encode()], list(fds))
                answer = parts.control.recv(65536)
            except OSError as exc:
                raise RuntimeError(f"the network's router does not answer ({exc}): see {parts.captures}/router.log")
        if not answer:
            raise RuntimeError(f"the network's router has stopped: see {parts.captures}/router.log")
        reply = json.loads(answer)
        if not reply.get("ok"):
            raise RuntimeError(f"the router refused {message.get('command')!r}: {reply.get('error')}")
        return reply

    # ------------------------------------------------------------ hosts and links

    def host(self, name: str, address: str | None = None, address6: str | None = None) -> Host:
        """A new host: a namespace with eth0 (wired to the router), an IPv4 and an IPv6 address, and routes.

        Host number N (counting from 1) gets address N of ``subnet`` and of
        ``subnet6`` unless ``address``/``address6`` say otherwise.
        """
        if not HOST_NAME.match(name):
            raise ValueError(f"a host name is 1-20 lower-case letters, digits and '-', starting with a letter: "
                             f"not {name!r}")
        if name in self.hosts:
            raise ValueError(f"there is a host called {name!r} already")
        number = len(self.hosts) + 1
        v4 = ipaddress.ip_address(address) if address else self.subnet[number]
        v6 = ipaddress.ip_address(address6) if address6 else self.subnet6[number]
        for value, subnet in ((v4, self.subnet), (v6, self.subnet6)):
            if value not in subnet:
                raise ValueError(f"{value} is not in this network's subnet {subnet}")
        taken = {a for h in self.hosts.values() for a in h.addresses}
        if str(v4) in taken or str(v6) in taken:
            raise ValueError(f"another host has the address {v4 if str(v4) in taken else v6}")

        parts = self._parts
        namespace = f"{netns.PREFIX}{self.token}-{name}"
        with parts.lock:
            parts.namespaces.append(namespace)  # written down before it exists: a crash cannot hide it
            parts.record.data["namespaces"] = list(parts.namespaces)
            parts.record.save()
        netns.ip("netns", "add", namespace)
        fd, device = netns.open_tun()
        try:
            netns.ip("link", "set", device, "netns", namespace)  # the descriptor stays ours, the interface moves
            commands = [
                f"link set {device} name eth0",
                # No automatic IPv6 link-local address: without one the host sends no router
                # solicitations or multicast reports, so the captures show only what we did.
                "link set eth0 addrgenmode none",
                f"address add {v4}/{self.subnet.prefixlen} dev eth0",
                f"address add {v6}/{self.subnet6.prefixlen} dev eth0 nodad",  # nodad: usable at once
                "link set lo up",
                "link set eth0 up",
                # Everything else goes to the router too, which drops what it has no route for.
                "route add default dev eth0",
                "route add ::/0 dev eth0",
            ]
            subprocess.run(["ip", "-n", namespace, "-batch", "-"], input="\n".join(commands), text=True,
                           check=True, capture_output=True, timeout=netns.COMMAND_TIMEOUT)
            self._ask({"command": "port", "name": name, "addresses": [str(v4), str(v6)]}, [fd])
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"setting up host {name!r} failed: {exc.stderr.strip()}") from None
        finally:
            os.close(fd)  # the router has its own copy of the descriptor now
        host = self.hosts[name] = Host(self, name, namespace, str(v4), str(v6), parts.started)
        return host

    def link(self, a: Host | str, b: Host | str, **impairment: Any) -> Link:
        """Shape the path between hosts ``a`` and ``b``, both ways (each way has its own queue).

        Settings (``link.Impairment``): ``delay`` and ``jitter`` in seconds,
        ``loss`` (with ``burst``, the mean number lost in a row),
        ``duplicate`` and ``reorder`` as fractions, ``rate`` in bits per
        second and ``queue`` in packets.  Asking again for the same two hosts
        changes the same link.
        """
        ha, hb = self._host(a), self._host(b)
        if ha is hb:
            raise ValueError("a link joins two different hosts")
        key = frozenset((ha.name, hb.name))
        if key not in self.links:
            self.links[key] = Link(self, ha, hb)
        return self.links[key].set(**impairment)

    def _host(self, host: Host | str) -> Host:
        name = getattr(host, "name", host)
        if name not in self.hosts:
            raise ValueError(f"no host {name!r} in this network (hosts: {', '.join(self.hosts) or 'none yet'})")
        return self.hosts[name]  # type: ignore[index]

    # ------------------------------------------------------------ what happened

    def stats(self) -> dict[str, Any]:
        """The router's counters: packets forwarded, dropped (by reason), and per direction of each link."""
        return self._ask({"command": "stats"})

    def pcap(self, host: Host | str) -> Path:
        """The capture file of a host's wire, up to date now (open it in Wireshark, or with tshark)."""
        name = self._host(host).name
        if self._parts.captures is None:
            raise RuntimeError("this network records nothing (it was made with capture=False)")
        self.stats()  # the router writes out what it holds before answering
        return self._parts.captures / f"{name}.pcap"

    def packets(self, host: Host | str) -> list[Record]:
        """Every packet that crossed a host's wire so far, both ways, in order: ``(ts, data, orig_len)``."""
        return read_pcap(self.pcap(host))[1]

    def drops(self) -> list[Drop]:
        """Every packet the router dropped so far, with the reason."""
        if self._parts.captures is None:
            raise RuntimeError("this network records nothing (it was made with capture=False)")
        self.stats()
        _, records = read_pcap(self._parts.captures / "drops.pcap")
        lines = (self._parts.captures / "drops.log").read_text().splitlines()
        drops = []
        for record, line in zip(records, lines):
            ts, src, dst, why = line.split(" ", 3)
            drops.append(Drop(record.ts, src, dst, why, record.data))
        return drops

    def where(self) -> str:
        """What a measurement ran on, for plot titles: the lab's network, this machine, Python."""
        import platform

        return (f"the lab's network ({len(self.hosts)} hosts, a userspace router), {platform.system()} "
                f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")

    @property
    def captures(self) -> Path | None:
        """The folder holding the capture files (HOST.pcap, drops.pcap, drops.log, router.log)."""
        return self._parts.captures

    @property
    def namespaces(self) -> list[str]:
        return list(self._parts.namespaces)

    # ------------------------------------------------------------ the end

    def stop(self) -> None:
        """Stop everything started on the hosts, the router; remove the namespaces. Safe to call twice."""
        self._unregister()
        self._finalizer()

    @property
    def running(self) -> bool:
        return self._finalizer.alive

    def __repr__(self) -> str:
        state = f"{len(self.hosts)} hosts" if self.running else "stopped"
        return f"<Network {self.token} {state}>"
