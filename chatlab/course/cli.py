"""``chatlab check`` and ``chatlab course``: the course's commands.

    chatlab check 3                 exercises 1 to 3 against exercises/ (each builds on the ones before)
    chatlab check 3 --only          exercise 3 alone
    chatlab check                   every exercise
    chatlab check --solutions       the same checks against solutions/ (instructors: all must pass)
    chatlab check --dir PATH        against any folder of exercise files (grading a submission)
    chatlab check --json FILE       also write the results as JSON, for a grade book
    chatlab course generate         regenerate exercises/ from solutions/ (never overwriting edited files)
    chatlab course generate --force also overwrite exercise files edited since they were generated
    chatlab course generate --check only compare: exit 1 if exercises/ is not what the generator makes
    chatlab course export DIR       a student's copy: exercises, notebooks, docs, README; no solutions/
    chatlab course mistakes [N]     make each classic mistake in a copy of solutions/: the checks must catch it
    chatlab course list             the exercises, their files and notebooks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXERCISES
from .generate import MarkerError, generate
from .runner import (
    FolderNotFound,
    find_folder,
    format_failures,
    format_header,
    format_row,
    format_summary,
    format_syntax_problems,
    plan,
    run_checks,
    syntax_problems,
    to_json,
)


def cmd_check(args: argparse.Namespace) -> int:
    kind = "solutions" if args.solutions else "exercises"
    try:
        folder = find_folder(kind, args.dir)
    except FolderNotFound as exc:
        print(f"chatlab check: {exc}", file=sys.stderr)
        return 2
    last = args.exercise or EXERCISES[-1].number
    if not 1 <= last <= EXERCISES[-1].number:
        print(f"chatlab check: there is no exercise {last}; they are numbered 1 to {EXERCISES[-1].number}",
              file=sys.stderr)
        return 2
    numbers = [last] if args.only else [ex.number for ex in EXERCISES if ex.number <= last]
    checks = plan(numbers)
    print(f"chatlab check: {len(checks)} checks of exercise{'s' if len(numbers) > 1 else ''} "
          f"{numbers[0]}{'' if len(numbers) == 1 else f' to {numbers[-1]}'} against {folder}", flush=True)
    broken = format_syntax_problems(syntax_problems(folder, numbers))
    if broken:
        print(f"\n{broken}", flush=True)
    shown: set[int] = set()

    def show(result) -> None:
        if result.exercise not in shown:
            shown.add(result.exercise)
            print(format_header(result.exercise), flush=True)
        print(format_row(result), flush=True)

    results = run_checks(folder, checks, jobs=args.jobs, timeout=args.timeout, on_result=show)
    failures = format_failures(results)
    if failures:
        print("\nWhat went wrong, check by check:\n")
        print(failures)
    print(format_summary(results))
    if args.json:
        Path(args.json).write_text(to_json(folder, results), encoding="utf-8")
        print(f"Results written to {args.json}")
    if all(r.passed for r in results):
        print("Every check passed." if kind == "exercises" else "Every check passed: the reference is sound.")
        return 0
    if kind == "exercises":
        todo = next((r for r in results if not r.passed), None)
        if todo is not None and todo.status == "skipped":
            print(f"Next: the syntax error: {todo.message.removeprefix('not run: ')} (shown at the top).")
        elif todo is not None:
            print(f"Next: check {todo.id}, \"{todo.name}\" (exercise {todo.exercise}).")
    return 1


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        solutions = find_folder("solutions", args.solutions_dir)
        exercises = Path(args.exercises_dir) if args.exercises_dir else solutions.parent / "exercises"
        differences = generate(solutions, exercises, write=not args.check, force=args.force)
    except (FolderNotFound, FileNotFoundError, MarkerError) as exc:
        print(f"chatlab course generate: {exc}", file=sys.stderr)
        return 2
    edited = [d.name for d in differences if d.problem == "edited"]
    if args.check:
        if not differences:
            print(f"{exercises} is exactly what the generator makes from {solutions}.")
            return 0
        for d in differences:
            print(f"exercises/{d.name}: {WHAT[d.problem]}")
            if d.diff:
                print(d.diff)
        print("'chatlab course generate' writes what is missing and what nobody edited"
              + (f"; it leaves {', '.join(edited)} alone (edited since it was generated: someone's work) "
                 "unless told --force" if edited else "") + ".", file=sys.stderr)
        return 1
    written = [d.name if d.problem != "stale" else "the record of what was generated" for d in differences
               if d.problem != "extra" and (d.problem != "edited" or args.force)]
    print(f"Generated {exercises} from {solutions}: {', '.join(written) or 'nothing changed'}.")
    if edited and not args.force:
        print(f"Not overwritten, because they differ from what the generator last wrote there (someone's work): "
              f"{', '.join(edited)}. See the differences with 'chatlab course generate --check'; keep what is "
              "worth keeping, then overwrite them with 'chatlab course generate --force'.", file=sys.stderr)
        return 1
    return 0


WHAT = {
    "missing": "missing",
    "different": "out of date (its solution changed; nobody edited it since it was generated)",
    "edited": "edited since it was generated (someone's work: kept unless --force)",
    "extra": "not made from any solution",
    "stale": "the record of what was generated is out of date",
}


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, export
    from .runner import REPOSITORY

    try:
        solutions = find_folder("solutions", args.solutions_dir)
        # The notebooks, docs and chatlab beside the solutions (a checkout), else those of this installation.
        repository = solutions.parent if (solutions.parent / "notebooks").is_dir() else REPOSITORY
        held = export(repository, solutions, Path(args.dir))
    except (FolderNotFound, FileNotFoundError, MarkerError, ExportError) as exc:
        print(f"chatlab course export: {exc}", file=sys.stderr)
        return 2
    print(f"A student's copy of the course in {args.dir}: {', '.join(held)}.")
    print("It holds no solutions/ (and nothing that rebuilds them). Students run 'python3 tasks.py lab' in it.")
    return 0


def cmd_mistakes(args: argparse.Namespace) -> int:
    try:
        from . import mistakes
    except ImportError:  # a student's copy (chatlab course export) leaves the catalogue out
        print("chatlab course mistakes: the catalogue of mistakes is not part of this copy", file=sys.stderr)
        return 2
    import tempfile

    try:
        solutions = find_folder("solutions", args.solutions_dir)
    except FolderNotFound as exc:
        print(f"chatlab course mistakes: {exc}", file=sys.stderr)
        return 2
    chosen = [m for m in mistakes.MISTAKES if args.exercise in (None, m.exercise)]
    bad = 0
    with tempfile.TemporaryDirectory(prefix="chatlab-mistakes-") as work:
        for mistake in chosen:
            verdict = mistakes.judge(mistake, solutions, Path(work), jobs=args.jobs or 2)
            first = verdict.first
            mark = "caught" if verdict.ok else "MISSED" if not verdict.caught else "WRONG HINT"
            bad += not verdict.ok
            print(f"{mark:<10} {mistake.id}: {mistake.what}")
            if first is not None:
                print(f"           first failure: {first.id} [{first.status}]; hint: {verdict.hint[:160]}")
    print(f"{len(chosen) - bad} of {len(chosen)} mistakes caught with a hint about them.")
    return 1 if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    for ex in EXERCISES:
        print(f"{ex.number:>2}. {ex.title}\n    exercises/{ex.filename}   read {ex.notebook}   "
              f"check: chatlab check {ex.number}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``check`` and ``course`` to the ``chatlab`` command."""
    check = sub.add_parser("check", help="check your exercises (or the reference solutions)",
                           description="Run the checks of the course exercises, each in a process of its "
                                       "own with a timeout, and print a points table.")
    check.add_argument("exercise", nargs="?", type=int, metavar="N",
                       help="check exercises 1 to N (default: all); each builds on the ones before")
    check.add_argument("--only", action="store_true", help="check exercise N alone")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--solutions", action="store_true",
                       help="check solutions/ instead of exercises/ (instructors)")
    where.add_argument("--dir", metavar="PATH", help="check the exercise files in PATH (e.g. a submission)")
    check.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON (a grade book)")
    check.add_argument("--jobs", type=int, metavar="J", help="checks run at once (default: up to 4)")
    check.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="stop a check that runs longer (default: 30 s each)")
    check.set_defaults(func=cmd_check)

    course = sub.add_parser("course", help="for instructors: generate exercises/, export a student's copy, "
                                           "test the checks against classic mistakes")
    course_sub = course.add_subparsers(dest="course_command", required=True, metavar="ACTION")
    gen = course_sub.add_parser("generate", help="regenerate exercises/ from solutions/")
    gen.add_argument("--check", action="store_true",
                     help="write nothing: exit 1 if exercises/ differs from what would be generated")
    gen.add_argument("--solutions-dir", metavar="PATH", help="the solutions folder (default: found as for check)")
    gen.add_argument("--exercises-dir", metavar="PATH", help="where to write (default: exercises/ beside it)")
    gen.add_argument("--force", action="store_true",
                     help="also overwrite exercise files edited since they were generated (their edits are lost)")
    gen.set_defaults(func=cmd_generate)
    exp = course_sub.add_parser("export", help="write a student's copy of the course, without the solutions",
                                description="Write into DIR (new or empty) what students need: the exercises as "
                                            "generated, the notebooks, the docs, chatlab itself and a README for "
                                            "students -- no solutions/, nothing that rebuilds them.")
    exp.add_argument("dir", metavar="DIR", help="the folder to write (it must not exist yet, or be empty)")
    exp.add_argument("--solutions-dir", metavar="PATH", help="the solutions folder (default: found as for check)")
    exp.set_defaults(func=cmd_export)
    mis = course_sub.add_parser("mistakes", help="make each classic mistake in a copy of the solutions, and check "
                                                 "that the checks catch it",
                                description="The catalogue of classic student mistakes (chatlab/course/mistakes.py):"
                                            " each is made in a copy of solutions/, and the checks of its exercise "
                                            "must fail, with a hint about that mistake.")
    mis.add_argument("exercise", nargs="?", type=int, metavar="N", help="only exercise N's mistakes")
    mis.add_argument("--jobs", type=int, metavar="J", help="checks run at once (default 2)")
    mis.add_argument("--solutions-dir", metavar="PATH", help="the solutions folder (default: found as for check)")
    mis.set_defaults(func=cmd_mistakes)
    listing = course_sub.add_parser("list", help="list the exercises")
    listing.set_defaults(func=cmd_list)
