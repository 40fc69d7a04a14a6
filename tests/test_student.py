"""The student edition (physfm.student): the exercise convention, checked against nbgrader itself."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

# nbgrader is the oracle: requirements-student.txt, which requirements-test.txt includes
from nbgrader.nbgraderformat import MetadataValidator
from nbgrader.preprocessors import ClearSolutions
from nbgrader.validator import Validator

from physfm import student

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "book" / "captioned.ipynb"
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))

SOURCES = [
    "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
    "import math\n### BEGIN SOLUTION\ny = math.pi\n### END SOLUTION\nprint(y)",
    "a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\nc = 3\n\t### BEGIN SOLUTION\n\td = 4\n\t### END SOLUTION",
    "x = 1  # no markers: the whole cell is the answer",
]


def _cell(source, tags=(), cell_type="code", cell_id="c1"):
    cell = nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source)
    cell.metadata["tags"] = list(tags)
    cell.id = cell_id
    return cell


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = list(cells)
    return nb


@pytest.mark.parametrize("source", SOURCES)
def test_clear_solution_is_nbgraders(source):
    cell = _cell(source, tags=["exercise"])
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "grade_id": "c1", "schema_version": 3}
    expected, _ = ClearSolutions().preprocess_cell(copy.deepcopy(cell), {"language": "python"}, 0)
    assert student.clear_solution(source) == expected.source


def test_markers_are_checked():
    for bad in (
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION",
    ):
        with pytest.raises(ValueError, match="SOLUTION"):
            student.clear_solution(bad, "cell 'x'")
    with pytest.raises(ValueError, match="HIDDEN TESTS"):
        student.clear_hidden_tests("assert 1\n### BEGIN HIDDEN TESTS\nassert 2")


def test_book_and_student_versions_of_a_cell():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
    assert student.strip_markers(source) == "def f(x):\n    return 2 * x"
    assert student.clear_solution(source) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    check = "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(0) == 0\n### END HIDDEN TESTS"
    assert student.clear_hidden_tests(check) == "assert f(1) == 2"
    assert student.strip_markers(check) == "assert f(1) == 2\nassert f(0) == 0"


def test_split_solutions():
    md = (
        "Intro.\n\n````{exercise} A title\n:label: ex-a\nDo $x$.\n````\n\n"
        "````{solution} ex-a\n:class: dropdown\n```python\nprint(1)\n```\nBecause.\n````\n\n"
        ":::{solution} ex-b\n:class: dropdown\nColons too.\n:::\nAfter."
    )
    pieces = student.split_solutions(md)
    assert [p[0] for p in pieces] == ["text", "solution", "solution", "text"]
    assert pieces[0][1] == "Intro.\n\n**Exercise: A title** (ex-a)\n\nDo $x$."
    assert pieces[1] == ("solution", "```python\nprint(1)\n```\nBecause.", "ex-a")  # inner fence kept
    assert pieces[2] == ("solution", "Colons too.", "ex-b")
    assert pieces[3] == ("text", "After.", "")
    assert student.split_solutions("No exercise here.") == [("text", "No exercise here.", "")]
    with pytest.raises(ValueError, match="never closed"):
        student.split_solutions("````{solution} ex-a\ntext\n```")
    with pytest.raises(ValueError, match="solution-start"):
        student.split_solutions("```{solution-start} ex-a\n```")
    with pytest.raises(ValueError, match="without the label"):
        student.split_solutions("```{solution}\ntext\n```")


def test_instructor_notebook_marks_cells_for_nbgrader():
    nb = nbformat.read(str(FIXTURE), as_version=4)
    source = student.instructor_notebook(nb, "captioned")
    MetadataValidator().validate_nb(source)  # nbgrader accepts the metadata
    meta = {c.id: c.metadata.get("nbgrader") for c in source.cells}
    assert meta["good-03"] == {"grade": False, "grade_id": "good-03", "locked": False, "schema_version": 3, "solution": True}
    assert meta["good-04"] == {
        "grade": True,
        "grade_id": "good-04",
        "locked": True,
        "points": 2.0,
        "schema_version": 3,
        "solution": False,
    }
    assert meta["good-01"] is None  # other cells are left alone
    assert nb.cells[3].metadata.get("nbgrader") is None, "the chapter itself is not modified"


def test_written_solutions_become_answer_cells():
    md = _cell(
        "````{exercise}\n:label: ex-w\nWhy?\n````\n\n````{solution} ex-w\n:class: dropdown\nBecause.\n````",
        cell_type="markdown",
        cell_id="m1",
    )
    source = student.instructor_notebook(_notebook(md))
    MetadataValidator().validate_nb(source)
    assert [c.source for c in source.cells] == ["**Exercise** (ex-w)\n\nWhy?", "Because."]
    assert source.cells[1].metadata["nbgrader"] == {
        "grade": True,
        "grade_id": "ex-w-answer",
        "locked": False,
        "points": 1.0,
        "schema_version": 3,
        "solution": True,
    }


@pytest.mark.parametrize(
    "cells, message",
    [
        ([_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")], "not tagged 'exercise'"),
        ([_cell("x = 1", tags=["exercise", "check"])], "both"),
        ([_cell("assert x", tags=["check"], cell_type="markdown")], "want a code cell"),
        ([_cell("assert x", tags=["check", "points-two"])], "points-N"),
        ([_cell("### BEGIN SOLUTION\nassert x\n### END SOLUTION", tags=["check"])], "solution markers in a 'check'"),
        ([_cell("x = 1", tags=["exercise"]), _cell("assert x", tags=["check"])], "two cells with the id 'c1'"),
    ],
)
def test_convention_errors_name_the_cell(cells, message):
    with pytest.raises(ValueError, match=message):
        student.instructor_notebook(_notebook(*cells), "chapter")


def test_bad_argument_types():
    with pytest.raises(TypeError, match="nb: want an nbformat.NotebookNode"):
        student.instructor_notebook({"cells": []})
    with pytest.raises(ValueError, match="config"):
        student.student_config({"title": "no sphinx section"})


def test_student_config():
    config = student.student_config({"title": "T", "sphinx": {"config": {"numfig": True}}, "execute": {}}, "/tmp/cache")
    assert config["sphinx"]["config"] == {"numfig": True, "hide_solutions": True, "physfm_student_edition": True}
    assert config["title"] == "T (student edition)" and config["execute"]["cache"] == "/tmp/cache"


@pytest.mark.slow
def test_stub_fails_its_checks_and_the_solution_passes(tmp_path):
    """nbgrader generates the student notebook; its validator runs both versions."""
    ((source, release),) = student.write_course([FIXTURE], tmp_path / "course").values()
    assert source == tmp_path / "course" / "source" / "captioned" / "captioned.ipynb"
    handed_out = nbformat.read(str(release), as_version=4)
    text = {c.id: c.source for c in handed_out.cells}
    assert "raise NotImplementedError()" in text["good-03"] and "return x * x" not in text["good-03"]
    assert "square(0.5)" not in text["good-04"], "hidden tests are removed"
    assert {c.id: c for c in handed_out.cells}["good-04"].metadata["nbgrader"]["locked"] is True
    assert Validator().validate(str(source)) == {}, "the solution must pass its checks"
    failed = Validator().validate(str(release))["failed"]
    assert any("assert square(3) == 9" in f["source"] for f in failed), failed


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_follow_the_convention(path):
    nb = student.instructor_notebook(nbformat.read(str(path), as_version=4), path.stem)
    MetadataValidator().validate_nb(nb)
    assert not any("{solution}" in c.source for c in nb.cells if c.cell_type == "markdown")


# chapters whose code exercises are checked below; every chapter with an exercise cell must be listed
EXERCISE_CHAPTERS = ["data", "metrics", "tokeniser", "compression"]


def _exercises_alone(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The chapter's code up to its set-up cell (the one after ``parameters``), then only its
    exercise and check cells: what the exercises need, without the chapter's experiments."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    parameters = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    out = copy.deepcopy(nb)
    out.cells = copy.deepcopy(code[: parameters + 2] + [c for c in code[parameters + 2 :] if student.role(c)])
    return out


def test_every_chapter_with_a_code_exercise_is_checked():
    with_exercises = {
        p.stem for p in CHAPTERS if any(student.role(c) == "exercise" for c in nbformat.read(str(p), as_version=4).cells)
    }
    assert set(EXERCISE_CHAPTERS) <= with_exercises, f"no code exercise in {sorted(set(EXERCISE_CHAPTERS) - with_exercises)}"
    checked = set(EXERCISE_CHAPTERS) | _checked_elsewhere()
    assert with_exercises <= checked, f"add {sorted(with_exercises - checked)} to EXERCISE_CHAPTERS"


def _checked_elsewhere() -> set[str]:
    """Chapters whose exercises ``tests/test_student_exercises_*.py`` check (their ``EXERCISES``)."""
    import importlib.util

    names = set()
    for path in sorted((ROOT / "tests").glob("test_student_exercises_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names |= set(module.EXERCISES)
    return names


@pytest.mark.slow
def test_chapter_exercises_fail_on_the_stub_and_pass_on_the_solution(tmp_path, monkeypatch):
    """nbgrader hands out each chapter; the checks of its code exercises fail on the stubs it
    makes and pass on the solutions (run after the chapter's set-up, at the smoke profile)."""
    monkeypatch.setenv("PHYSFM_PROFILE", "smoke")  # the kernels nbgrader starts inherit it
    written = student.write_course([ROOT / "book" / f"{name}.ipynb" for name in EXERCISE_CHAPTERS], tmp_path / "course")
    for name, (source, release) in written.items():
        versions = {}
        for version, path in (("source", source), ("release", release)):
            nb = _exercises_alone(nbformat.read(str(path), as_version=4))
            out = tmp_path / version / name / f"{name}.ipynb"
            out.parent.mkdir(parents=True)
            nbformat.write(nb, str(out))
            versions[version] = (nb, Validator().validate(str(out)))
        (_, on_solution), (release_nb, on_stub) = versions["source"], versions["release"]
        exercises = [c for c in release_nb.cells if student.role(c) == "exercise"]
        checks = [c.source.strip() for c in release_nb.cells if student.role(c) == "check"]
        assert exercises and checks, f"{name}: no code exercise"
        assert all("raise NotImplementedError()" in c.source for c in exercises), f"{name}: an exercise is not a stub"
        assert not any(student.SOLUTION_BEGIN in c.source for c in exercises), f"{name}: a solution was handed out"
        assert on_solution == {}, f"{name}: the solution fails its checks: {on_solution}"
        failed = [f["source"] for f in on_stub.get("failed", [])]
        assert sorted(failed) == sorted(checks), f"{name}: checks that pass on the stub: {set(checks) - set(failed)}"
