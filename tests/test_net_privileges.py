"""Without Linux and root, building a network raises one clear error that says what is needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatlab import net

pytestmark = pytest.mark.timeout(60)

TRY = """
from chatlab import net
print("problem:", net.problem())
try:
    net.Network()
except net.NetworkUnavailable as exc:
    print("raised:", exc)
    raise SystemExit(3)
print("built a network")
"""

can_drop = pytest.mark.skipif(not (sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("setpriv")),
                              reason="needs root and setpriv, to run a child without privileges")


def run_unprivileged(*setpriv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", *setpriv, sys.executable, "-c", TRY], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, HOME="/tmp"))


@can_drop
def test_root_without_capabilities_is_told_what_is_needed() -> None:
    # uid 0, but with every capability dropped: what a container without NET_ADMIN gives you.
    done = run_unprivileged("--inh-caps=-all", "--bounding-set=-all")
    assert done.returncode == 3, done.stdout + done.stderr
    raised = next(line for line in done.stdout.splitlines() if line.startswith("raised:"))
    assert "root" in raised and "CAP_NET_ADMIN" in raised and "CAP_SYS_ADMIN" in raised
    assert "--cap-add NET_ADMIN" in raised and "/dev/net/tun" in raised  # the way out on macOS and Windows
    assert "problem: The network lab needs root" in done.stdout  # net.problem() says the same, without raising


@can_drop
def test_an_ordinary_user_is_told_the_same() -> None:
    done = run_unprivileged("--reuid=nobody", "--regid=nogroup", "--clear-groups")
    if "No module named" in done.stderr:
        pytest.skip("user nobody cannot read this checkout's virtual environment")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "needs root" in done.stdout


def test_on_macos_or_windows_the_error_says_how_to_run_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    for platform in ("darwin", "win32"):
        monkeypatch.setattr(sys, "platform", platform)
        why = net.problem()
        assert why and "needs Linux" in why and platform in why
        assert "virtual machine" in why and "--cap-add NET_ADMIN" in why and "--device /dev/net/tun" in why
        with pytest.raises(net.NetworkUnavailable, match="needs Linux"):
            net.Network()


def test_a_process_without_privileges_raises_the_error_itself() -> None:
    if net.problem() is None:
        pytest.skip("this process has the privileges (the tests above drop them in a child)")
    with pytest.raises(net.NetworkUnavailable, match="needs"):
        net.Network()


RUN_NOTEBOOK = """
import os, sys, nbclient, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
client = nbclient.NotebookClient(nb, timeout=90, kernel_name="python3",
                                 resources={"metadata": {"path": os.path.dirname(sys.argv[1])}})
client.execute(env=env)  # raises CellExecutionError if any cell fails
for cell in nb.cells:
    for output in cell.get("outputs", []):
        print(output.get("text", ""), end="")
        if "image/png" in output.get("data", {}):
            print("[a figure]")
"""


@can_drop
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["11_network", "12_tcp_reliability"])
def test_the_network_notebooks_run_without_privileges_and_say_what_they_skip(name: str) -> None:
    pytest.importorskip("nbclient")
    path = Path(__file__).resolve().parent.parent / "notebooks" / f"{name}.ipynb"
    done = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", RUN_NOTEBOOK,
                           str(path)], capture_output=True, text=True, timeout=220, env=dict(os.environ, HOME="/tmp"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "The cells that build a network will be skipped" in done.stdout and "CAP_NET_ADMIN" in done.stdout
    assert done.stdout.count("(skipped: this cell needs the network lab") >= 4, done.stdout[-2000:]
    if name == "12_tcp_reliability":
        assert "[a figure]" in done.stdout, "the Mathis formula is drawn even without a network"
