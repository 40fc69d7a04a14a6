"""Training on many systems at once: temperature-scaled sampling across their streams.

A model trained across PDE systems (PDE-FM) draws, at every step, one system and a batch of its
windows. With :math:`n_i` the size of system :math:`i`'s share of the corpus and a temperature
:math:`T`,

.. math::  p_i = \\frac{n_i^{1/T}}{\\sum_j n_j^{1/T}},

so :math:`T = 1` samples in proportion to the data (a large system dominates), :math:`T \\to \\infty`
samples every system equally, and values in between flatten the imbalance (the multilingual
recipe of Arivazhagan et al. 2019, used by PDE-FM to keep one domain from dominating). Data
generated on the fly has no size of its own, so the corpus sizes :math:`n_i` are a parameter: the
book sets them unequal on purpose, as real collections are (The Well's datasets differ in size by
more than an order of magnitude).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from physfm.data.streams import WindowStream

__all__ = ["temperature_probabilities", "TemperatureSampler", "mixture_batches"]


def temperature_probabilities(sizes: Sequence[float], temperature: float) -> np.ndarray:
    """``p_i = n_i^(1/T) / sum_j n_j^(1/T)``; ``temperature=math.inf`` gives equal shares."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise ValueError(f"temperature_probabilities: sizes must be positive numbers, got {list(sizes)!r}")
    if isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature_probabilities: temperature must be > 0 (math.inf: uniform), got {temperature!r}")
    w = np.exp(np.log(n) / temperature)
    return w / w.sum()


class TemperatureSampler:
    """Draws system indices with :func:`temperature_probabilities`, from its own generator."""

    def __init__(self, sizes: Sequence[float], temperature: float, *, seed: int = 0):
        self.probabilities = temperature_probabilities(sizes, temperature)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._p = torch.as_tensor(self.probabilities)

    def draw(self, n: int | None = None) -> int | torch.Tensor:
        """One index (``n=None``) or ``n`` of them."""
        idx = torch.multinomial(self._p, 1 if n is None else n, replacement=True, generator=self.generator)
        return int(idx) if n is None else idx


def mixture_batches(
    streams: Mapping[str, WindowStream], sampler: TemperatureSampler, batch: int, counts: dict[str, int] | None = None
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For ever: a system drawn by ``sampler`` (indices into ``streams`` in order) and a batch of its
    windows with their metadata, ``(name, x (batch, F, window, *S), coefficients (batch, k), dt (batch,))``
    (the streams must yield metadata: ``WindowStream(..., meta=True)``). ``counts`` (name -> int)
    counts the draws."""
    names = list(streams)
    iters = {n: iter(s) for n, s in streams.items()}
    while True:
        name = names[sampler.draw()]
        if counts is not None:
            counts[name] = counts.get(name, 0) + 1
        items = [next(iters[name]) for _ in range(batch)]
        yield (
            name,
            torch.stack([x for x, _, _ in items]),
            torch.stack([c for _, c, _ in items]),
            torch.stack([d for _, _, d in items]),
        )
