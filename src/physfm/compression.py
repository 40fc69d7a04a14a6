"""Causal space-time convolutions whose compression ratio is chosen at run time.

Tensors are ``(batch, channels, time, *space)`` with 1, 2 or 3 spatial axes. Every convolution
here is *factorised*: a spatial convolution applied to each frame (time folded into the batch,
``conv1d/2d/3d`` with circular padding for periodic fields) and a temporal convolution applied
to each point (space folded into the batch, ``conv1d``). One implementation then serves 1D, 2D
and 3D space, where a joint 4D convolution does not even exist in torch.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["SpatialConv", "CausalTimeConv", "FlexPatch", "FlexUnpatch", "check_frames", "latent_frames"]

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


class SpatialConv(nn.Module):
    """A per-frame spatial convolution with circular padding (kernel ``k``, odd), any of 1-3D."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, *, spatial_dims: int = 2, bias: bool = True):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"SpatialConv: kernel must be odd to keep the grid, got {kernel}")
        if spatial_dims not in _CONV:
            raise ValueError(f"SpatialConv: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        self.d, self.k, self.c_in, self.c_out = spatial_dims, kernel, c_in, c_out
        self.weight = nn.Parameter(torch.empty(c_out, c_in, *[kernel] * spatial_dims))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.d, self.c_in, "SpatialConv")
        n, t = x.shape[0], x.shape[2]
        y = rearrange(x, "n c t ... -> (n t) c ...")
        if self.k > 1:
            y = F.pad(y, [self.k // 2] * (2 * self.d), mode="circular")
        y = _CONV[self.d](y, self.weight, self.bias)
        return rearrange(y, "(n t) c ... -> n c t ...", n=n, t=t)


class CausalTimeConv(nn.Module):
    """A per-point temporal convolution that pads only the past: output ``t`` sees inputs ``<= t``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, *, bias: bool = True):
        super().__init__()
        self.k, self.c_in, self.c_out = kernel, c_in, c_out
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 4 or x.shape[1] != self.c_in:
            raise ValueError(f"CausalTimeConv: expected (batch, {self.c_in}, time, *space), got shape {tuple(x.shape)}")
        space = x.shape[3:]
        y = rearrange(x, "n c t ... -> (n ...) c t")
        y = F.conv1d(F.pad(y, (self.k - 1, 0)), self.weight, self.bias)
        return _unfold_space(y, x.shape[0], space)


def _unfold_space(y: torch.Tensor, n: int, space: Sequence[int]) -> torch.Tensor:
    """``((n *space), c, t) -> (n, c, t, *space)``."""
    y = y.reshape(n, *space, y.shape[1], y.shape[2])
    d = len(space)
    return y.permute(0, d + 1, d + 2, *range(1, d + 1))


def _allowed(base: int, name: str) -> tuple[int, ...]:
    if base < 1:
        raise ValueError(f"{name} must be >= 1, got {base}")
    return tuple(s for s in range(1, base + 1) if base % s == 0)


class _Flex(nn.Module):
    """Shared machinery of FlexPatch and FlexUnpatch: base kernels and stride checks."""

    pool = "sum"

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
            raise ValueError(f"{type(self).__name__}: spatial stride {stride} is not one of {self.strides} (divisors of patch={self.patch})")
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
        y = rearrange(x, "n c t ... -> (n t) c ...")
        y = _CONV[self.d](y, self.space_kernel(stride), None, stride=stride)
        y = rearrange(y, "(n t) c ... -> n c t ...", n=n, t=t)
        if time_stride > 1 or self.time_patch > 1:
            small = y.shape[3:]
            z = rearrange(y, "n c t ... -> (n ...) c t")
            z = F.conv1d(F.pad(z, (time_stride - 1, 0)), self.time_kernel(time_stride), None, stride=time_stride)
            y = _unfold_space(z, n, small)
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
        n, tau, small = z.shape[0], z.shape[2], z.shape[3:]
        frames = frames if frames is not None else 1 + (tau - 1) * time_stride
        if not (tau - 1) * time_stride + 1 <= frames <= tau * time_stride:
            raise ValueError(f"FlexUnpatch: {tau} latent frames at time stride {time_stride} cannot give {frames} frames")
        y = rearrange(z, "n c t ... -> (n t) c ...")
        y = _CONV_T[self.d](y, self.space_kernel(stride), None, stride=stride)
        y = rearrange(y, "(n t) c ... -> n c t ...", n=n, t=tau)
        if time_stride > 1 or self.time_patch > 1:
            big = y.shape[3:]
            w = self.time_kernel(time_stride)  # (c_out, c_out, s_t) used as a transposed kernel
            u = rearrange(y, "n c t ... -> (n ...) c t")
            u = F.conv_transpose1d(u, w, None, stride=time_stride)  # latent tau -> frames [tau s_t, tau s_t + s_t)
            y = _unfold_space(u[..., :frames], n, big)
        return y + self.bias.reshape(1, -1, *[1] * (self.d + 1))
