"""Network namespaces for the wire tests: made with ``ip netns``, always removed.

A small stand-in until the lab's own topology (``chatlab.net``'s ``Network``)
is used here: each namespace gets a random name (two test runs may share
the machine), its loopback up, and is deleted in ``finally`` with every
process still running in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
from typing import Iterator

import pytest

CLONE_NEWNET = 0x40000000


def can_make_namespaces() -> str:
    """Why namespaces cannot be made here, or "" when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: network namespaces, raw sockets and nftables"
    if not shutil.which("ip"):
        return "needs iproute2 (apt-get install iproute2)"
    return ""


needs_netns = pytest.mark.skipif(bool(can_make_namespaces()), reason=can_make_namespaces() or "ok")
needs_nft = pytest.mark.skipif(not shutil.which("nft"), reason="needs nftables (apt-get install nftables)")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


@contextlib.contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """Namespaces named ``chl-<6 hex>-<role>``, loopback up; deleted at the end, with what runs in them."""
    tag = secrets.token_hex(3)
    made: dict[str, str] = {}
    try:
        for role in roles:
            name = f"chl-{tag}-{role}"
            ip("netns", "add", name)
            made[role] = name
            ip("-n", name, "link", "set", "lo", "up")
        yield made
    finally:
        for name in made.values():
            pids = ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            ip("netns", "del", name, check=False)


def link(a: str, b: str, address_a: str = "10.77.0.1/24", address_b: str = "10.77.0.2/24") -> None:
    """A veth pair joining namespaces ``a`` and ``b`` (eth0 in each), with these addresses; removed with them."""
    ip("link", "add", "chlw" + secrets.token_hex(3), "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b)
    # The first end got a temporary name in a: rename it eth0 too.
    first = next(line.split(":")[1].strip().split("@")[0] for line in ip("-n", a, "-o", "link").stdout.splitlines()
                 if "chlw" in line)
    ip("-n", a, "link", "set", first, "name", "eth0")
    for ns, address in ((a, address_a), (b, address_b)):
        ip("-n", ns, "addr", "add", address, "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run this thread (and the threads it starts) in network namespace ``netns``, then come back."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/var/run/netns/{netns}") as there:
        if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:  # pragma: no cover
                raise OSError(ctypes.get_errno(), "setns back home")


def nft(netns: str, script: str) -> None:
    """Load an nftables ruleset in ``netns`` (it disappears with the namespace)."""
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script, text=True,
                          capture_output=True, timeout=10)
    if done.returncode:
        raise RuntimeError(f"nft refused the rules:\n{script}\n{done.stderr}")
