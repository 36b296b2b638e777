"""``chatlab course export DIR``: the course as a student gets it, without the solutions.

An instructor hands out a folder, not the repository: the exercises as the
generator makes them from the solutions (whatever state exercises/ is in
here), the notebooks with no outputs, the docs a student reads, chatlab
itself (so that ``python3 tasks.py lab`` and ``chatlab check`` work there),
and a README written for students.  Left out: solutions/, the instructors'
guide, the tests (which read solutions/), and the generator's record of
what it wrote -- nothing in the copy can rebuild a solution.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import EXERCISES
from .generate import PATTERN, strip_solutions

# What of the repository a student's copy holds (besides exercises/ and the README, written fresh).
COPIED = ("chatlab", "notebooks", "docs", "benchmarks", "pyproject.toml", "environment.yml", "tasks.py", ".gitignore")
LEFT_OUT_DOCS = ("instructors.md",)  # for instructors: it tells how the solutions make the exercises
# The mistake catalogue quotes the solutions line by line (each mistake is an edit of one): not for students.
LEFT_OUT_CODE = ("chatlab/course/mistakes.py",)
JUNK = ("__pycache__", "*.pyc", "*.egg-info", ".ipynb_checkpoints", "results")

STUDENT_README = """# chatlab: the course

You build a multi-client chat server in {count} steps, from a first socket to a
server that one slow client cannot stall. Everything runs on your machine,
over real TCP on 127.0.0.1.

## Set up, once

With Python 3.10 or newer installed (nothing else):

```
python3 tasks.py lab        # on Windows: py tasks.py lab
```

The first run makes a virtual environment in `.venv/` and installs chatlab
and JupyterLab into it; then JupyterLab opens, on the welcome notebook
`notebooks/00_welcome.ipynb`. Its file browser shows this whole folder:
`exercises/`, `notebooks/`, `docs/`. A terminal opened in JupyterLab
(File > New > Terminal) has `chatlab` and the right `python`.

## The path

For each exercise, in order (each builds on the ones before):

1. open it, e.g. `exercises/ex01_echo.py`: its header says what you will
   learn and which notebook section to read first;
2. read that section, and fill in each `TODO` in the file;
3. check it, in a terminal: `chatlab check 1`.

| # | Exercise | Notebook |
| --- | --- | --- |
{table}

`chatlab check N` runs the checks of exercises 1 to N (`--only` runs N
alone) and prints a points table. A failed check shows the numbered steps of
what was sent and received, what was expected, what came instead, and a
hint. With `IMPLEMENTATION = "exercises"` in a notebook's first cell, the
notebook runs *your* code; an exercise not done yet is replaced by chatlab's
own, and the notebook says so.

## Chatting

```
chatlab serve                    # a chat server on 127.0.0.1:5050 (Ctrl+C stops it)
chatlab chat 127.0.0.1:5050      # in another terminal: join it
nc 127.0.0.1 5050                # or with no client at all
```

`docs/protocol.md` describes what travels on the wire.
"""


class ExportError(ValueError):
    """The export cannot be made as asked (the message says why)."""


def _ignore(folder: str, names: list[str]) -> set[str]:
    import fnmatch

    return {name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in JUNK)}


def _clean_notebook(source: Path, target: Path) -> None:
    """Copy a notebook with every output and execution count removed."""
    nb = json.loads(source.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _exercises_readme(repository: Path) -> str:
    """exercises/README.md without what it says about solutions/."""
    text = (repository / "exercises" / "README.md").read_text(encoding="utf-8")
    kept = [p for p in text.split("\n\n") if "solutions" not in p and "instructors" not in p]
    return "\n\n".join(kept).rstrip() + "\n"


def export(repository: Path, solutions: Path, target: Path) -> list[str]:
    """Write the student's copy of the course into ``target`` (new, or empty); return what it holds."""
    if target.exists() and any(target.iterdir()):
        raise ExportError(f"{target} is not empty: export into a new folder, so that nothing is overwritten")
    if target.resolve().is_relative_to(repository.resolve()):
        raise ExportError(f"{target} is inside the repository {repository}: export somewhere outside it")
    target.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = repository / name
        if not source.exists():
            continue
        if source.is_dir() and name == "notebooks":
            (target / name).mkdir()
            for notebook in sorted(source.glob("*.ipynb")):
                _clean_notebook(notebook, target / name / notebook.name)
        elif source.is_dir():
            shutil.copytree(source, target / name, ignore=_ignore)
        else:
            shutil.copy2(source, target / name)
    for doc in LEFT_OUT_DOCS:
        (target / "docs" / doc).unlink(missing_ok=True)
    for code in LEFT_OUT_CODE:
        (target / code).unlink(missing_ok=True)
    exercises = target / "exercises"
    exercises.mkdir()
    for path in sorted(solutions.glob(PATTERN)):
        # As the generator makes them: whatever state exercises/ is in here, the student starts fresh.
        (exercises / path.name).write_text(strip_solutions(path.read_text(encoding="utf-8"), str(path)),
                                           encoding="utf-8", newline="\n")
    (exercises / "README.md").write_text(_exercises_readme(repository), encoding="utf-8")
    table = "\n".join(f"| {ex.number} | `{ex.filename}`: {ex.title} | `{Path(ex.notebook).stem}` |" for ex in EXERCISES)
    (target / "README.md").write_text(STUDENT_README.format(count=len(EXERCISES), table=table), encoding="utf-8")
    return sorted(p.name for p in target.iterdir())
