"""physfm.data.mixture: temperature-scaled sampling across systems."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physfm.data import mixture, streams


def test_temperature_probabilities_follow_the_formula():
    sizes = [800, 200, 100]
    for T in (0.5, 1.0, 2.0, 3.0):
        w = np.array(sizes, dtype=float) ** (1 / T)
        np.testing.assert_allclose(mixture.temperature_probabilities(sizes, T), w / w.sum())
    np.testing.assert_allclose(mixture.temperature_probabilities(sizes, 1.0), [8 / 11, 2 / 11, 1 / 11])
    np.testing.assert_allclose(mixture.temperature_probabilities(sizes, math.inf), [1 / 3] * 3)
    for bad in ([1, 0], []):
        with pytest.raises(ValueError, match="sizes must be positive"):
            mixture.temperature_probabilities(bad, 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        mixture.temperature_probabilities(sizes, 0.0)


def test_temperature_sampler_draws_with_those_probabilities():
    sampler = mixture.TemperatureSampler([800, 200, 100], 2.0, seed=1)
    draws = sampler.draw(40_000).numpy()
    freq = np.bincount(draws, minlength=3) / draws.size
    np.testing.assert_allclose(freq, sampler.probabilities, atol=0.01)
    a, b = (mixture.TemperatureSampler([800, 200, 100], 2.0, seed=3) for _ in range(2))
    assert [a.draw() for _ in range(20)] == [b.draw() for _ in range(20)]


def test_mixture_batches_come_from_one_system_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path))
    pools = {
        s: streams.WindowStream(s, shape=(16,), frames=4, window=3, size=2, chunk=2, meta=True) for s in ("diffusion", "burgers")
    }
    counts: dict = {}
    it = mixture.mixture_batches(pools, mixture.TemperatureSampler([1, 1], 1.0, seed=0), 3, counts)
    for _ in range(6):
        name, x, coef, dt = next(it)
        assert x.shape == (3, 1, 3, 16) and coef.shape[0] == 3 and dt.shape == (3,)
    assert sum(counts.values()) == 6 and set(counts) <= {"diffusion", "burgers"}
