"""Measurements: percentiles, what the kernel knows about a connection, process memory.

Everything here reads a number that was really measured -- a percentile is
a value from the list, ``tcp_info`` is the kernel's own view of a TCP
connection (Linux only), memory is the process's resident size -- and
``where()`` says what machine it was measured on, for the plot's title.
"""

from __future__ import annotations

import os
import platform
import socket
import struct
import subprocess
import sys
from pathlib import Path

from .folders import COURSE_FOLDERS, course_folder

from ..servers import MODELS


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank: a value that was really measured."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def summary(seconds: list[float]) -> dict[str, float]:
    """Count, p50, p99, max and mean, in milliseconds."""
    return {"n": len(seconds), "p50_ms": percentile(seconds, 50) * 1000, "p99_ms": percentile(seconds, 99) * 1000,
            "max_ms": max(seconds) * 1000, "mean_ms": sum(seconds) / len(seconds) * 1000}


# Linux's struct tcp_info, as far as we read it (linux/tcp.h): 8 one-byte
# fields, 24 unsigned 32-bit ones, then 64-bit counters.  Other systems have
# their own (macOS: TCP_CONNECTION_INFO), or none.
_TCP_INFO = struct.Struct("=8B24I4Q2I")
_TCP_INFO_FIELDS = (
    "state", "ca_state", "retransmits", "probes", "backoff", "options", "wscale", "rate_flags",
    "rto_us", "ato_us", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets",
    "last_data_sent_ms", "last_ack_sent_ms", "last_data_recv_ms", "last_ack_recv_ms",
    "pmtu", "rcv_ssthresh", "rtt_us", "rttvar_us", "snd_ssthresh", "snd_cwnd", "advmss", "reordering",
    "rcv_rtt_us", "rcv_space", "total_retrans",
    "pacing_rate", "max_pacing_rate", "bytes_acked", "bytes_received", "segs_out", "segs_in",
)
HAS_TCP_INFO = sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")


def tcp_info(sock: socket.socket) -> dict[str, int] | None:
    """What the kernel knows about a TCP connection: RTT, congestion window, retransmissions.

    Linux only (None elsewhere).  ``rtt_us`` is the kernel's smoothed RTT
    estimate in microseconds; ``snd_cwnd`` the congestion window in segments.
    """
    if not HAS_TCP_INFO:
        return None
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(raw) < _TCP_INFO.size:
        raw = raw + bytes(_TCP_INFO.size - len(raw))
    return dict(zip(_TCP_INFO_FIELDS, _TCP_INFO.unpack_from(raw)))


def process_memory(pid: int | None = None) -> int | None:
    """Resident memory (RSS) of a process in bytes, or None where it cannot be read."""
    pid = pid or os.getpid()
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil  # optional: macOS and Windows

        return psutil.Process(pid).memory_info().rss
    except Exception:
        pass
    if sys.platform != "win32":
        try:
            out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
            return int(out.stdout.strip()) * 1024
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return None


def process_threads(pid: int | None = None) -> int | None:
    """Number of threads of a process, or None where it cannot be read."""
    pid = pid or os.getpid()
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    try:
        import psutil

        return psutil.Process(pid).num_threads()
    except Exception:
        return None


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` where allowed; return the limit."""
    try:
        import resource
    except ImportError:  # Windows: no such limit for sockets
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else wanted


def load_average() -> str:
    """The system's 1-minute load average against its CPUs ("3.2 on 2 CPUs"), where known.

    A measurement on a busy machine measures the machine too: say so.
    """
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except (AttributeError, OSError):  # Windows
        return "unknown"


def where(model: str | None = None) -> str:
    """What a measurement ran on, for plot titles: model, loopback, OS, CPUs, Python."""
    parts = [f"{model} server" if model else None, "loopback 127.0.0.1",
             f"{platform.system()} {platform.machine()}", f"{os.cpu_count()} CPUs",
             f"Python {platform.python_version()}"]
    return ", ".join(p for p in parts if p)


def setup_report() -> list[tuple[str, str]]:
    """What the welcome notebook checks: versions, models, folders."""
    from .. import __version__

    rows = [("Python", sys.version.split()[0] + (" (3.10+ needed)" if sys.version_info < (3, 10) else " ok")),
            ("chatlab", __version__), ("server models", ", ".join(sorted(MODELS))),
            ("platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
            ("CPUs", str(os.cpu_count())), ("IPv6", "yes" if socket.has_ipv6 else "no"),
            ("TCP_INFO", "yes (Linux)" if HAS_TCP_INFO else "no (Linux only)")]
    for kind in COURSE_FOLDERS:
        folder = course_folder(kind)
        rows.append((f"{kind}/", str(folder) if folder else "not found"))
    try:  # asked of the installed package, not imported: chatlab.lab never imports matplotlib
        from importlib.metadata import version

        rows.append(("matplotlib", version("matplotlib")))
    except ImportError:
        rows.append(("matplotlib", "MISSING: pip install -e '.[lab]'"))
    return rows
