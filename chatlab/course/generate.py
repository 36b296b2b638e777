"""Make the student files from the reference solutions: one source, no drift.

A solution marks the code a student must write::

        def handle(self, conn):
            # BEGIN SOLUTION
            # HINT: loop: data = conn.recv(BUFFER_SIZE); b"" means the client closed
            # TODO: echo each piece as it comes
            while data := conn.recv(BUFFER_SIZE):
                conn.sendall(data)
            # END SOLUTION

and the generator turns each region into what the student starts from::

        def handle(self, conn):
            # TODO: echo each piece as it comes
            raise NotImplementedError("loop: data = conn.recv(BUFFER_SIZE); b\\"\\" means the client closed")

The rules: ``# BEGIN SOLUTION`` and ``# END SOLUTION`` stand alone on their
lines, at the same indentation, with every line between indented at least
as much.  ``# HINT:`` lines (one or more, joined) are required: they become
the message of the NotImplementedError, which the checker shows as "not
implemented yet".  ``# TODO`` lines are kept as the student's guidance (the
hint is used if there are none).  Everything else in the region is
removed.  The result must compile: the generator refuses to write it if not.

Regenerating never destroys a student's work.  exercises/ keeps a record of
what was generated (``MANIFEST``: the SHA-256 of each file as written).  A
file that still matches that record was not edited since, and is rewritten
when its solution changes; a file that differs from it -- someone's work --
is left alone, and named, unless the instructor says ``force``.
"""

from __future__ import annotations

import difflib
import hashlib
import textwrap
from dataclasses import dataclass
from pathlib import Path

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
HINT = "# HINT:"
TODO = "# TODO"
PATTERN = "ex[0-9][0-9]_*.py"  # the course files, in solutions/ and exercises/
MANIFEST = ".generated"  # in exercises/: "SHA256  NAME" per file, as the generator last wrote it


class MarkerError(ValueError):
    """A solution file whose markers do not follow the rules."""


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _literal(text: str) -> str:
    """``text`` as a double-quoted Python string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _raise(indent: str, hints: list[str]) -> str:
    """The ``raise NotImplementedError(hint)`` line; a long hint is split over lines of at most 100."""
    hint = " ".join(hints)
    one_line = f"{indent}raise NotImplementedError({_literal(hint)})\n"
    if len(one_line) <= 100:
        return one_line
    pieces = textwrap.wrap(hint, width=max(40, 100 - len(indent) - 8), break_long_words=False,
                           break_on_hyphens=False)
    if " ".join(pieces) != hint:  # wrapping would change the text (double spaces): one piece per HINT line
        pieces = hints
    parts = [_literal(piece + " ") for piece in pieces[:-1]] + [_literal(pieces[-1])]
    body = "".join(f"{indent}    {part}\n" for part in parts)
    return f"{indent}raise NotImplementedError(\n{body}{indent})\n"


def strip_solutions(source: str, filename: str = "<solution>") -> str:
    """The student version of one solution file."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped in (END, HINT) or stripped.startswith(HINT):
            raise MarkerError(f"{filename}:{i + 1}: {stripped.split(':')[0]} outside a solution region")
        if stripped != BEGIN:
            if stripped.startswith("# BEGIN") or stripped.startswith("# END"):
                raise MarkerError(f"{filename}:{i + 1}: write the marker exactly as {BEGIN!r} or {END!r}")
            out.append(line)
            i += 1
            continue
        start, indent = i, _indent(line)
        hints: list[str] = []
        todos: list[str] = []
        i += 1
        while True:
            if i == len(lines):
                raise MarkerError(f"{filename}:{start + 1}: {BEGIN} without {END}")
            inner = lines[i]
            text = inner.strip()
            if text == END:
                if _indent(inner) != indent:
                    raise MarkerError(f"{filename}:{i + 1}: {END} not indented like its {BEGIN} (line {start + 1})")
                break
            if text == BEGIN:
                raise MarkerError(f"{filename}:{i + 1}: solution regions cannot be nested")
            if text and not inner.startswith(indent):
                raise MarkerError(f"{filename}:{i + 1}: a line in a solution region is indented less than its marker")
            if text.startswith(HINT):
                hints.append(text[len(HINT):].strip())
            elif text.startswith(TODO):
                todos.append(text)
            i += 1
        i += 1  # past END
        if not hints:
            raise MarkerError(f"{filename}:{start + 1}: a solution region needs a {HINT} line")
        hint = " ".join(hints)
        for todo in todos or [f"# TODO: {hint}"]:
            out.append(f"{indent}{todo}\n")
        out.append(_raise(indent, hints))
    result = "".join(out)
    try:
        compile(result, filename, "exec")
    except SyntaxError as exc:
        raise MarkerError(f"{filename}: the generated student file does not compile: {exc}") from None
    return result


@dataclass
class Difference:
    name: str
    problem: str  # "missing", "different", "edited" (differs from what was generated: someone's work) or "extra"
    diff: str = ""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(exercises: Path) -> dict[str, str]:
    """NAME -> SHA-256 of each file as the generator last wrote it (empty if there is no record)."""
    path = exercises / MANIFEST
    if not path.exists():
        return {}
    entries = (line.split(None, 1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {name.strip(): sha for sha, name in entries}


def generate(solutions: Path, exercises: Path, write: bool = True, force: bool = False) -> list[Difference]:
    """Regenerate ``exercises`` from ``solutions``; with ``write=False`` only compare.

    Returns the files that differ from what the generator makes.  When
    writing, a missing file is written, and a differing one only if it is
    exactly what the generator last wrote there (its solution changed, nobody
    edited it) or ``force`` is given; the others are reported as "edited"
    and left as they are.
    """
    sources = sorted(solutions.glob(PATTERN))
    if not sources:
        raise FileNotFoundError(f"no solution files ({PATTERN}) in {solutions}")
    wanted = {path.name: strip_solutions(path.read_text(encoding="utf-8"), str(path)) for path in sources}
    record = read_manifest(exercises)
    differences: list[Difference] = []
    for name, text in wanted.items():
        target = exercises / name
        if not target.exists():
            differences.append(Difference(name, "missing"))
        else:
            current = target.read_text(encoding="utf-8")
            if current != text:
                diff = "".join(difflib.unified_diff(
                    current.splitlines(keepends=True), text.splitlines(keepends=True),
                    f"exercises/{name} (as it is)", f"exercises/{name} (generated)", n=2))
                unedited = record.get(name) == digest(current)
                differences.append(Difference(name, "different" if unedited else "edited", diff))
    for path in sorted(exercises.glob(PATTERN)):
        if path.name not in wanted:
            differences.append(Difference(path.name, "extra"))
    if not differences and record != {name: digest(text) for name, text in wanted.items()}:
        differences.append(Difference(MANIFEST, "stale"))  # the files are right, the record of them is not
    if write:
        exercises.mkdir(parents=True, exist_ok=True)
        kept = {d.name for d in differences if d.problem == "edited" and not force}
        written = {}
        for name, text in wanted.items():
            if name in kept:
                continue
            # newline="\n": the same bytes on every platform, so the check
            # that exercises/ equals the generator's output holds on Windows.
            (exercises / name).write_text(text, encoding="utf-8", newline="\n")
            written[name] = text
        # The record: what was written now, and for a file kept, what was recorded before.
        entries = {name: sha for name, sha in record.items() if name in kept}
        entries.update((name, digest(text)) for name, text in written.items())
        (exercises / MANIFEST).write_text("".join(f"{sha}  {name}\n" for name, sha in sorted(entries.items())),
                                          encoding="utf-8", newline="\n")
    return differences
