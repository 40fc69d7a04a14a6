"""Statistics that judge generated fields against true ones.

**Judging samples.** A sample is not compared with any one true field (there is no "right"
sample), but its *statistics* with those of true fields: the shell-summed energy spectrum
(:func:`physfm.data.spectral.radial_spectrum`), the histogram of pointwise values, and the two-point
correlation as a function of distance (:func:`physfm.data.spectral.radial_correlation`). Each
comparison is one number (:func:`statistics_distances`):

- spectrum: :math:`\\frac1M\\sum_{m} |\\log_{10} \\bar E_a(m) - \\log_{10} \\bar E_b(m)|`, the
  mean distance of the two mean spectra in decades, over the ``M`` shells :math:`m = 1 \\dots N/2`
  where the reference ``b`` holds energy (above ``energy_floor`` of its total);
- values: the 1-Wasserstein distance of the two pooled value distributions,
  :math:`\\int_0^1 |F_a^{-1}(q) - F_b^{-1}(q)|\\,dq` (in units of the field);
- correlation: :math:`\\frac1R\\sum_{r=1}^{R} |\\bar\\rho_a(r) - \\bar\\rho_b(r)|` for distances
  :math:`r = 1 \\dots N/2` cells.

Finite sets of true fields never agree exactly, so a distance means something only next to
its *floor*, the same distance between two independent sets of true fields of the same size.
And a generator that copies its training set has perfect statistics: :func:`nearest_distance`
measures how far each sample is from the nearest training field, under any periodic shift.

Tensors: latents and fields are ``(n, channels, *space)`` with 1 to 3 spatial axes; the
statistics take ``(n, *space)`` or any leading axes, with ``n_spatial`` trailing spatial axes.
"""

from __future__ import annotations

import torch

from physfm.data.spectral import radial_correlation, radial_spectrum

__all__ = ["wasserstein1", "field_statistics", "statistics_distances", "nearest_distance"]


def _check_n_spatial(n_spatial: int, ndim: int, fn: str, name: str = "x") -> None:
    if not isinstance(n_spatial, int) or not 1 <= n_spatial <= 3:
        raise ValueError(f"{fn}: n_spatial must be 1, 2 or 3, got {n_spatial!r}")
    if ndim < n_spatial + 1:
        raise ValueError(f"{fn}: {name} must be (n, *space) with {n_spatial} spatial axes, got {ndim} axes")


def wasserstein1(a: torch.Tensor, b: torch.Tensor) -> float:
    """1-Wasserstein distance between the empirical distributions of the values of ``a`` and ``b``.

    ``W_1 = int_0^1 |F_a^{-1}(q) - F_b^{-1}(q)| dq``, with ``F^{-1}`` the empirical quantile
    function (a step function), computed exactly on the merged steps; every element of a tensor
    is one value, whatever its shape. For two sets of equal size it is the mean distance of the
    sorted values, ``mean |sort(a) - sort(b)|``.
    """
    a = a.detach().flatten().double().sort().values
    b = b.detach().flatten().double().sort().values.to(a.device)
    if a.numel() == 0 or b.numel() == 0:
        raise ValueError(f"wasserstein1: both sets need values, got {a.numel()} and {b.numel()}")
    na, nb = a.numel(), b.numel()
    q = torch.cat(
        [
            torch.arange(1, na + 1, dtype=torch.float64, device=a.device) / na,
            torch.arange(1, nb + 1, dtype=torch.float64, device=a.device) / nb,
        ]
    )
    q = torch.unique(q)  # sorted breakpoints of both step functions, ending at 1
    width = torch.diff(q, prepend=q.new_zeros(1))
    mid = q - width / 2
    ia = (mid * na).long().clamp_(max=na - 1)
    ib = (mid * nb).long().clamp_(max=nb - 1)
    return float((width * (a[ia] - b[ib]).abs()).sum())


def field_statistics(x: torch.Tensor, n_spatial: int) -> dict[str, torch.Tensor]:
    """The statistics of a set of fields ``x (n, *space)`` (any leading axes are samples).

    Returns ``{"spectrum": (M,), "correlation": (R,), "values": (n * prod(space),)}``: the mean
    shell-summed energy spectrum (shells ``0 ... max(N)/2``), the mean two-point correlation at
    distances ``0 ... min(N)/2`` cells, and every value, flattened (for histograms).
    """
    _check_n_spatial(n_spatial, x.ndim, "field_statistics")
    x = x.detach().double()
    flat = x.reshape(-1, *x.shape[-n_spatial:])
    _, energy = radial_spectrum(flat, n_spatial)
    _, rho = radial_correlation(flat, n_spatial)
    return {"spectrum": energy.mean(0), "correlation": rho.mean(0), "values": flat.flatten()}


def statistics_distances(a: torch.Tensor, b: torch.Tensor, n_spatial: int, *, energy_floor: float = 1e-10) -> dict[str, float]:
    """Distances between the statistics of fields ``a`` and of reference fields ``b`` (see the
    module docstring).

    Args:
        a, b: ``(n_a, *space)`` and ``(n_b, *space)``, the same spatial grid.
        energy_floor: the spectrum distance leaves out the shells where the mean spectrum of
            ``b`` holds less than this fraction of its total energy. A spectral solver that
            truncates modes (Gray-Scott's 1/2-rule dealiasing keeps no energy above half the
            Nyquist wavenumber) leaves only rounding error there, and a log ratio of rounding
            errors would swamp the distance.

    Returns:
        ``{"spectrum": decades, "values": W_1, "correlation": mean |delta rho|}``.
    """
    _check_n_spatial(n_spatial, a.ndim, "statistics_distances", "a")
    _check_n_spatial(n_spatial, b.ndim, "statistics_distances", "b")
    if a.shape[-n_spatial:] != b.shape[-n_spatial:]:
        raise ValueError(
            f"statistics_distances: a has the grid {tuple(a.shape[-n_spatial:])}, b {tuple(b.shape[-n_spatial:])}; they must match"
        )
    sa, sb = field_statistics(a, n_spatial), field_statistics(b, n_spatial)
    if not 0 <= energy_floor < 1:
        raise ValueError(f"statistics_distances: energy_floor must be in [0, 1), got {energy_floor}")
    ea, eb = sa["spectrum"][1:], sb["spectrum"][1:]
    kept = eb > energy_floor * sb["spectrum"].sum()
    tiny = torch.finfo(torch.float64).tiny
    log_ratio = torch.log10(ea[kept].clamp_min(tiny)) - torch.log10(eb[kept])
    return {
        "spectrum": float(log_ratio.abs().mean()) if kept.any() else 0.0,
        "values": wasserstein1(sa["values"], sb["values"]),
        "correlation": float((sa["correlation"][1:] - sb["correlation"][1:]).abs().mean()),
    }


def nearest_distance(x: torch.Tensor, reference: torch.Tensor, n_spatial: int, *, chunk: int = 8) -> torch.Tensor:
    """For each field of ``x``, its relative distance to the nearest field of ``reference``,
    allowing any periodic shift: ``min_{r, s} |x - shift_s(r)| / |x|``.

    A generative model that memorised its training set draws samples much nearer to training
    fields than fresh true fields are; a shifted copy counts as a copy (a convolutional model
    commutes with shifts). The squared distance ``|x|^2 + |r|^2 - 2 (x star r)(s)`` takes the
    cross-correlation of every pair at every shift from one FFT product.

    Args:
        x: ``(n, *space)``; reference: ``(m, *space)`` on the same grid.
        chunk: fields of ``x`` per FFT product (memory grows as ``chunk * m * prod(space)``).

    Returns:
        ``(n,)`` distances (computed in float32), 0 for an exact (shifted) copy.
    """
    _check_n_spatial(n_spatial, x.ndim, "nearest_distance")
    _check_n_spatial(n_spatial, reference.ndim, "nearest_distance", "reference")
    space = tuple(x.shape[-n_spatial:])
    if tuple(reference.shape[-n_spatial:]) != space:
        raise ValueError(
            f"nearest_distance: x has the grid {space}, reference {tuple(reference.shape[-n_spatial:])}; they must match"
        )
    dims = tuple(range(-n_spatial, 0))
    x = x.detach().float().reshape(-1, *space)
    ref = reference.detach().float().reshape(-1, *space).to(x.device)
    ref_hat = torch.fft.rfftn(ref, dim=dims).conj()
    ref_sq = ref.square().flatten(1).sum(1)
    out = []
    for piece in x.split(chunk):
        cross = torch.fft.irfftn(torch.fft.rfftn(piece, dim=dims)[:, None] * ref_hat[None], s=space, dim=dims)
        best = cross.flatten(2).amax(dim=2)  # (chunk, m): best shift of every reference field
        sq = piece.square().flatten(1).sum(1)
        dist2 = (sq[:, None] + ref_sq[None] - 2 * best).amin(dim=1).clamp_min(0)
        out.append(torch.sqrt(dist2 / sq.clamp_min(torch.finfo(sq.dtype).tiny)))
    return torch.cat(out)
