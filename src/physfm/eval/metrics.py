"""Error metrics of The Well (Ohana et al. 2024), for channels-first tensors.

Tensors are ``(batch, field, time, *space)`` with 1 to 3 spatial axes, so by default the
spatial axes are everything after the third; pass ``n_spatial`` for any other layout (the
spatial axes are always the trailing ones). Every metric returns one value per leading index,
shape ``x.shape[:-n_spatial]``; average it yourself (over fields, then batch, then time, as
the book reports them).

VRMSE (variance-scaled root mean squared error), with ``y`` the reference:

.. math::  \\mathrm{VRMSE}(x, y) = \\sqrt{\\frac{\\langle (x - y)^2 \\rangle}{\\mathrm{Var}(y) + \\epsilon}}

where :math:`\\langle\\cdot\\rangle` is the mean over all spatial points, ``Var`` the unbiased
(N-1) variance over all spatial points together and :math:`\\epsilon = 10^{-7}`. Predicting
the spatial mean of ``y`` gives ``sqrt((N-1)/N)``, about 1: the score of knowing nothing but the
mean.

Binned spectral error: with :math:`\\hat e = \\mathrm{FFT}(x - y)` over the spatial axes and
the bands of :func:`physfm.data.spectral.band_index` (low, mid, high in isotropic wavenumber),

.. math::  \\mathrm{MSE}_b = \\frac{1}{N^2} \\sum_{k \\in b} |\\hat e_k|^2, \\qquad
           \\mathrm{NMSE}_b = \\frac{\\mathrm{MSE}_b}{\\frac{1}{N^2} \\sum_{k \\in b} |\\hat y_k|^2 + \\epsilon}

so the three ``MSE_b`` add up to the MSE (Parseval). These agree with
``the_well.benchmark.metrics`` (``VRMSE`` and ``binned_spectral_mse``) to float32 precision;
``tests/test_metrics.py`` checks that.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from physfm.data.spectral import BANDS, band_index

__all__ = ["BANDS", "SpectralError", "mse", "vrmse", "spectral_error"]

EPS = 1e-7


class SpectralError(NamedTuple):
    """Per-band errors, last axis ordered as :data:`BANDS` (low, mid, high)."""

    mse: torch.Tensor
    nmse: torch.Tensor


def _check(x: torch.Tensor, y: torch.Tensor, n_spatial: int | None, fn: str) -> int:
    for name, t in (("pred", x), ("target", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"{fn}: pred has shape {tuple(x.shape)} but target has shape {tuple(y.shape)}; they must match")
    if n_spatial is None:
        n_spatial = x.ndim - 3
        if not 1 <= n_spatial <= 3:
            raise ValueError(
                f"{fn}: expected (batch, field, time, *space) with 1 to 3 spatial axes, got shape "
                f"{tuple(x.shape)}; pass n_spatial= for another layout"
            )
    if not 1 <= n_spatial <= 3 or n_spatial > x.ndim:
        raise ValueError(f"{fn}: n_spatial must be 1, 2 or 3 and at most pred.ndim={x.ndim}, got {n_spatial}")
    space = tuple(x.shape[-n_spatial:])
    if math.prod(space) < 2:
        raise ValueError(f"{fn}: need at least 2 spatial points to measure a variance, got spatial shape {space}")
    return n_spatial


def mse(pred: torch.Tensor, target: torch.Tensor, *, n_spatial: int | None = None) -> torch.Tensor:
    """Mean squared error over the spatial axes, shape ``pred.shape[:-n_spatial]``."""
    d = _check(pred, target, n_spatial, "mse")
    return ((pred - target) ** 2).mean(dim=tuple(range(-d, 0)))


def vrmse(pred: torch.Tensor, target: torch.Tensor, *, n_spatial: int | None = None, eps: float = EPS) -> torch.Tensor:
    """VRMSE of ``pred`` against the reference ``target``, shape ``pred.shape[:-n_spatial]``."""
    d = _check(pred, target, n_spatial, "vrmse")
    dims = tuple(range(-d, 0))
    err = ((pred - target) ** 2).mean(dim=dims)
    var = target.var(dim=dims, correction=1)
    return torch.sqrt(err / (var + eps))


def spectral_error(pred: torch.Tensor, target: torch.Tensor, *, n_spatial: int | None = None, eps: float = EPS) -> SpectralError:
    """MSE and NMSE of ``pred`` against ``target`` in the low, mid and high wavenumber bands.

    Returns:
        :class:`SpectralError` whose ``mse`` and ``nmse`` have shape ``(*pred.shape[:-n_spatial], 3)``.
    """
    d = _check(pred, target, n_spatial, "spectral_error")
    shape = tuple(pred.shape[-d:])
    dims = tuple(range(-d, 0))
    n_total = math.prod(shape)
    bands = band_index(shape, device=pred.device).flatten()

    def banded(z: torch.Tensor) -> torch.Tensor:
        power = torch.fft.fftn(z, dim=dims).abs() ** 2
        power = power.flatten(start_dim=z.ndim - d)
        out = torch.zeros(*power.shape[:-1], len(BANDS), dtype=power.dtype, device=power.device)
        return out.index_add_(-1, bands, power) / n_total**2

    err = banded(pred - target)
    energy = banded(target)
    return SpectralError(mse=err, nmse=err / (energy + eps))
