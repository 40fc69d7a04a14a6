"""physfm.eval.metrics: hand-computed cases, the chapter's claims, and The Well's implementation as oracle."""

from __future__ import annotations

import math
import types

import pytest
import torch
from einops import rearrange
from the_well.benchmark.metrics.spatial import VRMSE as WellVRMSE
from the_well.benchmark.metrics.spectral import binned_spectral_mse, power_spectrum

from physfm.data import spectral
from physfm.eval import metrics

SHAPES = [(64,), (7,), (32, 32), (24, 40), (5, 9), (16, 16, 16), (12, 8, 20)]


def _well(x: torch.Tensor, y: torch.Tensor):
    """The Well's VRMSE and binned spectral MSE/NMSE, mapped to our (b, f, t, *space) layout."""
    d = x.ndim - 3
    meta = types.SimpleNamespace(n_spatial_dims=d)
    xw = rearrange(x, "b f t ... -> b t ... f")
    yw = rearrange(y, "b f t ... -> b t ... f")
    v = rearrange(WellVRMSE.eval(xw, yw, meta), "b t f -> b f t")
    out = binned_spectral_mse.eval(xw, yw, meta)
    mse = torch.stack([out[f"spectral_error_mse_per_bin_{i}"] for i in range(3)], -1)
    nmse = torch.stack([out[f"spectral_error_nmse_per_bin_{i}"] for i in range(3)], -1)
    return v, rearrange(mse, "b t f k -> b f t k"), rearrange(nmse, "b t f k -> b f t k")


@pytest.mark.parametrize("space", SHAPES, ids=str)
def test_agrees_with_the_well(space):
    g = torch.Generator().manual_seed(len(space) * 100 + space[0])
    x = torch.randn(2, 3, 4, *space, generator=g)
    y = 1.5 * torch.randn(2, 3, 4, *space, generator=g) + 0.7
    v, mse, nmse = _well(x, y)
    torch.testing.assert_close(metrics.vrmse(x, y), v, rtol=1e-5, atol=1e-7)
    ours = metrics.spectral_error(x, y)
    torch.testing.assert_close(ours.mse, mse, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ours.nmse, nmse, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("space", SHAPES + [(2,), (3, 3), (31,), (17, 33), (9, 10, 11)], ids=str)
def test_band_assignment_matches_the_well(space):
    """Every Fourier mode falls in the same band as in The Well's binning."""
    d = len(space)
    meta = types.SimpleNamespace(n_spatial_dims=d)
    bins = torch.logspace(math.log10(2 * math.pi / max(space)), math.log10(math.pi * math.sqrt(d) + 1e-6), 4)
    bins[0] = 0.0
    _, _, _, counts = power_spectrum(torch.randn(1, *space, 1), meta, bins=bins, return_counts=True)
    ours = torch.bincount(spectral.band_index(space).flatten(), minlength=4)
    assert ours.tolist() == counts.tolist()  # the Well's fourth count is |k| beyond the last edge: none


def test_float64_inputs_stay_float64():
    x, y = torch.randn(1, 1, 1, 16, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, 16, dtype=torch.float64)
    assert metrics.vrmse(x, y).dtype == torch.float64
    assert metrics.spectral_error(x, y).mse.dtype == torch.float64


def test_hand_computed_vrmse():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
    x = torch.tensor([1.0, 2.0, 3.0, 6.0]).reshape(1, 1, 1, 4)
    # mse = 4/4 = 1; unbiased var of 1..4 = 5/3
    assert metrics.vrmse(x, y).item() == pytest.approx(math.sqrt(1 / (5 / 3 + 1e-7)), rel=1e-6)
    assert metrics.mse(x, y).item() == pytest.approx(1.0)


@pytest.mark.parametrize("space", [(50,), (20, 30), (6, 7, 8)], ids=str)
def test_predicting_the_mean_scores_about_one(space):
    y = torch.randn(3, 1, 2, *space) * 4 + 10
    dims = tuple(range(-len(space), 0))
    guess = y.mean(dim=dims, keepdim=True).expand_as(y)
    n = math.prod(space)
    torch.testing.assert_close(metrics.vrmse(guess, y), torch.full((3, 1, 2), math.sqrt((n - 1) / n)), rtol=1e-5, atol=0)
    # and its error is every mode but k=0: NMSE 1 in the bands without the mean
    nmse = metrics.spectral_error(guess, y).nmse
    torch.testing.assert_close(nmse[..., 1:], torch.ones_like(nmse[..., 1:]), rtol=1e-4, atol=0)
    assert (nmse[..., 0] < 1).all()


def test_parseval_bands_add_up_to_mse():
    x, y = torch.randn(2, 2, 3, 24, 40), torch.randn(2, 2, 3, 24, 40)
    torch.testing.assert_close(metrics.spectral_error(x, y).mse.sum(-1), metrics.mse(x, y), rtol=1e-5, atol=1e-7)


def test_ideal_lowpass_error_lies_in_the_high_band():
    y = spectral.gaussian_random_field((64, 64), batch=4, slope=3.0, generator=torch.Generator().manual_seed(1))
    y = y.reshape(4, 1, 1, 64, 64)
    smooth = spectral.filter_bands(y, ("low", "mid"), n_spatial=2)
    e = metrics.spectral_error(smooth, y)
    assert e.mse[..., :2].max() < 1e-10
    energy = metrics.spectral_error(torch.zeros_like(y), y).mse[..., 2]
    torch.testing.assert_close(e.nmse[..., 2], energy / (energy + 1e-7), rtol=1e-4, atol=0)


def test_white_noise_splits_by_mode_count():
    y = torch.zeros(64, 1, 1, 128)
    noise = torch.randn(64, 1, 1, 128, generator=torch.Generator().manual_seed(2))
    share = metrics.spectral_error(y + noise, y).mse.mean(dim=(0, 1, 2))
    share = share / share.sum()
    torch.testing.assert_close(share.double(), spectral.band_fractions((128,)), rtol=0.1, atol=0.01)


def test_shift_error_grows_with_wavenumber_and_saturates_at_two():
    g = torch.Generator().manual_seed(3)
    y = spectral.gaussian_random_field((128, 128), batch=16, slope=3.0, generator=g).reshape(16, 1, 1, 128, 128)
    one = metrics.spectral_error(torch.roll(y, 1, dims=-1), y).nmse.mean(dim=(0, 1, 2))
    assert one[0] < one[1] < one[2]
    far = metrics.spectral_error(torch.roll(y, 32, dims=-1), y).nmse.mean(dim=(0, 1, 2))
    assert abs(far[2].item() - 2.0) < 0.15  # double penalty: uncorrelated small scales score 2


def test_shift_vrmse_from_autocorrelation():
    g = torch.Generator().manual_seed(4)
    y = spectral.gaussian_random_field((32, 48), batch=3, slope=2.5, generator=g, dtype=torch.float64)
    y = y.reshape(3, 1, 1, 32, 48)
    rho = spectral.autocorrelation(y, n_spatial=2)
    n = 32 * 48
    for shift in (1, 3, 7):
        v = metrics.vrmse(torch.roll(y, shift, dims=-1), y)
        torch.testing.assert_close(v, torch.sqrt(2 * (1 - rho[..., 0, shift]) * (n - 1) / n), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "x, y, kwargs, err, match",
    [
        (torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 6), {}, ValueError, r"pred has shape \(2, 3, 4, 5\) but target"),
        (torch.randn(3, 8), torch.randn(3, 8), {}, ValueError, "1 to 3 spatial axes"),
        (torch.randn(1, 1, 1, 2, 2, 2, 2), torch.randn(1, 1, 1, 2, 2, 2, 2), {}, ValueError, "1 to 3 spatial axes"),
        (torch.randn(3, 8), torch.randn(3, 8), {"n_spatial": 4}, ValueError, "n_spatial must be 1, 2 or 3"),
        (torch.ones(1, 1, 1, 4, dtype=torch.long), torch.ones(1, 1, 1, 4, dtype=torch.long), {}, TypeError, "floating-point"),
        ([1.0, 2.0], torch.randn(2), {"n_spatial": 1}, TypeError, "pred must be a torch.Tensor"),
        (torch.randn(2, 1), torch.randn(2, 1), {"n_spatial": 1}, ValueError, "at least 2 spatial points"),
    ],
)
def test_bad_input_is_named(x, y, kwargs, err, match):
    for fn in (metrics.vrmse, metrics.spectral_error, metrics.mse):
        with pytest.raises(err, match=match):
            fn(x, y, **kwargs)


def test_n_spatial_for_other_layouts():
    x, y = torch.randn(5, 16, 16), torch.randn(5, 16, 16)
    v = metrics.vrmse(x, y, n_spatial=2)
    assert v.shape == (5,)
    torch.testing.assert_close(v, metrics.vrmse(x[:, None, None], y[:, None, None]).flatten())
