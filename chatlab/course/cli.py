"""``chatlab check`` and ``chatlab course``: the course's commands.

    chatlab check 3                 exercises 1 to 3 against exercises/ (each builds on the ones before)
    chatlab check 3 --only          exercise 3 alone
    chatlab check                   every exercise
    chatlab check --solutions       the same checks against solutions/ (instructors: all must pass)
    chatlab check --dir PATH        against any folder of exercise files (grading a submission)
    chatlab check --json FILE       also write the results as JSON, for a grade book
    chatlab course generate         regenerate exercises/ from solutions/
    chatlab course generate --check only compare: exit 1 if exercises/ is not what the generator makes
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
    plan,
    run_checks,
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
        if todo is not None:
            print(f"Next: check {todo.id}, \"{todo.name}\" (exercise {todo.exercise}).")
    return 1


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        solutions = find_folder("solutions", args.solutions_dir)
        exercises = Path(args.exercises_dir) if args.exercises_dir else solutions.parent / "exercises"
        differences = generate(solutions, exercises, write=not args.check)
    except (FolderNotFound, FileNotFoundError, MarkerError) as exc:
        print(f"chatlab course generate: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if not differences:
            print(f"{exercises} is exactly what the generator makes from {solutions}.")
            return 0
        for d in differences:
            print(f"exercises/{d.name}: {d.problem}")
            if d.diff:
                print(d.diff)
        print("Run 'chatlab course generate' to regenerate exercises/ from solutions/.", file=sys.stderr)
        return 1
    changed = ", ".join(d.name for d in differences) or "nothing changed"
    print(f"Generated {exercises} from {solutions}: {changed}.")
    return 0


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

    course = sub.add_parser("course", help="for instructors: generate exercises/ from solutions/")
    course_sub = course.add_subparsers(dest="course_command", required=True, metavar="ACTION")
    gen = course_sub.add_parser("generate", help="regenerate exercises/ from solutions/")
    gen.add_argument("--check", action="store_true",
                     help="write nothing: exit 1 if exercises/ differs from what would be generated")
    gen.add_argument("--solutions-dir", metavar="PATH", help="the solutions folder (default: found as for check)")
    gen.add_argument("--exercises-dir", metavar="PATH", help="where to write (default: exercises/ beside it)")
    gen.set_defaults(func=cmd_generate)
    listing = course_sub.add_parser("list", help="list the exercises")
    listing.set_defaults(func=cmd_list)
