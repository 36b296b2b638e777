"""Run the checks, each in a child process with a timeout, and report them.

``chatlab check`` calls ``run_checks`` and prints ``format_table`` and
``format_failures``; ``--json`` writes ``to_json``.  Each check runs in its
own process (``child``): a student's server that hangs, a thread stuck in
recv(), even a crash, ends with that process, and the other checks still
run.  A check that runs past its timeout is killed, and the report names
the step it was in -- the child streams its steps as they happen.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import EXERCISES, exercise
from .checks import checks_for
from .harness import Check

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds chatlab/
REPOSITORY = PACKAGE_ROOT  # in a checkout, exercises/ and solutions/ sit next to chatlab/
KINDS = ("exercises", "solutions")


class FolderNotFound(Exception):
    """No exercises/ or solutions/ folder where we looked; the message says where."""


def find_folder(kind: str = "exercises", explicit: str | os.PathLike | None = None) -> Path:
    """The folder to check: ``explicit`` if given, else ``kind`` found from here.

    Looked for, in order: ``./KIND`` (the current directory holds the
    course), the current directory itself if it is named KIND, then the
    checkout chatlab is installed from (``pip install -e .``).
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise FolderNotFound(f"{path} is not a folder")
        return path.resolve()
    here = Path.cwd()
    candidates = [here / kind, here, REPOSITORY / kind]
    for path in candidates:
        if path.name == kind and path.is_dir() and any(path.glob("ex[0-9][0-9]_*.py")):
            return path.resolve()
    raise FolderNotFound(
        f"cannot find the {kind}/ folder: looked in {here / kind}, {here} and {REPOSITORY / kind}. "
        f"Run this from the folder that holds {kind}/, or name it with --dir PATH."
    )


@dataclass
class Result:
    exercise: int
    id: str
    name: str
    points: int  # earned
    max_points: int
    passed: bool
    status: str  # passed, failed, todo (NotImplementedError), error, timeout
    message: str
    seconds: float


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very chatlab, installed or not; and it must
    # not write __pycache__ folders into the student's exercises/.
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_check(folder: Path, check: Check, timeout: float | None = None) -> Result:
    """One check, in a child process of its own, within ``timeout`` seconds."""
    limit = timeout or check.timeout
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatlab.course.child", str(folder), str(check.exercise), str(check.index)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=str(folder), env=_python_env(), text=True, encoding="utf-8", errors="replace",
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name="check-pump", daemon=True)
    reader.start()
    steps: list[str] = []
    outcome: dict | None = None
    deadline = started + limit
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break  # hung: killed below
            if line is None:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if "step" in event:
                steps.append(event["step"])
            elif "result" in event:
                outcome = event["result"]
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the OS refused to kill it
            pass
        reader.join(5)
        errors = proc.stderr.read() if proc.stderr else ""
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
    seconds = time.monotonic() - started
    if outcome is None:
        if time.monotonic() >= deadline:
            where = f"in step {len(steps)}: {steps[-1].split('s  ', 1)[-1]}" if steps else "before its first step"
            transcript = "\n".join(["Transcript (most recent last):"]
                                   + [f"  {i:3d}. {s}" for i, s in enumerate(steps[-25:], 1)])
            status, message = "timeout", (
                f"timed out after {limit:g} s {where}\n{transcript}\n"
                f"Hint:     something in your code waited forever (recv, accept, join without a timeout?) "
                f"or looped without end; {check.hint}")
        else:
            status, message = "error", (f"the check's process ended unexpectedly (exit code {proc.returncode})"
                                        + (f":\n{errors[-1500:]}" if errors.strip() else ""))
    else:
        status, message = outcome["status"], outcome["message"]
    passed = status == "passed"
    return Result(check.exercise, check.id, check.name, check.points if passed else 0, check.points,
                  passed, status, message, round(seconds, 3))


def plan(numbers: Iterable[int]) -> list[Check]:
    return [c for n in numbers for c in checks_for(n)]


# ------------------------------------------------- files that do not compile
#
# A syntax error stops every check that imports the file, and each would say
# so: five times the same error, each with a networking hint that has
# nothing to do with it.  So the files are compiled first; a broken one is
# reported once, with its line, and the checks that need it are skipped.

COURSE_MODULE = re.compile(r"ex\d\d_\w+")


@dataclass
class SyntaxProblem:
    file: str  # e.g. "ex03_lines.py"
    line: int
    message: str  # what Python says, with the offending text and a caret

    def __str__(self) -> str:
        return self.message


def _compile(path: Path) -> SyntaxProblem | None:
    try:
        compile(path.read_text(encoding="utf-8", errors="replace"), str(path), "exec")
    except SyntaxError as exc:
        text = (exc.text or "").rstrip("\n")
        caret = " " * max(0, (exc.offset or 1) - 1 - (len(text) - len(text.lstrip()))) + "^"
        return SyntaxProblem(path.name, exc.lineno or 0, f"{path.parent.name}/{path.name}, line {exc.lineno}: "
                             f"{exc.msg}\n    {text.strip()}\n    {caret}")
    return None


def _imports(path: Path) -> set[str]:
    """The course modules a file imports (ex05 imports ex01 and ex03, ...); none if it does not parse."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return {name for name in names if COURSE_MODULE.fullmatch(name)}


def needs(folder: Path, number: int) -> list[str]:
    """The files exercise ``number``'s checks load: its own, and those it imports, transitively."""
    wanted, seen = [exercise(number).module], []
    while wanted:
        module = wanted.pop()
        if module in seen:
            continue
        seen.append(module)
        path = folder / f"{module}.py"
        if path.exists():
            wanted.extend(sorted(_imports(path)))
    return [f"{m}.py" for m in seen]


def syntax_problems(folder: Path, numbers: Iterable[int]) -> list[SyntaxProblem]:
    """The files these exercises need that do not compile, each once, in exercise order."""
    files = dict.fromkeys(f for n in numbers for f in needs(folder, n))
    found = [_compile(folder / f) for f in sorted(files) if (folder / f).exists()]
    return [problem for problem in found if problem is not None]


def run_checks(folder: Path, checks: list[Check], jobs: int | None = None, timeout: float | None = None,
               on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run ``checks`` against ``folder``, ``jobs`` at a time; results in the order of ``checks``."""
    jobs = max(1, jobs or min(4, os.cpu_count() or 1))
    numbers = sorted({c.exercise for c in checks})
    broken = {p.file: p for p in syntax_problems(folder, numbers)}
    # Worked out here, before the threads: ast.parse is not safe to run in several threads at once on
    # some Python versions (CPython 3.11.7: "AST constructor recursion depth mismatch", gh-106905).
    required = {n: needs(folder, n) for n in numbers}
    results: list[Result] = []

    def run_or_skip(check: Check) -> Result:
        problem = next((broken[f] for f in required[check.exercise] if f in broken), None)
        if problem is None:
            return run_check(folder, check, timeout)
        return Result(check.exercise, check.id, check.name, 0, check.points, False, "skipped",
                      f"not run: {problem.file} has a syntax error, line {problem.line}", 0.0)

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="check-runner") as pool:
        futures = [pool.submit(run_or_skip, c) for c in checks]
        for future in futures:  # in order: the table reads top to bottom
            result = future.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


# ------------------------------------------------------------------ reporting

MARKS = {"passed": "ok", "failed": "FAIL", "todo": "TODO", "error": "ERROR", "timeout": "TIMEOUT", "skipped": "SKIP"}
NAME_WIDTH = 78  # characters of a check's name in the table; the failures below give it whole


def fit(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at a word and marked with "..." if too long."""
    if len(text) <= width:
        return text
    cut = text[: width - 3].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return cut + "..."


def format_row(result: Result) -> str:
    return (f"  {result.id:>5}  {MARKS[result.status]:<7}  {fit(result.name, NAME_WIDTH):<{NAME_WIDTH}}  "
            f"{result.points}/{result.max_points}")


def format_syntax_problems(problems: list[SyntaxProblem]) -> str:
    """Each file that does not compile, once: the checks that need it are skipped."""
    if not problems:
        return ""
    lines = [f"{plural_files(len(problems))} not compile, so the checks that need "
             f"{'it' if len(problems) == 1 else 'them'} are skipped (SKIP) until "
             f"{'it is' if len(problems) == 1 else 'they are'} fixed:"]
    for problem in problems:
        lines.append(f"  {problem.message}".replace("\n", "\n  "))
    return "\n".join(lines)


def plural_files(count: int) -> str:
    return "This file does" if count == 1 else f"These {count} files do"


def format_header(number: int) -> str:
    ex = exercise(number)
    return f"\nExercise {number}: {ex.title}  ({ex.filename}; read {ex.notebook})"


def format_failures(results: list[Result]) -> str:
    blocks = []
    said: dict[str, str] = {}  # a TODO message -> the first check that showed it
    skipped = [r.id for r in results if r.status == "skipped"]
    for r in results:
        if r.passed or r.status == "skipped":
            continue
        title = f"--- {r.id} {r.name} [{MARKS[r.status]}] "
        message = r.message
        if r.status == "todo" and message in said:
            message = f"the same TODO as {said[message]}"
        said.setdefault(r.message, r.id)
        blocks.append(f"{title}{'-' * max(3, 100 - len(title))}\n{message}")
    if skipped:
        blocks.append(f"Skipped, because a file they need does not compile (see above): {', '.join(skipped)}")
    return "\n\n".join(blocks)


def format_summary(results: list[Result]) -> str:
    lines = ["", "Points by exercise:"]
    for ex in EXERCISES:
        mine = [r for r in results if r.exercise == ex.number]
        if mine:
            got, most = sum(r.points for r in mine), sum(r.max_points for r in mine)
            done = sum(r.passed for r in mine)
            lines.append(f"  {ex.number:>2}. {fit(ex.title, 64):<64} {got:>3}/{most:<3} ({done}/{len(mine)} checks)")
    got, most = sum(r.points for r in results), sum(r.max_points for r in results)
    lines.append(f"  Total: {got}/{most} points")
    return "\n".join(lines)


def iter_exercises(results: list[Result]) -> Iterator[tuple[int, list[Result]]]:
    for ex in EXERCISES:
        mine = [r for r in results if r.exercise == ex.number]
        if mine:
            yield ex.number, mine


def to_json(folder: Path, results: list[Result]) -> str:
    from .. import __version__

    numbers = sorted({r.exercise for r in results})
    return json.dumps({
        "chatlab": __version__,
        "folder": str(folder),
        "syntax_errors": [asdict(p) for p in syntax_problems(folder, numbers)],
        "points": sum(r.points for r in results),
        "max_points": sum(r.max_points for r in results),
        "checks": [asdict(r) for r in results],
    }, indent=2, ensure_ascii=False)
