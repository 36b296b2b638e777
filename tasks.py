#!/usr/bin/env python3
"""Set up chatlab and run it, with nothing but Python 3 installed.

    python3 tasks.py lab     # set up, then open JupyterLab on notebooks/
    python3 tasks.py test    # set up, then run every test (extra arguments go to pytest)

"Set up" means: make a virtual environment in .venv (once), and install
chatlab into it with what the notebooks and tests need (again only when
pyproject.toml has changed).  Nothing is installed outside this folder.
On Windows, use ``py tasks.py lab``.
"""

from __future__ import annotations

import hashlib
import os
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test", "setup"):
        print(__doc__)
        return 2
    setup()
    task, rest = argv[0], argv[1:]
    try:
        if task == "lab":
            # Jupyter refuses to run as root unless told; a container or a
            # classroom VM often has nobody else.
            as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
            run(BIN / "jupyter", "lab", "notebooks", *as_root, *rest)
        elif task == "test":
            run(PYTHON, "-m", "pytest", *rest)
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
