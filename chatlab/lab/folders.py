"""Where the course's code is: the ``exercises/`` and ``solutions/`` folders."""

from __future__ import annotations

from pathlib import Path

COURSE_FOLDERS = ("exercises", "solutions")


def course_folder(kind: str = "exercises") -> Path | None:
    """The ``exercises/`` (or ``solutions/``) folder: near the current directory, or the repository's."""
    here = Path.cwd().resolve()
    # The repository's: three folders up from chatlab/lab/folders.py.
    for base in (here, *here.parents, Path(__file__).resolve().parent.parent.parent):
        if (base / kind).is_dir():
            return base / kind
    return None
