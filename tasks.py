#!/usr/bin/env python3
"""Set up chatlab and run it, with nothing but Python 3 installed.

    python3 tasks.py lab     # set up, then open JupyterLab on notebooks/
    python3 tasks.py test    # set up, check, then run every test (extra arguments go to pytest)
    python3 tasks.py check   # set up, then lint (ruff) and type-check (mypy) the code

"Set up" means: make a virtual environment in .venv (once), and install
chatlab into it with what the notebooks and tests need (again only when
pyproject.toml has changed).  Python packages go into this folder only.

Some lessons and tests use programs from the operating system as real
peers and instruments (nftables for a firewall, tshark to read captures,
redis-server, Chromium, an IRC client).  Run as root on Debian or Ubuntu,
set-up installs the missing ones with apt-get; elsewhere it lists them, and
the tests that need them are skipped with the reason.
On Windows, use ``py tasks.py lab``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / "chatlab-installed"


def run(*command: object) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT)


# Debian package -> the program it brings, for the lessons and tests that need one.
SYSTEM_PACKAGES = {
    "nftables": "nft",  # the network lab's firewall rules
    "iproute2": "ip",  # the network lab's namespaces and links
    "tshark": "tshark",  # reads the lab's packet captures, independently of chatlab
    "redis-server": "redis-server",  # several servers sharing one chat; the benchmark's yardstick
    "chromium": "chromium",  # the chat's web page, tested in a real browser
    "irssi": "irssi",  # a real IRC client
    "tmux": "tmux",  # drives terminal programs (irssi, chatlab chat) in the tests
}


def system_setup() -> None:
    """Install the missing system programs with apt-get when we may; else say what is missing."""
    if os.name != "posix" or sys.platform == "darwin":
        return
    missing = [pkg for pkg, program in SYSTEM_PACKAGES.items()
               if not shutil.which(program) and not os.path.exists(f"/usr/sbin/{program}")]
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"Installing {', '.join(missing)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env)
            return
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"apt-get failed ({exc}); carrying on without them", flush=True)
    print(f"Not installed: {', '.join(missing)}. The lessons and tests that need them are skipped "
          f"(as root on Debian or Ubuntu: apt-get install {' '.join(missing)}).", flush=True)


def setup() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"chatlab needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"Creating a virtual environment in {VENV} ...", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except Exception as exc:  # Debian/Ubuntu ship venv separately
            sys.exit(
                f"Could not create a virtual environment ({exc}).\n"
                "On Debian or Ubuntu, install it first:  sudo apt install python3-venv"
            )
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[lab,test]")
    STAMP.write_text(wanted)


def check() -> None:
    """The code's own checks, before any test runs: lint with ruff, types with mypy (pyproject.toml)."""
    run(PYTHON, "-m", "ruff", "check", "chatlab", "tests", "tasks.py")
    run(PYTHON, "-m", "mypy")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test", "check", "setup"):
        print(__doc__)
        return 2
    setup()
    system_setup()
    task, rest = argv[0], argv[1:]
    try:
        if task == "lab":
            # Jupyter refuses to run as root unless told; a container or a
            # classroom VM often has nobody else.
            as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
            run(BIN / "jupyter", "lab", "notebooks", *as_root, *rest)
        elif task == "check":
            check()
        elif task == "test":
            check()
            run(PYTHON, "-m", "pytest", *rest)
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
