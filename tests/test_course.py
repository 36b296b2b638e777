"""The course: one source for exercises and solutions, and checks that can fail.

* exercises/ is exactly what the generator makes from solutions/;
* the reference solutions pass every check;
* the untouched student files fail every check cleanly -- a
  NotImplementedError with its hint, never an import error, a syntax error
  or a hang -- and each exercise's checks fail on *that exercise's* stubs
  when every earlier exercise is solved, so no check passes without the
  code it is about;
* ``chatlab check`` works as a command, and a hang or a crash in a
  student's code is reported, not suffered.

Every check runs in a child process of its own over real TCP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatlab.course import EXERCISES, exercise
from chatlab.course.checks import checks_for
from chatlab.course.generate import MarkerError, generate, strip_solutions
from chatlab.course.runner import FolderNotFound, find_folder, run_check, run_checks

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS, EXERCISE_FILES = ROOT / "solutions", ROOT / "exercises"
NUMBERS = [ex.number for ex in EXERCISES]
JOBS = 2  # the machines this runs on may have 2 cores


def report(results) -> str:
    return "\n\n".join(f"{r.id} {r.name} [{r.status}]\n{r.message}" for r in results)


# ------------------------------------------------------------- one source


def test_exercises_are_exactly_what_the_generator_makes():
    differences = generate(SOLUTIONS, EXERCISE_FILES, write=False)
    assert not differences, "run 'chatlab course generate':\n" + "\n".join(
        f"{d.name}: {d.problem}\n{d.diff}" for d in differences)


def test_every_exercise_has_its_files_checks_and_header():
    for ex in EXERCISES:
        for folder in (SOLUTIONS, EXERCISE_FILES):
            assert (folder / ex.filename).exists(), f"{folder.name}/{ex.filename} is missing"
        assert checks_for(ex.number), f"exercise {ex.number} has no checks"
        header = (EXERCISE_FILES / ex.filename).read_text(encoding="utf-8").split('"""')[1]
        for part in ("What you will learn", "Read first", f"chatlab check {ex.number}", "notebooks/"):
            assert part in header, f"{ex.filename}'s header lacks {part!r}"
        assert ex.notebook in header, f"{ex.filename}'s header should send the student to {ex.notebook}"
        assert "BEGIN SOLUTION" not in (EXERCISE_FILES / ex.filename).read_text(encoding="utf-8")


def test_a_region_becomes_todo_guidance_and_a_hint():
    source = '''def f(x):
    """Doc."""
    y = 1
    # BEGIN SOLUTION
    # HINT: return x
    # HINT: plus y
    # TODO: add them
    if x:
        return x + y
    # END SOLUTION


class C:
    def g(self):
        # BEGIN SOLUTION
        # HINT: say "hi"
        return "hi"
        # END SOLUTION
'''
    student = strip_solutions(source)
    assert "return x + y" not in student and 'return "hi"' not in student
    assert '    # TODO: add them\n    raise NotImplementedError("return x plus y")\n' in student
    assert '        # TODO: say \\"hi\\"\n' not in student  # the hint is the TODO when there is none
    assert '        # TODO: say "hi"\n        raise NotImplementedError("say \\"hi\\"")\n' in student
    namespace: dict = {}
    exec(compile(student, "<student>", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="return x plus y"):
        namespace["f"](1)
    with pytest.raises(NotImplementedError, match='say "hi"'):
        namespace["C"]().g()


@pytest.mark.parametrize("source, problem", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "HINT"),
    ("def f():\n    # BEGIN SOLUTION\n    # HINT: h\n    return 1\n", "without"),
    ("def f():\n    # BEGIN SOLUTION\n    # HINT: h\n    # BEGIN SOLUTION\n", "nested"),
    ("def f():\n    # BEGIN SOLUTION\n    # HINT: h\n  x = 1\n    # END SOLUTION\n", "indented less"),
    ("def f():\n    # BEGIN SOLUTION\n    # HINT: h\n    x = 1\n  # END SOLUTION\n", "not indented like"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "outside"),
    ("x = (\n# BEGIN SOLUTION\n# HINT: h\n1\n# END SOLUTION\n)\n", "does not compile"),
])
def test_bad_markers_are_refused_with_the_line(source, problem):
    with pytest.raises(MarkerError, match=problem):
        strip_solutions(source, "sol.py")


def test_generate_writes_then_finds_nothing_to_change(tmp_path):
    differences = generate(SOLUTIONS, tmp_path / "exercises")
    assert {d.problem for d in differences} == {"missing"}
    assert generate(SOLUTIONS, tmp_path / "exercises", write=False) == []
    edited = tmp_path / "exercises" / EXERCISES[0].filename
    edited.write_text(edited.read_text() + "# a student's edit\n")
    (tmp_path / "exercises" / "ex99_stray.py").write_text("")
    problems = {(d.name, d.problem) for d in generate(SOLUTIONS, tmp_path / "exercises", write=False)}
    assert problems == {(EXERCISES[0].filename, "edited"), ("ex99_stray.py", "extra")}


def copy_course(tmp_path: Path) -> tuple[Path, Path]:
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    shutil.copytree(SOLUTIONS, solutions)
    generate(solutions, exercises)
    return solutions, exercises


def test_generate_never_overwrites_a_students_work_without_force(tmp_path):
    solutions, exercises = copy_course(tmp_path)
    work = exercises / "ex01_echo.py"
    work.write_text(work.read_text() + "# my work\n")
    changed = solutions / "ex02_reliable.py"  # an instructor's edit of another solution: nobody touched its exercise
    changed.write_text(changed.read_text().replace("# HINT: sent = sock.send", "# HINT: so: sent = sock.send"))
    args = ["course", "generate", "--solutions-dir", str(solutions), "--exercises-dir", str(exercises)]
    out = chatlab(*args)
    assert out.returncode == 1 and "ex01_echo.py" in out.stderr and "--force" in out.stderr, out.stderr
    assert work.read_text().endswith("# my work\n"), "a student's edit was overwritten"
    assert "so: sent" in (exercises / "ex02_reliable.py").read_text(), "an unedited exercise was not regenerated"
    check = chatlab(*args, "--check")
    assert check.returncode == 1 and "edited since it was generated" in check.stdout
    assert "--force" in check.stderr and "unless" in check.stderr  # it names the danger, it does not urge it
    assert chatlab(*args, "--force").returncode == 0
    assert not work.read_text().endswith("# my work\n")
    assert chatlab(*args, "--check").returncode == 0


def test_export_is_the_course_without_the_solutions(tmp_path):
    target = tmp_path / "handout"
    out = chatlab("course", "export", str(target))
    assert out.returncode == 0, out.stderr
    assert {"README.md", "exercises", "notebooks", "docs", "chatlab", "tasks.py", "pyproject.toml"} <= \
        {p.name for p in target.iterdir()}
    assert not (target / "solutions").exists() and not (target / "tests").exists()
    assert not (target / "docs" / "instructors.md").exists()
    assert not (target / "chatlab" / "course" / "mistakes.py").exists()
    assert not (target / "exercises" / ".generated").exists()
    for ex in EXERCISES:
        assert (target / "exercises" / ex.filename).read_text(encoding="utf-8") == \
            strip_solutions((SOLUTIONS / ex.filename).read_text(encoding="utf-8"))
    assert sorted(p.name for p in (target / "notebooks").glob("*.ipynb")) == \
        sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    solutions = {(SOLUTIONS / ex.filename).read_bytes() for ex in EXERCISES}
    assert not [p for p in target.rglob("*.py") if p.read_bytes() in solutions], "a solution file in the copy"
    readme = (target / "README.md").read_text(encoding="utf-8")
    assert "python3 tasks.py lab" in readme and "chatlab check 1" in readme and "solutions" not in readme
    # In the copy, the course works -- and cannot be regenerated.
    check = subprocess.run([sys.executable, "-m", "chatlab", "check", "1", "--only"], cwd=target, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(target)})
    assert "TODO" in check.stdout and str(target / "exercises") in check.stdout, check.stdout + check.stderr
    again = subprocess.run([sys.executable, "-m", "chatlab", "course", "generate"], cwd=target, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(target)})
    assert again.returncode == 2 and "solutions" in again.stderr
    assert chatlab("course", "export", str(target)).returncode == 2  # never into a folder that holds something


def test_a_syntax_error_is_reported_once_and_its_checks_skipped(tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(SOLUTIONS, folder)
    broken = folder / "ex03_lines.py"
    broken.write_text(broken.read_text().replace("        lines = []\n", "        lines = [\n", 1))
    out = chatlab("check", "5", "--dir", str(folder))
    assert out.returncode == 1
    assert out.stdout.count("ex03_lines.py, line") == 1, out.stdout  # once, with its line
    assert "lines = [" in out.stdout and "never closed" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if re.match(r"\s+\d\.\d+\s", line)]
    marks = {row[0]: row[1] for row in rows}
    assert {marks[c.id] for c in checks_for(3) + checks_for(5)} == {"SKIP"}  # 5 imports ex03
    assert {marks[c.id] for c in checks_for(4)} == {"ok"}  # 4 does not need it: it runs
    assert "Next: the syntax error" in out.stdout


def test_the_table_cuts_long_names_at_a_word():
    from chatlab.course.runner import fit

    name = "clients are served one after another; the end of the stream ends a conversation"
    assert fit(name, 70) == "clients are served one after another; the end of the stream ends a..."
    assert fit("short", 70) == "short"


def test_values_are_shown_cut_visibly_and_from_where_they_differ():
    from chatlab.course.harness import plural, short, where_they_differ

    assert plural(1, "frame") == "1 frame" and plural(2, "frame") == "2 frames" and plural(1000, "byte") == "1,000 bytes"
    cut = short(b"x" * 500, 40)
    assert cut.startswith("b'xxx") and "'... (500 bytes in all)" in cut
    assert short("y" * 300, 30).endswith("... (300 characters in all)")
    expected, got = b"a" * 300 + b"\n", b"a" * 300 + b"\r\n"
    shown = where_they_differ(expected, got)
    assert "byte 300" in shown and "\\r" in shown  # the \r that differs is shown, not 200 identical a's


def test_pick_says_loudly_when_the_students_code_is_broken(tmp_path, monkeypatch, capsys):
    from chatlab import lab

    folder = tmp_path / "exercises"
    shutil.copytree(SOLUTIONS, folder)
    broken = folder / "ex04_frames.py"
    broken.write_text(broken.read_text().replace("        self.buffer += data\n", "        self.buffer += data[1:]\n", 1))
    monkeypatch.chdir(tmp_path)
    chosen = lab.pick("exercises", "ex04_frames", "FrameDecoder")
    err = capsys.readouterr().err
    assert chosen is lab.FrameDecoder  # the notebook carries on with chatlab's
    assert "NOT from your code" in err and "chatlab's own FrameDecoder" in err
    assert "ex04_frames.py" in err and "chatlab check 4" in err and "Restart Kernel" in err


# ------------------------------------------------------------ the checks


@pytest.mark.parametrize("number", NUMBERS)
def test_the_reference_solutions_pass_every_check(number):
    results = run_checks(SOLUTIONS, checks_for(number), jobs=JOBS)
    failed = [r for r in results if not r.passed]
    assert not failed, report(failed)


def test_the_untouched_exercises_fail_every_check_cleanly():
    results = run_checks(EXERCISE_FILES, [c for n in NUMBERS for c in checks_for(n)], jobs=JOBS)
    unclean = [r for r in results if r.status != "todo" or not r.message.startswith("not implemented yet: ")
               or len(r.message.split(":", 1)[1].strip()) < 10 or "Traceback" in r.message]
    assert not unclean, report(unclean)


def mixed_folder(base: Path, number: int) -> Path:
    """Exercises 1..number-1 solved, number and later untouched: a student about to start ``number``."""
    folder = base / f"at_ex{number:02d}"
    folder.mkdir()
    for ex in EXERCISES:
        source = SOLUTIONS if ex.number < number else EXERCISE_FILES
        shutil.copy(source / ex.filename, folder / ex.filename)
    return folder


@pytest.mark.parametrize("number", NUMBERS)
def test_each_check_fails_on_the_stubs_of_its_own_exercise(number, tmp_path):
    """Every earlier exercise solved, this one untouched: each of its checks must meet
    this exercise's NotImplementedError -- a check that passes here checks nothing."""
    folder = mixed_folder(tmp_path, number)
    results = run_checks(folder, checks_for(number), jobs=JOBS)
    own = exercise(number).filename
    wrong = [r for r in results if r.status != "todo" or f"{folder.name}/{own}" not in r.message]
    assert not wrong, report(wrong)


# ------------------------------------------------ failures that teach


def student_folder(tmp_path: Path, ex01_source: str) -> Path:
    folder = tmp_path / "student"
    folder.mkdir()
    for ex in EXERCISES:
        shutil.copy(EXERCISE_FILES / ex.filename, folder / ex.filename)
    (folder / "ex01_echo.py").write_text(ex01_source, encoding="utf-8")
    return folder


def solution_with(old: str, new: str) -> str:
    source = (SOLUTIONS / "ex01_echo.py").read_text(encoding="utf-8")
    assert old in source
    return source.replace(old, new)


def test_a_hang_is_stopped_and_named_and_the_next_check_still_runs(tmp_path):
    folder = student_folder(tmp_path, solution_with("import threading\n", "import threading\nwhile True:\n    pass\n"))
    first, second = checks_for(1)[:2]
    result = run_check(folder, first, timeout=2)
    assert result.status == "timeout" and not result.passed
    assert "timed out after 2 s in step 1: import ex01_echo from student/" in result.message
    assert run_check(folder, second, timeout=2).status == "timeout"  # the next check ran, and was stopped too


def test_a_hung_call_fails_its_step_by_name(tmp_path):
    # stop() that never returns: the call times out, the check says which call.
    folder = student_folder(tmp_path, solution_with("        self._stopping.set()\n",
                                                    "        threading.Event().wait()\n"))
    stop_check = next(c for c in checks_for(1) if "stop()" in c.name)
    result = run_check(folder, stop_check)
    assert result.status == "failed"
    assert "stop the server while the client is still connected: stop(): to finish within 5 s" in result.message
    assert "Transcript" in result.message and "Hint:" in result.message


def test_a_syntax_error_is_shown_as_one_not_as_a_traceback(tmp_path):
    folder = student_folder(tmp_path, solution_with("        self.listener.listen()\n",
                                                    "        self.listener.listen(\n"))
    result = run_check(folder, checks_for(1)[0])
    assert result.status == "error"
    assert "student/ex01_echo.py has a syntax error, line" in result.message
    assert "Traceback" not in result.message


def test_a_wrong_answer_shows_the_transcript_expected_got_and_hint(tmp_path):
    folder = student_folder(tmp_path, solution_with("            conn.sendall(data)\n",
                                                    "            conn.sendall(data.upper())\n"))
    echo_check = checks_for(1)[1]
    result = run_check(folder, echo_check)
    assert result.status == "failed"
    for part in ("Transcript (most recent last):", "client: send 6 bytes b'hello\\n'",
                 "Expected: the echo of b'hello\\n', 6 bytes: b'hello\\n'", "But got:  b'HELLO\\n'",
                 f"Hint:     {echo_check.hint}"):
        assert part in result.message
    assert "Traceback" not in result.message


def test_an_exception_in_a_server_thread_is_reported_with_its_place(tmp_path):
    folder = student_folder(tmp_path, solution_with("            conn.sendall(data)\n",
                                                    "            conn.sendall(data.decode())\n"))
    result = run_check(folder, checks_for(1)[1])
    assert result.status == "error"
    assert "your code raised TypeError" in result.message
    assert "student/ex01_echo.py, line" in result.message and "in handle" in result.message


def test_find_folder(tmp_path, monkeypatch):
    assert find_folder("solutions", SOLUTIONS) == SOLUTIONS
    monkeypatch.chdir(ROOT)
    assert find_folder("exercises") == EXERCISE_FILES
    monkeypatch.chdir(EXERCISE_FILES)
    assert find_folder("exercises") == EXERCISE_FILES
    with pytest.raises(FolderNotFound, match="not a folder"):
        find_folder("exercises", tmp_path / "nowhere")


# ------------------------------------------------------------ the command


def chatlab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatlab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_check_solutions_writes_a_grade_book(tmp_path):
    book = tmp_path / "grades.json"
    out = chatlab("check", "3", "--solutions", "--json", str(book))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Total: " in out.stdout and "Every check passed" in out.stdout
    data = json.loads(book.read_text(encoding="utf-8"))
    checks = data["checks"]
    assert {c["exercise"] for c in checks} == {1, 2, 3}  # cumulative: 3 re-checks 1 and 2
    assert len(checks) == sum(len(checks_for(n)) for n in (1, 2, 3))
    for c in checks:
        assert {"name", "exercise", "points", "max_points", "passed", "message"} <= c.keys()
        assert c["passed"] and c["points"] == c["max_points"] > 0
    assert data["points"] == data["max_points"] == sum(c["max_points"] for c in checks)


def test_check_exercises_prints_the_table_and_the_hints(tmp_path):
    out = chatlab("check", "4", "--only")
    assert out.returncode == 1
    assert "Exercise 4" in out.stdout and "Exercise 3" not in out.stdout
    assert out.stdout.count("TODO") >= len(checks_for(4))
    assert "not implemented yet: " in out.stdout and "Traceback" not in out.stdout + out.stderr
    assert "Total: 0/" in out.stdout


def test_course_generate_check_agrees():
    out = chatlab("course", "generate", "--check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_check_without_a_course_folder_says_where_it_looked(tmp_path):
    out = chatlab("check", "1", "--dir", str(tmp_path / "missing"), cwd=tmp_path)
    assert out.returncode == 2 and "not a folder" in out.stderr and "Traceback" not in out.stderr


def test_the_instructors_guide_counts_the_checks_right():
    """The path table in docs/instructors.md gives each exercise's checks and points: keep it true."""
    guide = (ROOT / "docs" / "instructors.md").read_text(encoding="utf-8")
    for ex in EXERCISES:
        checks = checks_for(ex.number)
        row = next(line for line in guide.splitlines() if line.startswith(f"| {ex.number} | `{ex.filename}`"))
        assert row.rstrip().endswith(f"| {len(checks)} ({sum(c.points for c in checks)}) |"), row
        assert ex.notebook.split("/")[1].removesuffix(".ipynb") in row, row


def test_the_readme_lists_the_course():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    course = readme.split("## Course", 1)[1].split("\n## ", 1)[0]
    for ex in EXERCISES:
        assert f"`{ex.filename}`" in course and ex.notebook.split("/")[1].removesuffix(".ipynb") in course
    assert "chatlab check" in course and "docs/instructors.md" in course
