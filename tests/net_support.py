"""What the network lab's tests share: skip without privileges, a network always torn down, tshark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from chatlab import net
from chatlab.net import netns

#: Why the network tests cannot run here (not Linux, not root, no TUN device), or None when they can.
WHY_NOT = net.problem()
needs_network = pytest.mark.skipif(WHY_NOT is not None, reason=f"network lab unavailable: {WHY_NOT}")
needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (apt-get install tshark)")
needs_nft = pytest.mark.skipif(not (shutil.which("nft") or Path("/usr/sbin/nft").exists()),
                               reason="nftables is not installed (apt-get install nftables)")


@pytest.fixture
def network() -> Iterator[net.Network]:
    """A fresh network for one test, stopped (namespaces and router gone) however the test ends."""
    n = net.Network()
    try:
        yield n
    finally:
        n.stop()
        left = [name for name in netns.namespaces() if name.startswith(f"chl-{n.token}-")]
        assert not left, f"the network left namespaces behind: {left}"


def tshark_fields(path: Path, *fields: str, display_filter: str | None = None) -> list[list[str]]:
    """tshark's dissection of a capture: one list of the asked fields per packet."""
    command = ["tshark", "-r", str(path), "-T", "fields", *sum((["-e", f] for f in fields), [])]
    if display_filter:
        command += ["-Y", display_filter]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]
