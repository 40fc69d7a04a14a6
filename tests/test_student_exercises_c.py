"""The code exercises of the pre-training, fine-tuning, PDE-FM and Well chapters, handed out with physfm.student.

As in ``test_student_exercises_b``: for each chapter, nbgrader (through
:func:`physfm.student.write_course`) makes the student notebook; the exercise cell and its check,
run after the chapter cells they need, must fail on the student's stub and pass on the
instructor's solution, as nbgrader's own validator sees them. None of them needs the chapter's
experiment: only its parameters and its set-up cell.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

# nbgrader is the oracle: requirements-student.txt, which requirements-test.txt includes
from nbgrader.validator import Validator

from physfm import student
from test_student_exercises_b import _chapter, _excerpt  # the scan, FNO and generating chapters' helpers

ROOT = Path(__file__).resolve().parents[1]

# chapter -> (the cells its exercises need before them: parameters, imports, what the checks use;
#             each exercise cell and its check cell)
EXERCISES = {
    "pretraining": (
        ["fc7f1611", "f30e4a94"],
        [("pre-ex-reduction-code", "pre-ex-reduction-check"), ("pre-ex-compute-code", "pre-ex-compute-check")],
    ),
    "finetuning": (["finetuning-01", "finetuning-02"], [("ft-ex-merge-code", "ft-ex-merge-check")]),
    "pdefm": (["647fad3e", "eba869ff"], [("pdefm-ex-probabilities-code", "pdefm-ex-probabilities-check")]),
    "well": (
        ["well-02", "well-03"],
        [("well-ex-padding-code", "well-ex-padding-check"), ("well-ex-windows-code", "well-ex-windows-check")],
    ),
}
CASES = [(name, setup, pair) for name, (setup, pairs) in EXERCISES.items() for pair in pairs]
IDS = [exercise.removesuffix("-code") for _, _, (exercise, _) in CASES]


def test_every_code_exercise_of_these_chapters_is_listed():
    for name, (_, pairs) in EXERCISES.items():
        cells = [c.id for c in _chapter(name).cells if student.role(c) == "exercise"]
        listed = [exercise for exercise, _ in pairs]
        assert cells == listed, f"{name}: its exercise cells {cells}, listed here {listed}"


@pytest.mark.parametrize("name, setup, pair", CASES, ids=IDS)
def test_exercise_cells_follow_the_convention(name, setup, pair):
    """The exercise cell follows its {exercise} statement and comes before its check, whose tests
    the chapter itself runs on the solution (the book's build and nbval run every cell)."""
    cells = _chapter(name).cells
    ids = [c.id for c in cells]
    exercise, check = pair
    i = ids.index(exercise)
    assert ids[i + 1] == check, f"{name}: the check {check!r} must come right after {exercise!r}"
    assert student.role(cells[i]) == "exercise" and student.role(cells[i + 1]) == "check"
    assert "{exercise}" in cells[i - 1].source, f"{name}: the markdown cell before {exercise!r} states the exercise"
    assert student.SOLUTION_BEGIN in cells[i].source and "assert " in cells[i + 1].source
    assert all(ids.index(s) < i for s in setup), f"{name}: the cells {setup} come before the exercise"
    assert "parameters" in cells[ids.index(setup[0])].metadata.get("tags", []), f"{name}: {setup[0]!r} is not the parameters cell"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    return student.write_course([ROOT / "book" / f"{name}.ipynb" for name in EXERCISES], root / "course")


@pytest.mark.slow
@pytest.mark.parametrize("name, setup, pair", CASES, ids=IDS)
def test_check_fails_on_the_stub_and_passes_on_the_solution(course, name, setup, pair, tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSFM_PROFILE", "smoke")  # the kernels nbgrader starts inherit it
    source, release = course[name]
    exercise, check = pair
    handed_out = {c.id: c for c in nbformat.read(str(release), as_version=4).cells}
    assert "raise NotImplementedError()" in handed_out[exercise].source
    assert student.SOLUTION_BEGIN not in handed_out[exercise].source
    chapter = {c.id: c for c in _chapter(name).cells}
    assert student.clear_solution(chapter[exercise].source) == handed_out[exercise].source, (
        "the student gets nbgrader's stub of the solution"
    )
    grading = handed_out[check].metadata["nbgrader"]
    assert grading["grade"] and grading["locked"] and grading["points"] >= 1
    ids = [*setup, exercise, check]
    assert Validator().validate(str(_excerpt(source, ids, tmp_path / "solution.ipynb"))) == {}, "the solution must pass its check"
    failed = Validator().validate(str(_excerpt(release, ids, tmp_path / "stub.ipynb"))).get("failed", [])
    assert [f["source"] for f in failed] == [handed_out[check].source.strip()], failed
    assert "NotImplementedError" in failed[0]["raw_error"], "the check fails because the stub is not written yet"
