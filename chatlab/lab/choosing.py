"""Choosing an implementation: the student's exercise, the course's solution, or chatlab's own.

A notebook says ``pick(IMPLEMENTATION, "ex04_frames", "FrameDecoder")``.
The student's version is tried first with a quick probe on real sockets;
an exercise not done yet falls back to the reference, and the notebook says
so and carries on -- it never stops halfway.  An exercise that is done but
fails the probe falls back too, loudly: the traceback from the student's
file, which part of the notebook now runs the reference, and how to fix it.
"""

from __future__ import annotations

import importlib
import re
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from ..servers import MODELS, DEFAULT_HOST
from .folders import COURSE_FOLDERS, course_folder
from .live import _resolve
from .network import EchoServer, echo_once, recv_exactly, send_all


def _use_folder(folder: Path) -> None:
    """Put ``folder`` first on sys.path, forgetting exercise modules loaded from elsewhere."""
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if re.fullmatch(r"ex\d\d_\w+", name) and Path(origin).parent != folder:
            del sys.modules[name]
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))


def _probe_server(cls: Any) -> None:
    """Start the class on port 0, connect, and expect a first line within 2 s."""
    server = _resolve(cls, DEFAULT_HOST, 0, None)
    server.start()
    try:
        with socket.create_connection(tuple(server.address)[:2], timeout=2) as sock:
            if not sock.recv(1024):
                raise ConnectionError("it closed the connection without a word")
    except TimeoutError:
        raise TimeoutError("it accepted a connection but sent no banner within 2 s") from None
    finally:
        server.stop()


def _probe_echo_once(fn: Callable) -> None:
    with EchoServer() as echo:
        got = fn(echo.address, b"ping")
    if got != b"ping":
        raise ValueError(f"echo_once returned {got!r}, not b'ping'")


def _probe_reliable(sender: Callable, receiver: Callable) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(2)
        b.settimeout(2)
        sender(a, b"hello")
        got = receiver(b, 5)
    if got != b"hello":
        raise ValueError(f"send_all then recv_exactly gave {got!r}, not b'hello'")


def _probe_lines(cls: Any) -> None:
    if cls().feed(b"he") != [] or cls().feed(b"a\nb") != [b"a"]:
        raise ValueError("LineDecoder.feed(b'a\\nb') should give [b'a']")


def _probe_frames(cls: Any) -> None:
    if cls().feed(b"\x00\x00\x00\x02hi\x00") != [b"hi"]:
        raise ValueError("FrameDecoder.feed(b'\\x00\\x00\\x00\\x02hi') should give [b'hi']")


def _probe_encode_frame(fn: Callable) -> None:
    if fn(b"hi") != b"\x00\x00\x00\x02hi":
        raise ValueError("encode_frame(b'hi') should give b'\\x00\\x00\\x00\\x02hi'")


def _reference(module: str, name: str) -> tuple[Any, Callable[[Any], None] | None]:
    """chatlab's own version of an exercise, and a quick test of the student's."""
    from .. import framing
    from ..servers import ThreadedServer

    selector_model = MODELS.get("selectors", ThreadedServer)
    table: dict[tuple[str, str], tuple[Any, Callable[[Any], None] | None]] = {
        ("ex01_echo", "EchoServer"): (EchoServer, _probe_server_echo),
        ("ex01_echo", "echo_once"): (echo_once, _probe_echo_once),
        ("ex02_reliable", "send_all"): (send_all, lambda f: _probe_reliable(f, recv_exactly)),
        ("ex02_reliable", "recv_exactly"): (recv_exactly, lambda f: _probe_reliable(send_all, f)),
        ("ex03_lines", "LineDecoder"): (framing.LineDecoder, _probe_lines),
        ("ex03_lines", "LineTooLong"): (framing.LineTooLong, None),
        ("ex04_frames", "FrameDecoder"): (framing.FrameDecoder, _probe_frames),
        ("ex04_frames", "encode_frame"): (framing.encode_frame, _probe_encode_frame),
        ("ex04_frames", "FrameTooLarge"): (framing.FrameTooLarge, None),
        ("ex05_broadcast", "BroadcastServer"): (ThreadedServer, _probe_server),
        ("ex06_names", "ChatServer"): (ThreadedServer, _probe_server),
        ("ex07_client", "Client"): (None, _probe_client),  # chatlab's ChatClient speaks frames: no stand-in
        ("ex08_selectors", "SelectorChatServer"): (selector_model, _probe_server),
        ("ex09_slow_clients", "OutboxChatServer"): (ThreadedServer, _probe_server),
    }
    if (module, name) not in table:
        raise KeyError(f"no reference for {module}.{name}")
    return table[(module, name)]


def _probe_client(cls: Any) -> None:
    """Join a chatlab server as ``probe`` and expect the banner on ``received``."""
    from ..servers import ThreadedServer

    with ThreadedServer(port=0) as server:
        client = cls(*server.address, "probe")
        try:
            first = client.received.get(timeout=2)
            if not first or not str(first).startswith("chatlab/"):
                raise ValueError(f"the first line received should be the banner, not {first!r}")
        finally:
            client.close()


def _probe_server_echo(cls: Any) -> None:
    server = _resolve(cls, DEFAULT_HOST, 0, None)
    server.start()
    try:
        if echo_once(tuple(server.address)[:2], b"ping") != b"ping":
            raise ValueError("the echo server did not send b'ping' back")
    finally:
        server.stop()


def broken_report(label: str, number: int, module: str, name: str, exc: BaseException, folder: Path | None) -> str:
    """What a student must see when their code was tried and failed: the notebook now runs chatlab's.

    Plots drawn by the reference look right; without this, a student would
    think their broken code had drawn them.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    theirs = [f for f in frames if folder is not None and Path(f.filename).resolve().parent == folder.resolve()]
    shown = traceback.format_list(theirs or frames[-3:])
    where = f"{folder.name}/{module}.py" if folder is not None else f"{module}.py"
    rule = "!" * 100
    return "\n".join([
        rule,
        f"!!! Your {label} {number} does not work yet: {module}.{name} failed a quick test, so what follows in this",
        f"!!! notebook runs chatlab's own {name} instead -- the results below are NOT from your code.",
        f"!!! {type(exc).__name__}: {exc}",
        "!!! Traceback (most recent call last)" + (", in your file:" if theirs else ":"),
        *("    " + line.rstrip().replace("\n", "\n    ") for line in shown),
        f"!!! To fix it: run 'chatlab check {number}' in a terminal for the full report, fix {where},",
        "!!! then Kernel > Restart Kernel and Run All Cells.",
        rule,
    ])


def pick(implementation: str, module: str, name: str, probe: Callable[[Any], None] | None = None,
         reference: Any = None, verbose: bool = True) -> Any:
    """The ``name`` a notebook should use: the reference, or the student's from ``module``.

    ``implementation`` is ``"reference"`` (chatlab's own code), ``"exercises"``
    (the student's, from ``exercises/``) or ``"solutions"`` (the course's
    reference solutions, for instructors).  The student's version is tried
    first (``probe``, or a quick built-in test); an exercise not done yet
    raises NotImplementedError, and then the notebook carries on with the
    reference and says so -- it never stops halfway.  ``reference`` replaces
    chatlab's own version (a notebook passes its MODEL name, for instance).
    """
    default_reference, default_probe = _reference(module, name)
    reference = default_reference if reference is None else reference
    if implementation == "reference":
        return reference
    if implementation not in COURSE_FOLDERS:
        raise ValueError(f"IMPLEMENTATION must be 'reference', 'exercises' or 'solutions', not {implementation!r}")
    number = int(module[2:4])
    label = "exercise" if implementation == "exercises" else "solution"
    folder = course_folder(implementation)
    if folder is None:  # nothing of the student's to try: a note, not an alarm
        if verbose:
            print(f"{label} {number} not found (no {implementation}/ folder found): showing the reference")
        return reference
    try:
        _use_folder(folder)
        found = getattr(importlib.import_module(module), name)
        test = probe or default_probe
        if test is not None:
            test(found)
    except NotImplementedError as exc:
        if verbose:
            hint = str(exc) if len(str(exc)) <= 150 else str(exc)[:147] + "..."
            print(f"{label} {number} not done yet ({module}.{name}): showing the reference"
                  + (f"\n    hint: {hint}" if hint else ""))
        return reference
    except ModuleNotFoundError as exc:
        if verbose:
            where_ = f"{folder.name}/{module}.py" if folder else f"{implementation}/"
            print(f"{label} {number} not found ({where_}: {exc}): showing the reference")
        return reference
    except Exception as exc:  # a bug, a hang cut short: say so loudly, carry on
        if verbose:
            print(broken_report(label, number, module, name, exc, folder), file=sys.stderr)
        return reference
    if verbose:
        whose = "your" if implementation == "exercises" else "the reference solution's"
        print(f"using {whose} {name} from {folder.name}/{module}.py")
    return found
