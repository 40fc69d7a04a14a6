"""PDE systems and a batched pseudo-spectral ETDRK4 stepper, for data generated on the fly.

Every system here is a semi-linear PDE on a periodic box ``[0, L)^d`` (d = 1, 2 or 3),

.. math::  \\partial_t u = \\mathcal{L} u + \\mathcal{N}(u),

whose linear part is diagonal in Fourier space, :math:`\\hat{\\mathcal L} u = \\hat L(k)\\,\\hat u_k`,
and whose nonlinear part is evaluated pseudo-spectrally: derivatives in Fourier space, products
on the grid, the top modes zeroed before transforming back (Orszag's 2/3 rule; 1/2 for the cubic
Gray-Scott term).

Time stepping: exponential time differencing with a fourth-order Runge-Kutta stage structure,
ETDRK4 (Cox & Matthews 2002). With :math:`h` the step, :math:`E = e^{hL}`, :math:`E_2 = e^{hL/2}`,

.. math::
    a &= E_2 \\hat u + Q\\, N(\\hat u), \\quad b = E_2 \\hat u + Q\\, N(a), \\quad
    c = E_2 a + Q\\,(2N(b) - N(\\hat u)), \\\\
    \\hat u_{n+1} &= E \\hat u + f_1 N(\\hat u) + 2 f_2 (N(a) + N(b)) + f_3 N(c),

with :math:`Q = h\\,\\frac{e^{z/2}-1}{z}`, :math:`f_1 = h\\frac{-4 - z + e^z(4 - 3z + z^2)}{z^3}`,
:math:`f_2 = h\\frac{2 + z + e^z(z - 2)}{z^3}`, :math:`f_3 = h\\frac{-4 - 3z - z^2 + e^z(4 - z)}{z^3}`,
:math:`z = hL`. These suffer catastrophic cancellation for small :math:`|z|`; following Kassam &
Trefethen (2005) each is evaluated as the mean of the same expression over 32 points on a circle
of radius 1 around :math:`z` in the complex plane (Cauchy's integral formula), which is exact to
rounding for any :math:`z`, stiff or not, real or complex (advection makes :math:`L` complex).
The linear part is integrated exactly, so stiff diffusion or hyper-diffusion does not limit the
step; the step is set by the nonlinear term.

Everything is batched: a batch of trajectories, each with its own coefficients (so the
coefficient tensors have a batch axis), advanced together on any device, in float32 (complex64)
or float64 (complex128). The ETDRK4 coefficients are computed once per batch in float64.

Conventions (state them, because libraries differ): spatial axis ``i`` of a tensor is the
coordinate :math:`x_i`, so in 2D axis 0 is :math:`x` and axis 1 is :math:`y`, as in torchfsm.
Wavenumbers are angular, :math:`k_i = 2\\pi m_i / L`. See each system's docstring for its equation.

Adding a system takes one small class: subclass :class:`System`, set ``name``, ``dims``,
``ranges`` and the default ``length``/``dt``/``interval``/``warmup``, and write
:meth:`System.linear`, :meth:`System.nonlinear` and (if the default Gaussian random field does
not suit it) :meth:`System.initial`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from einops import rearrange

from physfm.data.spectral import gaussian_random_field, wavenumbers

__all__ = [
    "System",
    "SpectralGrid",
    "ETDRK4",
    "Trajectories",
    "SYSTEMS",
    "get_system",
    "simulate",
    "generate",
    "step_errors",
    "Diffusion",
    "AdvectionDiffusion",
    "Burgers",
    "KuramotoSivashinsky",
    "GrayScott",
    "NavierStokes2D",
]

Coefficients = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# The grid in Fourier space
# ---------------------------------------------------------------------------------------------


class SpectralGrid:
    """The ``rfftn`` grid of a periodic box: wavenumbers, ``|k|^2``, the dealiasing mask, transforms.

    Args:
        shape: spatial sizes ``(N_0, ..., N_{d-1})``.
        length: side length ``L`` of the (cubic) box.
        dealias: fraction of the modes along each axis kept in nonlinear products (2/3 or 1/2).
    """

    def __init__(
        self,
        shape: Sequence[int],
        length: float,
        *,
        dealias: float = 2 / 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.shape = tuple(int(s) for s in shape)
        self.d = len(self.shape)
        self.length = float(length)
        self.dims = tuple(range(-self.d, 0))
        self.dtype = dtype
        self.ks = wavenumbers(self.shape, (self.length,) * self.d, real=True, device=device, dtype=dtype)
        self.k2 = sum(k**2 for k in self.ks)
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.iks = [(1j * k).to(cdtype) for k in self.ks]  # i k_j, complex so products need no casts
        self.ik = torch.stack(torch.broadcast_tensors(*self.iks))[:, None, None]  # (d, 1, 1, *rfft_grid)
        self.k2_inv = torch.where(self.k2 > 0, 1.0 / torch.where(self.k2 > 0, self.k2, 1.0), 0.0).to(cdtype)
        # 2/3 rule: keep integer modes |m| < dealias * N / 2 along every axis. On the FFT index
        # axis that is a block [0, K) plus [N - K + 1, N) (the last axis of rfftn holds [0, K)).
        self.keep = [int(math.ceil(dealias * n / 2)) for n in self.shape]

    def dealias_(self, u_hat: torch.Tensor) -> torch.Tensor:
        """Zero the modes the dealiasing rule removes, in place (cheaper than a mask product)."""
        for axis, (n, keep) in enumerate(zip(self.shape, self.keep)):
            dim = u_hat.ndim - self.d + axis
            if axis == self.d - 1:
                u_hat.narrow(dim, keep, u_hat.shape[dim] - keep).zero_()
            elif n - 2 * keep + 1 > 0:
                u_hat.narrow(dim, keep, n - 2 * keep + 1).zero_()
        return u_hat

    def to_physical(self, u_hat: torch.Tensor) -> torch.Tensor:
        """``irfftn`` over the spatial axes."""
        return torch.fft.irfftn(u_hat, s=self.shape, dim=self.dims)

    def to_spectral(self, u: torch.Tensor, *, dealiased: bool = False) -> torch.Tensor:
        """``rfftn`` over the spatial axes, optionally with the dealiased modes zeroed."""
        u_hat = torch.fft.rfftn(u, dim=self.dims)
        return self.dealias_(u_hat) if dealiased else u_hat

    def gradient(self, u_hat: torch.Tensor) -> torch.Tensor:
        """All first derivatives at once, ``(d, batch, fields, *space)``: one batched inverse
        transform is cheaper than ``d`` separate ones."""
        return self.to_physical(self.ik * u_hat)

    def grad(self, u_hat: torch.Tensor, axis: int) -> torch.Tensor:
        """:math:`\\partial_{x_i} u` on the grid, from ``u_hat``."""
        return self.to_physical(self.iks[axis] * u_hat)


# ---------------------------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------------------------


class System:
    """A semi-linear PDE :math:`\\partial_t u = \\mathcal L u + \\mathcal N(u)` with random
    coefficients and random initial conditions.

    Subclasses set the class attributes below and implement :meth:`linear` and :meth:`nonlinear`.

    Attributes:
        name: the registry name (``"burgers"``...).
        dims: the spatial dimensions the system supports.
        ranges: coefficient name -> ``(low, high)``; a draw is uniform in that range, or
            log-uniform when the name is in ``log_uniform``. Override per instance with
            ``System(ranges={...})``; a single number fixes the coefficient.
        length, dt, interval, warmup: default box side, time step, time between saved frames,
            and time simulated before the first saved frame (to leave the initial transient).
        dealias: fraction of modes kept in products (2/3 rule; 1/2 for cubic terms).
        conserves_mean: the spatial mean of every field is constant in time.
    """

    name: str = ""
    dims: tuple[int, ...] = (1, 2, 3)
    ranges: dict[str, tuple[float, float]] = {}
    log_uniform: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()
    length: float = 2 * math.pi
    dt: float = 0.01
    interval: float = 0.1
    warmup: float = 0.0
    dealias: float = 2 / 3
    conserves_mean: bool = False
    amplitude: float = 1.0
    slopes: tuple[float, float] = (2.5, 4.0)

    def __init__(self, ranges: Mapping[str, float | tuple[float, float]] | None = None):
        merged = dict(type(self).ranges)
        for key, value in (ranges or {}).items():
            if key not in merged:
                raise ValueError(
                    f"{type(self).__name__}: unknown coefficient {key!r} in ranges; its coefficients are {sorted(merged)}"
                )
            lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError(f"{type(self).__name__}: range of {key!r} must be finite with low <= high, got {value!r}")
            if key in self.positive and lo <= 0:
                raise ValueError(f"{type(self).__name__}: {key!r} must be positive, got range {value!r}")
            merged[key] = (float(lo), float(hi))
        self.ranges = merged

    # -- what a subclass provides ----------------------------------------------------------

    def n_fields(self, d: int) -> int:
        """Number of fields of the state in ``d`` dimensions."""
        return 1

    def field_names(self, d: int) -> tuple[str, ...]:
        return ("u",) if self.n_fields(d) == 1 else tuple(f"u{i}" for i in range(self.n_fields(d)))

    def linear(self, grid: SpectralGrid, c: Coefficients) -> torch.Tensor:
        """:math:`\\hat L(k)`, broadcastable to ``(batch, fields, *rfft_grid)``."""
        raise NotImplementedError

    def nonlinear(self, u_hat: torch.Tensor, grid: SpectralGrid, c: Coefficients) -> torch.Tensor:
        """:math:`\\widehat{\\mathcal N(u)}`, shape ``(batch, fields, *rfft_grid)``, dealiased."""
        return torch.zeros_like(u_hat)

    def prepare(self, grid: SpectralGrid, c: Coefficients) -> Coefficients:
        """Precompute what :meth:`nonlinear` needs once per batch (a forcing, say); default: nothing."""
        return c

    def initial(self, batch: int, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Random initial states ``(batch, fields, *shape)`` in float64: Gaussian random fields
        with a spectral slope drawn uniformly from ``slopes``, scaled by ``amplitude``."""
        f = self.n_fields(len(shape))
        slope = torch.empty(batch * f, dtype=torch.float64).uniform_(*self.slopes, generator=generator)
        u = gaussian_random_field(shape, batch=batch * f, slope=slope, generator=generator, dtype=torch.float64)
        return self.amplitude * rearrange(u, "(b f) ... -> b f ...", f=f)

    # -- shared machinery -------------------------------------------------------------------

    def sample(self, batch: int, generator: torch.Generator | None = None) -> Coefficients:
        """Draw ``batch`` coefficient sets, each a float64 tensor of shape ``(batch,)``."""
        out = {}
        for key, (lo, hi) in self.ranges.items():
            r = torch.rand(batch, generator=generator, dtype=torch.float64)
            if key in self.log_uniform and lo > 0:
                out[key] = torch.exp(math.log(lo) + r * (math.log(hi) - math.log(lo)))
            else:
                out[key] = lo + r * (hi - lo)
        return out

    def check_dim(self, d: int) -> None:
        if d not in self.dims:
            raise ValueError(f"{type(self).__name__} is available in {self.dims} spatial dimensions, not {d}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ranges={self.ranges})"


def _b(c: torch.Tensor, d: int) -> torch.Tensor:
    """A per-sample coefficient ``(batch,)`` shaped to broadcast against ``(batch, fields, *grid)``."""
    return c.reshape(-1, *([1] * (d + 1)))


class Diffusion(System):
    """Heat equation :math:`\\partial_t u = \\nu \\nabla^2 u`; :math:`\\hat L = -\\nu |k|^2`.

    Exact solution :math:`\\hat u_k(t) = e^{-\\nu |k|^2 t} \\hat u_k(0)`; conserves the mean.
    """

    name = "diffusion"
    ranges = {"nu": (0.002, 0.02)}
    log_uniform = ("nu",)
    positive = ("nu",)
    dt = 0.05
    interval = 0.5
    conserves_mean = True

    def linear(self, grid, c):
        return -_b(c["nu"], grid.d) * grid.k2


class AdvectionDiffusion(System):
    """:math:`\\partial_t u + \\mathbf{c}\\cdot\\nabla u = \\nu\\nabla^2 u` with a constant velocity
    :math:`\\mathbf c`; :math:`\\hat L = -i\\,\\mathbf c\\cdot k - \\nu|k|^2` (complex).

    Exact solution: the initial field moved by :math:`\\mathbf c t` and diffused. The velocity
    components are the coefficients ``c0``, ``c1``, ``c2`` (those beyond ``d`` are ignored).
    """

    name = "advection_diffusion"
    ranges = {"nu": (0.001, 0.01), "c0": (-1.0, 1.0), "c1": (-1.0, 1.0), "c2": (-1.0, 1.0)}
    log_uniform = ("nu",)
    positive = ("nu",)
    dt = 0.05
    interval = 0.25
    conserves_mean = True

    def linear(self, grid, c):
        lin = -_b(c["nu"], grid.d) * grid.k2 + 0j
        for i in range(grid.d):
            lin = lin - 1j * _b(c[f"c{i}"], grid.d) * grid.ks[i]
        return lin


class Burgers(System):
    """Viscous Burgers equation for a velocity field with ``d`` components in ``d`` dimensions,

    .. math:: \\partial_t \\mathbf u + (\\mathbf u\\cdot\\nabla)\\mathbf u = \\nu \\nabla^2 \\mathbf u,

    as in torchfsm's ``Burgers`` and exponax's ``Burgers``. In 1D this is
    :math:`u_t + u u_x = \\nu u_{xx}`, which conserves the mean; in 2D and 3D the
    advective form does not conserve it exactly.
    """

    name = "burgers"
    ranges = {"nu": (0.01, 0.05)}
    log_uniform = ("nu",)
    positive = ("nu",)
    dt = 0.02
    interval = 0.1
    amplitude = 0.5
    slopes = (3.0, 4.5)

    def n_fields(self, d):
        return d

    def field_names(self, d):
        return ("u", "v", "w")[:d]

    def linear(self, grid, c):
        return -_b(c["nu"], grid.d) * grid.k2

    def nonlinear(self, u_hat, grid, c):
        both = grid.to_physical(torch.cat([u_hat[None], grid.ik * u_hat]))  # (1 + d, b, d, *grid)
        u, du = both[0], both[1:]  # du[i, :, j] = d u_j / d x_i
        adv = (rearrange(u, "b i ... -> i b 1 ...") * du).sum(dim=0)  # (u . grad) u_j = sum_i u_i d_i u_j
        return grid.to_spectral(adv, dealiased=True).neg_()


class KuramotoSivashinsky(System):
    """Kuramoto-Sivashinsky equation in gradient form, any dimension,

    .. math:: \\partial_t u = -\\nabla^2 u - \\nu \\nabla^4 u - \\tfrac12\\left(|\\nabla u|^2 - \\langle|\\nabla u|^2\\rangle\\right),

    :math:`\\hat L = |k|^2 - \\nu|k|^4` (isotropic, as torchfsm's ``KuramotoSivashinskyHighDim``;
    exponax uses :math:`k_x^4 + k_y^4`). The spatial mean of the quadratic term is removed (as
    torchfsm does by default), so the mean of ``u`` is conserved instead of drifting. Chaotic for
    boxes larger than a few times :math:`2\\pi\\sqrt\\nu`.
    """

    name = "kuramoto_sivashinsky"
    dims = (1, 2)
    ranges = {"nu": (0.8, 1.2)}
    positive = ("nu",)
    length = 12 * math.pi
    dt = 0.1
    interval = 0.5
    warmup = 20.0
    conserves_mean = True
    amplitude = 1.0

    def linear(self, grid, c):
        return grid.k2 - _b(c["nu"], grid.d) * grid.k2**2

    def nonlinear(self, u_hat, grid, c):
        g2 = grid.gradient(u_hat).square_().sum(dim=0)
        out = grid.to_spectral(g2, dealiased=True).mul_(-0.5)
        out[(..., *([0] * grid.d))] = 0  # remove the spatial mean of |grad u|^2
        return out


class GrayScott(System):
    """Gray-Scott reaction-diffusion, two fields :math:`u` (substrate) and :math:`v` (activator),

    .. math::
        \\partial_t u = D_u\\nabla^2 u - u v^2 + F(1 - u), \\qquad
        \\partial_t v = D_v\\nabla^2 v + u v^2 - (F + \\kappa) v,

    :math:`\\hat L = \\mathrm{diag}(-D_u|k|^2 - F,\\; -D_v|k|^2 - F - \\kappa)`, the constant feed
    :math:`F` entering the nonlinear term. Cubic, so products are dealiased with the 1/2 rule.
    Feed ``F`` and kill ``kappa`` are drawn in the stripe/maze/spot region of Pearson (1993) where
    patterns persist (outside it they die out or fill the box uniformly, and
    :func:`generate` drops such structureless trajectories); initial state: :math:`u = 1, v = 0`
    with random smooth patches of activator.
    """

    name = "gray_scott"
    ranges = {"F": (0.026, 0.05), "kappa": (0.058, 0.062), "Du": (2e-5, 2e-5), "Dv": (1e-5, 1e-5)}
    positive = ("Du", "Dv")
    length = 0.5
    dt = 2.0
    interval = 40.0
    warmup = 400.0
    dealias = 1 / 2

    def n_fields(self, d):
        return 2

    def field_names(self, d):
        return ("u", "v")

    def linear(self, grid, c):
        d = grid.d
        lu = -_b(c["Du"], d) * grid.k2 - _b(c["F"], d)
        lv = -_b(c["Dv"], d) * grid.k2 - _b(c["F"], d) - _b(c["kappa"], d)
        return torch.cat([lu, lv], dim=1)

    def nonlinear(self, u_hat, grid, c):
        uv = grid.to_physical(u_hat)
        reaction = uv[:, :1] * uv[:, 1:2] ** 2
        feed = _b(c["F"], grid.d).to(uv.dtype) * torch.ones_like(reaction)
        return grid.to_spectral(torch.cat([feed - reaction, reaction], dim=1), dealiased=True)

    def initial(self, batch, shape, generator):
        blobs = gaussian_random_field(shape, batch=batch, slope=4.0, generator=generator, dtype=torch.float64)
        seed = torch.sigmoid(8 * (blobs - 1.0))  # smooth patches where the random field is high
        u = 1.0 - 0.5 * seed
        v = 0.25 * seed
        return torch.stack([u, v], dim=1)


class NavierStokes2D(System):
    """2D incompressible Navier-Stokes in vorticity form with Kolmogorov forcing and linear drag,

    .. math::
        \\partial_t \\omega + \\mathbf u\\cdot\\nabla\\omega = \\nu\\nabla^2\\omega - \\alpha\\,\\omega
        - n A \\cos(n y), \\qquad \\nabla^2\\psi = -\\omega, \\quad \\mathbf u = (\\partial_y\\psi, -\\partial_x\\psi),

    the curl of the body force :math:`(A\\sin(n y), 0)` (Kolmogorov flow), with :math:`x` along
    axis 0 and :math:`y` along axis 1. :math:`\\hat L = -\\nu|k|^2 - \\alpha`. The velocity
    convention is torchfsm's (``VorticityConvection``: ``psi = -w / lap``, ``ux = d_y psi``,
    ``uy = -d_x psi``); exponax's vorticity advection has the opposite sign.
    The forcing has zero mean, so the mean vorticity only decays (by drag) and a zero-mean
    initial vorticity stays zero-mean.
    """

    name = "navier_stokes"
    dims = (2,)
    ranges = {"nu": (0.002, 0.01), "drag": (0.05, 0.15), "forcing": (0.5, 1.5), "wavenumber": (4.0, 4.0)}
    log_uniform = ("nu",)
    positive = ("nu",)
    dt = 0.025
    interval = 0.5
    warmup = 5.0
    conserves_mean = True
    amplitude = 1.0
    slopes = (2.5, 3.5)

    def linear(self, grid, c):
        return -_b(c["nu"], grid.d) * grid.k2 - _b(c["drag"], grid.d)

    def velocity(self, w_hat: torch.Tensor, grid: SpectralGrid) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u_x, u_y)`` on the grid from the vorticity spectrum."""
        psi_hat = w_hat * grid.k2_inv  # from -|k|^2 psi = -w
        return grid.grad(psi_hat, 1), -grid.grad(psi_hat, 0)

    def nonlinear(self, w_hat, grid, c):
        psi_hat = w_hat * grid.k2_inv
        ik0, ik1 = grid.iks
        ux, uy, wx, wy = grid.to_physical(torch.stack([ik1 * psi_hat, -ik0 * psi_hat, ik0 * w_hat, ik1 * w_hat]))
        adv = ux * wx + uy * wy
        return c["forcing_hat"] - grid.to_spectral(adv, dealiased=True)

    def prepare(self, grid, c):
        """The forcing :math:`-nA\\cos(ny)` in Fourier space, once per batch; ``n`` is rounded to a
        whole number of periods in the box."""
        y = torch.arange(grid.shape[1], dtype=torch.float64, device=grid.k2.device) * grid.length / grid.shape[1]
        n = torch.round(c["wavenumber"].double()) * 2 * math.pi / grid.length
        f = -(n * c["forcing"].double())[:, None] * torch.cos(n[:, None] * y[None, :])  # (b, ny)
        f = f[:, None, None, :].expand(-1, 1, grid.shape[0], -1).to(grid.dtype)
        return {**c, "forcing_hat": grid.to_spectral(f)}


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (Diffusion, AdvectionDiffusion, Burgers, KuramotoSivashinsky, GrayScott, NavierStokes2D)
}


def get_system(system: str | System) -> System:
    """A system instance from its name (or the instance itself)."""
    if isinstance(system, System):
        return system
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; known systems: {sorted(SYSTEMS)}")
    return SYSTEMS[system]()


# ---------------------------------------------------------------------------------------------
# The stepper
# ---------------------------------------------------------------------------------------------


def _etdrk4_coefficients(lin: torch.Tensor, h: float, n_points: int = 32) -> tuple[torch.Tensor, ...]:
    """E, E2, Q, f1, f2, f3 for :math:`z = h L`, by contour integrals (Kassam & Trefethen 2005).

    ``lin`` is any-shaped, real or complex; computed in float64/complex128. For real ``L`` the
    contributions of conjugate contour points are conjugate, so, as in Kassam & Trefethen's
    code, only the ``n_points / 2`` points of the upper half circle are evaluated and the real
    part is kept; and since an isotropic operator takes the same value at many wavenumbers,
    the functions are evaluated once per distinct value of ``L``.
    """
    z = h * (lin.to(torch.complex128) if torch.is_complex(lin) else lin.to(torch.float64))
    real = not torch.is_complex(z)
    if real:
        values, inverse = torch.unique(z.flatten(), return_inverse=True)
        angles = [2 * math.pi * (j + 0.5) / n_points for j in range(n_points // 2)]  # upper half circle
    else:
        values, inverse = z.flatten(), None
        angles = [2 * math.pi * (j + 0.5) / n_points for j in range(n_points)]
    zc = values.to(torch.complex128)
    acc = [torch.zeros_like(zc) for _ in range(4)]
    for angle in angles:
        r = zc + complex(math.cos(angle), math.sin(angle))
        er = torch.exp(r)
        r2 = r * r
        r3 = r2 * r
        acc[0] += (torch.exp(r / 2) - 1) / r
        acc[1] += (-4 - r + er * (4 - 3 * r + r2)) / r3
        acc[2] += (2 + r + er * (r - 2)) / r3
        acc[3] += (-4 - 3 * r - r2 + er * (4 - r)) / r3
    phis = [h * a / len(angles) for a in acc]
    if real:
        phis = [p.real[inverse].reshape(z.shape) for p in phis]
    else:
        phis = [p.reshape(z.shape) for p in phis]
    return (torch.exp(z), torch.exp(z / 2), *phis)


class ETDRK4:
    """Fourth-order exponential time differencing Runge-Kutta stepper for one batch.

    Args:
        system: the PDE.
        grid: its Fourier grid.
        coefficients: per-sample coefficients from :meth:`System.sample` (each ``(batch,)``).
        dt: the time step.
    """

    def __init__(self, system: System, grid: SpectralGrid, coefficients: Coefficients, dt: float):
        self.system, self.grid, self.dt = system, grid, float(dt)
        device = grid.k2.device
        self.c = {k: v.to(device) for k, v in coefficients.items()}
        lin = system.linear(_float64_grid(grid), {k: v.to(torch.float64) for k, v in self.c.items()})
        coeffs = _etdrk4_coefficients(lin, self.dt)
        # complex even when L is real: a complex-by-real product makes torch cast the real factor
        # to complex on every call, which costs more than the complex multiply itself
        cdtype = torch.complex64 if grid.dtype == torch.float32 else torch.complex128
        shape = torch.broadcast_shapes(*(c.shape for c in coeffs))
        self.E, self.E2, self.Q, self.f1, self.f2, self.f3 = (c.to(cdtype).expand(shape).contiguous() for c in coeffs)
        self.f2 = 2 * self.f2
        self.c_grid = system.prepare(grid, {k: v.to(grid.dtype) for k, v in self.c.items()})

    def n(self, u_hat: torch.Tensor) -> torch.Tensor:
        return self.system.nonlinear(u_hat, self.grid, self.c_grid)

    def step(self, u_hat: torch.Tensor) -> torch.Tensor:
        """One step of size ``dt`` of the spectral state ``(batch, fields, *rfft_grid)``."""
        nu = self.n(u_hat)
        e2u = self.E2 * u_hat
        a = torch.addcmul(e2u, self.Q, nu)
        na = self.n(a)
        b = torch.addcmul(e2u, self.Q, na)
        nb = self.n(b)
        nab = na + nb
        c = torch.addcmul(self.E2 * a, self.Q, nb.mul_(2).sub_(nu))  # nb is spent: 2 N(b) - N(u)
        nc = self.n(c)
        out = torch.addcmul(self.E * u_hat, self.f1, nu)
        out.addcmul_(self.f2, nab)  # self.f2 holds 2 f2
        return out.addcmul_(self.f3, nc)


def _float64_grid(grid: SpectralGrid) -> SpectralGrid:
    if grid.dtype == torch.float64:
        return grid
    return SpectralGrid(grid.shape, grid.length, dealias=1.0, device=grid.k2.device, dtype=torch.float64)


def simulate(
    system: str | System,
    u0: torch.Tensor,
    coefficients: Coefficients,
    *,
    dt: float,
    steps: int,
    save_every: int = 1,
    length: float | None = None,
) -> torch.Tensor:
    """Advance initial states ``u0`` of shape ``(batch, fields, *space)`` by ``steps`` steps.

    Returns the saved states ``(batch, fields, time, *space)``: the initial state and every
    ``save_every``-th step after it, in the dtype of ``u0`` on its device.
    """
    system = get_system(system)
    if u0.ndim < 3:
        raise ValueError(f"simulate: u0 must be (batch, fields, *space) with 1-3 spatial axes, got shape {tuple(u0.shape)}")
    d = u0.ndim - 2
    system.check_dim(d)
    if u0.shape[1] != system.n_fields(d):
        raise ValueError(f"simulate: {system.name} has {system.n_fields(d)} fields in {d}D, u0 has {u0.shape[1]}")
    if steps < 0 or save_every < 1:
        raise ValueError(f"simulate: need steps >= 0 and save_every >= 1, got steps={steps}, save_every={save_every}")
    grid = SpectralGrid(u0.shape[2:], length or system.length, dealias=system.dealias, device=u0.device, dtype=u0.dtype)
    stepper = ETDRK4(system, grid, coefficients, dt)
    u_hat = grid.to_spectral(u0)
    frames = [u0]
    for i in range(1, steps + 1):
        u_hat = stepper.step(u_hat)
        if i % save_every == 0:
            frames.append(grid.to_physical(u_hat))
    return torch.stack(frames, dim=2)


def step_errors(
    system: str | System,
    u0: torch.Tensor,
    coefficients: Coefficients,
    dts: Sequence[float],
    *,
    t_end: float = 1.0,
    refine: int = 16,
) -> torch.Tensor:
    """Largest error at ``t_end`` for each step in ``dts``, against a run with a step ``refine``
    times smaller than the smallest. For a fourth-order method halving the step divides the error
    by 16 once the step is small enough (on smooth, band-limited data: run ``u0`` through
    :meth:`SpectralGrid.dealias_` first)."""
    run = lambda dt: simulate(system, u0, coefficients, dt=dt, steps=round(t_end / dt), save_every=round(t_end / dt))[:, :, -1]
    reference = run(min(dts) / refine)
    return torch.tensor([(run(dt) - reference).abs().max().item() for dt in dts], dtype=torch.float64)


@dataclass
class Trajectories:
    """A batch of generated trajectories and how they were made.

    Attributes:
        data: ``(batch, fields, time, *space)``.
        coefficients: name -> ``(batch,)`` float64 tensor, the coefficients of each trajectory.
        system: the system's name; ``fields``: the field names.
        dt, interval, length: step, time between frames, box side.
        dropped: trajectories that turned non-finite and were regenerated.
    """

    data: torch.Tensor
    coefficients: Coefficients
    system: str
    fields: tuple[str, ...]
    dt: float
    interval: float
    length: float
    dropped: int = 0
    meta: dict = field(default_factory=dict)


def generate(
    system: str | System,
    *,
    batch: int,
    shape: Sequence[int],
    frames: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    dt: float | None = None,
    interval: float | None = None,
    warmup: float | None = None,
    length: float | None = None,
    max_attempts: int = 10,
) -> Trajectories:
    """Generate ``batch`` trajectories of ``frames`` frames with random coefficients and initial states.

    A trajectory that turns non-finite (NaN or inf: the step was too large for its
    coefficients), blows up (any value beyond 1e6) or loses all structure (a field whose last
    frame is constant, its spatial standard deviation below 1e-6 of its magnitude: a pattern that
    died out) is dropped and a fresh one is drawn in its place; ``Trajectories.dropped`` counts them.
    Non-finite data is never returned.

    Args:
        system: a name from :data:`SYSTEMS` or a :class:`System`.
        shape: spatial grid ``(N_0, ..., N_{d-1})``; the box side stays ``length`` whatever the grid.
        frames: frames per trajectory; the first comes ``warmup`` after the random initial state.
        generator: CPU random stream for coefficients and initial states.
        dt, interval, warmup, length: override the system's defaults. ``interval`` is rounded
            to a whole number of steps.

    Raises:
        ValueError: bad sizes, an unknown system, or a dimension the system does not support.
        RuntimeError: ``max_attempts`` rounds still left too few usable trajectories (the message
            says how many were dropped for which reason).
    """
    system = get_system(system)
    shape = tuple(int(s) for s in shape)
    system.check_dim(len(shape))
    if batch < 1 or frames < 1 or any(s < 4 for s in shape):
        raise ValueError(f"generate: need batch >= 1, frames >= 1 and every size >= 4, got batch={batch}, frames={frames}, shape={shape}")
    dt = float(dt or system.dt)
    interval = float(interval or system.interval)
    warmup = float(system.warmup if warmup is None else warmup)
    length = float(length or system.length)
    if dt <= 0 or interval <= 0 or warmup < 0 or length <= 0:
        raise ValueError(f"generate: need dt, interval, length > 0 and warmup >= 0, got {dt}, {interval}, {length}, {warmup}")
    save_every = max(1, round(interval / dt))
    warm_steps = round(warmup / dt)

    kept: list[torch.Tensor] = []
    coeffs: list[Coefficients] = []
    dropped = 0
    reasons = {"non-finite": 0, "blew up": 0, "lost all structure": 0}
    need = batch
    for _ in range(max_attempts):
        c = system.sample(need, generator)
        u0 = system.initial(need, shape, generator).to(device=device, dtype=dtype)
        if warm_steps:
            u0 = simulate(system, u0, c, dt=dt, steps=warm_steps, save_every=warm_steps, length=length)[:, :, -1]
        traj = simulate(system, u0, c, dt=dt, steps=(frames - 1) * save_every, save_every=save_every, length=length)
        flat = traj.flatten(1)
        finite = torch.isfinite(flat).all(dim=1)
        bounded = finite & (flat.abs().amax(dim=1) < 1e6)
        last = traj[:, :, -1]  # (batch, fields, *space)
        space = tuple(range(2, last.ndim))
        ok = bounded & (last.std(dim=space) > 1e-6 * (1 + last.abs().mean(dim=space))).all(dim=1)
        reasons["non-finite"] += int((~finite).sum())
        reasons["blew up"] += int((finite & ~bounded).sum())
        reasons["lost all structure"] += int((bounded & ~ok).sum())
        kept.append(traj[ok])
        coeffs.append({k: v[ok.cpu()] for k, v in c.items()})
        dropped += int((~ok).sum())
        need -= int(ok.sum())
        if need == 0:
            break
    else:
        why = ", ".join(f"{n} {r}" for r, n in reasons.items() if n)
        raise RuntimeError(
            f"generate: {system.name} on grid {shape} still lacked {need} of {batch} usable trajectories after "
            f"{max_attempts} attempts (dropped: {why}). Non-finite or blown-up trajectories need a smaller dt "
            f"(now {dt}) or narrower coefficient ranges {system.ranges}; trajectories that lose all structure "
            f"usually mean the grid is too coarse to resolve the system's patterns (use more points)"
        )
    data = torch.cat(kept)
    merged = {k: torch.cat([c[k] for c in coeffs]) for k in coeffs[0]}
    return Trajectories(
        data=data,
        coefficients=merged,
        system=system.name,
        fields=system.field_names(len(shape)),
        dt=dt,
        interval=save_every * dt,
        length=length,
        dropped=dropped,
    )
