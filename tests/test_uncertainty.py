"""physfm.eval.uncertainty: the paired bootstrap interval of a reduction."""

from __future__ import annotations

import numpy as np
import pytest

from physfm.eval.uncertainty import paired_reduction


def _errors(effect: float, seed: int, seeds: int = 3, windows: int = 32):
    rng = np.random.default_rng(seed)
    window_difficulty = rng.lognormal(0, 0.3, size=windows)  # shared by both arms: the pairing
    base = window_difficulty * rng.lognormal(0, 0.05, size=(seeds, 1)) * rng.lognormal(0, 0.05, size=(seeds, windows))
    arm = (
        (1 - effect) * window_difficulty * rng.lognormal(0, 0.05, size=(seeds, 1)) * rng.lognormal(0, 0.05, size=(seeds, windows))
    )
    return arm, base


def test_the_estimate_is_the_reduction_of_the_means():
    arm, base = _errors(0.2, 0)
    iv = paired_reduction(arm, base)
    assert iv.estimate == pytest.approx(100 * (1 - arm.mean() / base.mean()))
    assert iv.low < iv.estimate < iv.high


def test_a_clear_effect_excludes_zero_and_no_effect_does_not():
    assert paired_reduction(*_errors(0.3, 1)).excludes_zero
    assert not paired_reduction(*_errors(0.0, 2), seed=1).excludes_zero


def test_the_interval_covers_the_true_reduction_most_of_the_time():
    true = 100 * 0.15
    ivs = [paired_reduction(*_errors(0.15, s, seeds=5), n_boot=1000, seed=s) for s in range(100)]
    covered = [iv.low <= true <= iv.high for iv in ivs]
    # 93% in 200 repetitions of this set-up; with 3 seeds, where the seeds' spread dominates, about 84%
    assert np.mean(covered) >= 0.88


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="must be paired"):
        paired_reduction(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="must be finite"):
        paired_reduction(np.array([1.0, np.nan]), np.ones(2))
