"""The book as a whole: launch buttons (repository, Colab, Binder), citations, table of contents.

python tests/test_book_setup.py   # prints the Colab cell for the repository in _config.yml
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text()) if (ROOT / "_config.yml").exists() else {}
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))
COLAB_TAG = "colab"

COLAB_CELL = """\
# On Google Colab only (elsewhere this cell does nothing): get the book's repository and install
# its library with the CPU build of PyTorch; the chapter then runs in the repository's book/.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("/content/physfm"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "{url}", "/content/physfm"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--extra-index-url",
                        "https://download.pytorch.org/whl/cpu", "-e", "/content/physfm[viz]"], check=True)
    sys.path.insert(0, "/content/physfm/src")  # an editable install is seen after a restart only
    os.chdir("/content/physfm/book")"""


def colab_cell(config: dict = CONFIG) -> str:
    """The first code cell of every chapter, for the repository and branch set in ``_config.yml``."""
    repo = config["repository"]
    return COLAB_CELL.format(url=repo["url"].rstrip("/"), branch=repo.get("branch", "main"))


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _tracked_text_files():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:  # not a git checkout: every file but builds and environments
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not {".git", ".venv", "_build"} & set(p.parts)]
    else:
        paths = [ROOT / line for line in listed.stdout.splitlines()]
    for path in paths:
        if path.is_file() and path.suffix not in (".nc", ".png", ".pt", ".db"):
            try:
                yield path, path.read_text()
            except UnicodeDecodeError:
                continue


def test_repository_url_is_set_in_one_place():
    url = CONFIG["repository"]["url"].rstrip("/")
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    name = url.removeprefix("https://")
    for path, text in _tracked_text_files():
        if path == ROOT / "_config.yml" or name not in text:
            continue
        if path.suffix == ".ipynb":  # only in the Colab cell, which test_colab_cells checks
            rest = [c for c in json.loads(text)["cells"] if COLAB_TAG not in c.get("metadata", {}).get("tags", [])]
            assert not any(name in _source(c) for c in rest), f"{path.relative_to(ROOT)} hard-codes {url}"
        else:
            assert path == Path(__file__), f"{path.relative_to(ROOT)} hard-codes {url}; read it from _config.yml"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_colab_cells(path):
    """A chapter's Colab cell, where it has one, is its first code cell, as rendered from _config.yml."""
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    tagged = [i for i, c in enumerate(code) if COLAB_TAG in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        pytest.skip(f"{path.name} has no cell tagged {COLAB_TAG!r} yet")
    assert tagged == [0], f"{path.name}: the cell tagged {COLAB_TAG!r} must be the first code cell, and the only one"
    assert _source(code[0]) == colab_cell(), f"{path.name}: its Colab cell differs from `python tests/test_book_setup.py`"
    assert "remove-cell" in code[0]["metadata"]["tags"], f"{path.name}: tag the Colab cell 'remove-cell' too"


def test_colab_cell_does_nothing_elsewhere(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("os.chdir", lambda p: calls.append(p))
    path = list(sys.path)
    exec(colab_cell(), {})
    assert calls == [] and sys.path == path


def test_colab_cell_on_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, check: calls.append(args))
    monkeypatch.setattr("os.chdir", lambda p: calls.append(p))
    monkeypatch.setattr("os.path.isdir", lambda p: False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(colab_cell(), {})
    url, branch = CONFIG["repository"]["url"].rstrip("/"), CONFIG["repository"]["branch"]
    assert calls[0] == ["git", "clone", "--depth", "1", "--branch", branch, url, "/content/physfm"]
    assert calls[1][1:] == [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--extra-index-url",
        "https://download.pytorch.org/whl/cpu",
        "-e",
        "/content/physfm[viz]",
    ]
    assert calls[2] == "/content/physfm/book" and sys.path[0] == "/content/physfm/src"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^viz = ", pyproject, re.M), "the Colab cell installs the 'viz' extra"


def test_binder_environment_is_the_pinned_one_with_cpu_torch():
    binder = ROOT / ".binder"
    lines = [
        line.strip()
        for line in (binder / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-r ../requirements.txt"]
    assert (binder / "../requirements.txt").resolve() == ROOT / "requirements.txt"
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text().splitlines()
    version = (binder / "runtime.txt").read_text().strip()
    assert version == "python-3.11", version


def test_one_citation_style():
    """Every page cites with {footcite:p}/{footcite:t} and lists what it cites with {footbibliography}."""
    for path in CHAPTERS + PAGES:
        if path.suffix == ".ipynb":
            text = "\n".join(_source(c) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
        else:
            text = path.read_text()
        other = re.findall(r"\{cite(?::\w+)?\}", text)
        assert not other, f"{path.name}: {other}; cite with {{footcite:p}} or {{footcite:t}}"
        if "{footcite" in text:
            assert "{footbibliography}" in text, f"{path.name} cites but has no {{footbibliography}}"


def _bib_entries():
    text = (ROOT / "book" / "references.bib").read_text()
    return {m.group(2): m.group(3) for m in re.finditer(r"@(\w+)\{([^,]+),(.*?)\n\}", text, re.S)}


def test_bibliography_entries_are_complete():
    entries = _bib_entries()
    for key, body in entries.items():
        fields = dict(re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?\s*$", body, re.M))
        assert {"title", "author", "year"} <= set(fields), f"{key}: missing { ({'title', 'author', 'year'} - set(fields)) }"
        assert not re.search(r"authors\}|contributors|\bgroup\b", fields["author"], re.I), f"{key}: author {fields['author']!r}"
        assert any(k in fields for k in ("journal", "booktitle", "howpublished", "institution", "eprint")), key
    cited = set()
    for path in CHAPTERS + PAGES:
        cited |= {k.strip() for keys in re.findall(r"\{footcite:[pt]\}`([^`]+)`", path.read_text()) for k in keys.split(",")}
    assert cited <= set(entries), f"cited but not in references.bib: {sorted(cited - set(entries))}"


# names that a style which lower-cases titles would spoil where they are not the first word
NAMES = {
    "Mamba",
    "Well",
    "Tadpole",
    "Fourier",
    "Gaussian",
    "Euler",
    "Navier",
    "Stokes",
    "Kuramoto",
    "Sivashinsky",
    "Python",
    "Jupyter",
    "Transformer",
    "Transformers",
}


def test_titles_protect_their_capitals():
    """Acronyms and names in titles are braced: the plain style lower-cases every unbraced word but the first."""
    for key, body in _bib_entries().items():
        title = re.search(r"^\s*title\s*=\s*\{(.*)\},?\s*$", body, re.M).group(1)
        starts_braced = title.startswith("{")
        words = re.findall(r"[A-Za-z0-9.']+", re.sub(r"\{[^{}]*\}", " ", title))
        spoilt = [
            w
            for i, w in enumerate(words)
            if any(ch.isupper() for ch in w[1:])  # PDEs, 3D, LoRA, PyTorch
            or (w in NAMES and (i > 0 or starts_braced))
            or (i == 0 and not starts_braced and w[:1].islower())
        ]  # mamba.py would become Mamba.py
        assert not spoilt, f"{key}: protect {spoilt} with braces in its title {title!r}"


def test_intro_map_follows_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    order = [c["file"].removeprefix("book/") for part in toc["parts"] for c in part["chapters"]]
    intro = (ROOT / "book" / "intro.md").read_text()
    table = [line for line in intro.splitlines() if line.startswith("|")]
    mapped = [m for line in table for m in re.findall(r"\{doc\}`([^`]+)`", line.split("|")[2])]
    assert mapped == order, f"the intro's map lists {mapped}, the table of contents {order}"


if __name__ == "__main__":
    print(colab_cell())
