"""What a check is written with: a transcript of steps, and helpers that explain failures.

A check is a function of one argument, the ``Context``, marked with the
``check`` decorator::

    @check("the server echoes bytes back exactly", points=2,
           hint="handle() must send back every byte recv() returned, until b\\"\\"")
    def echoes(ctx):
        ex = ctx.load("ex01_echo")
        server = ctx.start(ex.EchoServer())
        client = ctx.client(server.address)
        client.send(b"hello")
        ctx.expect_bytes(client, b"hello")

Every step goes into the transcript (``chatlab.testing.Transcript``).  A
failure shows the numbered steps, what was expected, what came instead (a
hex dump where bytes matter) and the hint.  Every wait has a timeout that
names its step; every call into the student's code that could block runs
with one (``ctx.call``); everything a check starts is stopped at the end,
whatever happened (``ctx.cleanup``).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..testing import CheckFailed, RawClient, Transcript, hexdump

STEP_TIMEOUT = 5.0  # seconds a single step may take before it counts as hung
CHECK_TIMEOUT = 30.0  # seconds a whole check may take before its process is stopped


@dataclass
class Check:
    exercise: int
    index: int  # 1, 2, ... within its exercise
    name: str
    points: int
    hint: str
    function: Callable[["Context"], None]
    timeout: float = CHECK_TIMEOUT

    @property
    def id(self) -> str:
        return f"{self.exercise}.{self.index}"


def check(name: str, points: int = 1, hint: str = "", timeout: float = CHECK_TIMEOUT):
    """Mark a function as a check; its exercise and number come from its module."""

    def mark(function: Callable[["Context"], None]) -> Callable[["Context"], None]:
        function.check_info = dict(name=name, points=points, hint=hint, timeout=timeout)  # type: ignore[attr-defined]
        return function

    return mark


# ------------------------------------------------------------ showing values
#
# What a student reads in "Expected" and "But got" must be exact where it
# is cut: a shortened value ends with "..." after its closing quote and says
# how long it really was; two long values are shown from where they first
# differ, not from their (identical) beginnings.


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 line``, ``2 lines``, ``1,000 bytes``."""
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` in about ``limit`` characters; a cut value says so, its quotes closed."""
    if isinstance(value, bytearray):
        value = bytes(value)
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, (bytes, str)):
        unit = "byte" if isinstance(value, bytes) else "character"
        keep = max(1, limit - 4)  # the repr of a prefix only ever shrinks with it
        while keep > 1 and len(repr(value[:keep])) > limit - 4:
            keep = keep * 3 // 4
        return f"{value[:keep]!r}... ({plural(len(value), unit)} in all)"
    if isinstance(value, (list, tuple)):
        shown: list[str] = []
        used = 2
        for item in value:
            piece = short(item, max(20, limit // 3))
            if used + len(piece) > limit and shown:
                break
            shown.append(piece)
            used += len(piece) + 2
        more = len(value) - len(shown)
        return "[" + ", ".join(shown) + (f", ... ({plural(len(value), 'item')} in all)]" if more else "]")
    return text[: limit - 3] + "..."


def show_bytes(data: bytes) -> str:
    """``data`` for a person: its repr (cut if long), plus a hex dump when it is binary."""
    data = bytes(data)
    if any(b < 32 and b not in (9, 10, 13) or b >= 127 for b in data[:64]):
        return f"{short(data)}\n{hexdump(data)}"
    return short(data)


def first_difference(expected: Any, got: Any) -> int | None:
    """The first index where two sequences differ (the shorter one's end counts); None if equal."""
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return i
    return None if len(expected) == len(got) else min(len(expected), len(got))


def where_they_differ(expected: bytes | str, got: bytes | str, unit: str = "byte") -> str:
    """Two values shown from a little before the first place they differ."""
    at = first_difference(expected, got)
    if at is None:
        return ""
    start = max(0, at - 16)
    shown = (lambda v: show_bytes(v).replace("\n", "\n    ")) if isinstance(expected, bytes) else short
    head = f"they first differ at {unit} {at:,} ({plural(len(expected), unit)} expected, {len(got):,} got)"
    if at == len(got):
        head += ": what came stops there"
    elif at == len(expected):
        head += ": what came goes on past the end"
    return (f"{head}\n  expected from {unit} {start:,}: {shown(expected[start:at + 40])}"
            f"\n  got from {unit} {start:,}:      {shown(got[start:at + 40])}")


def where_lists_differ(expected: list, got: list, noun: str, unit: str = "byte") -> str:
    """Two lists (of lines, of frames) shown at their first differing item."""
    at = first_difference(expected, got)
    if at is None:
        return ""
    if at == len(got):
        return f"{noun} {at + 1} is the first missing: {short(expected[at])}"
    if at == len(expected):
        return f"{noun} {at + 1} is one too many: {short(got[at])}"
    if not isinstance(got[at], type(expected[at])):
        return f"{noun} {at + 1} is a {type(got[at]).__name__}, not {type(expected[at]).__name__}: {short(got[at])}"
    return f"{noun} {at + 1} is the first that differs; {where_they_differ(expected[at], got[at], unit)}"


# ------------------------------------------------------- hints by observation
#
# A check's own hint is about what the check tests.  When the student's
# code raises instead, the hint should be about what was raised, and where:
# a BrokenPipeError in handle() is about handle(), whatever the check was
# testing.  Each checks module may list Diagnosis entries (DIAGNOSES); the
# child picks the first that matches the exception and the student's function.


@dataclass(frozen=True)
class Diagnosis:
    errors: tuple[type[BaseException], ...]
    hint: str
    where: tuple[str, ...] = ()  # the student's functions it applies to; () for any
    says: str = ""  # a piece of the exception's message it applies to; "" for any

    def matches(self, exc: BaseException, function: str | None) -> bool:
        return (isinstance(exc, self.errors) and (not self.where or function in self.where)
                and self.says.lower() in str(exc).lower())


def diagnose(errors: type[BaseException] | tuple[type[BaseException], ...], hint: str,
             where: str | tuple[str, ...] = (), says: str = "") -> Diagnosis:
    return Diagnosis(errors if isinstance(errors, tuple) else (errors,), hint,
                     (where,) if isinstance(where, str) else where, says)


def explain(exc: BaseException, function: str | None, diagnoses: list[Diagnosis]) -> str | None:
    """The hint for ``exc`` raised in the student's ``function``, if a diagnosis knows it."""
    return next((d.hint for d in diagnoses if d.matches(exc, function)), None)


def _got_of(failure: CheckFailed) -> str:
    """What a RawClient's own failure says it got ("nothing more (timed out)", "the connection closed")."""
    return str(failure).rsplit("But got:", 1)[-1].split("\n")[0].strip()


class Context:
    """One check's world: the folder under test, the transcript, what to clean up."""

    def __init__(self, folder: Path, log: Transcript, hint: str = ""):
        self.folder = folder
        self.log = log
        self.hint = hint
        self._cleanups: list[tuple[str, Callable[[], Any], str | None]] = []
        self._hung: list[Callable[..., Any]] = []  # calls that timed out: not tried again
        self.threads_before = set(threading.enumerate())
        self.banner_hint: str | None = None  # an exercise's own words for "no banner came"
        self.stop_hint: str | None = None  # ... and for "stop() did not return"

    # ------------------------------------------------------------ steps

    def step(self, text: str) -> None:
        self.log.add(text)

    def fail(self, expected: str, got: str, hint: str | None = None) -> CheckFailed:
        """A failure to ``raise``: the transcript, expected, got, and the hint."""
        return self.log.fail(expected, got, self.hint if hint is None else hint)

    # ------------------------------------------------- the student's code

    def load(self, module: str) -> Any:
        """Import one of the student's files (their folder is on sys.path)."""
        self.step(f"import {module} from {self.folder.name}/")
        if not (self.folder / f"{module}.py").exists():
            raise self.fail(f"the file {self.folder.name}/{module}.py", "no such file",
                            "run the check from the folder that holds exercises/, or give --dir")
        return importlib.import_module(module)

    def call(self, what: str, function: Callable[..., Any], *args: Any,
             timeout: float = STEP_TIMEOUT, hint: str | None = None, **kwargs: Any) -> Any:
        """Run ``function`` in a thread of its own, and wait for it at most ``timeout`` seconds.

        A hang in the student's code then fails this step, by name, instead
        of freezing the checker.
        """
        self.step(what)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = function(*args, **kwargs)
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="check-call", daemon=True)
        worker.start()
        deadline = time.monotonic() + timeout
        while worker.is_alive():
            worker.join(0.05)
            self.log.raise_thread_error()
            if worker.is_alive() and time.monotonic() > deadline:
                self._hung.append(function)
                raise self.fail(f"{what}: to finish within {timeout:g} s",
                                "it was still running (blocked in a call that waits, or in a loop?)", hint)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    def start(self, server: Any, what: str = "start the server") -> Any:
        """``server.start()``, checked; ``server.stop()`` is called at the end, whatever happens."""
        self.on_cleanup("stop the server", server.stop,
                        hint=self.stop_hint or "stop() did not return: a thread it waits for "
                        "(join) never ends -- every thread the server starts must end when its client goes or "
                        "the server stops")
        result = self.call(f"{what}: start()", server.start)
        if result is not server:
            raise self.fail("start() to return the server itself (return self)", repr(result),
                            "end start() with 'return self', so that 'server = Server().start()' works")
        address = self.call("read server.address", lambda: server.address)
        if (not isinstance(address, tuple) or len(address) != 2
                or not isinstance(address[1], int) or not 0 < address[1] < 65536):
            raise self.fail("server.address to be (host, port), a port chosen by the kernel", repr(address),
                            "with port 0 the kernel picks the port at bind(): address must ask the listening socket "
                            "where it is, with getsockname(), not repeat the 0 it was given")
        self.step(f"the server says it listens on {address[0]}:{address[1]}")
        return server

    # ------------------------------------------------------- our clients

    def client(self, address: tuple[str, int], label: str = "client", timeout: float = STEP_TIMEOUT,
               **kwargs: Any) -> RawClient:
        """A RawClient that records into this transcript; closed at the end."""
        client = RawClient(address, label, self.log, timeout=timeout, **kwargs)
        self.on_cleanup(f"close {label}", client.close, quiet=True)
        return client

    def expect_bytes(self, client: RawClient, expected: bytes, what: str = "", hint: str | None = None) -> bytes:
        """Read from ``client`` until ``len(expected)`` bytes came (or the stream ended); compare."""
        got = b""
        wanted = f"{what or 'to receive'}, {plural(len(expected), 'byte')}: {show_bytes(expected)}"
        deadline = time.monotonic() + client.timeout
        try:
            while len(got) < len(expected):
                got += client._recv_some(deadline, what or plural(len(expected), "byte"))
        except CheckFailed as exc:
            if not got:  # nothing at all came: say so, with this check's hint
                raise self.fail(wanted, _got_of(exc), hint) from None
        if got != expected:
            raise self.fail(wanted,
                            f"{show_bytes(got)}\n  {where_they_differ(expected, got)}", hint)
        return got

    def expect_line(self, client: RawClient, expected: str | Callable[[str], bool], what: str = "",
                    hint: str | None = None, timeout: float | None = None) -> str:
        """The next line ``client`` receives must be ``expected`` (or pass the test)."""
        try:
            line = client.recv_line(timeout)
        except CheckFailed as exc:
            raise self.fail(f"{client.label} receives {what or repr(expected)}",
                            self._unfinished(client, _got_of(exc)), self._line_hint(client, hint)) from None
        ok = expected(line) if callable(expected) else line == expected
        if not ok:
            detail = f"\n  {where_they_differ(expected, line, 'character')}" if isinstance(expected, str) and \
                len(line) > 60 else ""
            raise self.fail(f"{client.label} receives {what or short(expected, 200)}", short(line, 200) + detail, hint)
        return line

    @staticmethod
    def _partial(client: RawClient) -> bytes:
        """The start of a line ``client`` received without its newline."""
        return client.held()

    def _unfinished(self, client: RawClient, got: str) -> str:
        """``got``, and the start of a line that came without its newline, if one did."""
        partial = self._partial(client)
        return f"{got}; {short(partial)} came without a newline after it" if partial else got

    def _line_hint(self, client: RawClient, hint: str | None) -> str | None:
        """A line that never ended is the observation to explain, whatever the check was about."""
        if self._partial(client):
            return (f"{client.label} received bytes with no b\"\\n\" after them, so no line: lines come out of "
                    "the decoder without their b\"\\n\" -- add it back to every line you send on")
        return hint

    def recv_line(self, client: RawClient, what: str = "a line",
                  hint: str | Callable[[], str | None] | None = None) -> str:
        """The next line ``client`` receives, whatever it is (a failure carries the hint).

        ``hint`` may be a function, asked only on failure: the hint can then
        follow what was seen (the connection closed, or nothing came).
        """
        try:
            return client.recv_line()
        except CheckFailed as exc:
            if callable(hint):
                hint = hint()
            raise self.fail(f"{client.label} receives {what}", self._unfinished(client, _got_of(exc)),
                            self._line_hint(client, hint)) from None

    def wait_line(self, client: RawClient, test: Callable[[str], bool], what: str,
                  hint: str | None = None, timeout: float | None = None, limit: int = 200) -> list[str]:
        """Lines up to and including the first that passes ``test`` (others are skipped)."""
        seen: list[str] = []
        deadline = time.monotonic() + (timeout or client.timeout)
        while len(seen) < limit:
            try:
                line = client.recv_line(max(0.05, deadline - time.monotonic()))
            except CheckFailed as exc:
                others = f" (after {plural(len(seen), 'other line')})" if seen else ""
                raise self.fail(f"{client.label} receives {what}", self._unfinished(client, _got_of(exc)) + others,
                                self._line_hint(client, hint)) from None
            seen.append(line)
            if test(line):
                return seen
        raise self.fail(f"{client.label} receives {what}", plural(limit, "other line"), hint)

    def wait_until(self, test: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT,
                   hint: str | None = None) -> None:
        """Wait for a condition (polled), at most ``timeout`` seconds."""
        self.step(f"wait until {what}")
        deadline = time.monotonic() + timeout
        while not test():
            self.log.raise_thread_error()
            if time.monotonic() > deadline:
                raise self.fail(f"{what}, within {timeout:g} s", "it did not happen", hint)
            time.sleep(0.01)

    # ------------------------------------------------------------ threads

    def new_threads(self) -> list[threading.Thread]:
        """Threads started since the check began that are still running (ours excluded)."""
        return [t for t in threading.enumerate()
                if t not in self.threads_before and t.is_alive() and t.name != "check-call"]

    # ------------------------------------------------------------ cleanup

    def on_cleanup(self, what: str, action: Callable[[], Any], quiet: bool = False, hint: str | None = None) -> None:
        self._cleanups.append((what if not quiet else "", action, hint))

    def cleanup(self) -> BaseException | None:
        """Undo what the check started, newest first, each step bounded; the first error, if any."""
        first: BaseException | None = None
        while self._cleanups:
            what, action, hint = self._cleanups.pop()
            if action in self._hung:
                self.step(f"{what}: skipped, it hung already")
                continue
            try:
                if what:
                    self.call(what, action, hint=hint)
                else:
                    action()
            except BaseException as exc:
                first = first or exc
        return first


def student_frame(exc: BaseException, folder: Path) -> tuple[str, int, str, str] | None:
    """The innermost (file, line, function, source) of ``exc``'s traceback in ``folder``."""
    import traceback

    found = None
    folder = folder.resolve()
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            in_folder = Path(frame.filename).resolve().parent == folder
        except (OSError, ValueError):
            in_folder = False
        if in_folder:
            found = (Path(frame.filename).name, frame.lineno or 0, frame.name, (frame.line or "").strip())
    return found

