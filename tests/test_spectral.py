"""physfm.data.spectral: wavenumber grids, bands, filters and random fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physfm.data import spectral


def test_wavenumbers_match_numpy_fftfreq():
    kx, ky = spectral.wavenumbers((8, 6), lengths=(2 * math.pi, 3.0), dtype=torch.float64)
    np.testing.assert_allclose(kx.flatten(), 2 * np.pi * np.fft.fftfreq(8, d=2 * np.pi / 8))
    np.testing.assert_allclose(ky.flatten(), 2 * np.pi * np.fft.fftfreq(6, d=3.0 / 6))
    assert kx.shape == (8, 1) and ky.shape == (1, 6)
    (kr,) = spectral.wavenumbers((8,), real=True, dtype=torch.float64)
    np.testing.assert_allclose(kr, 2 * np.pi * np.fft.rfftfreq(8))


def test_default_units_are_radians_per_cell():
    kmag = spectral.wavenumber_magnitude((16, 16))
    assert kmag.max().item() == pytest.approx(math.pi * math.sqrt(2), rel=1e-6)


def test_derivative_through_wavenumbers_is_exact_for_a_sine():
    n, length = 32, 2 * math.pi
    x = torch.arange(n, dtype=torch.float64) * length / n
    (k,) = spectral.wavenumbers((n,), (length,), real=True, dtype=torch.float64)
    u = torch.sin(3 * x)
    du = torch.fft.irfft(1j * k * torch.fft.rfft(u), n=n)
    torch.testing.assert_close(du, 3 * torch.cos(3 * x))


def test_band_fractions_sum_to_one_and_high_band_dominates():
    for shape in [(128,), (64, 64), (32, 32, 32)]:
        f = spectral.band_fractions(shape)
        assert f.sum().item() == pytest.approx(1.0)
        assert f[2] > f[1] > f[0]


def test_dealias_mask_keeps_two_thirds():
    m = spectral.dealias_mask((48,), real=True)
    assert m.sum().item() == 16  # modes 0..15 kept, 16..24 removed: |m| < 48/3
    m2 = spectral.dealias_mask((48, 48), real=False)
    assert m2.shape == (48, 48) and m2.sum().item() == 31 * 31


def test_grf_is_normalised_seeded_and_smoother_with_slope():
    g = lambda: torch.Generator().manual_seed(5)
    a = spectral.gaussian_random_field((64, 64), batch=8, slope=2.0, generator=g())
    b = spectral.gaussian_random_field((64, 64), batch=8, slope=2.0, generator=g())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.mean(dim=(1, 2)), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.std(dim=(1, 2)), torch.ones(8), atol=1e-5, rtol=0)
    rough = spectral.gaussian_random_field((64, 64), batch=8, slope=1.0, generator=g())
    smooth = spectral.gaussian_random_field((64, 64), batch=8, slope=4.0, generator=g())
    grad = lambda f: (torch.roll(f, 1, -1) - f).pow(2).mean()
    assert grad(smooth) < grad(rough) / 4


def test_grf_spectrum_follows_the_slope():
    f = spectral.gaussian_random_field(
        (256,), batch=256, slope=3.0, generator=torch.Generator().manual_seed(6), dtype=torch.float64
    )
    m, e = spectral.radial_spectrum(f, n_spatial=1)
    e = e.mean(0)
    fit = np.polyfit(np.log(m[2:64].numpy()), np.log(e[2:64].numpy()), 1)[0]
    assert fit == pytest.approx(-3.0, abs=0.15)


def test_radial_spectrum_parseval_in_1d():
    x = torch.randn(3, 64, dtype=torch.float64)
    _, e = spectral.radial_spectrum(x, n_spatial=1)
    torch.testing.assert_close(e.sum(-1), (x**2).mean(-1))


def test_filter_bands_partition():
    x = torch.randn(2, 20, 30)
    parts = [spectral.filter_bands(x, (b,), n_spatial=2) for b in spectral.BANDS]
    torch.testing.assert_close(sum(parts), x, rtol=1e-5, atol=1e-5)


def test_autocorrelation_is_one_at_zero_lag():
    x = torch.randn(4, 16, 16)
    rho = spectral.autocorrelation(x, n_spatial=2)
    torch.testing.assert_close(rho[:, 0, 0], torch.ones(4))
    assert rho.abs().max() <= 1 + 1e-5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spectral.wavenumbers((1, 8)), "at least 2"),
        (lambda: spectral.wavenumbers((4, 4, 4, 4)), "1 to 3 spatial sizes"),
        (lambda: spectral.wavenumbers((8, 8), lengths=(1.0,)), "lengths must be 2 positive numbers"),
        (lambda: spectral.gaussian_random_field((8, 8), batch=0), "batch must be >= 1"),
        (
            lambda: spectral.gaussian_random_field((8, 8), batch=2, slope=torch.ones(3)),
            r"slope must be a number or have shape \(2,\)",
        ),
        (lambda: spectral.filter_bands(torch.randn(8), ("lowest",), n_spatial=1), "unknown bands"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
