"""Fourier-space helpers shared by the solvers, the data generator and the metrics.

A field on a periodic grid of ``N_1 x ... x N_d`` cells with side lengths ``L_i`` has angular
wavenumbers

.. math::  k_i = 2\\pi \\, \\mathrm{fftfreq}(N_i, \\, L_i / N_i),

so with ``L_i = N_i`` (the default, "one unit per cell") ``k_i`` is in radians per cell and runs
over ``[-\\pi, \\pi)``. Everything here is dimension-generic: the spatial dimensions are the
trailing ``d`` axes of a tensor, whatever comes before them.

The three spectral bands (low, mid, high) follow The Well (Ohana et al. 2024,
``the_well.benchmark.metrics.spectral``): edges
``logspace(log10(2*pi/max(N)), log10(pi*sqrt(d) + 1e-6), 4)`` with the first edge set to 0, and a
wavenumber ``|k|`` belongs to band ``b`` when ``edge[b] <= |k| < edge[b+1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "BANDS",
    "wavenumbers",
    "wavenumber_magnitude",
    "band_edges",
    "band_index",
    "band_fractions",
    "filter_bands",
    "autocorrelation",
    "dealias_mask",
    "gaussian_random_field",
    "gaussian_random_field_like",
    "radial_spectrum",
    "radial_correlation",
]

BANDS = ("low", "mid", "high")


def _shape(shape: Sequence[int], name: str = "shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 3 or any(s < 2 for s in shape):
        raise ValueError(f"{name} must list 1 to 3 spatial sizes, each at least 2, got {shape}")
    return shape


def wavenumbers(
    shape: Sequence[int],
    lengths: Sequence[float] | None = None,
    *,
    real: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Angular wavenumbers along each axis, shaped to broadcast against a ``shape`` grid.

    Args:
        shape: spatial sizes ``(N_1, ..., N_d)``.
        lengths: domain side lengths ``(L_1, ..., L_d)``; default ``L_i = N_i`` (radians per cell).
        real: the grid of ``torch.fft.rfftn`` (last axis holds ``N_d // 2 + 1`` non-negative
            frequencies) instead of ``torch.fft.fftn``.

    Returns:
        ``d`` tensors; tensor ``i`` has size ``N_i`` (or ``N_d//2+1``) on axis ``i`` and 1 elsewhere.
    """
    shape = _shape(shape)
    lengths = tuple(float(s) for s in shape) if lengths is None else tuple(float(v) for v in lengths)
    if len(lengths) != len(shape) or any(v <= 0 for v in lengths):
        raise ValueError(f"wavenumbers: lengths must be {len(shape)} positive numbers, got {lengths}")
    d = len(shape)
    ks = []
    for i, (n, length) in enumerate(zip(shape, lengths)):
        spacing = length / n
        if real and i == d - 1:
            k = torch.fft.rfftfreq(n, d=spacing, dtype=torch.float64)
        else:
            k = torch.fft.fftfreq(n, d=spacing, dtype=torch.float64)
        view = [1] * d
        view[i] = k.numel()
        ks.append((2 * math.pi * k).reshape(view).to(device=device, dtype=dtype))
    return ks


def wavenumber_magnitude(
    shape: Sequence[int],
    lengths: Sequence[float] | None = None,
    *,
    real: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Isotropic wavenumber ``|k| = sqrt(sum_i k_i^2)`` on the Fourier grid, shape ``shape``
    (or the ``rfftn`` grid when ``real``)."""
    ks = wavenumbers(shape, lengths, real=real, device=device, dtype=torch.float64)
    k2 = sum(k**2 for k in ks)
    return torch.sqrt(k2).to(dtype)


def band_edges(shape: Sequence[int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """The four edges of the low/mid/high bands for a grid of ``shape``, in radians per cell.

    Computed in float32, like The Well's ``torch.logspace`` default, so the two assign every
    wavenumber to the same band.
    """
    shape = _shape(shape)
    d = len(shape)
    edges = torch.logspace(math.log10(2 * math.pi / max(shape)), math.log10(math.pi * math.sqrt(d) + 1e-6), 4, device=device)
    edges[0] = 0.0
    return edges


def band_index(shape: Sequence[int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """For every point of the ``fftn`` grid, its band: 0 (low), 1 (mid) or 2 (high). Shape ``shape``."""
    kmag = wavenumber_magnitude(shape, device=device, dtype=torch.float32)
    edges = band_edges(shape, device=device)
    index = torch.bucketize(kmag, edges, right=True) - 1
    return index.clamp_(0, 2)  # |k| <= pi*sqrt(d) < last edge, so the clamp never changes a value


def band_fractions(shape: Sequence[int]) -> torch.Tensor:
    """Fraction of the ``fftn`` grid's modes in each band (low, mid, high); sums to 1.

    The bands are log-spaced in ``|k|`` while the number of modes grows like ``|k|^d``, so the
    high band holds most of the modes: white noise puts most of its error there.
    """
    index = band_index(shape).flatten()
    return torch.bincount(index, minlength=len(BANDS)).double() / index.numel()


def filter_bands(x: torch.Tensor, keep: Sequence[str], n_spatial: int) -> torch.Tensor:
    """``x`` with every Fourier mode outside the bands named in ``keep`` set to zero.

    An ideal band filter: ``filter_bands(y, ("low", "mid"), d)`` is ``y`` with its small scales
    removed, and its error against ``y`` lies entirely in the high band.
    """
    unknown = [b for b in keep if b not in BANDS]
    if unknown:
        raise ValueError(f"filter_bands: keep={tuple(keep)} names unknown bands {unknown}; bands are {BANDS}")
    if not 1 <= n_spatial <= 3 or x.ndim < n_spatial:
        raise ValueError(f"filter_bands: n_spatial must be 1..3 and at most x.ndim={x.ndim}, got {n_spatial}")
    shape = tuple(x.shape[-n_spatial:])
    dims = tuple(range(-n_spatial, 0))
    kept = torch.zeros(len(BANDS), dtype=torch.bool, device=x.device)
    kept[[BANDS.index(b) for b in keep]] = True
    mask = kept[band_index(shape, device=x.device)]
    return torch.fft.ifftn(torch.fft.fftn(x, dim=dims) * mask, dim=dims).real.to(x.dtype)


def autocorrelation(x: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Circular autocorrelation of the last ``n_spatial`` axes, normalised to 1 at zero lag.

    ``rho(s) = <x'(p) x'(p + s)> / <x'^2>`` with ``x' = x - mean(x)`` and ``<.>`` the mean over
    grid points ``p`` (computed by Wiener-Khinchin: the inverse FFT of ``|FFT(x')|^2``). Entry
    ``[..., s_1, ..., s_d]`` is the lag ``s``. A circular shift by ``s`` has
    ``VRMSE^2 = 2 (1 - rho(s)) (N - 1) / N`` exactly.
    """
    if not 1 <= n_spatial <= 3 or x.ndim < n_spatial:
        raise ValueError(f"autocorrelation: n_spatial must be 1..3 and at most x.ndim={x.ndim}, got {n_spatial}")
    dims = tuple(range(-n_spatial, 0))
    xc = x - x.mean(dim=dims, keepdim=True)
    power = torch.fft.fftn(xc, dim=dims).abs() ** 2
    corr = torch.fft.ifftn(power, dim=dims).real
    zero = corr[(...,) + (0,) * n_spatial]
    return corr / zero[(...,) + (None,) * n_spatial]


def radial_correlation(x: torch.Tensor, n_spatial: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-point correlation as a function of distance: :func:`autocorrelation` averaged over shells.

    ``rho(r) = mean of rho(s) over the lags s with round(|s|) = r`` cells, for
    ``r = 0, 1, ..., floor(min N / 2)``; lag ``s_i`` runs over ``-N_i/2 ... N_i/2 - 1`` (the
    circular lags, in the order of ``fftfreq``), so ``rho(0) = 1`` and a pure cosine of ``m``
    periods along a 1D box gives ``rho(r) = cos(2 pi m r / N)``.

    Returns:
        ``(r, rho)``: distances, shape ``(R,)``, and correlations, shape ``(*x.shape[:-n_spatial], R)``.
    """
    if not 1 <= n_spatial <= 3 or x.ndim < n_spatial:
        raise ValueError(f"radial_correlation: n_spatial must be 1..3 and at most x.ndim={x.ndim}, got {n_spatial}")
    shape = tuple(x.shape[-n_spatial:])
    rho = autocorrelation(x, n_spatial)
    lags = [torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=x.device) for n in shape]
    dist2 = sum(lag.reshape([-1 if i == j else 1 for j in range(n_spatial)]) ** 2 for i, lag in enumerate(lags))
    shell = torch.round(torch.sqrt(dist2)).long().flatten()
    n_shells = min(shape) // 2 + 1
    total = _shell_sum(rho, shell, n_shells, n_spatial)
    count = torch.bincount(shell[shell < n_shells], minlength=n_shells).to(total.dtype)
    return torch.arange(n_shells), total / count


def dealias_mask(shape: Sequence[int], *, real: bool = True, device: torch.device | str | None = None) -> torch.Tensor:
    """Orszag's 2/3 rule: True where every ``|k_i|`` is below 2/3 of the Nyquist wavenumber.

    Zeroing the top third of modes before a quadratic product keeps its aliased part out of the
    retained modes. Shape: the ``rfftn`` grid (``real=True``) or the ``fftn`` grid.
    """
    shape = _shape(shape)
    mask = torch.ones((), dtype=torch.bool, device=device)
    for n, k in zip(shape, wavenumbers(shape, real=real, device=device, dtype=torch.float64)):
        # k is in radians per cell: Nyquist is pi; integer mode number m = k * n / (2 pi)
        m = torch.round(k.abs() * n / (2 * math.pi))
        mask = mask & (m < n / 3)
    return mask


def gaussian_random_field(
    shape: Sequence[int],
    *,
    batch: int = 1,
    slope: float | torch.Tensor = 3.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Periodic Gaussian random fields with power spectrum ``E(|k|) ∝ |k|^(-slope)``.

    White noise is filtered in Fourier space by ``|k|^(-slope/2)`` (the mean mode set to zero)
    and each field is scaled to zero mean and unit standard deviation. A larger ``slope`` gives
    smoother fields; the generator draws a random slope per sample to vary the roughness.

    Args:
        shape: spatial sizes ``(N_1, ..., N_d)``.
        batch: number of fields.
        slope: spectral slope, one number or a tensor of ``batch`` numbers.
        generator: the random stream (a CPU generator works for any ``device``).

    Returns:
        Tensor of shape ``(batch, *shape)``.
    """
    shape = _shape(shape)
    if batch < 1:
        raise ValueError(f"gaussian_random_field: batch must be >= 1, got {batch}")
    slope = torch.as_tensor(slope, dtype=torch.float64)
    if slope.ndim == 0:
        slope = slope.expand(batch)
    if slope.shape != (batch,):
        raise ValueError(f"gaussian_random_field: slope must be a number or have shape ({batch},), got {tuple(slope.shape)}")
    d = len(shape)
    noise = torch.randn((batch, *shape), generator=generator, dtype=torch.float64)
    kmag = wavenumber_magnitude(shape, real=True, dtype=torch.float64)
    kmag[(0,) * d] = 1.0
    amplitude = kmag.unsqueeze(0) ** (-slope.reshape(batch, *[1] * d) / 2)
    amplitude[(slice(None),) + (0,) * d] = 0.0
    dims = tuple(range(1, d + 1))
    field = torch.fft.irfftn(torch.fft.rfftn(noise, dim=dims) * amplitude, s=shape, dim=dims)
    field = field - field.mean(dim=dims, keepdim=True)
    field = field / field.std(dim=dims, keepdim=True)
    return field.to(device=device, dtype=dtype)


def gaussian_random_field_like(
    reference: torch.Tensor,
    n_spatial: int,
    *,
    batch: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian random fields with the mode-by-mode mean power spectrum of ``reference``.

    With ``P_k = mean |FFT(x)_k|^2`` over the reference fields (every leading index is one field)
    and white noise ``w``, the fields ``IFFT(sqrt(P_k / N) FFT(w))`` (``N`` grid points) have
    ``E |FFT_k|^2 = P_k`` at every wavenumber: the same mean spectrum, hence (Wiener-Khinchin)
    the same mean two-point correlation, as the reference, but Gaussian values and random
    phases. ``P_k = P_{-k}`` for real fields, so the result is real. The baseline a generative
    model must beat to show it learnt more than second-order statistics.

    Returns:
        ``(batch, *reference.shape[-n_spatial:])``, in the reference's dtype and device.
    """
    if not 1 <= n_spatial <= 3 or reference.ndim < n_spatial:
        raise ValueError(
            f"gaussian_random_field_like: n_spatial must be 1..3 and at most reference.ndim={reference.ndim}, got {n_spatial}"
        )
    if batch < 1:
        raise ValueError(f"gaussian_random_field_like: batch must be >= 1, got {batch}")
    shape = tuple(reference.shape[-n_spatial:])
    dims = tuple(range(-n_spatial, 0))
    ref = reference.detach().to(torch.float64).reshape(-1, *shape)
    power = (torch.fft.fftn(ref, dim=dims).abs() ** 2).mean(0) / math.prod(shape)
    noise = torch.randn((batch, *shape), generator=generator, dtype=torch.float64).to(ref.device)
    field = torch.fft.ifftn(torch.sqrt(power) * torch.fft.fftn(noise, dim=dims), dim=dims).real
    return field.to(reference.dtype)


def radial_spectrum(x: torch.Tensor, n_spatial: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell-summed energy spectrum of the last ``n_spatial`` axes of ``x``.

    ``E[m] = sum_{m - 1/2 <= |k| N / (2 pi) < m + 1/2} |FFT(x)|^2 / N_total^2``, for integer
    shells ``m = 0, 1, ..., floor(max N / 2)`` (with ``|k|`` in radians per cell, on a square or
    cubic grid shell ``m`` holds the modes of integer wavenumber ``m``). Modes in the corners of
    the grid, beyond the Nyquist shell, are left out, so the shells add up to ``mean(x^2)``
    (Parseval) minus that corner energy.

    Returns:
        ``(m, E)``: shell numbers, shape ``(M,)``, and energies, shape ``(*x.shape[:-n_spatial], M)``.
    """
    if not 1 <= n_spatial <= 3 or x.ndim < n_spatial:
        raise ValueError(f"radial_spectrum: n_spatial must be 1..3 and at most x.ndim={x.ndim}, got {n_spatial}")
    shape = tuple(x.shape[-n_spatial:])
    dims = tuple(range(-n_spatial, 0))
    power = torch.fft.fftn(x, dim=dims).abs() ** 2 / math.prod(shape) ** 2
    kmag = wavenumber_magnitude(shape, device=x.device, dtype=torch.float64)
    shell = torch.round(kmag * max(shape) / (2 * math.pi)).long().flatten()
    n_shells = max(shape) // 2 + 1
    return torch.arange(n_shells), _shell_sum(power, shell, n_shells, n_spatial)


def _shell_sum(values: torch.Tensor, shell: torch.Tensor, n_shells: int, n_spatial: int) -> torch.Tensor:
    """Sum of ``values`` over the last ``n_spatial`` axes within each shell: ``shell`` holds the
    shell number of every grid point (flattened); points in shells ``>= n_shells`` are left out."""
    keep = shell < n_shells
    flat = values.flatten(start_dim=values.ndim - n_spatial)[..., keep]
    total = torch.zeros(*flat.shape[:-1], n_shells, dtype=flat.dtype, device=values.device)
    total.index_add_(-1, shell[keep], flat)
    return total
