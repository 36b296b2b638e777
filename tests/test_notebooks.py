"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel, headless.

Whoever wrote it, a notebook must: be committed clean (valid nbformat 4,
no outputs, no execution counts, the python3 kernel, a parameters cell at
the top); run without an error; draw at least one figure of what it
measured, and no empty one; print no figure that is NaN; and leave no
chatlab thread or lab instrument running when its last cell is done --
except what it names in ``KEEP_RUNNING`` on purpose (notebook 00 keeps a
server for the student to join, until they stop it).

An experiment that measured nothing must fail here, not draw an empty axis
and print "nan ms" under a sentence about what it showed.  So a cell run
before the notebook's own (``WATCH_PLOTS``) wraps matplotlib's plotting
methods and notes every call given an empty series, and a cell run after
them asserts there was none; and every printed output is searched for NaN
and for numpy's RuntimeWarnings (the sign of a mean of nothing).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 90  # seconds for any one cell; a hung server fails the cell that waited on it

# Run before the notebook's own cells, in the same kernel: every plotting
# call that is handed an empty series is noted (with the cell it ran in).
WATCH_PLOTS = """
import matplotlib.axes as _mpl_axes
_EMPTY_PLOTS = []

def _chatlab_watch(_method, _data):
    _original = getattr(_mpl_axes.Axes, _method)

    def _watched(self, *args, **kwargs):
        for _i, _key in enumerate(_data):
            _value = args[_i] if _i < len(args) else kwargs.get(_key)
            if _value is None or isinstance(_value, str):
                continue
            try:
                _parts = list(_value) if _method == "hist" and len(_value) and hasattr(_value[0], "__len__") else [_value]
                _empty = [_j for _j, _part in enumerate(_parts) if len(_part) == 0]
            except TypeError:  # a scalar: not a series
                continue
            for _j in _empty:
                _label = kwargs.get("label")
                _label = _label[_j] if isinstance(_label, (list, tuple)) else _label
                _EMPTY_PLOTS.append(f"In [{get_ipython().execution_count}]: {_method}() got an empty {_key}"
                                    + (f" for the series {_label!r}" if _label else ""))
        return _original(self, *args, **kwargs)

    setattr(_mpl_axes.Axes, _method, _watched)

for _method, _data in {"plot": ("x", "y"), "scatter": ("x", "y"), "bar": ("x", "height"), "barh": ("y", "width"),
                       "hist": ("x",), "step": ("x", "y"), "fill_between": ("x", "y1"), "errorbar": ("x", "y"),
                       "imshow": ("X",), "boxplot": ("x",)}.items():
    _chatlab_watch(_method, _data)
"""

# Run after the notebook's own cells, in the same kernel: nothing plotted was
# empty, and the notebook stopped everything it started (a short grace for
# threads already on their way out) -- but what it keeps on purpose, which
# the student would stop, and which is stopped here first.
LEFTOVERS_CHECK = """
import sys, threading, time
assert not _EMPTY_PLOTS, "plots of nothing (an experiment that measured nothing?): " + "; ".join(_EMPTY_PLOTS)
_kept = list(globals().get("KEEP_RUNNING", ()))
_running = sys.modules["chatlab.lab"].running() if "chatlab.lab" in sys.modules else []
_unexpected = [i for i in _running if not any(i is k for k in _kept)]
assert not _unexpected, f"the notebook left these instruments running: {_unexpected}"
for _instrument in _kept:
    _instrument.stop()  # what the student does when they are done with it
_deadline = time.monotonic() + 2
while time.monotonic() < _deadline and any(t.name.startswith("chatlab") for t in threading.enumerate()):
    time.sleep(0.05)
_left = sorted(t.name for t in threading.enumerate() if t.name.startswith("chatlab"))
assert not _left, f"the notebook left these threads running: {_left}"
"""

# A figure printed as NaN (numpy's mean of an empty list) or inf, as a word of its own.
NOT_A_NUMBER = re.compile(r"(?<![\w.])-?(nan|inf)(?![\w(])", re.IGNORECASE)


def ids(path: Path) -> str:
    return path.stem


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "the kernel must be python3"
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} were committed with outputs or execution counts: clear them"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    first = code[0].source
    # A parameters cell at the top: the first code cell sets the knobs in CAPITALS.
    assert any(line.split("=")[0].strip().isupper() for line in first.splitlines() if "=" in line), \
        "the first code cell should be the parameters cell (NAME = value lines)"


def execute(path: Path, parameters: dict[str, object] | None = None):
    """Run the notebook in a fresh python3 kernel, in notebooks/, with a non-GUI matplotlib."""
    nb = nbformat.read(path, as_version=4)
    if parameters:
        cell = next(c for c in nb.cells if c.cell_type == "code")
        cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(0, nbformat.v4.new_code_cell(WATCH_PLOTS))
    nb.cells.append(nbformat.v4.new_code_cell(LEFTOVERS_CHECK))
    # The inline backend draws PNGs into the notebook and never opens a window.
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline", PYTHONUNBUFFERED="1")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    client.execute(env=env)
    return nb, time.monotonic() - started


def figures(nb) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs)


def not_numbers(nb) -> list[str]:
    """Printed lines that report a figure as NaN or inf, or carry a numpy RuntimeWarning."""
    found = []
    for index, cell in enumerate(nb.cells[1:-1]):  # the notebook's own cells, not the two added
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            for line in (text if isinstance(text, str) else "".join(text)).splitlines():
                if NOT_A_NUMBER.search(line) or "RuntimeWarning" in line:
                    found.append(f"cell {index}: {line.strip()[:200]}")
    return found


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_runs_headless_and_draws(path: Path):
    nb, seconds = execute(path)  # an error in any cell raises CellExecutionError, with the cell and traceback
    assert figures(nb) >= 1, f"{path.name} ran but drew no figure"
    unmeasured = not_numbers(nb)
    assert not unmeasured, f"{path.name} printed figures that are not numbers:\n" + "\n".join(unmeasured)
    print(f"{path.name}: {seconds:.1f} s, {figures(nb)} figures")


@pytest.mark.timeout(240)
def test_the_student_path_runs_even_with_exercises_not_done():
    """IMPLEMENTATION = "exercises" with untouched (or missing) exercises falls back to the reference."""
    path = NOTEBOOK_DIR / "02_byte_stream.ipynb"
    nb, _ = execute(path, {"IMPLEMENTATION": "exercises"})
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "showing the reference" in text or "using your" in text, text[:2000]
    assert figures(nb) >= 1


# ------------------------------------------------- interrupting and restarting a kernel


def refused(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.timeout(120)
def test_interrupting_or_restarting_a_kernel_releases_every_port():
    """What a student does to a notebook: interrupt a cell, restart the kernel.

    A server in a ``with`` block is stopped by the interrupt; a server started
    without one is stopped, gracefully, when the kernel restarts (its clients
    are told ``shutdown``): nothing keeps a port.
    """
    from jupyter_client.manager import start_new_kernel

    from chatlab import lab

    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(NOTEBOOK_DIR), env=env)

    def output_of(msg_id: str, timeout: float = 30) -> str:
        """The first text the cell prints (it may still be running)."""
        while True:
            msg = kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                return msg["content"]["text"]

    def reply_to(msg_id: str, timeout: float = 30) -> dict:
        while True:
            msg = kc.get_shell_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]

    watcher = None
    try:
        started = kc.execute("from chatlab import lab\nsrv = lab.start_server('threads')\nprint(srv.address[1])")
        port_a = int(output_of(started))
        assert reply_to(started)["status"] == "ok"

        running = kc.execute("import time\nwith lab.live_server('threads') as s:\n"
                             "    print(s.address[1], flush=True)\n    time.sleep(60)")
        port_b = int(output_of(running))
        km.interrupt_kernel()  # the student presses the stop button
        reply = reply_to(running)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        assert refused(port_b), "the interrupted with-block left its server running"
        assert not refused(port_a), "the kernel lives on, and so does the server started without with"

        watcher = lab.Bot(("127.0.0.1", port_a), "watcher").join()
        km.restart_kernel(now=False)  # Kernel -> Restart: a polite shutdown, then a new kernel
        assert watcher.wait_for("closing", timeout=15)["reason"] == "shutdown"
        assert refused(port_a), "the restarted kernel's old server still holds its port"
    finally:
        if watcher is not None:
            watcher.stop()
        kc.stop_channels()
        km.shutdown_kernel(now=True)
