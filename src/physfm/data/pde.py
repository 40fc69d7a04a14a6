"""PDE systems and a batched pseudo-spectral ETDRK4 stepper, for data generated on the fly.

Every system here is a semi-linear PDE on a periodic box ``[0, L)^d`` (d = 1, 2 or 3),

.. math::  \\partial_t u = \\mathcal{L} u + \\mathcal{N}(u),

whose linear part is diagonal in Fourier space, :math:`\\hat{\\mathcal L} u = \\hat L(k)\\,\\hat u_k`,
and whose nonlinear part is evaluated pseudo-spectrally: derivatives in Fourier space, products
on the grid, the top modes zeroed before transforming back (Orszag's 2/3 rule; 1/2 for the cubic
Gray-Scott term). Initial states are band-limited by the same rule before the first step.

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

The step (:func:`generate`). The linear part is integrated exactly, so stiff diffusion,
hyper-diffusion, and the constant advection of advection-diffusion never limit the step; only
the nonlinear term does. Freeze the state and linearise: a Fourier mode :math:`k` then obeys
:math:`\\dot{\\hat u} = -\\mu\\hat u + \\lambda\\hat u`, damped at the rate :math:`\\mu(k) = -\\mathrm{Re}\\,\\hat L(k)`
(exactly, by ETDRK4) and turned by the nonlinear term at a frequency :math:`|\\lambda|`, which for
advection by a velocity :math:`\\mathbf v` is :math:`|\\mathbf v\\cdot k|`. ETDRK4's amplification
factor for this model problem (:func:`amplification`) has modulus at most 1 whenever
:math:`h|\\lambda| \\le \\max(2\\sqrt2,\\; h\\mu/\\sqrt2)` (checked numerically in the tests; at
:math:`\\mu = 0` it is classical RK4, stable on the imaginary axis up to :math:`2\\sqrt2`). With a
safety factor :math:`s = C/(2\\sqrt2)` a mode is therefore stable at *any* step when
:math:`|\\lambda| \\le s\\mu/\\sqrt2` (strongly damped: hyper-diffused Kuramoto-Sivashinsky modes), and
the others are stable when :math:`h|\\lambda| \\le C`. The **CFL number** is

.. math::  C = h\\,\\rho, \\qquad \\rho = \\max\\{\\omega(k) : k \\text{ kept by dealiasing},\\ \\omega(k) > s\\,\\mu(k)/\\sqrt2\\},
           \\qquad \\omega(k) = \\min\\Big(\\sum_i V_i |k_i|,\\; U|k|\\Big),

where :math:`V_i = \\max_x |v_i|` and :math:`U = \\max_x |\\mathbf v|` bound :math:`|\\mathbf v\\cdot k|`
(the advecting velocity is the flow's for Burgers and Navier-Stokes and :math:`\\nabla u` for
Kuramoto-Sivashinsky). Without damping :math:`\\rho = \\sum_i V_i k_i^{\\max}`, so
:math:`C = \\tfrac{2\\pi}{3}\\,h\\sum_i V_i/\\Delta x_i` under the 2/3 rule: the classical Courant number
times :math:`k^{\\max}\\Delta x`. For Gray-Scott's reaction :math:`\\rho = \\max_x (v^2 + 2|uv|)`, a norm of
the reaction's Jacobian. :func:`generate` splits every frame interval into :math:`m` equal steps,
:math:`m` the smallest of :math:`1, 2, 3, 4, 6, 8, 12, \\dots` (powers of two and three times powers
of two, so that a trajectory needs the ETDRK4 coefficients of only a few step sizes) with
:math:`C \\le` :data:`CFL` on the state at the start of the interval (the largest over the batch);
if :math:`C` on the state at its end exceeds :data:`CFL_REJECT`, the interval is recomputed with
more steps. Linear systems (:math:`\\rho = 0`) take one exact step per frame.
Why :math:`C = 1.5`: it leaves a factor 1.9 to the linear bound (the bound is a worst case, the
fastest velocity meeting the finest mode: a developed Navier-Stokes flow at :math:`128^2` in the
least damped corner of its box survived :math:`t = 10` at fixed steps up to :math:`C \\approx 3.5` and
blew up at :math:`C \\approx 4`), and one frame interval is then accurate to a relative
:math:`10^{-7}`-:math:`10^{-4}` for every nonlinear system, :math:`7\\cdot10^{-4}` at worst for an
under-resolved Navier-Stokes flow on :math:`32^2` (``tests/test_pde.py``). The fixed step 0.025 that
Navier-Stokes used before reached :math:`C \\approx 3.6`-3.8 (the largest in batches of 8, 17 frames)
at :math:`64^2` and up to 10 at :math:`128^2`, where most of its trajectories blew up.

Everything is batched: a batch of trajectories, each with its own coefficients (so the
coefficient tensors have a batch axis), advanced together on any device, in float32 (complex64)
or float64 (complex128). The ETDRK4 coefficients are computed in float64.

Conventions (state them, because libraries differ): spatial axis ``i`` of a tensor is the
coordinate :math:`x_i`, so in 2D axis 0 is :math:`x` and axis 1 is :math:`y`, as in torchfsm.
Wavenumbers are angular, :math:`k_i = 2\\pi m_i / L`. See each system's docstring for its equation.

Adding a system takes one small class: subclass :class:`System`, set ``name``, ``dims``,
``ranges`` and the default ``length``/``interval``/``warmup``, and write :meth:`System.linear`,
:meth:`System.nonlinear`, :meth:`System.rate` (the bound :math:`\\rho` above; without it the step
is one per frame, right only for linear systems) and, if the default Gaussian random field does
not suit it, :meth:`System.initial`. A system whose nonlinear term is a fixed spectral factor
times the transform of products on the grid (the built-in ones: the dealiasing mask, a constant,
a removed mean) may give the two as :meth:`System.spectral_factor` and :meth:`System.products`
instead, and the stepper folds the factor into its coefficients.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from einops import rearrange

from physfm.data.spectral import gaussian_random_field, wavenumbers

__all__ = [
    "CFL",
    "CFL_REJECT",
    "DROP_REASONS",
    "System",
    "SpectralGrid",
    "ETDRK4",
    "Trajectories",
    "GenerationError",
    "SYSTEMS",
    "get_system",
    "simulate",
    "generate",
    "evolve",
    "step_errors",
    "amplification",
    "advective_rate",
    "substeps",
    "Diffusion",
    "AdvectionDiffusion",
    "Burgers",
    "KuramotoSivashinsky",
    "GrayScott",
    "NavierStokes2D",
]

Coefficients = dict[str, torch.Tensor]

#: Target CFL number :math:`C = h\\rho` of :func:`generate`'s step rule (linear stability needs
#: :math:`C \\le 2\\sqrt2 \\approx 2.83`; see the module docstring).
CFL = 1.5
#: An interval whose end state has a CFL number above this is recomputed with more steps.
CFL_REJECT = 2.5
#: Why :func:`generate` drops a trajectory (the keys of ``Trajectories.drop_reasons``).
DROP_REASONS = ("non-finite", "blew up", "lost all structure")
#: Most steps per frame interval; a trajectory that asks for more counts as blown up.
MAX_SUBSTEPS = 2**14
#: A value beyond this magnitude counts as blown up.
BLOW_UP = 1e6


# ---------------------------------------------------------------------------------------------
# Argument checks (every error names the argument, what it got and what it wants)
# ---------------------------------------------------------------------------------------------


def _int(where: str, name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _real(where: str, name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    want = "a positive number" if positive else "a number >= 0" if nonnegative else "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be {want}, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0) or (nonnegative and v < 0):
        raise ValueError(f"{where}: {name} must be {want}, got {value!r}")
    return v


def _shape(where: str, shape, *, minimum: int = 4) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        raise TypeError(f"{where}: shape must be a sequence of 1 to 3 ints (grid sizes), got {type(shape).__name__} {shape!r}")
    shape = tuple(shape)
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"{where}: shape must list 1 to 3 grid sizes, got {shape!r}")
    return tuple(_int(where, f"shape[{i}]", s, minimum=minimum) for i, s in enumerate(shape))


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
        self.shape = _shape("SpectralGrid", shape, minimum=2)
        self.d = len(self.shape)
        self.length = _real("SpectralGrid", "length", length, positive=True)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"SpectralGrid: dtype must be torch.float32 or torch.float64, got {dtype!r}")
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
        self._kept = None
        self._factors: dict[tuple[float, bool], torch.Tensor] = {}
        self._value_and_gradient = None

    def dealias_(self, u_hat: torch.Tensor) -> torch.Tensor:
        """Zero the modes the dealiasing rule removes, in place (cheaper than a mask product)."""
        for axis, (n, keep) in enumerate(zip(self.shape, self.keep)):
            dim = u_hat.ndim - self.d + axis
            if axis == self.d - 1:
                u_hat.narrow(dim, keep, u_hat.shape[dim] - keep).zero_()
            elif n - 2 * keep + 1 > 0:
                u_hat.narrow(dim, keep, n - 2 * keep + 1).zero_()
        return u_hat

    @property
    def kept(self) -> torch.Tensor:
        """The modes the dealiasing rule keeps: a 0/1 tensor on the ``rfftn`` grid, in ``dtype``."""
        if self._kept is None:
            self._kept = self.dealias_(torch.ones_like(self.k2))
        return self._kept

    def dealias_factor(self, scale: float = 1.0, *, mean: bool = True) -> torch.Tensor:
        """``scale`` on the modes the dealiasing rule keeps and 0 on the others (and on the mean
        mode unless ``mean``), complex, on the ``rfftn`` grid: ``dealias_factor(s) * u_hat`` dealiases and
        scales in one product. With ``scale`` a power of two or its negative the product equals, bit
        for bit, :meth:`dealias_` followed by a multiplication by ``scale``."""
        key = (float(scale), bool(mean))
        if key not in self._factors:
            f = (self.kept * scale).to(self.iks[0].dtype)
            if not mean:
                f[(0,) * self.d] = 0
            self._factors[key] = f
        return self._factors[key]

    @property
    def value_and_gradient(self) -> torch.Tensor:
        """``(1 + d, 1, 1, *rfft_grid)``: 1 then :math:`i k_0, \\dots, i k_{d-1}`, so that one product
        and one inverse transform give a field and all its first derivatives."""
        if self._value_and_gradient is None:
            self._value_and_gradient = torch.cat([torch.ones_like(self.ik[:1]), self.ik])
        return self._value_and_gradient

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


def advective_rate(velocity: torch.Tensor, grid: SpectralGrid, stable: torch.Tensor | None = None) -> torch.Tensor:
    """The bound :math:`\\rho` of the module docstring for advection by ``velocity``.

    Args:
        velocity: ``(d, batch, ...)`` on the grid (``...``: any field axes, then the space axes);
            component ``i`` moves the state along axis ``i``.
        grid: the Fourier grid.
        stable: ``(batch, *rfft_grid)``, the frequency below which each mode is stable at any
            step (:math:`s\\mu/\\sqrt2`); ``None``: no mode is (no damping).

    Returns:
        ``(batch,)``: :math:`\\max \\omega(k)` over the kept modes with :math:`\\omega(k)` above ``stable``,
        :math:`\\omega(k) = \\min(\\sum_i V_i|k_i|, U|k|)`, :math:`V_i = \\max|v_i|`, :math:`U = \\max|\\mathbf v|`.
    """
    d = grid.d
    v = velocity.flatten(2)  # (d, batch, points)
    vmax = v.abs().amax(dim=-1)  # (d, batch)
    umax = v.square().sum(dim=0).amax(dim=-1).sqrt()  # (batch,)
    view = (-1,) + (1,) * d
    omega = sum(vmax[i].reshape(view) * grid.ks[i].abs() for i in range(d))
    omega = torch.minimum(omega, umax.reshape(view) * grid.k2.sqrt()) * grid.kept
    if stable is not None:
        omega = torch.where(omega > stable, omega, 0.0)
    return omega.flatten(1).amax(dim=1)


def amplification(hmu: torch.Tensor, hlam: torch.Tensor) -> torch.Tensor:
    """ETDRK4's amplification factor for :math:`\\dot u = -\\mu u + \\lambda u`, with :math:`-\\mu u` the
    (exactly integrated) linear part and :math:`\\lambda u` the nonlinear part, in terms of
    :math:`h\\mu` and :math:`h\\lambda` (complex); one step multiplies :math:`u` by it. Stable where its
    modulus is at most 1: the basis of the step rule (module docstring)."""
    hmu, hlam = torch.broadcast_tensors(torch.as_tensor(hmu, dtype=torch.float64), torch.as_tensor(hlam, dtype=torch.complex128))
    E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(-hmu, 1.0)
    nu = hlam
    a = E2 + Q * nu
    na = hlam * a
    b = E2 + Q * na
    nb = hlam * b
    c = E2 * a + Q * (2 * nb - nu)
    return E + f1 * nu + 2 * f2 * (na + nb) + f3 * hlam * c


def substeps(need: float, *, most: int = MAX_SUBSTEPS) -> int:
    """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, ... (``2^j`` and ``3 * 2^j``) that is at least
    ``need``, capped at ``most``."""
    if not need > 1:  # also NaN
        return 1
    m = 2 ** math.floor(math.log2(need))
    for candidate in (m, 3 * m // 2, 2 * m):
        if candidate >= need:
            return min(candidate, most)
    return min(2 * m, most)


# ---------------------------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------------------------


class System:
    """A semi-linear PDE :math:`\\partial_t u = \\mathcal L u + \\mathcal N(u)` with random
    coefficients and random initial conditions.

    Subclasses set the class attributes below and implement :meth:`linear`, :meth:`nonlinear`
    (or :meth:`spectral_factor` and :meth:`products`) and :meth:`rate`.

    Attributes:
        name: the registry name (``"burgers"``...).
        dims: the spatial dimensions the system supports.
        ranges: coefficient name -> ``(low, high)``; a draw is uniform in that range, or
            log-uniform when the name is in ``log_uniform``. Override per instance with
            ``System(ranges={...})``; a single number fixes the coefficient.
        length, interval, warmup: default box side, time between saved frames, and time
            simulated before the first saved frame (to leave the initial transient).
        cfl: target CFL number of :func:`generate`'s step rule (module docstring).
        dealias: fraction of modes kept in products (2/3 rule; 1/2 for cubic terms).
        conserves_mean: the spatial mean of every field is constant in time.
    """

    name: str = ""
    dims: tuple[int, ...] = (1, 2, 3)
    ranges: dict[str, tuple[float, float]] = {}
    log_uniform: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()
    length: float = 2 * math.pi
    interval: float = 0.1
    warmup: float = 0.0
    cfl: float = CFL
    dealias: float = 2 / 3
    conserves_mean: bool = False
    amplitude: float = 1.0
    slopes: tuple[float, float] = (2.5, 4.0)

    def __init__(self, ranges: Mapping[str, float | tuple[float, float]] | None = None):
        where = type(self).__name__
        merged = dict(type(self).ranges)
        if ranges is not None and not isinstance(ranges, Mapping):
            raise TypeError(
                f"{where}: ranges must map coefficient names to a number or a (low, high) pair, got {type(ranges).__name__}"
            )
        for key, value in (ranges or {}).items():
            if key not in merged:
                raise ValueError(f"{where}: unknown coefficient {key!r} in ranges; its coefficients are {sorted(merged)}")
            pair = (value, value) if isinstance(value, numbers.Number) else value
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable) or len(pair := tuple(pair)) != 2:
                raise TypeError(f"{where}: range of {key!r} must be a number or a (low, high) pair of numbers, got {value!r}")
            for bound in pair:
                if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
                    raise TypeError(
                        f"{where}: range of {key!r} must be a number or a (low, high) pair of numbers, "
                        f"got {type(bound).__name__} {bound!r} in {value!r}"
                    )
            lo, hi = float(pair[0]), float(pair[1])
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError(f"{where}: range of {key!r} must be finite with low <= high, got {value!r}")
            if key in self.positive and lo <= 0:
                raise ValueError(f"{where}: {key!r} must be positive, got range {value!r}")
            merged[key] = (lo, hi)
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
        """:math:`\\widehat{\\mathcal N(u)}`, shape ``(batch, fields, *rfft_grid)``, dealiased, a new
        tensor (the stepper updates it in place). Default: :meth:`spectral_factor` times
        :meth:`products`, or zero without a factor."""
        factor = self.spectral_factor(grid)
        return torch.zeros_like(u_hat) if factor is None else factor * self.products(u_hat, grid, c)

    def spectral_factor(self, grid: SpectralGrid) -> torch.Tensor | None:
        """Optional: a fixed multiplier :math:`D(k)` with :math:`\\hat{\\mathcal N} = D(k)\\,\\hat P(u)`,
        :math:`\\hat P` from :meth:`products` (the dealiasing mask, a constant factor, a removed
        mean: :meth:`SpectralGrid.dealias_factor`). :class:`ETDRK4` folds it into its coefficients, which
        multiply :math:`\\hat{\\mathcal N}` linearly, and so skips a pass over the spectrum in every
        stage; with :math:`D` zero or a power of two (or its negative) on every mode, the step is
        bit for bit the one with :meth:`nonlinear`. Default: ``None``, no factor (the stepper then
        calls :meth:`nonlinear`)."""
        return None

    def products(self, u_hat: torch.Tensor, grid: SpectralGrid, c: Coefficients) -> torch.Tensor:
        """:math:`\\hat P(u)`, the nonlinear term before :meth:`spectral_factor` (the transform of
        its products on the grid); only used with a factor."""
        raise NotImplementedError

    def rate(self, u_hat: torch.Tensor, grid: SpectralGrid, c: Coefficients, stable: torch.Tensor) -> torch.Tensor:
        """:math:`\\rho`, a bound on the frequencies of the linearised nonlinear term at the state
        ``u_hat`` that the step must resolve, ``(batch,)`` in 1/time (module docstring); ``stable``
        is passed on to :func:`advective_rate`. Default: 0, no nonlinear term."""
        return torch.zeros(u_hat.shape[0], dtype=grid.dtype, device=u_hat.device)

    def prepare(self, grid: SpectralGrid, c: Coefficients) -> Coefficients:
        """Precompute what :meth:`nonlinear` needs once per batch (a forcing, say); default: nothing."""
        return c

    def initial(self, batch: int, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Random initial states ``(batch, fields, *shape)`` in float64: Gaussian random fields
        with a spectral slope drawn uniformly from ``slopes``, scaled by ``amplitude``.
        :func:`generate` band-limits them (the dealiasing rule) before the first step."""
        f = self.n_fields(len(shape))
        slope = torch.empty(batch * f, dtype=torch.float64).uniform_(*self.slopes, generator=generator)
        u = gaussian_random_field(shape, batch=batch * f, slope=slope, generator=generator, dtype=torch.float64)
        return self.amplitude * rearrange(u, "(b f) ... -> b f ...", f=f)

    # -- shared machinery -------------------------------------------------------------------

    def sample(self, batch: int, generator: torch.Generator | None = None) -> Coefficients:
        """Draw ``batch`` coefficient sets, each a float64 tensor of shape ``(batch,)``."""
        batch = _int(f"{type(self).__name__}.sample", "batch", batch)
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


def _sum_of_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_i a_i b_i` over the first axis, summed in order: the same numbers as
    ``(a * b).sum(dim=0)`` in fewer passes (``torch.addcmul`` would round differently: it fuses)."""
    out = a[0] * b[0]
    for i in range(1, len(a)):
        out.add_(a[i] * b[i])
    return out


def _b(c: torch.Tensor, d: int) -> torch.Tensor:
    """A per-sample coefficient ``(batch,)`` shaped to broadcast against ``(batch, fields, *grid)``."""
    return c.reshape(-1, *([1] * (d + 1)))


class Diffusion(System):
    """Heat equation :math:`\\partial_t u = \\nu \\nabla^2 u`; :math:`\\hat L = -\\nu |k|^2`.

    Exact solution :math:`\\hat u_k(t) = e^{-\\nu |k|^2 t} \\hat u_k(0)`; conserves the mean.
    Linear, so :func:`generate` takes one (exact) step per frame.
    """

    name = "diffusion"
    ranges = {"nu": (0.002, 0.02)}
    log_uniform = ("nu",)
    positive = ("nu",)
    interval = 0.5
    conserves_mean = True

    def linear(self, grid, c):
        return -_b(c["nu"], grid.d) * grid.k2


class AdvectionDiffusion(System):
    """:math:`\\partial_t u + \\mathbf{c}\\cdot\\nabla u = \\nu\\nabla^2 u` with a constant velocity
    :math:`\\mathbf c`; :math:`\\hat L = -i\\,\\mathbf c\\cdot k - \\nu|k|^2` (complex).

    Exact solution: the initial field moved by :math:`\\mathbf c t` and diffused. The velocity
    components are the coefficients ``c0``, ``c1``, ``c2`` (those beyond ``d`` are ignored).
    Linear (the advection too is in :math:`\\hat L`, integrated exactly), so :func:`generate` takes
    one exact step per frame whatever the Courant number :math:`|\\mathbf c|h/\\Delta x`.
    """

    name = "advection_diffusion"
    ranges = {"nu": (0.001, 0.01), "c0": (-1.0, 1.0), "c1": (-1.0, 1.0), "c2": (-1.0, 1.0)}
    log_uniform = ("nu",)
    positive = ("nu",)
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
    advective form does not conserve it exactly. The step follows the CFL number of advection
    by :math:`\\mathbf u` itself.
    """

    name = "burgers"
    ranges = {"nu": (0.01, 0.05)}
    log_uniform = ("nu",)
    positive = ("nu",)
    interval = 0.1
    amplitude = 0.5
    slopes = (3.0, 4.5)

    def n_fields(self, d):
        return d

    def field_names(self, d):
        return ("u", "v", "w")[:d]

    def linear(self, grid, c):
        return -_b(c["nu"], grid.d) * grid.k2

    def spectral_factor(self, grid):
        return grid.dealias_factor(-1.0)  # N = -P[(u . grad) u]

    def products(self, u_hat, grid, c):
        both = grid.to_physical(grid.value_and_gradient * u_hat)  # (1 + d, b, d, *grid)
        u, du = rearrange(both[0], "b i ... -> i b 1 ..."), both[1:]  # du[i, :, j] = d u_j / d x_i
        return grid.to_spectral(_sum_of_products(u, du))  # (u . grad) u_j = sum_i u_i d_i u_j

    def rate(self, u_hat, grid, c, stable):
        return advective_rate(rearrange(grid.to_physical(u_hat), "b i ... -> i b ..."), grid, stable)


class KuramotoSivashinsky(System):
    """Kuramoto-Sivashinsky equation in gradient form, any dimension,

    .. math:: \\partial_t u = -\\nabla^2 u - \\nu \\nabla^4 u - \\tfrac12\\left(|\\nabla u|^2 - \\langle|\\nabla u|^2\\rangle\\right),

    :math:`\\hat L = |k|^2 - \\nu|k|^4` (isotropic, as torchfsm's ``KuramotoSivashinskyHighDim``;
    exponax uses :math:`k_x^4 + k_y^4`). The spatial mean of the quadratic term is removed (as
    torchfsm does by default), so the mean of ``u`` is conserved instead of drifting. Chaotic for
    boxes larger than a few times :math:`2\\pi\\sqrt\\nu`. Linearised, the quadratic term advects
    perturbations with the velocity :math:`\\nabla u`, which sets the step; the hyper-diffusion
    damps all but the longest of those modes so strongly that they are stable at any step.

    Resolution: on the default :math:`12\\pi` box, 32 points per side (:math:`\\Delta x = 1.18`) are
    too few for the low end of the viscosity range. The truncated system itself then diverges,
    whatever the step (measured: 24 of 32 draws with :math:`\\nu \\in [0.8, 0.85]` turn non-finite in
    17 frames, and those draws do so too at a fifth of the step in float64; 6 of 64 over the whole
    box), while 40 or 48 points lose none of 32 such draws, and 32 points on an :math:`8\\pi` box none of 64.
    """

    name = "kuramoto_sivashinsky"
    dims = (1, 2)
    ranges = {"nu": (0.8, 1.2)}
    positive = ("nu",)
    length = 12 * math.pi
    interval = 0.5
    warmup = 20.0
    conserves_mean = True
    amplitude = 1.0

    def linear(self, grid, c):
        return grid.k2 - _b(c["nu"], grid.d) * grid.k2**2

    def spectral_factor(self, grid):
        return grid.dealias_factor(-0.5, mean=False)  # -1/2 P(|grad u|^2), its spatial mean removed

    def products(self, u_hat, grid, c):
        g = grid.gradient(u_hat)
        return grid.to_spectral(_sum_of_products(g, g))

    def rate(self, u_hat, grid, c, stable):
        return advective_rate(grid.gradient(u_hat)[:, :, 0], grid, stable)


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
    with random smooth patches of activator. The kill rate starts at 0.06: with
    :math:`\\kappa \\in [0.058, 0.062]` the corner :math:`F > 0.044,\\ \\kappa < 0.059` fills the box with a
    uniform activator (measured: 6 of 64 trajectories of 33 frames on :math:`64^2`, 5 of 32 on
    :math:`128^2`), while :math:`\\kappa \\in [0.06, 0.062]` kept all of 64 trajectories of 65 frames on
    :math:`64^2` and of 5 frames on :math:`32^3`. On :math:`16^3` (:math:`\\Delta x = 0.031`, about the width of
    a pattern) patterns die out in either box (8 of 64 with the wider one, 17 of 64 with this one,
    at low feed): that grid is too coarse for them. The step follows the reaction: the Jacobian of
    :math:`(-uv^2, uv^2)` has the row-sum norm :math:`v^2 + 2|uv|`, a bound on its eigenvalues.
    """

    name = "gray_scott"
    ranges = {"F": (0.026, 0.05), "kappa": (0.06, 0.062), "Du": (2e-5, 2e-5), "Dv": (1e-5, 1e-5)}
    positive = ("Du", "Dv")
    length = 0.5
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

    def spectral_factor(self, grid):
        return grid.dealias_factor(1.0)  # the 1/2 rule

    def products(self, u_hat, grid, c):
        uv = grid.to_physical(u_hat)
        reaction = uv[:, :1] * uv[:, 1:2].square()
        feed = _b(c["F"], grid.d).to(uv.dtype)
        return grid.to_spectral(torch.cat([feed - reaction, reaction], dim=1))

    def rate(self, u_hat, grid, c, stable):
        u, v = grid.to_physical(u_hat).unbind(dim=1)
        return (v * (v.abs() + 2 * u.abs())).flatten(1).amax(dim=1)

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
    initial vorticity stays zero-mean. A vorticity that depends on :math:`y` alone is not advected
    and relaxes to the laminar state :math:`\\omega^* = -nA\\cos(ny)/(\\nu n^2 + \\alpha)`. The single
    field is the vorticity :math:`\\omega`; the step follows the CFL number of advection by :math:`\\mathbf u`.
    """

    name = "navier_stokes"
    dims = (2,)
    ranges = {"nu": (0.002, 0.01), "drag": (0.05, 0.15), "forcing": (0.5, 1.5), "wavenumber": (4.0, 4.0)}
    log_uniform = ("nu",)
    positive = ("nu",)
    interval = 0.5
    warmup = 5.0
    conserves_mean = True
    amplitude = 1.0
    slopes = (2.5, 3.5)

    def field_names(self, d):
        return ("vorticity",)

    def linear(self, grid, c):
        return -_b(c["nu"], grid.d) * grid.k2 - _b(c["drag"], grid.d)

    def velocity(self, w_hat: torch.Tensor, grid: SpectralGrid) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u_x, u_y)`` on the grid from the vorticity spectrum."""
        psi_hat = w_hat * grid.k2_inv  # from -|k|^2 psi = -w
        ik0, ik1 = grid.iks
        ux, uy = grid.to_physical(torch.stack([ik1 * psi_hat, -ik0 * psi_hat]))
        return ux, uy

    def nonlinear(self, w_hat, grid, c):
        # (psi, w) -> (ux, uy, wx, wy) = (d_y psi, -d_x psi, d_x w, d_y w): two products, one transform
        psi_w = c["inverse_laplacian"] * w_hat  # (2, b, 1, *rfft_grid): psi_hat = w_hat / |k|^2, and w_hat
        u_gw = grid.to_physical(rearrange(c["velocity_gradient"] * psi_w[:, None], "i j ... -> (i j) ..."))
        adv = _sum_of_products(u_gw[:2], u_gw[2:])  # ux wx + uy wy
        return torch.addcmul(c["forcing_hat"], grid.dealias_factor(-1.0), grid.to_spectral(adv))  # forcing - P(u . grad w)

    def rate(self, w_hat, grid, c, stable):
        return advective_rate(torch.stack(self.velocity(w_hat, grid)), grid, stable)

    def prepare(self, grid, c):
        """The forcing :math:`-nA\\cos(ny)` in Fourier space, once per batch (``n`` is rounded to a
        whole number of periods in the box), and the spectral multipliers of :meth:`nonlinear`:
        ``inverse_laplacian`` ``(2, 1, 1, *rfft_grid)``, :math:`(1/|k|^2, 1)`, takes
        :math:`\\hat\\omega` to :math:`(\\hat\\psi, \\hat\\omega)`, and ``velocity_gradient``
        ``(2, 2, 1, 1, *rfft_grid)`` those to :math:`(\\partial_y\\psi, -\\partial_x\\psi)` and
        :math:`(\\partial_x\\omega, \\partial_y\\omega)`."""
        y = torch.arange(grid.shape[1], dtype=torch.float64, device=grid.k2.device) * grid.length / grid.shape[1]
        n = torch.round(c["wavenumber"].double()) * 2 * math.pi / grid.length
        f = -(n * c["forcing"].double())[:, None] * torch.cos(n[:, None] * y[None, :])  # (b, ny)
        f = f[:, None, None, :].expand(-1, 1, grid.shape[0], -1).to(grid.dtype)
        ik0, ik1 = torch.broadcast_tensors(*grid.iks)
        inverse_laplacian = torch.stack([grid.k2_inv, torch.ones_like(grid.k2_inv)])[:, None, None]
        velocity_gradient = torch.stack([torch.stack([ik1, -ik0]), torch.stack([ik0, ik1])])[:, :, None, None]
        return {
            **c,
            "forcing_hat": grid.to_spectral(f),
            "inverse_laplacian": inverse_laplacian,
            "velocity_gradient": velocity_gradient,
        }


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (Diffusion, AdvectionDiffusion, Burgers, KuramotoSivashinsky, GrayScott, NavierStokes2D)
}


def get_system(system: str | System) -> System:
    """A system instance from its name (or the instance itself)."""
    if isinstance(system, System):
        return system
    if not isinstance(system, str):
        raise TypeError(f"system must be a name from {sorted(SYSTEMS)} or a pde.System, got {type(system).__name__} {system!r}")
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


def _coefficients(system: System, coefficients: Mapping, batch: int, where: str) -> Coefficients:
    """Coefficients as float64 tensors of shape ``(batch,)``: numbers or tensors of shape ``()``
    or ``(batch,)``, one for every name in ``system.ranges`` and no other."""
    if not isinstance(coefficients, Mapping):
        raise TypeError(f"{where}: coefficients must map names to numbers or (batch,) tensors, got {type(coefficients).__name__}")
    missing = sorted(set(system.ranges) - set(coefficients))
    unknown = sorted(set(coefficients) - set(system.ranges))
    if missing or unknown:
        raise ValueError(
            f"{where}: coefficients of {system.name or type(system).__name__} must be {sorted(system.ranges)}; "
            f"missing {missing}, unknown {unknown}"
        )
    out = {}
    for key, value in coefficients.items():
        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bool or value.is_complex():
                raise TypeError(f"{where}: coefficient {key!r} must be real numbers, got a {value.dtype} tensor")
            if value.ndim > 1 or (value.ndim == 1 and len(value) != batch):
                raise ValueError(
                    f"{where}: coefficient {key!r} must have shape () or ({batch},) (the batch), got {tuple(value.shape)}"
                )
            t = value.detach().to(torch.float64).expand(batch)
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"{where}: coefficient {key!r} must be a number or a ({batch},) tensor, got {type(value).__name__} {value!r}"
            )
        else:
            t = torch.full((batch,), float(value), dtype=torch.float64)
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: coefficient {key!r} must be finite, got {value!r}")
        out[key] = t
    return out


class ETDRK4:
    """Fourth-order exponential time differencing Runge-Kutta stepper for one batch.

    Args:
        system: the PDE.
        grid: its Fourier grid.
        coefficients: per-sample coefficients from :meth:`System.sample` (each ``(batch,)``).
        dt: the time step.
    """

    def __init__(self, system: System, grid: SpectralGrid, coefficients: Coefficients, dt: float, *, _shared=None):
        self.system, self.grid, self.dt = system, grid, float(dt)
        self._shared = _shared or _prepare(system, grid, coefficients)
        self.c, self.lin, self.c_grid = self._shared
        coeffs = _etdrk4_coefficients(self.lin, self.dt)
        # complex even when L is real: a complex-by-real product makes torch cast the real factor
        # to complex on every call, which costs more than the complex multiply itself
        cdtype = torch.complex64 if grid.dtype == torch.float32 else torch.complex128
        shape = torch.broadcast_shapes(*(c.shape for c in coeffs))
        E, E2, Q, f1, f2, f3 = (c.to(cdtype).expand(shape) for c in coeffs)
        # The nonlinear term enters a step only through Q N, f1 N, f2 N, f3 N (and sums of N's),
        # so a fixed spectral factor D of the system's N = D P (dealiasing, a constant, the mean)
        # is folded into those coefficients once, here, instead of applied to every N.
        factor = system.spectral_factor(grid)
        self.n = self._nonlinear if factor is None else self._products
        D = 1 if factor is None else factor
        self.E, self.E2 = E.contiguous(), E2.contiguous()
        self.Q = (Q * D).contiguous()
        self.Q2 = 2 * self.Q  # c = E2 a + 2Q (N(b) - N(u) / 2): one pass fewer than Q (2 N(b) - N(u))
        self.f1, self.f2, self.f3 = (f1 * D).contiguous(), 2 * f2 * D, (f3 * D).contiguous()  # self.f2 holds 2 f2

    def with_step(self, dt: float) -> ETDRK4:
        """The same system, grid and coefficients at another step (only the ETDRK4 coefficients
        are recomputed)."""
        return ETDRK4(self.system, self.grid, self.c, dt, _shared=self._shared)

    def _nonlinear(self, u_hat: torch.Tensor) -> torch.Tensor:
        return self.system.nonlinear(u_hat, self.grid, self.c_grid)

    def _products(self, u_hat: torch.Tensor) -> torch.Tensor:
        return self.system.products(u_hat, self.grid, self.c_grid)

    def step(self, u_hat: torch.Tensor) -> torch.Tensor:
        """One step of size ``dt`` of the spectral state ``(batch, fields, *rfft_grid)``.

        ``N`` below is the system's :meth:`System.nonlinear`, or its :meth:`System.products`
        when the coefficients hold its :meth:`System.spectral_factor`; in place updates reuse
        the buffers of spent stages, so a step allocates little beyond its four evaluations."""
        nu = self.n(u_hat)
        e2u = self.E2 * u_hat
        a = torch.addcmul(e2u, self.Q, nu)
        na = self.n(a)
        b = e2u.addcmul_(self.Q, na)  # e2u is spent
        nb = self.n(b)
        nab = na.add_(nb)  # na is spent
        c = a.mul_(self.E2).addcmul_(self.Q2, nb.sub_(nu, alpha=0.5))  # a, nb are spent: E2 a + Q (2 N(b) - N(u))
        nc = self.n(c)
        out = torch.addcmul(self.E * u_hat, self.f1, nu)
        out.addcmul_(self.f2, nab)
        return out.addcmul_(self.f3, nc)


_MALLOC_RAISED = False


def _raise_malloc_thresholds() -> None:
    """Allocate and free 31 MiB once per process, so that glibc's allocator keeps freed memory
    for reuse instead of handing it back to the system after every step.

    A step allocates and frees tensors of up to a few MB (the FFTs' inputs, outputs and internal
    copies). glibc serves blocks above its mmap threshold (128 KiB at start) with fresh pages, and
    returns the top of its heap to the system whenever more than its trim threshold (twice the mmap
    threshold) is free there; both thresholds rise to the size of the largest mmapped block freed
    so far (up to 32 MiB): its dynamic threshold. Until a large block has been freed, the pages a
    step frees come back as page faults in the next one: measured for Burgers (batch 8, float32,
    one thread) 1700-1900 faults a step at 64^2, 4.9-5.8 ms a step of which 2.3-3.2 in the kernel,
    against 1.8 ms after this; 10,000-12,000 at 128^2, 29-34 ms against 9.2. One block freed early
    raises both thresholds for good, by glibc's own rule; elsewhere (other allocators) this is a
    harmless 31 MiB allocation."""
    global _MALLOC_RAISED
    if not _MALLOC_RAISED:
        _MALLOC_RAISED = True
        torch.empty(31 << 20, dtype=torch.uint8)  # freed at once


def _prepare(system: System, grid: SpectralGrid, coefficients: Coefficients) -> tuple:
    """What every step size shares: the coefficients on the grid's device, :math:`\\hat L` in
    float64, and :meth:`System.prepare`'s precomputations."""
    if grid.k2.device.type == "cpu":
        _raise_malloc_thresholds()
    c = {k: v.to(grid.k2.device) for k, v in coefficients.items()}
    lin = system.linear(_float64_grid(grid), {k: v.to(torch.float64) for k, v in c.items()})
    return c, lin, system.prepare(grid, {k: v.to(grid.dtype) for k, v in c.items()})


def _damping(lin: torch.Tensor, grid: SpectralGrid, batch: int) -> torch.Tensor:
    """:math:`\\mu(k) = -\\mathrm{Re}\\,\\hat L(k)`, the smallest over the fields, ``(batch, *rfft_grid)``
    in the grid's dtype."""
    lin = lin.real if torch.is_complex(lin) else lin
    lin = lin.expand(*torch.broadcast_shapes(lin.shape, (batch, 1) + tuple(grid.k2.shape)))
    return (-lin).amin(dim=1).to(grid.dtype)


def _float64_grid(grid: SpectralGrid) -> SpectralGrid:
    if grid.dtype == torch.float64:
        return grid
    return SpectralGrid(grid.shape, grid.length, dealias=1.0, device=grid.k2.device, dtype=torch.float64)


def _check_state(where: str, system: System, u0) -> int:
    if not isinstance(u0, torch.Tensor):
        raise TypeError(f"{where}: u0 must be a tensor (batch, fields, *space), got {type(u0).__name__}")
    if u0.ndim < 3 or u0.ndim > 5:
        raise ValueError(f"{where}: u0 must be (batch, fields, *space) with 1-3 spatial axes, got shape {tuple(u0.shape)}")
    if u0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{where}: u0 must be float32 or float64, got {u0.dtype}")
    d = u0.ndim - 2
    system.check_dim(d)
    if u0.shape[1] != system.n_fields(d):
        raise ValueError(f"{where}: {system.name} has {system.n_fields(d)} fields in {d}D, u0 has {u0.shape[1]}")
    return d


def simulate(
    system: str | System,
    u0: torch.Tensor,
    coefficients: Mapping[str, torch.Tensor | float],
    *,
    dt: float,
    steps: int,
    save_every: int = 1,
    length: float | None = None,
) -> torch.Tensor:
    """Advance initial states ``u0`` of shape ``(batch, fields, *space)`` by ``steps`` steps of
    the fixed size ``dt`` (no step rule: see :func:`generate` for that).

    Args:
        coefficients: every coefficient of the system, a number or a ``(batch,)`` tensor each.
        dt: the step, a positive number (the heat equation does not run backwards).
        steps, save_every: ints, ``steps >= 0`` and ``save_every >= 1``.
        length: the box side (default: the system's).

    Returns the saved states ``(batch, fields, time, *space)``: the initial state and every
    ``save_every``-th step after it, in the dtype of ``u0`` on its device.
    """
    system = get_system(system)
    _check_state("simulate", system, u0)
    dt = _real("simulate", "dt", dt, positive=True)
    steps = _int("simulate", "steps", steps, minimum=0)
    save_every = _int("simulate", "save_every", save_every)
    length = system.length if length is None else _real("simulate", "length", length, positive=True)
    c = _coefficients(system, coefficients, u0.shape[0], "simulate")
    grid = SpectralGrid(u0.shape[2:], length, dealias=system.dealias, device=u0.device, dtype=u0.dtype)
    stepper = ETDRK4(system, grid, c, dt)
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


# ---------------------------------------------------------------------------------------------
# Generation: the step rule, checks of every trajectory, and what was dropped
# ---------------------------------------------------------------------------------------------


class _Integrator:
    """Advances one batch over spans of time, each in ``m`` equal ETDRK4 steps: ``m`` from the
    step rule (module docstring) when ``dt`` is ``None``, else ``round(span / dt)``. Steppers are
    kept for the last few step sizes, so their coefficients are computed once per size."""

    def __init__(self, system: System, grid: SpectralGrid, c: Coefficients, *, cfl: float, dt: float | None, batch: int):
        self.system, self.grid, self.c, self.cfl, self.dt = system, grid, c, cfl, dt
        self.shared = _prepare(system, grid, c)
        self.steppers: OrderedDict[float, ETDRK4] = OrderedDict()
        self.stable = _damping(self.shared[1], grid, batch) * (cfl / (2 * math.sqrt(2)) / math.sqrt(2))
        self.steps = 0  # steps taken (batch-wide)
        self.smallest = math.inf  # smallest step taken
        self.cfl_max = 0.0  # largest CFL number at the start or end of a span
        self.unresolved = torch.zeros(batch, dtype=torch.bool)  # asked for more than MAX_SUBSTEPS steps
        self.history: list[tuple[float, int]] = []  # (span, steps) of every span, rejected tries included

    def rate(self, u_hat: torch.Tensor) -> torch.Tensor:
        return self.system.rate(u_hat, self.grid, self.shared[2], self.stable).double().cpu()

    def stepper(self, h: float) -> ETDRK4:
        if h not in self.steppers:
            self.steppers[h] = ETDRK4(self.system, self.grid, self.c, h, _shared=self.shared)
            while len(self.steppers) > 4:
                self.steppers.popitem(last=False)
        self.steppers.move_to_end(h)
        return self.steppers[h]

    def _need(self, rho: torch.Tensor, span: float) -> float:
        """Steps the rule asks for over ``span`` (the largest over the batch); samples that ask for
        more than MAX_SUBSTEPS or have a non-finite rate are left out and marked."""
        need = rho * span / self.cfl
        wild = ~torch.isfinite(need) | (need > MAX_SUBSTEPS)
        self.unresolved |= wild
        need = need[~self.unresolved]
        return float(need.max()) if len(need) else 1.0

    def advance(self, u_hat: torch.Tensor, span: float, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The state ``span`` later and its rate; ``rho`` is the rate of ``u_hat``."""
        if self.dt is not None:
            m = max(1, round(span / self.dt))
        else:
            m = substeps(self._need(rho, span))
        while True:
            h = span / m if self.dt is None else self.dt
            stepper = self.stepper(h)
            out = u_hat
            for _ in range(m):
                out = stepper.step(out)
            self.steps += m
            self.history.append((span, m))
            rho_end = self.rate(out)
            c_end = self._cfl(torch.maximum(rho, rho_end), h)
            if self.dt is not None or c_end <= CFL_REJECT or m >= MAX_SUBSTEPS:
                break
            m = max(substeps(self._need(rho_end, span)), substeps(m + 1))  # the end state asks for more steps
        self.smallest = min(self.smallest, h)
        self.cfl_max = max(self.cfl_max, c_end)
        return out, rho_end

    def _cfl(self, rho: torch.Tensor, h: float) -> float:
        ok = ~self.unresolved & torch.isfinite(rho)
        return float((rho[ok] * h).max()) if ok.any() else 0.0


def evolve(
    system: str | System,
    u0: torch.Tensor,
    coefficients: Mapping[str, torch.Tensor | float],
    *,
    frames: int,
    interval: float | None = None,
    warmup: float | None = None,
    cfl: float | None = None,
    dt: float | None = None,
    length: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """Band-limit ``u0`` ``(batch, fields, *space)`` by the system's dealiasing rule, run it for
    ``warmup`` and save ``frames`` frames ``interval`` apart, with the step rule of the module
    docstring (or the fixed step ``dt``): what :func:`generate` does with its random draws.

    The warm-up is split into spans of about one interval. Every span is split into ``m`` equal
    steps, ``m`` from :func:`substeps`, so that the CFL number on the state at its start is at most
    ``cfl`` for every trajectory of the batch; a span whose end state has a CFL number above
    :data:`CFL_REJECT` is recomputed with more steps.

    Args:
        coefficients: every coefficient of the system, a number or a ``(batch,)`` tensor each.
        frames: a positive int; the first frame is the state after the warm-up.
        interval, warmup, length: default: the system's. With a fixed ``dt`` they are rounded to
            whole numbers of steps.
        cfl: the target CFL number (default: the system's, :data:`CFL`), at most :data:`CFL_REJECT`.

    Returns:
        ``(trajectories, info)``: ``(batch, fields, frames, *space)`` in the dtype of ``u0`` on its
        device, and ``info`` with ``steps`` (ETDRK4 steps taken, rejected spans included),
        ``dt`` (the smallest step), ``cfl`` (the largest CFL number at the start or end of a span),
        ``interval`` (as used), ``substeps`` (``(span, steps)`` of every span computed) and
        ``unresolved`` (``(batch,)`` bool: trajectories whose step rule asked for more than
        :data:`MAX_SUBSTEPS` steps per span, left out of the batch's step choice).
    """
    where = "evolve"
    system = get_system(system)
    _check_state(where, system, u0)
    frames = _int(where, "frames", frames)
    dt = None if dt is None else _real(where, "dt", dt, positive=True)
    cfl = system.cfl if cfl is None else _real(where, "cfl", cfl, positive=True)
    if cfl > CFL_REJECT:
        raise ValueError(f"{where}: cfl must be a positive number at most CFL_REJECT = {CFL_REJECT}, got {cfl!r}")
    interval = system.interval if interval is None else _real(where, "interval", interval, positive=True)
    warmup = system.warmup if warmup is None else _real(where, "warmup", warmup, nonnegative=True)
    length = system.length if length is None else _real(where, "length", length, positive=True)
    c = _coefficients(system, coefficients, u0.shape[0], where)
    if dt is not None:  # whole numbers of steps
        interval = max(1, round(interval / dt)) * dt
        warm_spans = [round(warmup / dt) * dt] if round(warmup / dt) else []
    else:
        n_warm = math.ceil(warmup / interval - 1e-9)
        warm_spans = [warmup / n_warm] * n_warm if n_warm else []

    grid = SpectralGrid(u0.shape[2:], length, dealias=system.dealias, device=u0.device, dtype=u0.dtype)
    u_hat = grid.to_spectral(u0, dealiased=True)  # band-limited before the first step
    run = _Integrator(system, grid, c, cfl=cfl, dt=dt, batch=u0.shape[0])
    rho = run.rate(u_hat)
    for span in warm_spans:
        u_hat, rho = run.advance(u_hat, span, rho)
    out = [grid.to_physical(u_hat)]
    for _ in range(frames - 1):
        u_hat, rho = run.advance(u_hat, interval, rho)
        out.append(grid.to_physical(u_hat))
    info = {
        "steps": run.steps,
        "dt": run.smallest if math.isfinite(run.smallest) else (dt or interval),
        "cfl": run.cfl_max,
        "interval": interval,
        "substeps": list(run.history),
        "unresolved": run.unresolved,
    }
    return torch.stack(out, dim=2), info


@dataclass
class Trajectories:
    """A batch of generated trajectories and how they were made.

    Attributes:
        data: ``(batch, fields, time, *space)``.
        coefficients: name -> ``(batch,)`` float64 tensor, the coefficients of each trajectory.
        system: the system's name; ``fields``: the field names.
        dt: the smallest step taken (the step itself when it was fixed); ``interval``: time
            between frames; ``length``: box side.
        steps: ETDRK4 steps taken per trajectory (warm-up included, the rejected ones too),
            summed over the attempts; ``cfl``: the largest CFL number :math:`h\\rho` met at the
            start or end of a frame interval (module docstring).
        dropped: trajectories that were dropped and regenerated; ``drop_reasons``: how many for
            each reason in :data:`DROP_REASONS`; ``drawn``: trajectories simulated in all
            (``batch + dropped``), so ``dropped / drawn`` is the drop rate.
    """

    data: torch.Tensor
    coefficients: Coefficients
    system: str
    fields: tuple[str, ...]
    dt: float
    interval: float
    length: float
    dropped: int = 0
    drop_reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    steps: int = 0
    cfl: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def drawn(self) -> int:
        return self.data.shape[0] + self.dropped


class GenerationError(RuntimeError):
    """:func:`generate` ran out of attempts; ``dropped`` and ``drop_reasons`` say what happened."""

    def __init__(self, message: str, dropped: int, drop_reasons: dict[str, int]):
        super().__init__(message)
        self.dropped, self.drop_reasons = dropped, dict(drop_reasons)


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
    cfl: float | None = None,
    interval: float | None = None,
    warmup: float | None = None,
    length: float | None = None,
    max_attempts: int = 10,
) -> Trajectories:
    """Generate ``batch`` trajectories of ``frames`` frames with random coefficients and initial states.

    The random initial state is band-limited by the system's dealiasing rule, then run for
    ``warmup`` (in spans of about one frame interval), then saved every ``interval``
    (:func:`evolve`). Each span of time is split into equal ETDRK4 steps by the step rule of the
    module docstring: the CFL
    number :math:`C = h\\rho` stays at most ``cfl`` at the start of every span, and a span whose end
    state has :math:`C >` :data:`CFL_REJECT` is recomputed with more steps. The step is shared by the
    batch (the largest :math:`\\rho` of its trajectories sets it), so results depend on the
    batch, and are the same for the same seed and batch on a CPU.

    A trajectory is dropped, and a fresh one drawn in its place, when it turns non-finite (NaN or
    inf), blows up (a value beyond 1e6, or a state whose step rule asks for more than
    :data:`MAX_SUBSTEPS` steps per interval) or loses all structure (a field whose last frame is
    constant, its spatial standard deviation below 1e-6 of its magnitude: a pattern that died
    out). ``Trajectories.dropped`` counts them and ``drop_reasons`` says why. Non-finite data is
    never returned.

    Args:
        system: a name from :data:`SYSTEMS` or a :class:`System`.
        batch, frames: positive ints; the first frame comes ``warmup`` after the initial state.
        shape: spatial grid ``(N_0, ..., N_{d-1})``, ints >= 4; the box side stays ``length``
            whatever the grid.
        generator: CPU random stream for coefficients and initial states.
        dt: a fixed step instead of the step rule (``interval`` and ``warmup`` are then rounded
            to whole numbers of steps); a positive number.
        cfl: the target CFL number of the step rule (default: the system's, :data:`CFL`); at most
            :data:`CFL_REJECT`.
        interval, warmup, length: override the system's defaults (positive; warmup >= 0).
        max_attempts: rounds of drawing replacements before giving up.

    Raises:
        TypeError, ValueError: bad arguments (the message names the argument), an unknown
            system, or a dimension the system does not support.
        GenerationError: (a ``RuntimeError``) ``max_attempts`` rounds still left too few usable
            trajectories (the message says how many were dropped for which reason).
    """
    where = "generate"
    system = get_system(system)
    batch = _int(where, "batch", batch)
    frames = _int(where, "frames", frames)
    shape = _shape(where, shape)
    system.check_dim(len(shape))
    max_attempts = _int(where, "max_attempts", max_attempts)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{where}: dtype must be torch.float32 or torch.float64, got {dtype!r}")
    # checked here, before anything is drawn, so that the errors name generate
    dt = None if dt is None else _real(where, "dt", dt, positive=True)
    cfl = None if cfl is None else _real(where, "cfl", cfl, positive=True)
    if cfl is not None and cfl > CFL_REJECT:
        raise ValueError(f"{where}: cfl must be a positive number at most CFL_REJECT = {CFL_REJECT}, got {cfl!r}")
    interval = system.interval if interval is None else _real(where, "interval", interval, positive=True)
    warmup = system.warmup if warmup is None else _real(where, "warmup", warmup, nonnegative=True)
    length = system.length if length is None else _real(where, "length", length, positive=True)

    kept: list[torch.Tensor] = []
    coeffs: list[Coefficients] = []
    reasons = dict.fromkeys(DROP_REASONS, 0)
    need, steps, smallest, cfl_max, used = batch, 0, math.inf, 0.0, interval
    for _ in range(max_attempts):
        c = system.sample(need, generator)
        u0 = system.initial(need, shape, generator).to(device=device, dtype=dtype)
        traj, info = evolve(system, u0, c, frames=frames, interval=interval, warmup=warmup, cfl=cfl, dt=dt, length=length)
        steps, smallest, cfl_max, used = (
            steps + info["steps"],
            min(smallest, info["dt"]),
            max(cfl_max, info["cfl"]),
            info["interval"],
        )

        flat = traj.flatten(1)
        finite = torch.isfinite(flat).all(dim=1)
        bounded = finite & (flat.abs().amax(dim=1) < BLOW_UP) & ~info["unresolved"].to(flat.device)
        last = traj[:, :, -1]  # (batch, fields, *space)
        space = tuple(range(2, last.ndim))
        ok = bounded & (last.std(dim=space) > 1e-6 * (1 + last.abs().mean(dim=space))).all(dim=1)
        reasons["non-finite"] += int((~finite).sum())
        reasons["blew up"] += int((finite & ~bounded).sum())
        reasons["lost all structure"] += int((bounded & ~ok).sum())
        kept.append(traj[ok])
        coeffs.append({k: v[ok.cpu()] for k, v in c.items()})
        need -= int(ok.sum())
        if need == 0:
            break
    else:
        dropped = sum(reasons.values())
        why = ", ".join(f"{n} {r}" for r, n in reasons.items() if n)
        step = f"a smaller fixed dt (now {dt})" if dt is not None else f"a smaller cfl (now {cfl or system.cfl})"
        raise GenerationError(
            f"generate: {system.name} on grid {shape} still lacked {need} of {batch} usable trajectories after "
            f"{max_attempts} attempts (dropped: {why}). Non-finite or blown-up trajectories need {step}, "
            f"narrower coefficient ranges {system.ranges} or a finer grid (an under-resolved system can diverge "
            f"whatever the step); trajectories that lose all structure usually mean the grid is too coarse to "
            f"resolve the system's patterns (use more points)",
            dropped,
            reasons,
        )
    return Trajectories(
        data=torch.cat(kept),
        coefficients={k: torch.cat([c[k] for c in coeffs]) for k in coeffs[0]},
        system=system.name,
        fields=system.field_names(len(shape)),
        dt=smallest,
        interval=used,
        length=length,
        dropped=sum(reasons.values()),
        drop_reasons=reasons,
        steps=steps,
        cfl=cfl_max,
    )
