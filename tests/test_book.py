"""physfm.book: numbers handed to the prose, and statements checked against the run."""

from __future__ import annotations

import pytest

from physfm import book


def test_statements_are_enforced_at_the_profile_they_were_written_for(capsys):
    assert book.statements({"a holds": True}, profile="cpu") is True
    assert "All 1 statements hold" in capsys.readouterr().out
    with pytest.raises(book.StatementError, match="b fails"):
        book.statements({"a holds": True, "b fails": False}, profile="cpu")


def test_at_another_profile_the_page_says_they_were_not_checked(capsys):
    assert book.statements({"b fails": False}, profile="smoke") is False
    out = capsys.readouterr().out
    assert "NO   b fails" in out and "not checked" in out and "hold" not in out


def test_glue_returns_the_value():
    assert book.glue("x", 1.5) == 1.5


def test_statements_that_a_run_cannot_evaluate(capsys):
    missing = {}.__getitem__
    assert book.statements({"about a system this run lacks": lambda: missing("navier_stokes")}, profile="smoke") is False
    assert "n/a" in capsys.readouterr().out
    with pytest.raises(KeyError):
        book.statements({"about a system this run lacks": lambda: missing("navier_stokes")}, profile="cpu")


def test_the_execution_cache_is_emptied_when_the_library_changes(tmp_path):
    root = tmp_path / "repo"
    (root / "src" / "physfm").mkdir(parents=True)
    (root / "src" / "physfm" / "a.py").write_text("x = 1\n")
    (root / "requirements.txt").write_text("torch==2.13.0\n")
    build = tmp_path / "_build"
    (build / ".jupyter_cache").mkdir(parents=True)
    assert book.invalidate_stale_cache(build, root)  # no record yet: stale
    assert not (build / ".jupyter_cache").exists()
    (build / ".jupyter_cache").mkdir()
    assert not book.invalidate_stale_cache(build, root)  # nothing changed: kept
    assert (build / ".jupyter_cache").exists()
    (root / "src" / "physfm" / "a.py").write_text("x = 2\n")  # the library changed
    assert book.invalidate_stale_cache(build, root)
    assert not (build / ".jupyter_cache").exists()
