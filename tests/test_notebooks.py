"""The book's notebooks: stored without outputs, one literal `parameters` cell, wired to presets,
parameter files and the table of contents."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from physfm.profiles import PRESETS, PROFILES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _parameters(path):
    cells = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', want exactly 1"
    values = {}
    for node in ast.parse(_source(cells[0])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f"{path.name}: the parameters cell may only hold `name = literal` lines"
        )
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks under book/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name}: cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_matches_the_preset(path):
    params = _parameters(path)
    chapter = path.stem
    assert chapter in PRESETS, f"{path.name}: no preset named {chapter!r} in physfm.profiles.PRESETS"
    assert params.get("profile") == "cpu", f"{path.name}: the stored default profile must be 'cpu'"
    assert "seed" in params
    extra = set(params) - {"profile", "seed"} - set(PRESETS[chapter]["cpu"])
    assert not extra, f"{path.name}: parameters {sorted(extra)} are not in the {chapter!r} preset"
    assert all(params[k] is None for k in params if k not in ("profile", "seed")), (
        f"{path.name}: chapter overrides must default to None (take the profile's value)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameter_files_exist_and_are_valid(path):
    params = _parameters(path)
    for profile in PROFILES:
        f = ROOT / "data_recipes" / "params" / path.stem / f"{profile}.yaml"
        assert f.exists(), f"missing papermill parameter file {f.relative_to(ROOT)}"
        values = yaml.safe_load(f.read_text())
        assert values.get("profile") == profile, f"{f.relative_to(ROOT)} must set profile: {profile}"
        unknown = set(values) - set(params)
        assert not unknown, f"{f.relative_to(ROOT)} sets {sorted(unknown)}, which the notebook's parameters cell lacks"


def test_every_notebook_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    for path in NOTEBOOKS:
        assert f"book/{path.stem}" in files, f"{path.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_shape(path):
    """Each chapter has exercises with solutions, a check-it section and references."""
    text = "\n".join(_source(c) for c in _cells(path) if c["cell_type"] == "markdown")
    assert "{exercise}" in text and "{solution}" in text, f"{path.name}: no exercises with solutions"
    assert ":class: dropdown" in text, f"{path.name}: solutions should be dropdowns"
    assert "solution-start" not in text, f"{path.name}: solution-start/end crashes sphinx-exercise 1.2.1 with hide_solutions"
    assert "## Check it" in text, f"{path.name}: no 'Check it' section"
    assert "papermill book/" in text, f"{path.name}: no 'run it at scale' papermill command"
    assert "{footbibliography}" in text, f"{path.name}: no references"
