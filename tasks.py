#!/usr/bin/env python3
"""Set up chatlab and run it, with nothing but Python 3 installed.

    python3 tasks.py lab     # set up, then open JupyterLab on this folder, at the welcome notebook
    python3 tasks.py test    # set up, check, then run every test (extra arguments go to pytest)
    python3 tasks.py check   # set up, then lint (ruff) and type-check (mypy) the code

"Set up" means: make a virtual environment in .venv (once), and install
chatlab into it with what the notebooks and tests need (again only when
pyproject.toml has changed).  Python packages go into this folder only.

JupyterLab opens on this whole folder (exercises/, notebooks/, docs/ in its
file browser), at notebooks/00_welcome.ipynb, with .venv's programs first on
the PATH of everything it starts: a terminal opened in it has ``chatlab``,
and its ``python`` is the one chatlab is installed in, as in its notebooks.

Some lessons and tests use programs from the operating system as real
peers and instruments (nftables for a firewall, tshark to read captures,
redis-server, Chromium, an IRC client).  Run as root on Debian or Ubuntu,
set-up installs the missing ones with apt-get; elsewhere it lists them, and
the tests that need them are skipped with the reason.
On Windows, use ``py tasks.py lab``.
"""

from __future__ import annotations

import hashlib
import json
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


WELCOME = Path("notebooks") / "00_welcome.ipynb"  # where JupyterLab opens
# Jupyter reads configuration from its environment's etc/jupyter (here, the venv's).
LAB_CONFIG = VENV / "etc" / "jupyter" / "jupyter_server_config.json"


def run(*command: object, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, env=env)


def lab_environment() -> dict[str, str]:
    """The environment JupyterLab runs in: the venv's programs first on PATH, as an activated venv has them.

    Its kernels and terminals inherit it, so ``chatlab chat`` works in a
    JupyterLab terminal and ``python`` there is the venv's.
    """
    return {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), "VIRTUAL_ENV": str(VENV)}


# A terminal's bash reads ~/.bashrc, which may put other programs ahead of
# ours (pyenv's shims, a conda base) or even take ours away at every prompt
# (pyenv-virtualenv's hook): the last word on PATH is this file's.
BASHRC = VENV / "chatlab-bashrc"
BASHRC_TEXT = """# Written by tasks.py: the shell of a JupyterLab terminal started by 'python3 tasks.py lab'.
[ -f ~/.bashrc ] && . ~/.bashrc
_chatlab_path() {{
    case ":$PATH:" in
        ":{bin}:"*) ;;
        *) PATH="{bin}:$PATH" ;;
    esac
    export VIRTUAL_ENV="{venv}"
}}
_chatlab_path
_chatlab_prompt="${{PROMPT_COMMAND%;}}"
PROMPT_COMMAND="${{_chatlab_prompt:+$_chatlab_prompt; }}_chatlab_path"
"""


def write_lab_config() -> None:
    """Make JupyterLab's terminals keep .venv's programs first on PATH.

    Started without a terminal of its own, Jupyter runs *login* shells, and a
    login shell reads /etc/profile, which sets PATH afresh -- without .venv.
    So a terminal runs an interactive shell that is not a login shell (it
    inherits our PATH); bash also reads BASHRC, after the user's own.
    """
    if os.name == "nt":  # PowerShell inherits the environment as it is
        return
    shell = os.environ.get("SHELL") or shutil.which("bash") or "/bin/sh"
    command = [shell, "-i"]
    if Path(shell).name == "bash":
        BASHRC.write_text(BASHRC_TEXT.format(bin=BIN, venv=VENV))
        command = [shell, "--rcfile", str(BASHRC), "-i"]
    config = json.loads(LAB_CONFIG.read_text()) if LAB_CONFIG.exists() else {}
    config.setdefault("ServerApp", {}).setdefault("terminado_settings", {})["shell_command"] = command
    LAB_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    LAB_CONFIG.write_text(json.dumps(config, indent=1) + "\n")


def lab_command(extra: list[str]) -> list[object]:
    """``jupyter lab`` rooted at this folder, opening the welcome notebook."""
    # Jupyter refuses to run as root unless told; a container or a
    # classroom VM often has nobody else.
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [BIN / "jupyter", "lab", f"--ServerApp.root_dir={ROOT}", *as_root, *extra, WELCOME]


# Debian package -> the program it brings, for the lessons and tests that need one.
SYSTEM_PACKAGES = {
    "nftables": "nft",  # the network lab's firewall rules
    "iproute2": "ip",  # the network lab's namespaces and links
    "tshark": "tshark",  # reads the lab's packet captures, independently of chatlab
    "redis-server": "redis-server",  # several servers sharing one chat; the benchmark's yardstick
    "chromium": "chromium",  # the chat's web page, tested in a real browser
    "irssi": "irssi",  # a real IRC client
    "tmux": "tmux",  # drives terminal programs (irssi, chatlab chat) in the tests
    "haproxy": "haproxy",  # a TCP load balancer in front of several chat servers (docs/scaling.md)
    "netcat-openbsd": "nc",  # the chat with no client at all, as a person would join it
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
            write_lab_config()
            run(*lab_command(rest), env=lab_environment())
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
