"""The checks of each exercise: ``exNN.py`` holds exercise NN's, in the order they run."""

from __future__ import annotations

import importlib

from .. import EXERCISES, exercise
from ..harness import Check, Diagnosis


def checks_for(number: int) -> list[Check]:
    """Exercise ``number``'s checks, numbered in the order they are defined."""
    exercise(number)  # a clear error for a number with no exercise
    module = importlib.import_module(f"{__name__}.ex{number:02d}")
    found: list[Check] = []
    for function in vars(module).values():  # definition order
        info = getattr(function, "check_info", None)
        if info is not None and getattr(function, "__module__", None) == module.__name__:
            found.append(Check(number, len(found) + 1, function=function, **info))
    return found


def all_checks() -> list[Check]:
    return [c for ex in EXERCISES for c in checks_for(ex.number)]


def diagnoses_for(number: int) -> list[Diagnosis]:
    """What exercise ``number``'s checks know about the exceptions a student's code raises (DIAGNOSES)."""
    module = importlib.import_module(f"{__name__}.ex{number:02d}")
    return list(getattr(module, "DIAGNOSES", []))
