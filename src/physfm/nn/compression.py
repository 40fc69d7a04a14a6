"""Causal space-time convolutions whose compression ratio is chosen at run time.

Tensors are ``(batch, channels, time, *space)`` with 1, 2 or 3 spatial axes. Every convolution
here is *factorised*: a spatial convolution applied to each frame (time folded into the batch,
``conv1d/2d/3d``, padded as the boundaries of the data are: circular by default, for periodic
fields) and a temporal convolution applied
to each point (space flattened to one axis, a ``conv2d`` with a ``(k, 1)`` kernel on the view
``(n, c, time, prod(space))``, which needs no copy). One implementation then serves 1D, 2D and
3D space, where a joint 4D convolution does not even exist in torch.

**Causality.** A temporal convolution pads only the past: output frame ``t`` sees input frames
``<= t``. Compression in time keeps that property strictly (Sotoudeh et al. 2026 build their
tokeniser from causal convolutions so that the latent of a frame never depends on later frames):
a sequence of ``T = 1 + s_t n`` frames is padded on the past side with ``s_t - 1`` zero frames
and cut into groups of ``s_t``, so latent ``tau`` summarises frames ``(tau - 1) s_t + 1 ... tau s_t``
and latent 0 the first frame alone (as in MAGVIT-v2). The decoder mirrors this and places the
``s_t`` frames that latent ``tau`` produces at ``tau s_t ... tau s_t + s_t - 1``: a reconstruction of
frame ``t`` uses only latents of frames ``<= t``. The frames between two latents are therefore
*predicted* from the past, not reconstructed: temporal compression in a strictly causal
tokeniser costs more than spatial compression, and the book measures how much.

**Flexible compression with shared weights** (the "patch modulator" of Mukhopadhyay et al. 2025,
extended to causal time as Sotoudeh et al. 2026 do). A :class:`FlexPatch` layer owns one base
kernel of size ``P`` (the largest stride) per axis. For a stride ``s`` that divides ``P`` it uses

.. math::  w_s[j] = \\sum_{i=0}^{P/s-1} w_P[j P/s + i] \\qquad (\\text{encoder}),

which makes a stride-``s`` patch give exactly the token the base kernel gives to that patch
upsampled ``P/s`` times by repetition, and :class:`FlexUnpatch` uses the block *mean*, which makes
its ``s``-patch the ``P``-patch it would have produced, averaged down. So one set of weights serves
every stride, and a model trained at one ratio is already sensible at the others.

*Why this choice.* Mukhopadhyay et al. offer two modulators. Their stride modulator (CSM) keeps
one kernel of size ``P`` and changes only the stride, so patches overlap at ``s < P``: the latent
grid is right, but the transposed convolution of the decoder then sums overlapping
contributions (checkerboard artefacts), and in time a latent would look ``P`` frames back
whatever ``s_t`` is. Their kernel modulator (CKM) resizes the kernel to the stride with
FlexiViT's pseudo-inverse resize (Beyer et al. 2023): the new kernel ``w_s`` is the one whose
token on a patch ``x`` best matches the base kernel's token on the patch resized to ``P``,
``<w_s, x> ~= <w_P, B x>``. We take the kernel modulator, with ``B`` the nearest-neighbour
(repeat) upsampling: then the match is *exact* for every patch, ``w_s = B^T w_P`` is the block sum
above, no least-squares solve is needed, it costs one reshape and a sum per call, and patches
never overlap, in space or in time, so causality and the latent grid are the same for every
stride. The alternative, a bank of independent kernels per stride, would not share weights.
At time stride 1 the pooled time kernel has a single tap, a channel mixing, and is folded into
the spatial kernel: one convolution instead of two, and no cost for the flexibility in time.

**Padding that follows the boundaries.** A ``k x k`` spatial convolution needs ``k // 2`` values
beyond each edge of the grid. The book's synthetic systems are periodic, and there the right
values are those of the opposite side: circular padding, the default. The Well's data sets have
walls and open boundaries too (Ohana et al. 2024), and there circular padding glues the two
sides of the box together: a value at the top wall is convolved with values at the bottom one.
:class:`SpatialConv` therefore takes a padding mode per axis and side (:func:`padding_modes`),
and :func:`set_padding` switches every spatial convolution of a built model, a pre-trained
tokeniser included, without touching its weights (the padding is not a parameter and is not
saved with them: it belongs to the data). :data:`BOUNDARY_PADDING` maps The Well's boundary
conditions to modes, :func:`padding_for` a data set's boundaries to a padding:

- ``periodic`` -> ``"circular"``: the values beyond the edge *are* those of the other side;
- ``wall`` -> ``"symmetric"``: the half-sample mirror :math:`x_{-1-j} = x_j`, the ghost cells of
  a solid wall in a cell-centred finite-volume code (LeVeque 2002, chapter 7) and the exact
  continuation of a field with zero normal derivative at the wall (no flux; a cell-centred grid
  has its wall on a cell face, so the mirror repeats the edge cell). The normal velocity at a
  wall is mirrored with the opposite sign; a single-channel tokeniser does not know which
  channel that is, and the even mirror is right for every other field (density, pressure,
  tangential velocity, concentrations);
- ``open`` -> ``"replicate"``: the edge value held constant beyond the edge, zero-order
  extrapolation, the outflow (transmissive) ghost cells of the same codes (LeVeque 2002,
  chapter 7): a field that leaves the box is continued without inventing structure.

Zero padding, the usual choice of image networks, is available (``"zeros"``) but not mapped: for
a normalised field it puts the mean beyond every edge, a jump that a tokeniser pre-trained on
periodic data has never seen; ``"reflect"`` (the whole-sample mirror :math:`x_{-j} = x_j` of
``torch.nn.functional.pad``) is the wall of a node-centred grid. For a ``3 x 3`` kernel
(one cell of padding) ``"symmetric"`` and ``"replicate"`` pad the same values; they differ for
wider kernels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

__all__ = [
    "SpatialConv",
    "CausalTimeConv",
    "FlexPatch",
    "FlexUnpatch",
    "check_frames",
    "latent_frames",
    "PADDING_MODES",
    "BOUNDARY_PADDING",
    "padding_modes",
    "padding_for",
    "pad",
    "set_padding",
    "padding_of",
    "boundary_distance",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _check_input(x: torch.Tensor, d: int, channels: int, who: str) -> None:
    if x.ndim != d + 3:
        raise ValueError(f"{who}: expected (batch, channels, time, *space) with {d} spatial axes, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{who}: expected {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")


def check_frames(frames: int, time_stride: int) -> None:
    """Raise a ValueError unless ``frames = 1 + time_stride * n`` (a length that compresses)."""
    if frames < 1 or (frames - 1) % time_stride:
        ok = ", ".join(str(1 + time_stride * n) for n in range(1, 4))
        raise ValueError(
            f"time length {frames} cannot be compressed with time stride {time_stride}: "
            f"need 1 + {time_stride}*n frames (e.g. {ok})"
        )


def latent_frames(frames: int, time_stride: int) -> int:
    """Latent frames for ``frames`` input frames: ``1 + (frames - 1) / time_stride``."""
    check_frames(frames, time_stride)
    return 1 + (frames - 1) // time_stride


# ---------------------------------------------------------------------------------------------
# Spatial padding per axis and side
# ---------------------------------------------------------------------------------------------

#: the padding modes of :class:`SpatialConv` (module docstring)
PADDING_MODES = ("circular", "symmetric", "reflect", "replicate", "zeros")
#: The Well's boundary conditions -> padding modes (module docstring: why these)
BOUNDARY_PADDING = {"periodic": "circular", "wall": "symmetric", "open": "replicate"}

Modes = tuple[tuple[str, str], ...]  # per spatial axis, (low side, high side)
Padding = str | Sequence[str | Sequence[str]]


def padding_modes(padding: Padding, spatial_dims: int, who: str = "padding_modes") -> Modes:
    """``((low, high), ...)``, one pair per spatial axis, from ``padding``: one mode for every
    axis (``"circular"``), or one entry per axis, each a mode or a ``(low, high)`` pair
    (``[("symmetric", "symmetric"), "replicate"]``). Modes are :data:`PADDING_MODES`; circular
    padding wraps an axis around, so it is both sides of an axis or neither."""

    def bad(detail: str) -> ValueError:
        return ValueError(
            f"{who}: padding must be one of {PADDING_MODES} or a sequence of {spatial_dims} such modes or "
            f"(low, high) pairs, one per spatial axis; got {padding!r} ({detail})"
        )

    if isinstance(padding, str):
        padding = [padding] * spatial_dims
    if not isinstance(padding, Sequence) or len(padding) != spatial_dims:
        raise bad(f"expected {spatial_dims} entries")
    out = []
    for axis, entry in enumerate(padding):
        pair = (entry, entry) if isinstance(entry, str) else tuple(entry) if isinstance(entry, Sequence) else ()
        if len(pair) != 2 or any(not isinstance(m, str) or m not in PADDING_MODES for m in pair):
            raise bad(f"axis {axis} has {entry!r}")
        if (pair[0] == "circular") != (pair[1] == "circular"):
            raise bad(f"axis {axis} is circular on one side only; a periodic axis wraps on both")
        out.append(pair)
    return tuple(out)


def padding_for(
    boundaries: Mapping[str, Sequence[str]] | Sequence[Sequence[str] | str], axes: Sequence[str] | None = None
) -> Modes:
    """The padding that matches boundary conditions named as The Well names them.

    Args:
        boundaries: per spatial axis, ``(low, high)`` conditions (or one for both sides), each
            ``"periodic"``, ``"wall"`` or ``"open"``; a mapping ``axis -> (low, high)`` as
            :attr:`physfm.data.well.WellWindows.boundary_conditions` gives it (in its order, or in
            the order of ``axes``), or a sequence in axis order.

    Returns:
        ``((low, high), ...)`` modes of :data:`BOUNDARY_PADDING`, for :func:`set_padding`.
    """
    if isinstance(boundaries, Mapping):
        names = list(boundaries) if axes is None else list(axes)
        missing = [a for a in names if a not in boundaries]
        if missing:
            raise ValueError(f"padding_for: boundaries has no axes {missing}; it has {list(boundaries)}")
        entries = [boundaries[a] for a in names]
    elif isinstance(boundaries, Sequence) and not isinstance(boundaries, str):
        entries = list(boundaries)
    else:
        raise TypeError(
            f"padding_for: boundaries must map axes to (low, high) conditions or list them in axis order, "
            f"got {type(boundaries).__name__} {boundaries!r}"
        )
    out = []
    for entry in entries:
        pair = (entry, entry) if isinstance(entry, str) else tuple(entry)
        if len(pair) != 2 or any(str(b).lower() not in BOUNDARY_PADDING for b in pair):
            raise ValueError(
                f"padding_for: each axis needs (low, high) conditions among {sorted(BOUNDARY_PADDING)}, "
                f"got {entry!r} in {boundaries!r}"
            )
        out.append(tuple(BOUNDARY_PADDING[str(b).lower()] for b in pair))
    return padding_modes(out, len(out), "padding_for")


def _side(x: torch.Tensor, axis: int, p: int, mode: str, low: bool) -> torch.Tensor:
    """The ``p`` values beyond the low (or high) end of ``axis`` for ``mode``."""
    n = x.shape[axis]
    if mode == "zeros":
        shape = list(x.shape)
        shape[axis] = p
        return x.new_zeros(shape)
    if mode == "circular":
        index = torch.arange(n - p, n) if low else torch.arange(0, p)
        index = index % n
    elif mode == "replicate":
        index = torch.zeros(p, dtype=torch.long) if low else torch.full((p,), n - 1)
    elif mode == "symmetric":  # x[-1 - j] = x[j]
        index = torch.arange(p - 1, -1, -1) if low else torch.arange(n - 1, n - 1 - p, -1)
    else:  # reflect: x[-j] = x[j]
        index = torch.arange(p, 0, -1) if low else torch.arange(n - 2, n - 2 - p, -1)
    return x.index_select(axis, index.to(x.device))


def pad(x: torch.Tensor, amount: int, modes: Modes) -> torch.Tensor:
    """``x (..., *space)`` with ``amount`` values added at both ends of each of its last
    ``len(modes)`` axes, axis ``i`` padded with ``modes[i] = (low, high)`` (:data:`PADDING_MODES`).

    Raises:
        ValueError: an axis too short for its mode (``"reflect"`` needs more than ``amount``
            points, ``"circular"`` and ``"symmetric"`` at least ``amount``).
    """
    d = len(modes)
    if amount == 0:
        return x
    if all(m == ("circular", "circular") for m in modes) and amount <= min(x.shape[-d:]):
        return F.pad(x, [amount] * (2 * d), mode="circular")  # one call, as every periodic model pads
    for i, (lo, hi) in enumerate(modes):
        axis = x.ndim - d + i
        n = x.shape[axis]
        need = max((amount + 1 if m == "reflect" else amount if m in ("circular", "symmetric") else 1) for m in (lo, hi))
        if n < need:
            raise ValueError(
                f"pad: spatial axis {i} has {n} points, too few for {amount} cells of {(lo, hi)} padding "
                f"(needs at least {need}); use a larger grid, a smaller kernel or 'replicate'/'zeros'"
            )
        x = torch.cat([_side(x, axis, amount, lo, True), x, _side(x, axis, amount, hi, False)], dim=axis)
    return x


class SpatialConv(nn.Module):
    """A per-frame spatial convolution (kernel ``k``, odd), any of 1-3D, keeping the grid.

    Args:
        padding: how values beyond the edges are made, per spatial axis and side
            (:func:`padding_modes`; default ``"circular"``, for periodic fields); change it on a
            built layer with :meth:`set_padding` (or every layer of a model with :func:`set_padding`).
    """

    lora_weight = "weight"  # the kernel physfm.nn.lora adapts (see physfm.nn.lora.LoRAKernel)

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 3, *, spatial_dims: int = 2, bias: bool = True, padding: Padding = "circular"
    ):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"SpatialConv: kernel must be odd to keep the grid, got {kernel}")
        if spatial_dims not in _CONV:
            raise ValueError(f"SpatialConv: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        self.d, self.k, self.c_in, self.c_out = spatial_dims, kernel, c_in, c_out
        self.weight = nn.Parameter(torch.empty(c_out, c_in, *[kernel] * spatial_dims))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.set_padding(padding)

    def set_padding(self, padding: Padding) -> SpatialConv:
        """Pad with ``padding`` from now on (:func:`padding_modes`); the weights stay as they are."""
        self.padding = padding_modes(padding, self.d, "SpatialConv")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.d, self.c_in, "SpatialConv")
        n, t = x.shape[0], x.shape[2]
        y = rearrange(x, "n c t ... -> (n t) c ...")
        if self.k > 1:
            y = pad(y, self.k // 2, self.padding)
        y = _CONV[self.d](y, self.weight, self.bias)
        return rearrange(y, "(n t) c ... -> n c t ...", n=n, t=t)

    def extra_repr(self) -> str:
        pads = "" if all(m == ("circular", "circular") for m in self.padding) else f", padding={self.padding}"
        return f"{self.c_in}, {self.c_out}, kernel={self.k}, spatial_dims={self.d}{pads}"


def boundary_distance(shape: Sequence[int], padding: Padding) -> torch.Tensor:
    """Cells from every grid point to the nearest edge that is not periodic: ``(*shape)``, float,
    ``inf`` where every axis is circular. Along an axis of ``n`` cells, cell ``j`` is ``j`` cells
    from the low edge and ``n - 1 - j`` from the high one (the edge cells are at 0); a side
    padded circularly is no edge. Where the padding of a model matters: a convolution of radius
    ``r`` sees the padded values only from points less than ``r`` cells from such an edge."""
    shape = tuple(int(n) for n in shape)
    modes = padding_modes(padding, len(shape), "boundary_distance")
    out = torch.full(shape, math.inf)
    for axis, (n, (lo, hi)) in enumerate(zip(shape, modes)):
        j = torch.arange(n, dtype=torch.float32)
        view = [1] * len(shape)
        view[axis] = n
        for side, dist in (("low", j), ("high", n - 1 - j)):
            if (lo if side == "low" else hi) != "circular":
                out = torch.minimum(out, dist.reshape(view).expand(shape))
    return out


def set_padding(module: nn.Module, padding: Padding | Mapping[str, Sequence[str]]) -> nn.Module:
    """Switch every :class:`SpatialConv` inside ``module`` (a tokeniser, a next-frame model) to
    ``padding``: modes (:func:`padding_modes`), or boundary conditions ``axis -> (low, high)``
    as :attr:`physfm.data.well.WellWindows.boundary_conditions` gives them (:func:`padding_for`).
    The weights are not touched: a model pre-trained on periodic data is applied to a walled
    data set by switching its padding. Returns ``module``."""
    if isinstance(padding, Mapping):
        padding = padding_for(padding)
    convs = [m for m in module.modules() if isinstance(m, SpatialConv)]
    if not convs:
        raise ValueError(f"set_padding: {type(module).__name__} holds no SpatialConv to pad")
    for conv in convs:
        conv.set_padding(padding)
    return module


def padding_of(module: nn.Module) -> Modes:
    """The padding of the spatial convolutions of ``module`` (a ValueError if they differ)."""
    found = {m.padding for m in module.modules() if isinstance(m, SpatialConv)}
    if len(found) != 1:
        raise ValueError(
            f"padding_of: {type(module).__name__} has {'no SpatialConv' if not found else f'mixed paddings {sorted(found)}'}"
        )
    return found.pop()


class CausalTimeConv(nn.Module):
    """A per-point temporal convolution that pads only the past: output ``t`` sees inputs ``<= t``."""

    lora_weight = "weight"

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, *, bias: bool = True):
        super().__init__()
        self.k, self.c_in, self.c_out = kernel, c_in, c_out
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 4 or x.shape[1] != self.c_in:
            raise ValueError(f"CausalTimeConv: expected (batch, {self.c_in}, time, *space), got shape {tuple(x.shape)}")
        return _along_time(x, lambda y: F.conv2d(F.pad(y, (0, 0, self.k - 1, 0)), self.weight[..., None], self.bias))


def _along_time(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` to ``x`` viewed as ``(n, c, t, prod(space))`` (a 2D image of time by points) and
    view the result ``(n, c', t', prod(space))`` back as ``(n, c', t', *space)``."""
    n, c, t, *space = x.shape
    y = fn(x.reshape(n, c, t, -1))
    return y.reshape(*y.shape[:3], *space)


def _allowed(base: int, name: str) -> tuple[int, ...]:
    if base < 1:
        raise ValueError(f"{name} must be >= 1, got {base}")
    return tuple(s for s in range(1, base + 1) if base % s == 0)


class _Flex(nn.Module):
    """Shared machinery of FlexPatch and FlexUnpatch: base kernels and stride checks."""

    pool = "sum"
    lora_weight = "space_weight"  # LoRA adapts the spatial base kernel (pooled per stride as before)

    def __init__(self, c_in: int, c_out: int, *, patch: int, time_patch: int, spatial_dims: int):
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"{type(self).__name__}: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        self.d, self.c_in, self.c_out = spatial_dims, c_in, c_out
        self.patch, self.time_patch = patch, time_patch
        self.strides = _allowed(patch, "patch")
        self.time_strides = _allowed(time_patch, "time_patch")
        self.space_weight = nn.Parameter(torch.empty(*self._space_shape(), *[patch] * spatial_dims))
        self.time_weight = nn.Parameter(torch.empty(c_out, c_out, time_patch))
        self.bias = nn.Parameter(torch.zeros(c_out))
        nn.init.kaiming_uniform_(self.space_weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.time_weight, a=math.sqrt(5))
        with torch.no_grad():  # the temporal base kernel starts as "copy the frame" plus noise
            self.time_weight.mul_(0.1)
            self.time_weight[:, :, -1] += torch.eye(c_out)

    def _space_shape(self):
        return (self.c_out, self.c_in)

    def check_stride(self, stride: int, time_stride: int) -> None:
        if stride not in self.strides:
            raise ValueError(
                f"{type(self).__name__}: spatial stride {stride} is not one of {self.strides} (divisors of patch={self.patch})"
            )
        if time_stride not in self.time_strides:
            raise ValueError(
                f"{type(self).__name__}: time stride {time_stride} is not one of {self.time_strides} (divisors of time_patch={self.time_patch})"
            )

    def _pooled(self, w: torch.Tensor, axes: Sequence[int], stride: int, base: int) -> torch.Tensor:
        """Pool the base kernel over blocks of ``base // stride`` along ``axes`` (sum or mean)."""
        r = base // stride
        if r == 1:
            return w
        shape = list(w.shape)
        for a in sorted(axes, reverse=True):
            shape[a : a + 1] = [stride, r]
        w = w.reshape(shape)
        block_axes = [a + i + 1 for i, a in enumerate(sorted(axes))]
        return w.sum(block_axes) if self.pool == "sum" else w.mean(block_axes)

    def space_kernel(self, stride: int) -> torch.Tensor:
        return self._pooled(self.space_weight, range(2, 2 + self.d), stride, self.patch)

    def time_kernel(self, time_stride: int) -> torch.Tensor:
        return self._pooled(self.time_weight, [2], time_stride, self.time_patch)


class FlexPatch(_Flex):
    """Patchify: ``(n, c_in, T, *S) -> (n, c_out, 1 + (T-1)/s_t, *S/s)`` with strides chosen per call.

    Args:
        patch: base spatial patch; allowed spatial strides are its divisors.
        time_patch: base temporal patch; allowed time strides are its divisors.
    """

    pool = "sum"

    def forward(self, x: torch.Tensor, stride: int, time_stride: int) -> torch.Tensor:
        self.check_stride(stride, time_stride)
        _check_input(x, self.d, self.c_in, "FlexPatch")
        n, t, space = x.shape[0], x.shape[2], x.shape[3:]
        check_frames(t, time_stride)
        bad = [s for s in space if s % stride]
        if bad:
            raise ValueError(f"FlexPatch: spatial stride {stride} does not divide the grid {tuple(space)}")
        w = self.space_kernel(stride)
        if time_stride == 1 and self.time_patch > 1:  # a one-tap time kernel: fold it into the spatial one
            w = einsum(self.time_kernel(1)[:, :, 0], w, "o c, c i ... -> o i ...")
        y = rearrange(x, "n c t ... -> (n t) c ...")
        y = _CONV[self.d](y, w, None, stride=stride)
        y = rearrange(y, "(n t) c ... -> n c t ...", n=n, t=t)
        if time_stride > 1:  # groups of s_t frames, the first group padded with s_t - 1 zero frames
            w_t = self.time_kernel(time_stride)[..., None]
            y = _along_time(y, lambda v: F.conv2d(F.pad(v, (0, 0, time_stride - 1, 0)), w_t, stride=(time_stride, 1)))
        return y + self.bias.reshape(1, -1, *[1] * (self.d + 1))


class FlexUnpatch(_Flex):
    """Un-patchify, the mirror of :class:`FlexPatch`: ``(n, c_in, tau, *s) -> (n, c_out, T, *s * stride)``.

    Latent ``tau`` produces frames ``tau*s_t ... tau*s_t + s_t - 1``, so frame ``t`` depends only on
    latents ``<= t // s_t``; pass ``frames`` to cut the output to the input's length.
    """

    pool = "mean"

    def _space_shape(self):
        return (self.c_in, self.c_out)  # conv_transpose weight layout

    def forward(self, z: torch.Tensor, stride: int, time_stride: int, frames: int | None = None) -> torch.Tensor:
        self.check_stride(stride, time_stride)
        _check_input(z, self.d, self.c_in, "FlexUnpatch")
        n, tau = z.shape[0], z.shape[2]
        frames = frames if frames is not None else 1 + (tau - 1) * time_stride
        if not (tau - 1) * time_stride + 1 <= frames <= tau * time_stride:
            raise ValueError(f"FlexUnpatch: {tau} latent frames at time stride {time_stride} cannot give {frames} frames")
        w = self.space_kernel(stride)  # (c_in, c_out, *k), the transposed-convolution layout
        if time_stride == 1 and self.time_patch > 1:  # a one-tap time kernel: fold it into the spatial one
            w = einsum(w, self.time_kernel(1)[:, :, 0], "i c ..., c o -> i o ...")
        y = rearrange(z, "n c t ... -> (n t) c ...")
        y = _CONV_T[self.d](y, w, None, stride=stride)
        y = rearrange(y, "(n t) c ... -> n c t ...", n=n, t=tau)
        if time_stride > 1:  # latent tau -> frames [tau s_t, tau s_t + s_t), cut to ``frames``
            w_t = self.time_kernel(time_stride)[..., None]  # (c_out, c_out, s_t, 1), a transposed kernel
            y = _along_time(y, lambda v: F.conv_transpose2d(v, w_t, stride=(time_stride, 1))[:, :, :frames])
        return y + self.bias.reshape(1, -1, *[1] * (self.d + 1))
