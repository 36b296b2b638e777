"""A progress bar over the benchmark's runs: one tick per run, in a terminal or a notebook.

A full benchmark takes many minutes, a notebook's small one a quarter of a
minute; either way, a screen that shows nothing looks like a hang.  tqdm
(in the ``lab`` and ``test`` extras) draws the bar: on a terminal it
redraws one line; in Jupyter, the same carriage returns redraw one output
line.  Without tqdm, each finished run is printed on a line of its own.

Give it to ``run_benchmark(..., progress=ProgressBar())``: the benchmark
calls ``planned(n)`` once it knows how many runs it will make, then the bar
itself with each finished run's record.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

try:
    from tqdm import tqdm
except ImportError:  # the core needs only the standard library: no bar, plain lines
    tqdm = None


def describe(record: dict[str, Any]) -> str:
    """One finished run in a few words: target, scenario, size, time, outcome."""
    what = ", ".join(f"{k}={record[k]}" for k in ("receivers", "connections", "notices") if k in record)
    state = "ok" if record.get("completed") else record.get("skipped") or record.get("error") or "cut short"
    return f"{record['target']:<10} {record['scenario']:<8} {what:<24} {record['wall_s']:6.1f} s  {state}"


class ProgressBar:
    """Ticks once per finished run; ``log=True`` also prints each run's line above the bar."""

    def __init__(self, description: str = "benchmark", file: TextIO | None = None, log: bool = False):
        self.description = description
        self.file = file or sys.stderr
        self.log = log
        self.bar: Any = None

    def planned(self, runs: int) -> None:
        if tqdm is not None:
            self.bar = tqdm(total=runs, desc=self.description, unit="run", file=self.file, dynamic_ncols=True)

    def __call__(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            print(f"  {describe(record)}", file=self.file, flush=True)
            return
        if self.log:
            self.bar.write(f"  {describe(record)}", file=self.file)
        self.bar.set_postfix_str(f"{record['target']} {record['scenario']}", refresh=False)
        self.bar.update()
        if self.bar.n >= self.bar.total:
            self.bar.close()
