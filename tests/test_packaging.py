"""The ways to install chatlab must agree with each other and with the README."""

from __future__ import annotations

import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


# conda-forge names a few packages differently from PyPI ("redis" there is the server itself).
CONDA_TO_PYPI = {"redis-py": "redis"}


def conda_packages() -> set[str]:
    """Top-level conda dependencies of environment.yml (not python, pip or the pip: list), by their PyPI names."""
    names, in_deps = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
        elif in_deps and re.match(r"^  - [\w.-]", line) and not line.strip().endswith(":"):
            name = package_name(line.strip()[2:])
            names.add(CONDA_TO_PYPI.get(name, name))
        elif in_deps and line and not line.startswith(" "):
            in_deps = False
    return names - {"python", "pip"}


def pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {package_name(r) for r in requirements}


def test_environment_yml_and_pyproject_name_the_same_packages():
    assert conda_packages() == pyproject_packages()


def test_the_core_needs_only_the_standard_library():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"] == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(python3 tasks\.py \w+)$", quick_start, re.MULTILINE)
    assert commands == ["python3 tasks.py lab", "python3 tasks.py test"]
    assert "python3 tasks.py test" in ci.splitlines()


def test_the_files_the_package_reads_are_declared_as_package_data():
    """A non-editable install (``pip install .``) carries the modules, and only the other files named in
    [tool.setuptools.package-data]: exercise 10's captures, say, which ``chatlab check 10`` reads."""
    try:
        listed = subprocess.run(["git", "ls-files", "chatlab"], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=30).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of the package's files")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-data", {})
    missing = []
    for name in listed:
        path = PurePosixPath(name)
        if path.suffix == ".py":
            continue
        # A pattern is relative to its package's folder ("*" or "": any package's), and may reach into
        # sub-folders ("static/*").
        folders = {package: path.parent if package in ("", "*") else PurePosixPath(*package.split("."))
                   for package in declared}
        if not any(path.is_relative_to(folders[package]) and fnmatch(str(path.relative_to(folders[package])), pattern)
                   for package, patterns in declared.items() for pattern in patterns):
            missing.append(name)
    assert not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"


# Import names of every optional dependency (the extras in pyproject.toml), made unimportable below.
OPTIONAL_IMPORTS = ("redis", "wsproto", "h11", "segno", "matplotlib", "cryptography", "tqdm", "jupyterlab", "ipykernel")

SERVE_WITHOUT_EXTRAS = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # "import name" now raises ImportError, as where it was never installed
from chatlab.client import ChatClient
from chatlab.servers import make_server
with make_server({model!r}, port=0) as server:
    host, port = server.address
    with ChatClient(host, port, "alice", timeout=5) as alice, ChatClient(host, port, "bob", timeout=5) as bob:
        alice.say("hello from a bare install")
        message = bob.wait_for("message", timeout=5)
        print(message["text"])
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", ["threads", "selectors", "asyncio"])
def test_a_server_runs_with_no_optional_package_installed(model):
    # `pip install chatlab` brings no dependency at all: a server and a client must need nothing else
    # (a module-level `import redis` on the server's start-up path once broke every bare install).
    script = SERVE_WITHOUT_EXTRAS.format(blocked=OPTIONAL_IMPORTS, model=model)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello from a bare install"
