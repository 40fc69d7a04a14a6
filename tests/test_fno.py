"""physfm.nn.fno: spectral convolution against neuraloperator, resolution invariance, decoder shapes."""

from __future__ import annotations

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


@pytest.mark.parametrize("shape, n_modes", [((32, 32), (12, 12)), ((24, 40), (9, 14)), ((16, 16, 16), (8, 8, 8)), ((12, 10, 14), (5, 6, 7))])
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
        (lambda: SpectralConv(1, 1, (40, 40))(torch.randn(1, 1, 32, 32)), r"n_modes=\(40, 40\) exceeds what the input grid \(32, 32\) holds: at most \(32, 32\)"),
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
