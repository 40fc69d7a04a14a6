"""The student edition: the book's chapters handed out as nbgrader assignments.

nbgrader (Hamrick et al., *nbgrader: a tool for creating and grading assignments in the Jupyter
notebook*, JOSE 2019) grades notebooks whose cells carry metadata ``nbgrader: {solution, grade,
locked, points, grade_id, schema_version}``: *solution* cells hold the answer between
``### BEGIN SOLUTION`` and ``### END SOLUTION``, which ``nbgrader generate_assignment`` replaces
by a stub; *grade* cells are tests worth ``points``, locked so students cannot edit them.

How a chapter writes an exercise (the convention this module reads):

- a written exercise is a sphinx-exercise ``{exercise}`` block and its ``{solution}`` block
  (``:class: dropdown``) in a markdown cell. In the student notebook the solution becomes an
  answer cell, graded by hand (``points`` 1, ``grade_id`` ``<label>-answer``), which nbgrader
  empties to ``YOUR ANSWER HERE``;
- a code exercise is a code cell tagged ``exercise``. What the student writes lies between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (several regions may follow each other; a cell
  without markers is all solution). Everything outside the markers (imports, a signature, a
  docstring) is handed out as it is;
- its tests are in the next code cell(s), tagged ``check``: plain ``assert`` statements that pass
  on the solution and fail on the stub. A tag ``points-N`` (N a number) gives a check N points
  (default 1). Tests between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` are run
  when grading but not shown to students;
- the grade ids are the cells' ids, which are stable and unique in every chapter.

In the book itself solution cells run with their solution (so ``make test`` checks every solution
against its tests) and the markers are not shown (:mod:`physfm.sphinxext`); in the student HTML
edition they show the stub that the student notebook has, and no outputs.

    python -m physfm.student notebooks OUT_DIR book/*.ipynb
    python -m physfm.student config _config.yml OUT.yml [CACHE_DIR]

The first writes the instructor's nbgrader course folder ``OUT_DIR/source/<chapter>/<chapter>.ipynb``
and the student notebooks nbgrader generates from it, ``OUT_DIR/release/<chapter>/<chapter>.ipynb``;
the second the Jupyter Book configuration of the student HTML edition (:func:`student_config`).
"""

from __future__ import annotations

import copy
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import nbformat

from physfm.results import atomic_write

__all__ = [
    "SOLUTION_BEGIN",
    "SOLUTION_END",
    "HIDDEN_BEGIN",
    "HIDDEN_END",
    "CODE_STUB",
    "TEXT_STUB",
    "role",
    "points",
    "clear_solution",
    "clear_hidden_tests",
    "strip_markers",
    "split_solutions",
    "instructor_notebook",
    "write_course",
    "student_config",
]

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# nbgrader's own stubs (ClearSolutions.code_stub["python"] and .text_stub)
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
EXERCISE_TAG, CHECK_TAG = "exercise", "check"
WRITTEN_POINTS = 1.0
_POINTS = re.compile(r"points-(\d+(?:\.\d+)?)")
_ALL_MARKERS = (SOLUTION_BEGIN, SOLUTION_END, HIDDEN_BEGIN, HIDDEN_END)


def _text(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


def _where(cell) -> str:
    return f"cell {cell.get('id', '?')!r}"


def role(cell) -> Literal["exercise", "check"] | None:
    """What a cell is in an exercise: ``"exercise"`` (tagged ``exercise``), ``"check"``, or None."""
    tags = cell.get("metadata", {}).get("tags", [])
    if EXERCISE_TAG in tags and CHECK_TAG in tags:
        raise ValueError(f"{_where(cell)}: tagged both 'exercise' and 'check'; a cell is one or the other")
    found = EXERCISE_TAG if EXERCISE_TAG in tags else CHECK_TAG if CHECK_TAG in tags else None
    if found and cell.get("cell_type") != "code":
        raise ValueError(f"{_where(cell)}: tagged {found!r} but is a {cell.get('cell_type')} cell; want a code cell")
    return found


def points(cell) -> float:
    """Points of a check cell: its tag ``points-N``, else 1."""
    found = [t for t in cell.get("metadata", {}).get("tags", []) if t.startswith("points")]
    if not found:
        return 1.0
    if len(found) > 1 or not _POINTS.fullmatch(found[0]):
        raise ValueError(f"{_where(cell)}: points tags {found}; want one tag 'points-N' with N a number, e.g. 'points-2'")
    return float(_POINTS.fullmatch(found[0]).group(1))


def _regions(source: str, begin: str, end: str, where: str) -> list[tuple[str, bool, str]]:
    """Split ``source`` into lines tagged (line, inside a region, indentation of its begin marker)."""
    out, inside, indent = [], False, ""
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ValueError(f"{where}: {begin!r} inside another {begin!r}; regions cannot nest")
            inside, indent = True, re.match(r"\s*", line).group(0)
            out.append((line, True, indent))
        elif end in line:
            if not inside:
                raise ValueError(f"{where}: {end!r} without a {begin!r} before it")
            out.append((line, True, indent))
            inside = False
        else:
            out.append((line, inside, indent))
    if inside:
        raise ValueError(f"{where}: {begin!r} without a matching {end!r}")
    return out


def clear_solution(source: str, where: str = "source") -> str:
    """The student's version of a solution cell: each marked region replaced by nbgrader's stub.

    Same rule as nbgrader's ``ClearSolutions``: the stub takes the indentation of the
    ``### BEGIN SOLUTION`` line; a cell without markers becomes the stub.
    """
    if SOLUTION_BEGIN not in source and SOLUTION_END not in source:
        return CODE_STUB
    out = []
    for line, inside, indent in _regions(source, SOLUTION_BEGIN, SOLUTION_END, where):
        if not inside:
            out.append(line)
        elif SOLUTION_BEGIN in line:
            out.extend(indent + stub for stub in CODE_STUB.split("\n"))
    return "\n".join(out)


def clear_hidden_tests(source: str, where: str = "source") -> str:
    """A check cell as students see it: hidden tests (and their markers) removed."""
    return "\n".join(line for line, inside, _ in _regions(source, HIDDEN_BEGIN, HIDDEN_END, where) if not inside)


def strip_markers(source: str) -> str:
    """A cell as the book shows it: solutions and hidden tests in place, their marker lines removed."""
    return "\n".join(line for line in source.split("\n") if not any(m in line for m in _ALL_MARKERS))


# --- markdown: {exercise} and {solution} blocks ------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}(?P<arg>.*)$")
_OPTION = re.compile(r"^\s*:(?P<key>[a-z-]+):(?P<value>.*)$")


def _close(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def split_solutions(markdown: str, where: str = "markdown") -> list[tuple[str, str, str]]:
    """Split a markdown cell into ``(kind, text, label)`` pieces, kind ``"text"`` or ``"solution"``.

    A solution is a ``{solution} <label>`` directive (backtick or colon fence); its text is the
    directive's body without its options. ``{exercise}`` blocks are rewritten as plain markdown
    (a bold heading and the body), which a notebook shows without MyST.
    """
    lines = markdown.split("\n")
    pieces: list[tuple[str, str, str]] = []
    text: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or m["name"] not in ("exercise", "solution", "solution-start", "solution-end"):
            text.append(lines[i])
            i += 1
            continue
        if m["name"] in ("solution-start", "solution-end"):
            raise ValueError(f"{where}: '{{{m['name']}}}' found; write solutions as '{{solution}}' blocks")
        j = i + 1
        while j < len(lines) and not _close(lines[j], m["fence"]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{where}: '{{{m['name']}}}' block opened with {m['fence']!r} is never closed")
        body = lines[i + 1 : j]
        options = {}
        while body and _OPTION.match(body[0]):
            o = _OPTION.match(body[0])
            options[o["key"]] = o["value"].strip()
            body = body[1:]
        content = "\n".join(body).strip("\n")
        if m["name"] == "exercise":
            title = m["arg"].strip()
            heading = f"**Exercise{': ' + title if title else ''}**"
            if options.get("label"):
                heading += f" ({options['label']})"
            text.extend([heading, "", content])
        else:
            label = m["arg"].strip()
            if not label:
                raise ValueError(f"{where}: a '{{solution}}' block without the label of its exercise")
            if "\n".join(text).strip():
                pieces.append(("text", "\n".join(text).strip("\n"), ""))
            text = []
            pieces.append(("solution", content, label))
        i = j + 1
    if "\n".join(text).strip():
        pieces.append(("text", "\n".join(text).strip("\n"), ""))
    return pieces


# --- notebooks ------------------------------------------------------------------------------


def _nbgrader(grade_id: str, *, solution: bool, grade: bool, locked: bool, pts: float | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    if pts is not None:
        meta["points"] = pts
    return meta


def instructor_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The nbgrader *source* version of a chapter: solutions in place, cells marked for grading.

    Code cells tagged ``exercise`` become solution cells, cells tagged ``check`` locked grade
    cells with their points, ``{solution}`` blocks separate answer cells graded by hand; outputs
    are cleared. Raises ValueError, naming the cell, where a chapter breaks the convention.
    """
    if not isinstance(nb, nbformat.NotebookNode):
        raise TypeError(f"nb: want an nbformat.NotebookNode, got {type(nb).__name__}")
    out = copy.deepcopy(nb)
    cells, ids = [], set()

    def unique(cell_id: str) -> str:
        if cell_id in ids:
            raise ValueError(f"{name}: two cells with the id {cell_id!r}; grade ids must be unique")
        ids.add(cell_id)
        return cell_id

    for index, cell in enumerate(out.cells):
        if not cell.get("id"):
            cell["id"] = f"cell-{index}"
        where = f"{name}, {_where(cell)}"
        source = _text(cell.source)
        kind = role(cell)
        if cell.cell_type == "markdown":
            pieces = split_solutions(source, where)
            for n, (piece, text, label) in enumerate(pieces):
                new = nbformat.v4.new_markdown_cell(text)
                if piece == "solution":
                    new.metadata["nbgrader"] = _nbgrader(
                        unique(f"{label}-answer"), solution=True, grade=True, locked=False, pts=WRITTEN_POINTS
                    )
                    new.id = f"{label}-answer"
                else:
                    new.metadata = copy.deepcopy(cell.metadata)
                    new.id = cell.id if n == 0 else f"{cell.id}-{n}"
                cells.append(new)
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if kind is None and any(m in source for m in _ALL_MARKERS):
                raise ValueError(f"{where}: has solution or hidden-test markers but is not tagged 'exercise' or 'check'")
            if kind == "exercise":
                if HIDDEN_BEGIN in source or HIDDEN_END in source:
                    raise ValueError(f"{where}: hidden tests belong in a 'check' cell, not in the exercise")
                clear_solution(source, where)  # raises on unbalanced markers
                cell.metadata["nbgrader"] = _nbgrader(unique(cell.id), solution=True, grade=False, locked=False)
            elif kind == "check":
                if SOLUTION_BEGIN in source or SOLUTION_END in source:
                    raise ValueError(f"{where}: solution markers in a 'check' cell; put the solution in the exercise cell")
                clear_hidden_tests(source, where)
                cell.metadata["nbgrader"] = _nbgrader(unique(cell.id), solution=False, grade=True, locked=True, pts=points(cell))
        cells.append(cell)
    out.cells = cells
    return out


def _write_notebook(nb: nbformat.NotebookNode, path: Path) -> Path:
    return atomic_write(path, lambda tmp: nbformat.write(nb, str(tmp)))


def write_course(notebooks: Sequence[str | Path], course: str | Path) -> dict[str, tuple[Path, Path]]:
    """Write an nbgrader course folder for ``notebooks``: one assignment per chapter.

    ``course/source/<name>/<name>.ipynb`` is the instructor's version (:func:`instructor_notebook`);
    ``course/release/<name>/<name>.ipynb`` is what nbgrader's ``generate_assignment`` makes of
    it for students (solutions replaced by stubs, hidden tests removed, tests locked, checksums).
    Returns ``{name: (source, release)}``. Needs nbgrader (``requirements-student.txt``).
    """
    from nbgrader.apps import NbGraderAPI  # only the student edition needs nbgrader
    from traitlets.config import Config

    course = Path(course).resolve()
    paths = [Path(p) for p in notebooks]
    if not paths:
        raise ValueError("notebooks: got none; want the chapter notebooks to hand out")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"notebooks: {missing} do not exist")
    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    config.Exchange.root = str(course / "exchange")
    api = NbGraderAPI(config=config)
    written = {}
    # nbgrader's gradebook runs the `alembic` command, installed beside this Python
    path_before = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path_before])
    try:
        for path in paths:
            written[path.stem] = _generate(api, path, course)
    finally:
        os.environ["PATH"] = path_before
    return written


def _generate(api, path: Path, course: Path) -> tuple[Path, Path]:
    name = path.stem
    source = course / "source" / name / f"{name}.ipynb"
    _write_notebook(instructor_notebook(nbformat.read(str(path), as_version=4), name), source)
    result = api.generate_assignment(name, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{result.get('error') or result.get('log')}")
    return source, course / "release" / name / f"{name}.ipynb"


def student_config(config: Mapping[str, Any], cache: str | Path | None = None) -> dict[str, Any]:
    """The student edition's Jupyter Book configuration, from the book's ``_config.yml`` (a dict).

    Solutions hidden (sphinx-exercise's ``hide_solutions`` removes every ``{solution}`` block),
    exercise cells shown as stubs without outputs (``physfm_student_edition``, see
    :mod:`physfm.sphinxext`), "(student edition)" after the title. ``cache``: the book's
    execution cache, so that the edition reuses the outputs of ``make book`` instead of running
    every chapter again.
    """
    if not isinstance(config, Mapping) or "sphinx" not in config:
        raise ValueError(f"config: want the book's _config.yml as a dict with a 'sphinx' section, got {type(config).__name__}")
    out = copy.deepcopy(dict(config))
    out["title"] = f"{out.get('title', 'Book')} (student edition)"
    sphinx = out.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["hide_solutions"] = True
    sphinx["physfm_student_edition"] = True
    if cache is not None:
        out.setdefault("execute", {})["cache"] = str(Path(cache).resolve())
    return out


def main(argv: Iterable[str] | None = None) -> int:
    import yaml

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 3 and args[0] == "notebooks":
        for name, (source, release) in write_course(args[2:], args[1]).items():
            print(f"{name}: {source} -> {release}")
        return 0
    if len(args) in (3, 4) and args[0] == "config":
        config = student_config(yaml.safe_load(Path(args[1]).read_text()), args[3] if len(args) == 4 else None)
        atomic_write(args[2], lambda tmp: Path(tmp).write_text(yaml.safe_dump(config, sort_keys=False)))
        return 0
    print(
        "usage: python -m physfm.student notebooks OUT_DIR NOTEBOOK.ipynb [...]\n"
        "       python -m physfm.student config _config.yml OUT.yml [CACHE_DIR]"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
