"""``chatlab bench``: how fast, how lean, and how fair to the slowest client.

The benchmark of issue 7 compares, in one run on one machine:

* every chatlab server model (``chatlab.servers.MODELS``, looked up when
  the benchmark runs), with its switchable limits off;
* the naive thread-per-client server a tutorial would write
  (``benchmarks/naive_server.py``: ``sendall`` to every peer under a lock);
* Redis pub/sub, the compiled event-loop reference (skipped with a note
  when ``redis-server`` is not installed);
* a trivial relay, whose figures are the load generator's own ceiling.

The pieces, each readable on its own:

* ``loadgen``   -- the load generator: one ``selectors`` loop, its own process;
* ``relay``     -- the trivial relay;
* ``targets``   -- starting and stopping each server in its own process;
* ``serve``     -- a chatlab model as the benchmark runs it (limits off, quiet log);
* ``procstat``  -- a process's CPU time and memory, from ``/proc``;
* ``scenarios`` -- sizes, scenarios, and running each one;
* ``report``    -- tables, ratios to naive and Redis, and the targets' verdicts;
* ``progress``  -- a progress bar over the runs (tqdm), for terminals and notebooks.

From Python (a notebook)::

    from chatlab.bench import run_benchmark
    result = run_benchmark("tiny", targets=["selectors", "naive"], progress=ProgressBar())
    result["records"]   # one dict per run
"""

from __future__ import annotations

from typing import Any

from .progress import ProgressBar
from .report import text_report


def run_benchmark(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run the benchmark; return everything measured (what ``--json`` writes).

    Arguments: ``size`` ("tiny", "small", "full", or a ``scenarios.Size``),
    ``targets``, ``scenarios``, ``receivers``, ``messages``, ``progress``
    (called with each record; given a ``planned`` method too, as
    ``progress.ProgressBar`` has, it is first told how many runs there will
    be), ``repeats``.
    """
    # Imported here, not above: ``python -m chatlab.bench.loadgen`` (and
    # ``.serve``) must not find their module half-imported by this package.
    from .scenarios import run_benchmark as run

    return run(*args, **kwargs)


__all__ = ["ProgressBar", "run_benchmark", "text_report"]
