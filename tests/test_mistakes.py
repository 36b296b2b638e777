"""No classic mistake passes: every mistake in the catalogue is caught, and its hint names it.

Each entry of ``chatlab/course/mistakes.py`` is made in a copy of
solutions/, and the checks of its exercise run against it, each in a child
process over real TCP.  Asserted for each: at least one check fails; no
check reports the student's bug as the checker's own; and the first
failure's hint -- what the student reads first -- holds the words the
catalogue says it must.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from chatlab.course import EXERCISES
from chatlab.course.mistakes import MISTAKES, Mistake, MistakeDoesNotApply, apply, copy_with, for_exercise, judge

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
AT_LEAST = 4  # mistakes per exercise

pytestmark = pytest.mark.timeout(180)


def test_every_exercise_has_its_mistakes_and_every_mistake_applies(tmp_path):
    counts = Counter(m.exercise for m in MISTAKES)
    for ex in EXERCISES:
        assert counts[ex.number] >= AT_LEAST, f"exercise {ex.number} has {counts[ex.number]} mistakes"
    assert len({m.id for m in MISTAKES}) == len(MISTAKES), "two mistakes share a name"
    for mistake in MISTAKES:
        assert mistake.hint and all(mistake.hint), f"{mistake.id}: no words for its hint"
        folder = copy_with(mistake, SOLUTIONS, tmp_path / f"m{MISTAKES.index(mistake)}")
        changed = (folder / mistake.filename).read_text(encoding="utf-8")
        assert changed != (SOLUTIONS / mistake.filename).read_text(encoding="utf-8")
        compile(changed, mistake.filename, "exec")  # a mistake is wrong behaviour, never a syntax error


def test_an_edit_that_no_longer_matches_fails_loudly(tmp_path):
    stale = Mistake(1, "stale", "text the solution no longer has", (("no such text anywhere", "x"),), ("x",))
    folder = copy_with(MISTAKES[0], SOLUTIONS, tmp_path / "copy")
    with pytest.raises(MistakeDoesNotApply, match="occurs 0 times"):
        apply(stale, folder)


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.id.replace(" ", "-"))
def test_the_mistake_is_caught_with_a_hint_about_it(mistake, tmp_path):
    verdict = judge(mistake, SOLUTIONS, tmp_path)
    report = "\n\n".join(f"{r.id} [{r.status}]\n{r.message}" for r in verdict.results if not r.passed)
    assert verdict.caught, f"{mistake.id} ({mistake.what}) passes every check of exercise {mistake.exercise}"
    assert not verdict.blamed_checker, f"{mistake.id}: a student's bug reported as the checker's:\n{report}"
    assert verdict.hint_ok, (f"{mistake.id}: the first failure ({verdict.first.id}) hints {verdict.hint!r}, "
                             f"which lacks {mistake.hint}:\n{report}")


def test_the_catalogue_is_listed_by_exercise():
    assert [m.exercise for m in MISTAKES] == sorted(m.exercise for m in MISTAKES)
    assert sum(len(for_exercise(ex.number)) for ex in EXERCISES) == len(MISTAKES)
