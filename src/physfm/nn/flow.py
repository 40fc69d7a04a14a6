"""Generating fields: flow matching in a latent space.

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

The statistics that judge the samples are in :mod:`physfm.eval.statistics`.

Tensors: latents are ``(n, channels, *space)`` with 1 to 3 spatial axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from einops import rearrange
from torch import nn

from physfm.nn.layers import CONV as _CONV

__all__ = [
    "VelocityNet",
    "time_features",
    "interpolate",
    "flow_matching_loss",
    "sample",
    "gaussian_velocity",
    "METHODS",
]

METHODS = ("euler", "heun")


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


class _VelocityBlock(nn.Module):
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
        self.blocks = nn.ModuleList([_VelocityBlock(width, spatial_dims, 2 * width) for _ in range(blocks)])
        self.out = nn.Sequential(
            nn.GroupNorm(math.gcd(8, width), width), nn.SiLU(), conv(width, channels, 3, padding=1, padding_mode="circular")
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        d = self.spatial_dims
        if x.ndim != d + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"VelocityNet: x must be (n, {self.channels}, *space) with {d} spatial axes, got shape {tuple(x.shape)}"
            )
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


def gaussian_velocity(
    mean: float | torch.Tensor, std: float | torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
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
