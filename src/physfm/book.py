"""What the chapters' prose needs from a run: its numbers, and a check of every statement.

Every chapter writes sentences about its own run ("the in-domain tokeniser ends 9% below
scratch"). Two rules keep them true:

- a number in the prose is never typed: the code that computes it hands it to the page with
  :func:`glue` (myst-nb's glue: ``{glue:text}`name:.3f``` in a markdown cell shows the value the
  run computed; in plain Jupyter, where there is no book, the value is only recorded);
- a statement that depends on the run is checked by :func:`statements`, as strictly as the
  sentence says it: at the profile the text was written for, a false statement stops the
  build; at any other profile the page says that the statements were not checked, instead of
  claiming that they hold.

And a built page never shows outputs of stale code: Jupyter Book's execution cache is keyed by
the notebooks' code cells only, so :func:`invalidate_stale_cache` (``python -m physfm.book
invalidate <build folder>``, run by ``make book`` and ``make test``) empties it whenever the
library's source or the pinned requirements changed since the last build.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["glue", "statements", "StatementError", "library_digest", "invalidate_stale_cache"]

#: the profile the chapters' text is written for (the rendered book's)
WRITTEN_FOR = "cpu"


class StatementError(AssertionError):
    """A statement of the text is false for this run."""


def glue(name: str, value: Any) -> Any:
    """Hand ``value`` to the page under ``name`` (myst-nb's ``glue``, not displayed) and return it.

    Outside a Jupyter Book build (a plain kernel without myst-nb) the value is returned only.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - Colab and other kernels without the book's tools
        return value
    _glue(name, value, display=False)
    return value


def statements(checks: Mapping[str, bool | Callable[[], bool]], *, profile: str, written_for: str = WRITTEN_FOR) -> bool:
    """Print every statement with whether this run bears it out, and enforce them.

    Args:
        checks: statement (as the text says it) -> whether it holds for this run, or a function
            that says so (for statements about systems or settings that only the profile the text
            was written for has: at another profile, one that cannot be evaluated is shown as such).
        profile: the profile of this run.
        written_for: the profile the text was written for.

    Returns:
        True when the statements were checked (``profile == written_for``).

    Raises:
        StatementError: at ``written_for``, naming every statement that is false.
    """
    checked = profile == written_for
    results: dict[str, bool] = {}
    for text, ok in checks.items():
        if callable(ok):
            try:
                ok = ok()
            except (KeyError, IndexError, ValueError) as e:
                if checked:
                    raise
                print(f" n/a  {text} (this run cannot evaluate it: {type(e).__name__})")
                continue
        results[text] = bool(ok)
        print(f"{'yes' if ok else 'NO ':>4}  {text}")
    if not checked:
        print(
            f"The statements above were written from the {written_for}-profile run; this is a {profile}-profile run, "
            f"so they were not checked (shown for information)."
        )
        return False
    failed = [text for text, ok in results.items() if not ok]
    if failed:
        raise StatementError(f"the text is not true of this run: {failed}")
    print(f"All {len(results)} statements hold for this run.")
    return True


def library_digest(root: str | Path | None = None) -> str:
    """Hash of everything a chapter's outputs depend on besides its own cells: the library's
    source (``src/physfm/**/*.py``) and the pinned requirements."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    files = sorted((root / "src" / "physfm").rglob("*.py")) + [root / "requirements.txt"]
    for f in files:
        if f.exists():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def invalidate_stale_cache(build: str | Path, root: str | Path | None = None) -> bool:
    """Empty the execution cache ``<build>/.jupyter_cache`` when :func:`library_digest` differs
    from the one recorded at the last call (``<build>/.library-digest``), and record the current
    one. Returns True when the cache was emptied."""
    build = Path(build)
    digest, stamp, cache = library_digest(root), build / ".library-digest", build / ".jupyter_cache"
    stale = not stamp.exists() or stamp.read_text().strip() != digest
    if stale and cache.exists():
        shutil.rmtree(cache)
    build.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")
    return stale and not (cache.exists())


if __name__ == "__main__":  # pragma: no cover - called by the Makefile
    if len(sys.argv) != 3 or sys.argv[1] != "invalidate":
        raise SystemExit("usage: python -m physfm.book invalidate <build folder>")
    if invalidate_stale_cache(sys.argv[2]):
        print(f"physfm: the library or the requirements changed since the last build: every chapter in {sys.argv[2]} runs again")
