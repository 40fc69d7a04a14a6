"""physfm.nn.fno: spectral convolution against neuraloperator, resolution invariance, decoder shapes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from neuralop.layers.spectral_convolution import SpectralConv as NOSpectralConv

from physfm.nn.fno import FNO, FNODecoder, SpectralConv, fourier_resize, max_modes


def _copy_from_neuralop(ours: SpectralConv, theirs) -> None:
    w = theirs.weight.to_tensor() if hasattr(theirs.weight, "to_tensor") else theirs.weight
    with torch.no_grad():
        ours.weight.copy_(torch.view_as_real(w.detach().resolve_conj()))
        ours.bias.copy_(theirs.bias.detach().flatten())


@pytest.mark.parametrize(
    "shape, n_modes", [((32, 32), (12, 12)), ((24, 40), (9, 14)), ((16, 16, 16), (8, 8, 8)), ((12, 10, 14), (5, 6, 7))]
)
def test_equals_neuraloperator_given_the_same_weights(shape, n_modes):
    torch.manual_seed(0)
    theirs = NOSpectralConv(3, 5, n_modes)
    ours = SpectralConv(3, 5, n_modes)
    _copy_from_neuralop(ours, theirs)
    x = torch.randn(2, 3, *shape)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def _band_limited(shape, k_max, seed=0):
    """A random smooth periodic field, sampled on any grid of the given shape."""
    g = torch.Generator().manual_seed(seed)
    d = len(shape)
    ks = [torch.randint(-k_max, k_max + 1, (d,), generator=g) for _ in range(6)]
    amps = torch.randn(6, generator=g)
    phases = 2 * math.pi * torch.rand(6, generator=g)

    def sample(grid):
        axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) * 2 * math.pi / n for n in grid], indexing="ij")
        f = sum(a * torch.cos(sum(k[i] * axes[i] for i in range(d)) + p) for k, a, p in zip(ks, amps, phases))
        return f[None, None].float()

    return sample


@pytest.mark.parametrize("coarse, fine", [((16, 16), (48, 40)), ((12, 12, 12), (20, 16, 24))])
def test_discretisation_invariance(coarse, fine):
    torch.manual_seed(1)
    conv = SpectralConv(1, 2, tuple(min(8, n - 1) for n in coarse))
    field = _band_limited(coarse, 3)
    out_coarse = conv(field(coarse))
    out_fine = conv(field(fine))
    # the same operator evaluated on two grids: sampled at the coarse points they agree
    step = [f // c for f, c in zip(fine, coarse)] if all(f % c == 0 for f, c in zip(fine, coarse)) else None
    on_coarse = fourier_resize(out_fine, coarse)
    torch.testing.assert_close(on_coarse, out_coarse, rtol=1e-4, atol=1e-5)
    if step:
        sub = out_fine[(..., *[slice(None, None, s) for s in step])]
        torch.testing.assert_close(sub, out_coarse, rtol=1e-4, atol=1e-5)


def test_output_on_a_finer_grid_is_the_spectral_interpolation():
    torch.manual_seed(2)
    conv = SpectralConv(2, 3, (10, 10))
    x = torch.randn(1, 2, 24, 24)
    fine = conv(x, out_shape=(48, 60))
    torch.testing.assert_close(fine, fourier_resize(conv(x), (48, 60)), rtol=1e-4, atol=1e-5)


def test_gradients_flow():
    conv = SpectralConv(2, 2, (6, 6))
    x = torch.randn(2, 2, 16, 16, requires_grad=True)
    conv(x).square().sum().backward()
    assert x.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("d", [2, 3])
def test_decoder_shapes_with_and_without_time(d):
    dec = FNODecoder(4, 2, (6,) * d, width=8, blocks=1)
    z = torch.randn(3, 4, *[8] * d)
    assert dec(z, [16] * d).shape == (3, 2, *[16] * d)
    zt = torch.randn(2, 4, 5, *[8] * d)
    assert dec(zt, [12] * d).shape == (2, 2, 5, *[12] * d)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: SpectralConv(1, 1, (40, 40))(torch.randn(1, 1, 32, 32)),
            r"n_modes=\(40, 40\) exceeds what the input grid \(32, 32\) holds: at most \(32, 32\)",
        ),
        (lambda: SpectralConv(1, 1, (8, 8))(torch.randn(1, 1, 32, 32), out_shape=(6, 32)), "output grid"),
        (lambda: SpectralConv(1, 1, (8, 8))(torch.randn(1, 2, 32, 32)), r"expected \(n, 1, \*space\)"),
        (lambda: SpectralConv(1, 1, (8, 8, 8, 8)), "1 to 3 positive numbers"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_max_modes():
    assert max_modes((32, 33)) == (32, 32)


def test_fno_runs_on_any_grid_and_residual_predicts_the_change():
    torch.manual_seed(3)
    net = FNO(2, 2, (6, 6), width=8, blocks=2, residual=True)
    for shape in [(16, 16), (24, 40)]:
        u = torch.randn(2, 2, *shape)
        assert net(u).shape == u.shape
    with torch.no_grad():
        net.project[-1].weight.zero_()
        net.project[-1].bias.zero_()
    u = torch.randn(1, 2, 16, 16)
    torch.testing.assert_close(net(u), u)  # a zero projection: no change
    with pytest.raises(ValueError, match="residual=True needs in_channels == out_channels, got 2 and 3"):
        FNO(2, 3, (6, 6), residual=True)


# ---------------------------------------------------------------- the Nyquist mode across grids


def _random_field(shape, batch=2, channels=1, seed=0, dtype=torch.float64):
    """A generic field: every frequency the grid holds, the Nyquist ones of even sizes included."""
    return torch.randn(batch, channels, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape", [(16,), (16, 16), (16, 15), (8, 12, 10)])
def test_equals_neuraloperator_at_the_largest_modes(shape):
    torch.manual_seed(0)
    theirs = NOSpectralConv(3, 4, max_modes(shape))
    ours = SpectralConv(3, 4, max_modes(shape))
    _copy_from_neuralop(ours, theirs)
    x = torch.randn(2, 3, *shape)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def _resample_every_axis(x, out_shape):
    from scipy.signal import resample

    y = x.numpy()
    for axis, n in zip(range(-len(out_shape), 0), out_shape):
        if y.shape[axis] != n:
            y = resample(y, n, axis=axis)
    return torch.from_numpy(y)


@pytest.mark.parametrize(
    "shape, out_shape",
    [((12,), (7,)), ((8,), (20,)), ((8, 10), (13, 6)), ((9, 7), (16, 14)), ((16, 16), (8, 8)), ((6, 5, 8), (9, 10, 4))],
)
def test_fourier_resize_is_scipy_resample_along_every_axis(shape, out_shape):
    x = _random_field(shape)
    torch.testing.assert_close(fourier_resize(x, out_shape), _resample_every_axis(x, out_shape), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "coarse, fine", [((8,), (16,)), ((8, 8), (16, 16)), ((8, 6), (17, 13)), ((7, 8), (14, 9)), ((6, 4, 8), (12, 9, 16))]
)
def test_fourier_resize_up_then_down_returns_the_field(coarse, fine):
    x = _random_field(coarse)  # with Nyquist content on the even axes
    up = fourier_resize(x, fine)
    torch.testing.assert_close(fourier_resize(up, coarse), x, rtol=1e-12, atol=1e-12)
    if all(f % c == 0 for f, c in zip(fine, coarse)):  # the finer grid holds the coarse points
        torch.testing.assert_close(up[(..., *[slice(None, None, f // c) for f, c in zip(fine, coarse)])], x)


def _cosines(ks, phases, amps, grid):
    """``sum_j a_j cos(2 pi k_j . x + p_j)`` sampled on ``grid`` (period 1 on every axis)."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in grid], indexing="ij")
    return sum(
        a * torch.cos(2 * math.pi * sum(k[i] * axes[i] for i in range(len(grid))) + p) for k, p, a in zip(ks, phases, amps)
    )[None, None]


def test_fourier_resize_of_a_nyquist_cosine_is_that_cosine():
    # cos(pi j) on 8 points is the cosine at frequency 4 (not doubled, no sine); down from 16
    # points the cosine at frequency 4 is sampled exactly (both of its halves fold onto one value).
    # Fields of 8 x 8 points at frequency 4: cos(8 pi x), cos(8 pi y), cos(8 pi x) cos(8 pi y) and
    # cos(8 pi x) cos(2 pi y + 0.3), each written as its two halves cos(a + b) + cos(a - b)
    ks = [(4, 0), (0, 4), (4, 4), (4, -4), (4, 1), (-4, 1), (1, 2)]
    phases = [0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.7]
    amps = [1.0, -0.5, 0.125, 0.125, 0.5, 0.5, 2.0]
    coarse = _cosines(ks, phases, amps, (8, 8))
    for fine in [(16, 16), (13, 17), (8, 12)]:
        torch.testing.assert_close(fourier_resize(coarse, fine), _cosines(ks, phases, amps, fine), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fourier_resize(_cosines(ks, phases, amps, fine), (8, 8)), coarse, rtol=1e-12, atol=1e-12)


def _max_modes_conv(shape, seed=1, c_in=2, c_out=3):
    torch.manual_seed(seed)
    conv = SpectralConv(c_in, c_out, max_modes(shape)).double()
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    return conv


@pytest.mark.parametrize(
    "shape, out_shapes",
    [
        ((8,), [(16,), (11,), (9,)]),
        ((8, 8), [(16, 16), (11, 17), (8, 13), (15, 8)]),
        ((7, 8), [(14, 16), (9, 9)]),
        ((4, 6, 8), [(8, 12, 16), (5, 7, 9)]),
    ],
)
def test_output_on_another_grid_is_the_interpolant_of_the_output(shape, out_shapes):
    conv = _max_modes_conv(shape)
    x = _random_field(shape, channels=2)
    y = conv(x)
    for out_shape in out_shapes:
        fine = conv(x, out_shape=out_shape)
        torch.testing.assert_close(fine, fourier_resize(y, out_shape), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fourier_resize(fine, shape), y, rtol=1e-10, atol=1e-10)
        if all(f % c == 0 for f, c in zip(out_shape, shape)):  # the same field: the fine grid holds the coarse one
            torch.testing.assert_close(fine[(..., *[slice(None, None, f // c) for f, c in zip(out_shape, shape)])], y)


@pytest.mark.parametrize("fine, coarse", [((16,), (8,)), ((16, 16), (8, 8)), ((17, 16), (8, 8)), ((8, 12, 16), (4, 6, 8))])
def test_output_on_a_coarser_grid_holds_the_fine_output_at_its_points(fine, coarse):
    # at n_modes = max_modes(coarse) the coarse grid's Nyquist is an ordinary mode of the fine one:
    # the mode and its conjugate fold onto one value (torch.fft.irfft would count it once)
    conv = _max_modes_conv(coarse)
    x = _random_field(fine, channels=2)
    y = conv(x)
    low = conv(x, out_shape=coarse)
    torch.testing.assert_close(low, fourier_resize(y, coarse), rtol=1e-10, atol=1e-10)
    if all(f % c == 0 for f, c in zip(fine, coarse)):
        torch.testing.assert_close(low, y[(..., *[slice(None, None, f // c) for f, c in zip(fine, coarse)])])


@pytest.mark.parametrize("n", [8, 16])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_discretisation_invariance_at_the_largest_modes(n, d):
    # n_modes = max_modes of the coarsest grid; a field band-limited to it (|k_i| < n/2), sampled on
    # n/2 ... 2n points per axis and an odd grid: the same operator, the same output function
    base = (n // 2,) * d if d < 3 else (n // 2,) * 2 + (n // 4,)
    conv = _max_modes_conv(base, seed=2)
    g = torch.Generator().manual_seed(3)
    ks = [tuple(int(torch.randint(-(b // 2) + 1, b // 2, (), generator=g)) for b in base) for _ in range(5)]
    phases, amps = (2 * math.pi * torch.rand(5, generator=g)).tolist(), torch.randn(5, generator=g).tolist()
    grids = [base, tuple(2 * b for b in base), tuple(4 * b for b in base), tuple(2 * b + 1 for b in base)]
    common = grids[2]
    ref = conv(_cosines(ks, phases, amps, base).expand(1, 2, *base), out_shape=common)
    for grid in grids:
        x = _cosines(ks, phases, amps, grid).expand(1, 2, *grid)
        torch.testing.assert_close(conv(x, out_shape=common), ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fourier_resize(conv(x), common), ref, rtol=1e-10, atol=1e-10)


def _self_conjugate_modes(shape):
    """Positions among the kept modes at max_modes(shape) where a real field's coefficient is real:
    every component 0 or the Nyquist frequency of an even axis (leading axes in frequency order)."""
    m = max_modes(shape)
    lead = [[m_i // 2] + ([0] if n % 2 == 0 else []) for m_i, n in zip(m[:-1], shape[:-1])]
    last = [0] + ([shape[-1] // 2] if shape[-1] % 2 == 0 else [])
    return list(itertools.product(*lead, last))


@pytest.mark.parametrize("shape", [(8,), (8, 8), (6, 7), (4, 6, 8)])
def test_weights_the_input_grid_cannot_see_change_no_grid(shape):
    # at a mode whose input coefficient is real (the zero mode, the Nyquist ones) the output is
    # Re(R c) on the input grid: the imaginary part of R has no effect and gets no gradient there,
    # so it must have none on another grid either (no imaginary content coming back)
    conv = _max_modes_conv(shape)
    x = _random_field(shape, channels=2)
    modes = _self_conjugate_modes(shape)
    conv(x).sum().backward()
    for pos in modes:
        assert conv.weight.grad[(slice(None), slice(None), *pos, 1)].abs().max() < 1e-12
    outs = {s: conv(x, out_shape=s) for s in [shape, tuple(2 * n for n in shape), tuple(2 * n + 1 for n in shape)]}
    with torch.no_grad():
        for pos in modes:
            conv.weight[(slice(None), slice(None), *pos, 1)] += torch.randn(2, 3, dtype=torch.float64)
    for s, y in outs.items():
        torch.testing.assert_close(conv(x, out_shape=s), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "shape, n_modes, out_shape",
    [
        ((8,), (8,), (13,)),
        ((9,), (8,), (8,)),
        ((6, 8), (6, 8), (12, 9)),
        ((8, 6), (4, 6), (8, 6)),
        ((4, 4, 6), (4, 3, 6), (5, 4, 7)),
    ],
)
def test_backward_is_the_gradient(shape, n_modes, out_shape):
    # the hand-written backward (adjoint pruned transforms, the per-mode product) against finite
    # differences in float64; second derivatives (the backward of the backward) on the 1D/2D cases
    torch.manual_seed(4)
    conv = SpectralConv(2, 2, n_modes).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(1 if len(shape) == 3 else 2, 2, *shape, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        return torch.func.functional_call(conv, {"weight": w, "bias": b}, (x, out_shape))

    assert torch.autograd.gradcheck(f, (x, conv.weight, conv.bias))
    assert torch.autograd.gradcheck(lambda x: fourier_resize(x, out_shape), (x,))
    if len(shape) < 3:
        assert torch.autograd.gradgradcheck(f, (x, conv.weight, conv.bias), fast_mode=True)


@pytest.mark.parametrize("shape, n_modes", [((32,), (12,)), ((24, 20), (9, 14)), ((16, 15), (16, 14)), ((8, 10, 12), (6, 5, 7))])
def test_backward_equals_autograd_through_neuraloperator_in_float32(shape, n_modes):
    # the hand-written backward against autograd through neuraloperator's FFTs (torch.fft's own
    # backward), the same weights and upstream gradient; even leading axes (DESIGN.md section 7)
    torch.manual_seed(5)
    theirs = NOSpectralConv(3, 4, n_modes)
    ours = SpectralConv(3, 4, n_modes)
    _copy_from_neuralop(ours, theirs)
    x = torch.randn(2, 3, *shape)
    g = torch.randn(2, 4, *shape)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x_ours).backward(g)
    theirs(x_theirs).backward(g)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, torch.view_as_real(theirs.weight.tensor.grad), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad.flatten(), rtol=1e-4, atol=1e-5)


def test_float32_matches_float64():
    conv = _max_modes_conv((16, 16))
    x = _random_field((16, 16), channels=2)
    y64 = conv(x, out_shape=(24, 32))
    y32 = conv.float()(x.float(), out_shape=(24, 32))
    torch.testing.assert_close(y32, y64.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: fourier_resize(torch.randn(2, 8, dtype=torch.complex64), (4,)),
            TypeError,
            "float32 or float64 tensor, got torch.complex64",
        ),
        (
            lambda: fourier_resize(torch.randn(2, 8), (4, 4, 4)),
            ValueError,
            r"out_shape must be 1 to x.ndim=2 positive sizes, got \(4, 4, 4\)",
        ),
        (lambda: fourier_resize(torch.randn(2, 8), (0,)), ValueError, "positive sizes"),
        (
            lambda: SpectralConv(1, 1, (4,))(torch.ones(1, 1, 8, dtype=torch.int64)),
            TypeError,
            "SpectralConv: expected a float32 or float64",
        ),
    ],
)
def test_bad_resize_and_dtype_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
