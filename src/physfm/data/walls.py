"""Trajectories with walls and open boundaries, from the periodic solver, by the method of images.

The solver of :mod:`physfm.data.pde` is pseudo-spectral: every box it knows is periodic. The
Well's data sets also have walls and open boundaries, and a model tested only on periodic
fields never meets the question those raise: what lies beyond the edge? This module makes
non-periodic data with the same solver, exactly, in two ways (:func:`walled`):

**Walls: the method of images.** Let :math:`u` solve a PDE that is unchanged by the mirror
:math:`x \\to -x` (diffusion, Gray-Scott, Kuramoto-Sivashinsky: every term is even in
:math:`\\partial_x`), on a periodic box of side :math:`2L`, from an initial state that is
mirror-symmetric, :math:`u_0(x) = u_0(-x)`. Then :math:`u(x) = u(-x)` at all times (the mirror
image of the solution solves the same problem from the same start), so
:math:`\\partial_x u = 0` on the mirror lines :math:`x = 0` and :math:`x = L`: restricted to
:math:`[0, L]`, :math:`u` is the solution of the PDE in a box with *no-flux walls* (homogeneous
Neumann conditions) at both ends. On the grid, the mirror is the flip :math:`j \\to 2N - 1 - j`
of :math:`2N` points, whose mirror lines lie on cell faces: the half :math:`j < N` is a
cell-centred box with its walls on the faces :math:`j = -1/2` and :math:`j = N - 1/2`, and its
ghost cells beyond a wall are the mirror images :math:`u_{-1-j} = u_j` (the ``"symmetric"``
padding of :mod:`physfm.nn.compression`). The solver keeps the symmetry up to rounding (the
spectral derivatives, the dealiasing rule and pointwise products all commute with the flip).

**Open boundaries: a window of a larger box.** Along an axis without walls, the half of the
doubled box is a window of a field that goes on beyond both edges: the flow passes through,
which is what The Well calls an open boundary. Nothing about the field beyond the window is
known to a model that sees the window only.

Periodic axes cannot be mixed in: the solver's box is cubic (one side for every axis), so an
axis of side :math:`L` beside doubled ones would need another box. Every axis is therefore a
wall axis or an open one. The box is doubled along every axis, so a trajectory costs
:math:`2^d` times the periodic one on the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from physfm.data.pde import System, Trajectories, generate, get_system

__all__ = ["mirrored", "walled", "MIRROR_SYMMETRIC"]

#: systems whose equations are unchanged by a mirror x -> -x of one axis with every field kept
#: (even fields), so that the method of images gives no-flux walls
MIRROR_SYMMETRIC = ("diffusion", "gray_scott", "kuramoto_sivashinsky")

AXES = ("x", "y", "z")


def _axes(walls: Sequence[int], d: int) -> tuple[int, ...]:
    if isinstance(walls, int) or not all(isinstance(a, int) and not isinstance(a, bool) for a in walls):
        raise TypeError(f"walled: walls must be a sequence of spatial axis numbers, got {walls!r}")
    walls = tuple(sorted(set(walls)))
    if any(not 0 <= a < d for a in walls):
        raise ValueError(f"walled: walls {walls} must be spatial axes among {tuple(range(d))} of a {d}D grid")
    return walls


def mirrored(system: str | System, walls: Sequence[int]) -> System:
    """``system`` whose random initial states are mirror-symmetric along the spatial axes
    ``walls``: :math:`u_0 \\leftarrow (u_0 + \\mathrm{flip}(u_0)) / 2`, the flip
    :math:`j \\to N - 1 - j` of each of those axes (the same system otherwise: its name,
    coefficients and defaults)."""
    base = get_system(system)
    if base.name not in MIRROR_SYMMETRIC:
        raise ValueError(
            f"mirrored: {base.name!r} is not unchanged by a mirror of its fields (one of {MIRROR_SYMMETRIC}), "
            f"so mirror-symmetric states do not stay symmetric and give no walls"
        )
    cls = type(base)
    axes = tuple(walls)

    def initial(self, batch, shape, generator):
        u = cls.initial(self, batch, shape, generator)  # (batch, fields, *shape)
        for a in axes:
            u = 0.5 * (u + torch.flip(u, dims=[2 + a]))
        return u

    return type(f"Mirrored{cls.__name__}", (cls,), {"initial": initial})(ranges=base.ranges)


def walled(
    system: str | System,
    *,
    batch: int,
    shape: Sequence[int],
    frames: int,
    walls: Sequence[int] = (0,),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    length: float | None = None,
    **options,
) -> Trajectories:
    """``batch`` trajectories on ``shape`` with no-flux walls at both ends of each axis in
    ``walls`` and open boundaries along the others (module docstring).

    They are generated (:func:`physfm.data.pde.generate`, which takes ``options`` such as
    ``interval``) on the grid ``2 * shape`` of a box of side ``2 * length`` (default: the
    system's side), from mirror-symmetric initial states along ``walls`` (:func:`mirrored`), and
    the corner ``[0, N_i)`` of every axis is kept: the grid spacing is that of a periodic run on
    ``shape`` with side ``length``. ``Trajectories.length`` is ``length``; ``meta["boundaries"]``
    names the conditions per axis as The Well does, ``{"x": ("wall", "wall"), "y": ("open",
    "open")}``, which :func:`physfm.data.well.write_well` records, and ``meta["symmetry_error"]``
    is the largest departure from the mirror symmetry over the doubled box, relative to the
    largest value (rounding: the walls are exact up to it).
    """
    shape = tuple(int(n) for n in shape)
    d = len(shape)
    axes = _axes(walls, d)
    base = get_system(system)
    side = base.length if length is None else float(length)
    big = generate(
        mirrored(base, axes),
        batch=batch,
        shape=tuple(2 * n for n in shape),
        frames=frames,
        generator=generator,
        device=device,
        dtype=dtype,
        length=2 * side,
        **options,
    )
    data = big.data
    mirror = max((float((data - torch.flip(data, dims=[3 + a])).abs().max()) for a in axes), default=0.0)
    scale = float(data.abs().max()) or 1.0
    corner = data[(slice(None),) * 3 + tuple(slice(0, n) for n in shape)].contiguous()
    boundaries = {AXES[a]: ("wall", "wall") if a in axes else ("open", "open") for a in range(d)}
    return Trajectories(
        data=corner,
        coefficients=big.coefficients,
        system=big.system,
        fields=big.fields,
        dt=big.dt,
        interval=big.interval,
        length=side,
        dropped=big.dropped,
        drop_reasons=big.drop_reasons,
        steps=big.steps,
        cfl=big.cfl,
        meta={**big.meta, "boundaries": boundaries, "symmetry_error": mirror / scale},
    )
