"""Fourier neural operator layers: an N-dimensional spectral convolution and an FNO decoder.

A spectral convolution (Li et al. 2021) is a convolution whose kernel is learnt in Fourier
space and truncated to the lowest modes. For an input ``v`` with ``c_in`` channels on a periodic
grid,

.. math::
    (\\mathcal K v)(x) = \\mathcal F^{-1}\\big[\\, R_k\\, \\hat v_k \\,\\big](x), \\qquad
    R_k \\in \\mathbb C^{c_{out}\\times c_{in}}, \\quad R_k = 0 \\text{ outside the kept modes},

one complex matrix per kept wavenumber ``k``. Because the weights live on wavenumbers, not on
grid points, the same layer applies to any resolution. With the transforms normalised as
``rfftn(norm="forward")``, the Fourier coefficients of a band-limited field do not depend on the
grid it is sampled on, so neither does the layer's output (discretisation invariance). One
exception is inherent in the mode layout: at an even ``m`` the edge frequency ``m/2`` is, on a grid
of ``m`` points, the Nyquist frequency (one coefficient for both signs), and on finer grids two
frequencies, of which the layout keeps ``-m/2`` alone on every axis but the last; a field with
content at ``m/2`` therefore gives a different output on the two grids. Fields band-limited below
``m/2``, or odd ``n_modes``, are unaffected (``tests/test_fno.py`` checks invariance at
:func:`max_modes` for such fields on grids of ``N/2`` to ``2N`` and odd sizes).

**Modes**, as neuraloperator counts them: ``n_modes[i]`` is the number of frequencies kept along
axis ``i`` counting both signs, ``-(m//2) ... m//2 + m%2 - 1``; along the last axis, where the real
FFT holds only non-negative frequencies, that is ``0 ... m//2``.

**Another output grid.** On its own grid the layer is neuraloperator's ``SpectralConv``. Asked
for ``out_shape``, it evaluates the trigonometric interpolant of that output at the new points,

.. math::
    y(x) = \\sum_{k \\text{ kept}} \\alpha_k\\, \\mathrm{Re}\\big(\\hat y_k\\, \\phi_k(x)\\big), \\qquad
    \\phi_k(x) = \\prod_i \\phi_{k_i}(x_i), \\quad
    \\phi_{k_i}(x_i) = \\begin{cases} \\cos(2\\pi k_i x_i) & |k_i| = N_i/2 \\\\ e^{2\\pi i k_i x_i} & \\text{otherwise,}\\end{cases}

with ``x`` in periods (``x_i = j / N'_i`` on the output grid), ``N_i`` the *input* grid, and
``alpha_k = 1`` where the last component ``k_d`` is 0 or ``N_d/2``, 2 elsewhere (a mode and its
conjugate).

The Nyquist mode of an even input grid is not an ordinary mode. Its points cannot tell
``exp(+i pi j)`` from ``exp(-i pi j)``: the coefficient stands for both frequencies, half each,
which is the cosine; and on the real (last) axis only its real part is a field of those points
(``irfft`` drops the imaginary part, so those weights get no gradient there either). Read as an
ordinary mode on a finer grid it comes back doubled on the real axis, with the imaginary part
the input grid never saw, and one-sided (a spurious sine) on the other axes. The other way, on a
coarser output grid whose Nyquist frequency was an ordinary one, the mode and its conjugate
fold onto the one value the coarse grid holds there (``alpha = 2`` with ``exp(i pi j)`` real;
counted once, as ``irfft`` would, it comes back halved). With this, ``conv(x, out_shape)`` is
exactly ``fourier_resize(conv(x), out_shape)``, a finer output holds the coarser one at the
shared points; where neither grid has its Nyquist frequency among the kept modes nothing changes.

**Speed.** Few modes are kept, so the transforms are products with the few rows of the DFT
matrix that are needed, one axis at a time: a pruned DFT of ``m N`` multiply-adds per line of
``N`` points, run by the matrix multiply, with nothing of full size formed in Fourier space.
The contraction is one batched complex matrix product with the kept modes as the batch. All of
these are linear maps whose adjoints (conjugate transposed matrices) are their backward, which
is therefore just as pruned. Forward and backward, this is 2.8-7.6x faster than neuraloperator's
FFTs at 16 modes on 64^2-128^2 grids and at 8 modes on 32^3 (medians of three runs of
``benchmarks/bench_fno.py`` on a shared 2-core machine). Much of that margin at 128^2 and 32^3 is
page faults: glibc's ``malloc`` maps every buffer of 32 MiB or more afresh, and neuraloperator's
FFTs make more of them; with ``malloc`` told to keep them (``MALLOC_MMAP_THRESHOLD_=1073741824
MALLOC_TRIM_THRESHOLD_=4294967296``) the layer is 2.3-3.7x faster in every case (one run). The
cost per line grows as ``m N`` instead of ``N log N``; at the largest ``n_modes`` of a 64^2 grid
the per-mode weights take most of the time (putting them modes-first, the contraction) and the
layer is still 2.8-3.7x faster (the benchmark's last row).

:class:`FNODecoder` decodes tokeniser latents ``(n, c, [t,] *latent_space)`` into fields
``(n, fields, [t,] *out_space)`` at any output resolution: a 1x1 lift, a spectral convolution
that maps the latent grid onto the output grid, FNO blocks (spectral convolution plus a 1x1
convolution, GELU) at the output resolution, and a 1x1 projection. A PDE-FM-style model uses it
as its decoder (Li et al. 2021; Kossaifi et al. 2024 for neuraloperator).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["SpectralConv", "FNOBlock", "FNO", "FNODecoder", "max_modes", "fourier_resize"]


def max_modes(shape: Sequence[int]) -> tuple[int, ...]:
    """The largest ``n_modes`` a grid of ``shape`` holds: ``N`` on every axis (all frequencies),
    on the last axis ``2 * (N // 2)`` (the ``N // 2 + 1`` non-negative ones)."""
    shape = tuple(shape)
    return (*shape[:-1], 2 * (shape[-1] // 2))


class SpectralConv(nn.Module):
    """Spectral convolution over the trailing ``len(n_modes)`` axes of ``(n, c_in, *space)``.

    ``forward(x, out_shape=None)``: ``(n, c_in, *space) -> (n, c_out, *out_shape)``; on another
    output grid, the interpolant of the output on the input grid (module docstring).

    Args:
        in_channels, out_channels: channel counts.
        n_modes: frequencies kept per axis, counting both signs (see the module docstring).
        bias: add a learnt per-channel bias.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: Sequence[int], *, bias: bool = True):
        super().__init__()
        n_modes = tuple(int(m) for m in n_modes)
        if not 1 <= len(n_modes) <= 3 or any(m < 1 for m in n_modes):
            raise ValueError(f"SpectralConv: n_modes must be 1 to 3 positive numbers, got {n_modes}")
        self.in_channels, self.out_channels, self.n_modes = in_channels, out_channels, n_modes
        self.d = len(n_modes)
        kept = (*n_modes[:-1], n_modes[-1] // 2 + 1)
        self.kept = kept
        scale = 1.0 / (in_channels * out_channels)
        # real and imaginary parts, (c_in, c_out, *kept, 2); along every axis but the last the
        # modes are stored in frequency order -(m//2) ... m//2 + m%2 - 1 (neuraloperator's order)
        self.weight = nn.Parameter(scale * torch.randn(in_channels, out_channels, *kept, 2))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # the position of frequency 0 among the kept modes, flattened
        self._zero_mode = int(sum((m // 2) * math.prod(kept[i + 1 :]) for i, m in enumerate(n_modes[:-1])))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, n_modes={self.n_modes}"

    def _check_grid(self, shape: Sequence[int], what: str) -> None:
        limit = max_modes(shape)
        if any(m > l for m, l in zip(self.n_modes, limit)):
            raise ValueError(
                f"SpectralConv: n_modes={self.n_modes} exceeds what the {what} grid {tuple(shape)} holds: at most {limit}"
            )

    def forward(self, x: torch.Tensor, out_shape: Sequence[int] | None = None) -> torch.Tensor:
        """``(n, c_in, *space) -> (n, c_out, *out_shape)`` (default ``out_shape``: the input's)."""
        if x.ndim != self.d + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SpectralConv: expected (n, {self.in_channels}, *space) with {self.d} spatial axes, got shape {tuple(x.shape)}"
            )
        shape = tuple(x.shape[2:])
        out_shape = tuple(out_shape) if out_shape is not None else shape
        if len(out_shape) != self.d:
            raise ValueError(f"SpectralConv: out_shape must have {self.d} sizes, got {out_shape}")
        self._check_grid(shape, "input")
        self._check_grid(out_shape, "output")
        leading, k = _frequencies(self.n_modes)
        analysis, synthesis = _transforms(shape, out_shape, leading, k, _real_dtype(x, "SpectralConv"), x.device)
        xh = _LinearMap.apply(x, analysis)  # (*kept, n, c_in): the kept coefficients, modes first
        n = x.shape[0]
        # modes as the batch of one complex matrix product: (M, n, c_in) @ (M, c_in, c_out), the
        # weight put modes-first by one 2D transpose (c_in c_out, M) -> (M, c_in c_out)
        w = _Transposed.apply(rearrange(torch.view_as_complex(self.weight), "ci co ... -> (ci co) (...)"))
        w = w.view(-1, self.in_channels, self.out_channels)
        ys = _ModeProduct.apply(xh.view(-1, n, self.in_channels), w)
        if self.bias is not None:  # a constant field is the zero mode (norm="forward": its value)
            ys[self._zero_mode] += self.bias
        return _LinearMap.apply(ys.view(*self.kept, n, self.out_channels), synthesis)


def _pointwise(c_in: int, c_out: int, d: int) -> nn.Module:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[d](c_in, c_out, 1)


class FNOBlock(nn.Module):
    """``GELU(K v + W v)``: a spectral convolution plus a pointwise (1x1) linear path."""

    def __init__(self, width: int, n_modes: Sequence[int], *, activation: bool = True):
        super().__init__()
        self.spectral = SpectralConv(width, width, n_modes)
        self.pointwise = _pointwise(width, width, len(n_modes))
        self.activation = activation

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        y = self.spectral(v) + self.pointwise(v)
        return F.gelu(y) if self.activation else y


class FNO(nn.Module):
    """The classic FNO of Li et al. (2021): a 1x1 lift, ``blocks`` FNO blocks (the last without
    its activation), a two-layer 1x1 projection; ``(n, c_in, *space) -> (n, c_out, *space)`` on
    any grid that holds ``n_modes``.

    With ``residual=True`` (needs ``c_in == c_out``) it predicts the change of its input,
    ``u + FNO(u)``, the natural form for a time-stepping operator.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_modes: Sequence[int],
        *,
        width: int = 32,
        blocks: int = 4,
        residual: bool = False,
    ):
        super().__init__()
        d = len(n_modes)
        if residual and in_channels != out_channels:
            raise ValueError(f"FNO: residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}")
        self.residual = residual
        self.lift = _pointwise(in_channels, width, d)
        self.blocks = nn.ModuleList([FNOBlock(width, n_modes, activation=i < blocks - 1) for i in range(blocks)])
        self.project = nn.Sequential(_pointwise(width, 2 * width, d), nn.GELU(), _pointwise(2 * width, out_channels, d))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h = self.lift(u)
        for block in self.blocks:
            h = block(h)
        out = self.project(h)
        return u + out if self.residual else out


class FNODecoder(nn.Module):
    """Decode latents ``(n, c_latent, [t,] *latent_space)`` to fields ``(n, fields, [t,] *out_space)``.

    Args:
        latent_channels: channels of the latent.
        fields: output fields.
        n_modes: modes of every spectral convolution (at most what the latent grid holds for the
            first one, which reads the latent grid).
        width, blocks: channels and number of FNO blocks at the output resolution.
        spatial_dims: 1, 2 or 3.

    ``forward(z, out_shape)``: ``out_shape`` is the output grid, any size (finer than the grid
    the decoder was trained on, too). With a time axis (``z.ndim == spatial_dims + 3``) every
    frame is decoded on its own.
    """

    def __init__(
        self,
        latent_channels: int,
        fields: int,
        n_modes: Sequence[int],
        *,
        width: int = 32,
        blocks: int = 2,
        spatial_dims: int | None = None,
    ):
        super().__init__()
        d = spatial_dims or len(n_modes)
        if len(n_modes) != d:
            raise ValueError(f"FNODecoder: n_modes {tuple(n_modes)} must have spatial_dims={d} entries")
        self.d, self.fields = d, fields
        self.lift = _pointwise(latent_channels, width, d)
        self.upsample = SpectralConv(width, width, n_modes)
        self.skip = _pointwise(width, width, d)
        self.blocks = nn.ModuleList([FNOBlock(width, n_modes) for _ in range(blocks)])
        self.project = nn.Sequential(_pointwise(width, 2 * width, d), nn.GELU(), _pointwise(2 * width, fields, d))

    def forward(self, z: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
        out_shape = tuple(out_shape)
        if z.ndim == self.d + 3:  # (n, c, t, *space): decode frame by frame
            n, t = z.shape[0], z.shape[2]
            y = self(rearrange(z, "n c t ... -> (n t) c ..."), out_shape)
            return rearrange(y, "(n t) c ... -> n c t ...", n=n, t=t)
        if z.ndim != self.d + 2:
            raise ValueError(f"FNODecoder: expected (n, c, [t,] *space) with {self.d} spatial axes, got shape {tuple(z.shape)}")
        h = self.lift(z)
        # the skip path is interpolated spectrally too, so the first layer is resolution-free
        h = F.gelu(self.upsample(h, out_shape) + fourier_resize(self.skip(h), out_shape))
        for block in self.blocks:
            h = block(h)
        return self.project(h)


# ------------------------------------------------------------------------------------------------
# Pruned transforms as matrices
#
# Forward, a spectral convolution is analysis -> per-mode product -> synthesis. The analysis
# keeps m_i of the N_i frequencies of every axis: on the last axis a real matrix (2k, N) gives the
# k = m//2 + 1 non-negative coefficients of every line (the real parts in its first k rows, the
# imaginary parts in the other k, so that the product comes out with the modes first, without a
# transposed copy); on each other axis a complex (m_i, N_i) matrix acts on what is left, which is
# already k/N times smaller. The synthesis is the same in reverse,
# onto the output grid, with the interpolation basis of the module docstring. Each of these maps
# is linear, x -> A x, so its backward is g -> A^H g: the same kind of pruned transform, the other
# way round (A^H of the analysis is a synthesis with conjugate matrices, and vice versa); nothing
# of full size in Fourier space is formed in either direction, which the backward of torch.fft's
# real transforms does (it pads the kept modes out to the whole spectrum).


def _frequencies(n_modes: Sequence[int]) -> tuple[tuple[tuple[int, ...], ...], int]:
    """The kept frequencies of every leading axis, ``-(m//2) ... m//2 + m%2 - 1`` (neuraloperator's
    order), and the number ``m//2 + 1`` of non-negative ones kept on the last, real, axis."""
    return tuple(tuple(range(-(m // 2), m // 2 + m % 2)) for m in n_modes[:-1]), n_modes[-1] // 2 + 1


def _phase(freqs: Sequence[int], n: int) -> torch.Tensor:
    """``2 pi f j / n`` for the frequencies ``f`` (rows) and the points ``j < n`` of a grid
    (columns), reduced modulo ``n`` in integers first so that large products lose no precision."""
    f = torch.tensor(list(freqs), dtype=torch.int64)[:, None]
    j = torch.arange(n, dtype=torch.int64)[None]
    return (2 * math.pi / n) * torch.remainder(f * j, n).double()


@functools.lru_cache(maxsize=512)
def _analysis_matrix(n: int, freqs: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(len(freqs), n)``: the rows ``exp(-2 pi i f j / n) / n`` of the DFT (``norm="forward"``)."""
    a = _phase(freqs, n)
    return (torch.polar(torch.ones_like(a), -a) / n).to(device, dtype)


@functools.lru_cache(maxsize=512)
def _real_analysis_matrix(n: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(2k, n)``: times a real signal of ``n`` points, the first ``k`` of its Fourier coefficients
    (``rfft(norm="forward")[:k]``), their real parts in the first ``k`` rows, then their imaginary parts."""
    a = _phase(range(k), n)
    return (torch.cat([torch.cos(a), -torch.sin(a)]) / n).to(device, dtype)


@functools.lru_cache(maxsize=512)
def _synthesis_matrix(n_in: int, freqs: tuple[int, ...], n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(len(freqs), n_out)``: the modes of a field on ``n_in`` points, evaluated on ``n_out`` points.

    A mode is ``exp(2 pi i f x)``; the Nyquist mode of an even input grid (``|f| = n_in/2``) is
    the cosine ``cos(2 pi f x)``, half of it at ``+f`` and half at ``-f``: on ``n_in`` points the
    two cannot be told apart, and the cosine is the smooth field those points hold.
    """
    a = _phase(freqs, n_out)
    g = torch.polar(torch.ones_like(a), a)
    nyquist = torch.tensor([2 * abs(f) == n_in for f in freqs])
    g[nyquist] = torch.cos(a[nyquist]).to(g.dtype)
    return g.to(device, dtype)


@functools.lru_cache(maxsize=512)
def _real_synthesis_matrix(n_in: int, k: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(2k, n_out)``: the real field ``sum_f alpha_f Re(c_f exp(2 pi i f x))`` of the first ``k``
    non-negative coefficients ``c_f`` of a field on ``n_in`` points, evaluated on ``n_out`` points:
    ``[Re c, Im c] @`` it (the real parts' rows first, then the imaginary parts').

    ``alpha_f = 2`` (the mode and its conjugate), except at ``f = 0`` and at the Nyquist frequency
    of an even input grid, ``f = n_in/2``, whose mode is ``Re(c_f) cos(2 pi f x)`` (``alpha = 1``,
    no sine: the input grid cannot hold one). A Nyquist frequency of the *output* grid that was
    an ordinary one of the input keeps ``alpha = 2``: on the output points ``exp(i pi j)`` and its
    conjugate coincide, and both fold onto the one Nyquist value.
    """
    a = _phase(range(k), n_out)
    alpha = torch.full((k, 1), 2.0, dtype=torch.float64)
    alpha[0] = 1.0
    sine = -torch.sin(a)
    if n_in % 2 == 0 and k - 1 == n_in // 2:
        alpha[-1] = 1.0
        sine[-1] = 0.0
    return torch.cat([alpha * torch.cos(a), alpha * sine]).to(device, dtype)


class _Separable:
    """A linear map between a real field ``(*batch, *space)`` and its kept Fourier coefficients
    ``(*modes, *batch)`` (modes first), one matrix per axis.

    ``real_to_complex`` (an analysis): the real matrix ``last`` ``(2k, N)`` (real parts' rows,
    then imaginary parts') turns the last axis into ``k`` complex coefficients, modes first
    (``mm(last, t.T)`` on a transposed view); then each complex matrix ``leading[i]``
    ``(m_i, N_i)`` contracts the innermost remaining space axis, from the last leading axis to the
    first, and puts its modes in front (``mm(matrix, z.T)``): one matrix product per axis, and no
    transposed copy. Otherwise (a synthesis) the other way round: ``leading[i]`` ``(m_i, N_i)``
    takes the outermost modes to the innermost points (``mm(z.T, matrix)``), then ``last``
    ``(2k, N)`` the real and imaginary parts of the last axis to real values
    (``mm([Re z; Im z].T, last)``). :attr:`adjoint` is the map in the other direction with the
    conjugate matrices (the same real ``last``, used the other way): the gradient of this one.
    """

    def __init__(self, real_to_complex: bool, last: torch.Tensor, leading: Sequence[torch.Tensor]):
        self.real_to_complex, self.last, self.leading = real_to_complex, last, tuple(leading)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        d = len(self.leading) + 1
        if self.real_to_complex:
            batch, space = t.shape[:-d], t.shape[-d:]
            k = self.last.shape[0] // 2
            z = self.last @ t.reshape(-1, space[-1]).T  # (2k, *batch, *space[:-1]): real parts, imaginary parts
            z = torch.complex(z[:k], z[k:])
            for i in reversed(range(d - 1)):
                z = torch.mm(self.leading[i], z.view(-1, space[i]).T)  # (m_i, ..., *batch, *space[:i])
            return z.view(*[m.shape[0] for m in self.leading], -1, *batch)
        k = self.last.shape[0] // 2
        batch = t.shape[d:]
        z = t.resolve_conj()
        for i in range(d - 1):
            z = torch.mm(z.reshape(self.leading[i].shape[0], -1).T, self.leading[i])  # (..., k, *batch, *space[:i+1])
        z = z.reshape(k, -1)  # (k, *batch, *space[:-1])
        y = torch.cat([z.real, z.imag]).T @ self.last
        return y.view(*batch, *[m.shape[1] for m in self.leading], self.last.shape[1])

    @functools.cached_property
    def adjoint(self) -> _Separable:
        return _Separable(not self.real_to_complex, self.last, [m.conj().resolve_conj() for m in self.leading])


class _LinearMap(torch.autograd.Function):
    """``op(t)`` for a :class:`_Separable` ``op``; its backward is ``op.adjoint`` (itself a
    :class:`_LinearMap`, so second derivatives work too)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, op: _Separable) -> torch.Tensor:
        ctx.op = op
        return op(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _LinearMap.apply(grad, ctx.op.adjoint), None


class _Transposed(torch.autograd.Function):
    """``t.T`` of a matrix ``t`` as a contiguous copy, and its backward likewise (itself, so second
    derivatives work too). Torch copies a 2D transpose in cache-sized blocks; the backward of a
    plain ``t.T.contiguous()`` would hand on a transposed view, which reaches the weight's
    gradient (``(c_in, c_out, *kept)``, contiguous) through an N-d strided copy several times
    slower."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        return t.T.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _Transposed.apply(grad)


class _ModeProduct(torch.autograd.Function):
    """``y_m = x_m w_m`` for every mode ``m``: ``(M, n, c_in) @ (M, c_in, c_out)``, complex.

    Backward: ``dx_m = dy_m w_m^H = conj(conj(dy_m) w_m^T)`` and ``dw_m = x_m^H dy_m``. The
    conjugates are taken of the small tensors (``n`` rows) only; the large ``w`` is read through
    a plain transposed view, which the batched product handles without copying (a conjugate
    view of it makes torch copy each mode's matrix, several times slower on the CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.bmm(x, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = torch.bmm(grad.conj().resolve_conj(), w.transpose(1, 2)).conj().resolve_conj()
        if ctx.needs_input_grad[1]:
            dw = torch.bmm(x.conj().resolve_conj().transpose(1, 2), grad.resolve_conj())
        return dx, dw


_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _real_dtype(x: torch.Tensor, who: str) -> torch.dtype:
    if x.dtype not in _COMPLEX:
        raise TypeError(f"{who}: expected a float32 or float64 tensor, got {x.dtype}")
    return x.dtype


@functools.lru_cache(maxsize=256)
def _transforms(
    shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    leading: tuple[tuple[int, ...], ...],
    k: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[_Separable, _Separable]:
    """The analysis on ``shape`` (real field -> kept coefficients) and the synthesis onto
    ``out_shape`` (kept coefficients -> real field) of the frequencies ``leading`` and ``0 ... k-1``."""
    cdtype = _COMPLEX[dtype]
    analysis = _Separable(
        True,
        _real_analysis_matrix(shape[-1], k, dtype, device),
        [_analysis_matrix(n, f, cdtype, device) for n, f in zip(shape, leading)],
    )
    synthesis = _Separable(
        False,
        _real_synthesis_matrix(shape[-1], k, out_shape[-1], dtype, device),
        [_synthesis_matrix(n, f, m, cdtype, device) for n, f, m in zip(shape, leading, out_shape)],
    )
    return analysis, synthesis


def fourier_resize(x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """Band-limited (spectral) interpolation of the trailing ``len(out_shape)`` axes onto ``out_shape``.

    Upsampling evaluates the field's trigonometric interpolant on the finer grid; the Nyquist
    mode of an even grid is the cosine its points hold (half of it at ``+N/2``, half at ``-N/2``).
    Downsampling keeps the frequencies ``|k| <= N_out/2``; at the Nyquist frequency of an even
    output grid ``+N_out/2`` and ``-N_out/2`` fold onto the one value that grid holds there, which
    makes it the least-squares projection onto the fields of the coarser grid. Up then down
    returns the field exactly; down is what ``scipy.signal.resample`` does along each axis.
    """
    out_shape = tuple(int(n) for n in out_shape)
    d = len(out_shape)
    if not 1 <= d <= x.ndim or any(n < 1 for n in out_shape):
        raise ValueError(f"fourier_resize: out_shape must be 1 to x.ndim={x.ndim} positive sizes, got {out_shape}")
    shape = tuple(x.shape[-d:])
    if shape == out_shape:
        return x
    # every frequency the smaller grid holds: all of the input's when upsampling (its Nyquist
    # mode is then a cosine); |k| <= N_out/2 when downsampling, both signs, to fold at the output
    leading = tuple(
        tuple(range(-(n // 2), n - n // 2)) if n <= m else tuple(range(-(m // 2), m // 2 + 1))
        for n, m in zip(shape[:-1], out_shape[:-1])
    )
    k = min(shape[-1], out_shape[-1]) // 2 + 1
    analysis, synthesis = _transforms(shape, out_shape, leading, k, _real_dtype(x, "fourier_resize"), x.device)
    return _LinearMap.apply(_LinearMap.apply(x, analysis), synthesis)
