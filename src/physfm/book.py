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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["glue", "statements", "StatementError"]

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
        print(f"The statements above were written from the {written_for}-profile run; this is a {profile}-profile run, "
              f"so they were not checked (shown for information).")
        return False
    failed = [text for text, ok in results.items() if not ok]
    if failed:
        raise StatementError(f"the text is not true of this run: {failed}")
    print(f"All {len(results)} statements hold for this run.")
    return True
