"""Generating fields: flow matching in a latent space, and the statistics that judge the samples.

A generative model of a system draws *new* fields that look as if the system had made them.
Here it works in the latent space of the pre-trained tokeniser (as Tadpole does): encode true
fields to latents ``z``, learn to generate latents, decode the generated ones.

**Flow matching** (Lipman et al. 2023) on the straight path of **rectified flow** (Liu et al.
2023). Take noise :math:`x_0 \\sim \\mathcal N(0, I)`, a data sample :math:`x_1` and a time
:math:`t \\sim U[0, 1]`, and move along the straight line between them,

.. math::  x_t = (1 - t)\\, x_0 + t\\, x_1, \\qquad u_t = \\frac{d x_t}{dt} = x_1 - x_0 .

A network :math:`v_\\theta(x, t)` is trained to regress that velocity,

.. math::  \\mathcal L(\\theta) = \\mathbb E_{t, x_0, x_1} \\big\\| v_\\theta(x_t, t) - (x_1 - x_0) \\big\\|^2 .

The regression target is noisy (many lines pass through one point), and its least-squares
solution is the *marginal* velocity :math:`v^*(x, t) = \\mathbb E[x_1 - x_0 \\mid x_t = x]`.
The ODE :math:`dx/dt = v^*(x, t)` carries the noise distribution at :math:`t = 0` to the data
distribution at :math:`t = 1` through the same marginals as the lines do (Lipman et al.,
Theorem 1; Liu et al., Theorem 3.3). Sampling integrates it from noise with a fixed number of
steps, Euler (:math:`x \\leftarrow x + h v`) or Heun (Euler, then the trapezoidal correction
with the velocity at the predicted point; second order, two evaluations per step).

For Gaussian data :math:`x_1 \\sim \\mathcal N(m, s^2)` (independent of :math:`x_0`) the
marginal velocity is known in closed form (:func:`gaussian_velocity`), which is how the tests
check the loss target and the sampler.

**Judging samples.** A sample is not compared with any one true field (there is no "right"
sample), but its *statistics* with those of true fields: the shell-summed energy spectrum
(:func:`physfm.spectral.radial_spectrum`), the histogram of pointwise values, and the two-point
correlation as a function of distance (:func:`physfm.spectral.radial_correlation`). Each
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

import math
from collections.abc import Callable, Sequence

import torch
from einops import rearrange
from torch import nn

from physfm.spectral import radial_correlation, radial_spectrum

__all__ = [
    "VelocityNet",
    "time_features",
    "interpolate",
    "flow_matching_loss",
    "sample",
    "gaussian_velocity",
    "wasserstein1",
    "field_statistics",
    "statistics_distances",
    "nearest_distance",
    "METHODS",
]

METHODS = ("euler", "heun")

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _check_n_spatial(n_spatial: int, ndim: int, fn: str, name: str = "x") -> None:
    if not isinstance(n_spatial, int) or not 1 <= n_spatial <= 3:
        raise ValueError(f"{fn}: n_spatial must be 1, 2 or 3, got {n_spatial!r}")
    if ndim < n_spatial + 1:
        raise ValueError(f"{fn}: {name} must be (n, *space) with {n_spatial} spatial axes, got {ndim} axes")


# ---------------------------------------------------------------------------------------------
# The velocity network
# ---------------------------------------------------------------------------------------------


def time_features(t: torch.Tensor, n: int) -> torch.Tensor:
    """Sinusoidal features of the flow time ``t (batch,)`` in ``[0, 1]``: shape ``(batch, n)``.

    ``[sin(w_j t), cos(w_j t)]`` for ``n/2`` angular frequencies ``w_j`` spaced geometrically from
    1 to 1000 (the transformer position code, Vaswani et al. 2017, on a continuous time), so the
    network can resolve both slow and fast changes of the velocity with ``t``.
    """
    if n < 2 or n % 2:
        raise ValueError(f"time_features: n must be an even number >= 2, got {n}")
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), n // 2, device=t.device, dtype=torch.float32))
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _Block(nn.Module):
    """``h + C2(act(N2(C1(act(N1(h)))) (1 + a(t)) + b(t)))``: two circular 3x3 convolutions with
    the time entering as a per-channel scale and shift (FiLM) between them; starts as identity."""

    def __init__(self, width: int, spatial_dims: int, embed: int):
        super().__init__()
        conv = _CONV[spatial_dims]
        groups = math.gcd(8, width)
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = conv(width, width, 3, padding=1, padding_mode="circular")
        self.film = nn.Linear(embed, 2 * width)
        self.norm2 = nn.GroupNorm(groups, width)
        self.conv2 = conv(width, width, 3, padding=1, padding_mode="circular")
        self.act = nn.SiLU()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        a = self.conv1(self.act(self.norm1(h)))
        scale, shift = rearrange(self.film(e), "n (two c) -> two n c", two=2)
        view = (a.shape[0], a.shape[1]) + (1,) * (a.ndim - 2)
        a = self.norm2(a) * (1 + scale.reshape(view)) + shift.reshape(view)
        return h + self.conv2(self.act(a))


class VelocityNet(nn.Module):
    """A small convolutional velocity field :math:`v_\\theta(x, t)` on periodic latent grids.

    ``x (n, channels, *space) , t (n,) -> v (n, channels, *space)``: a 3x3 convolution lifts
    ``channels`` to ``width``, ``blocks`` residual blocks (two circular 3x3 convolutions each, the
    time entering through FiLM from :func:`time_features` and a small MLP) process the grid, and a
    3x3 convolution projects back. Convolutions are ``ConvNd`` with circular padding, so the same
    code serves 1D, 2D and 3D grids and the velocity commutes with periodic shifts. The
    projection starts at zero (the untrained network predicts no motion).

    Args:
        channels: channels of the latent (the tokeniser's ``latent``).
        width: channels inside the network.
        blocks: residual blocks; the receptive field is ``4 * blocks + 5`` cells.
        spatial_dims: 1, 2 or 3.
        time_dim: size of the time embedding.
    """

    def __init__(self, channels: int, *, width: int = 32, blocks: int = 4, spatial_dims: int = 2, time_dim: int = 64):
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"VelocityNet: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        for name, value in (("channels", channels), ("width", width), ("blocks", blocks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VelocityNet: {name} must be a positive int, got {value!r}")
        if time_dim < 2 or time_dim % 2:
            raise ValueError(f"VelocityNet: time_dim must be an even number >= 2, got {time_dim}")
        conv = _CONV[spatial_dims]
        self.channels, self.spatial_dims, self.time_dim = channels, spatial_dims, time_dim
        self.embed = nn.Sequential(nn.Linear(time_dim, 2 * width), nn.SiLU(), nn.Linear(2 * width, 2 * width))
        self.lift = conv(channels, width, 3, padding=1, padding_mode="circular")
        self.blocks = nn.ModuleList([_Block(width, spatial_dims, 2 * width) for _ in range(blocks)])
        self.out = nn.Sequential(nn.GroupNorm(math.gcd(8, width), width), nn.SiLU(),
                                 conv(width, channels, 3, padding=1, padding_mode="circular"))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        d = self.spatial_dims
        if x.ndim != d + 2 or x.shape[1] != self.channels:
            raise ValueError(f"VelocityNet: x must be (n, {self.channels}, *space) with {d} spatial axes, got shape {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"VelocityNet: t must be a number or have shape ({x.shape[0]},), got shape {tuple(t.shape)}")
        e = self.embed(time_features(t, self.time_dim))
        h = self.lift(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------
# The loss and the sampler
# ---------------------------------------------------------------------------------------------


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The point ``x_t = (1 - t) x0 + t x1`` of the straight path and its velocity ``x1 - x0``.

    ``x0``, ``x1``: ``(n, ...)`` of one shape; ``t``: ``(n,)``. Returns ``(x_t, u_t)``.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"interpolate: x0 has shape {tuple(x0.shape)} but x1 has {tuple(x1.shape)}; they must match")
    if t.shape != (x1.shape[0],):
        raise ValueError(f"interpolate: t must have shape ({x1.shape[0]},), one time per sample, got {tuple(t.shape)}")
    tb = t.to(x1.dtype).reshape(-1, *[1] * (x1.ndim - 1))
    return (1 - tb) * x0 + tb * x1, x1 - x0


def flow_matching_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """The conditional flow-matching loss ``mean |v(x_t, t) - (x1 - x0)|^2`` on one batch.

    Args:
        model: the velocity ``v(x, t)``, ``x (n, ...)``, ``t (n,)``.
        x1: data ``(n, ...)``.
        generator: CPU random stream for the noise ``x0 ~ N(0, I)`` and the times ``t ~ U[0, 1]``
            (the training loop passes its own).
        t, x0: fix the times or the noise instead of drawing them (for tests).

    Returns:
        The mean over every element of the squared velocity error (a scalar).
    """
    if not isinstance(x1, torch.Tensor) or not x1.is_floating_point() or x1.ndim < 2:
        raise ValueError(f"flow_matching_loss: x1 must be a floating-point tensor (n, ...), got {getattr(x1, 'shape', type(x1))}")
    n = x1.shape[0]
    if t is None:
        t = torch.rand(n, generator=generator).to(x1.device)
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator).to(device=x1.device, dtype=x1.dtype)
    xt, target = interpolate(x0, x1, t.to(x1.device))
    return (model(xt, t.to(x1.device)) - target).square().mean()


@torch.no_grad()
def sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: Sequence[int],
    *,
    steps: int = 32,
    method: str = "heun",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    return_path: bool = False,
):
    """Integrate ``dx/dt = v(x, t)`` from noise at ``t = 0`` to a sample at ``t = 1``.

    Fixed steps ``h = 1 / steps`` at times ``t_i = i h``. Euler: ``x += h v(x, t_i)``. Heun:
    ``x' = x + h v(x, t_i)``, then ``x += h (v(x, t_i) + v(x', t_{i+1})) / 2``.

    Args:
        model: the velocity ``v(x, t)`` (a trained :class:`VelocityNet`, or any callable).
        shape: ``(n, channels, *space)`` of the samples.
        steps: integration steps (Heun evaluates the velocity twice per step).
        method: ``"euler"`` or ``"heun"``.
        generator: CPU random stream of the starting noise: the same seed gives the same samples.
        noise: the starting points themselves, ``shape``, instead of drawing them.
        return_path: also return the states at every step, ``(steps + 1, *shape)``.

    Returns:
        The samples ``shape`` (and the path, when ``return_path``).
    """
    if method not in METHODS:
        raise ValueError(f"sample: method must be one of {METHODS}, got {method!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sample: steps must be a positive int, got {steps!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"sample: shape must be (n, channels, *space) with positive sizes, got {shape}")
    if noise is None:
        x = torch.randn(shape, generator=generator).to(device)
    else:
        if tuple(noise.shape) != shape:
            raise ValueError(f"sample: noise has shape {tuple(noise.shape)}, but shape is {shape}")
        x = noise.to(device) if device is not None else noise.clone()
    h = 1.0 / steps
    path = [x.cpu()] if return_path else None
    for i in range(steps):
        t = torch.full((shape[0],), i * h, device=x.device)
        v = model(x, t)
        if method == "euler":
            x = x + h * v
        else:
            v_next = model(x + h * v, t + h)
            x = x + 0.5 * h * (v + v_next)
        if return_path:
            path.append(x.cpu())
    return (x, torch.stack(path)) if return_path else x


def gaussian_velocity(mean: float | torch.Tensor, std: float | torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exact marginal velocity of the straight path from ``N(0, 1)`` to ``N(mean, std^2)``.

    With ``x_0 ~ N(0, 1)`` and ``x_1 ~ N(m, s^2)`` independent, ``x_t`` is Gaussian with mean
    ``t m`` and variance ``sigma_t^2 = (1 - t)^2 + t^2 s^2``, and (a Gaussian regression)

    .. math::  v^*(x, t) = \\mathbb E[x_1 - x_0 \\mid x_t = x]
               = m + \\frac{t s^2 - (1 - t)}{\\sigma_t^2}\\,(x - t m),

    elementwise (``mean`` and ``std`` broadcast against ``x``). Integrating it carries
    ``N(0, 1)`` to ``N(m, s^2)`` exactly.
    """
    m, s = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tb = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *[1] * (x.ndim - 1))
        var = (1 - tb) ** 2 + tb**2 * s**2
        return (m + (tb * s**2 - (1 - tb)) / var * (x.double() - tb * m)).to(x.dtype)

    return velocity


# ---------------------------------------------------------------------------------------------
# Statistics that judge samples
# ---------------------------------------------------------------------------------------------


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
    q = torch.cat([torch.arange(1, na + 1, dtype=torch.float64, device=a.device) / na,
                   torch.arange(1, nb + 1, dtype=torch.float64, device=a.device) / nb])
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
        raise ValueError(f"statistics_distances: a has the grid {tuple(a.shape[-n_spatial:])}, b {tuple(b.shape[-n_spatial:])}; they must match")
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
        raise ValueError(f"nearest_distance: x has the grid {space}, reference {tuple(reference.shape[-n_spatial:])}; they must match")
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
