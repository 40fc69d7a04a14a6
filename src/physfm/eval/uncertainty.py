r"""How sure is a difference between two arms? A paired bootstrap over seeds and windows.

An experiment compares an arm ``a`` with a baseline ``b`` (pre-trained against scratch) on the
same validation windows, seed by seed: at one seed both arms start their processor from the same
weights and read the same data, so their errors are *paired*. The reduction of the mean error,

.. math::  r = 1 - \\frac{\\bar e_a}{\\bar e_b}, \\qquad \\bar e = \\frac{1}{S W} \\sum_{s, w} e_{s, w},

over ``S`` seeds and ``W`` windows has two sources of uncertainty: the seeds (training noise)
and the windows (which data the validation set happens to hold). The interval resamples both, as
a two-stage (hierarchical) bootstrap (Davison & Hinkley 1997, sect. 3.8): draw ``S`` seeds with
replacement, then ``W`` windows with replacement, the same draws for both arms (the pairing),
recompute :math:`r`; the 2.5% and 97.5% quantiles of many such :math:`r` make the 95% interval
(percentile bootstrap). Resampling ``S`` seeds underestimates their spread by a factor
:math:`(S-1)/S` in variance (the plug-in variance of a mean of few values), so the draws are
widened about the estimate by :math:`\sqrt{S/(S-1)}` (Davison & Hinkley 1997, sect. 3.8's
remedy for few clusters). A difference is called a difference only when its interval excludes
zero. With few seeds an interval is approximate: in simulations where the spread between seeds
dominates that between windows, the 95% interval covers the truth 93% of the time with 5 seeds
and about 84% with 3 (``tests/test_uncertainty.py``); where the windows dominate, it is
conservative.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Interval", "paired_reduction"]


class Interval(NamedTuple):
    """An estimate and its interval, in percent for reductions."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.estimate:+.1f}% [{self.low:+.1f}, {self.high:+.1f}]"


def paired_reduction(
    errors: np.ndarray, baseline: np.ndarray, *, n_boot: int = 4000, level: float = 0.95, seed: int = 0
) -> Interval:
    """The reduction ``100 * (1 - mean(errors) / mean(baseline))`` in percent with its bootstrap interval.

    Args:
        errors, baseline: ``(seeds, windows)`` errors of the arm and of the baseline, paired entry
            by entry (a 1-D array is one seed).
        n_boot: bootstrap draws; ``level``: coverage of the interval; ``seed``: the draws' seed.

    Raises:
        ValueError: the arrays differ in shape, hold no values, or are not finite.
    """
    a, b = np.atleast_2d(np.asarray(errors, dtype=np.float64)), np.atleast_2d(np.asarray(baseline, dtype=np.float64))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired_reduction: errors {a.shape} and baseline {b.shape} must be paired (seeds, windows) arrays of one shape"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_reduction: errors and baseline must be finite (a run that did not reach this step?)")
    if not 0 < level < 1:
        raise ValueError(f"paired_reduction: level must be in (0, 1), got {level}")
    estimate = 100 * (1 - a.mean() / b.mean())
    rng = np.random.default_rng(seed)
    s, w = a.shape
    seeds = rng.integers(0, s, size=(n_boot, s))
    windows = rng.integers(0, w, size=(n_boot, s, w))
    pick = lambda x: x[seeds[:, :, None], windows].mean(axis=(1, 2))
    draws = 100 * (1 - pick(a) / pick(b))
    if s > 1:  # the plug-in spread of s seeds is too small by sqrt((s - 1) / s)
        draws = estimate + np.sqrt(s / (s - 1)) * (draws - estimate)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi))
