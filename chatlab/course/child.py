"""Run ONE check in this process, and report to the parent on stdout.

``python -m chatlab.course.child FOLDER EXERCISE INDEX`` -- started by
``runner``, never by people.  Each check gets a fresh process, so that a
student's server left running, a thread stuck in recv(), or a crash cannot
touch the next check: when the process ends, the operating system closes
every socket it held.

The protocol to the parent is one JSON object per line: ``{"step": ...}``
as each step happens (so that a check killed for hanging still says where
it hung), then ``{"result": ...}``.  Whatever the student's code prints
goes to a file instead, and its end is shown with a failure.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, TextIO

from ..testing import CheckFailed, Transcript
from .checks import checks_for, diagnoses_for
from .harness import Context, explain, student_frame

PRINTED_TAIL = 1500  # characters of the student's own output shown with a failure


def _channel() -> tuple[TextIO, Any]:
    """Our stdout becomes the channel to the parent; fds 1 and 2 go to a file."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    printed = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(printed.fileno(), 1)
    os.dup2(printed.fileno(), 2)
    sys.stdout = sys.stderr = printed
    return channel, printed


def describe(exc: BaseException, folder: Path) -> tuple[str, str]:
    """(status, message) for an exception that ended a check."""
    where = student_frame(exc, folder)
    at = f"{folder.name}/{where[0]}, line {where[1]}, in {where[2]}" if where else ""
    if isinstance(exc, NotImplementedError):
        hint = str(exc) or "(no hint)"
        return "todo", f"not implemented yet: {hint}" + (f"\n  ({at})" if at else "")
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).parent.resolve() == folder.resolve():
        text = (exc.text or "").rstrip("\n")
        caret = " " * max(0, (exc.offset or 1) - 1) + "^"
        return "error", (f"{folder.name}/{Path(exc.filename).name} has a syntax error, line {exc.lineno}: "
                         f"{exc.msg}\n    {text}\n    {caret}")
    if isinstance(exc, ImportError) and where is None:
        return "error", f"an import failed: {exc}"
    if where is not None:
        source = f"\n    {where[3]}" if where[3] else ""
        return "error", f"your code raised {type(exc).__name__}: {exc}\n  ({at}){source}"
    # Not the student's code: a fault in the checker itself.  That one
    # deserves the full traceback.
    return "error", ("the check itself failed (please report this):\n"
                     + "".join(traceback.format_exception(exc)).rstrip())


def run(folder: Path, exercise: int, index: int, emit) -> dict[str, Any]:
    check = next(c for c in checks_for(exercise) if c.index == index)
    log = Transcript(on_step=lambda step: emit({"step": step}))
    # A crash in one of the student's threads (a server thread, a client's
    # receive thread) is recorded, and the check's next wait re-raises it.
    threading.excepthook = lambda args: log.thread_failed(
        args.thread.name if args.thread else "?", args.exc_value or RuntimeError("a thread failed"))
    sys.path.insert(0, str(folder))
    ctx = Context(folder, log, check.hint)
    error: BaseException | None = None
    try:
        check.function(ctx)
    except BaseException as exc:
        error = exc
    cleanup_error = ctx.cleanup()
    # A thread that died is the root cause of what followed (a timeout, a
    # closed connection): report it first.
    if log.thread_errors and (error is None or isinstance(error, CheckFailed)):
        error = log.thread_errors[0][1]
    if error is None:
        error = cleanup_error
    if error is None:
        return {"status": "passed", "message": ""}
    if isinstance(error, CheckFailed):
        message = str(error)
        if "\nHint:" not in message and check.hint:  # a failure seen by a client of ours, not by the check
            message += f"\nHint:     {check.hint}"
        return {"status": "failed", "message": message}
    status, message = describe(error, folder)
    if status != "todo" and log.steps:
        message += "\n" + "\n".join(["Transcript (most recent last):"]
                                    + [f"  {i:3d}. {s}" for i, s in enumerate(log.steps[-25:], 1)])
    if status != "todo":
        # The hint follows what was raised, and where: a BrokenPipeError in
        # handle() is about handle(), whatever this check was testing.
        where = student_frame(error, folder)
        hint = explain(error, where[2] if where else None, diagnoses_for(exercise)) or check.hint
        if hint:
            message += f"\nHint:     {hint}"
    return {"status": status, "message": message}


def main(argv: list[str]) -> None:
    folder, exercise, index = Path(argv[0]).resolve(), int(argv[1]), int(argv[2])
    channel, printed = _channel()

    def emit(obj: dict[str, Any]) -> None:
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    try:
        result = run(folder, exercise, index, emit)
    except BaseException:  # the checker's own fault
        result = {"status": "error", "message": "the checker failed:\n" + traceback.format_exc()}
    printed.flush()
    printed.seek(0)
    output = printed.read()
    if output.strip() and result["status"] != "passed":
        result["message"] += f"\nYour code printed (the end of it):\n{output[-PRINTED_TAIL:].rstrip()}"
    emit({"result": result})
    channel.close()
    # Leave now, even if the student's code left threads running that are
    # not daemons: the parent is waiting, and the OS closes every socket.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
