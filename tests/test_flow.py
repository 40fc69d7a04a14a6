"""physfm.nn.flow: flow-matching target and loss, the sampler, the velocity network, and the
statistics that judge samples (with their spectral helpers)."""

from __future__ import annotations

import math

import pytest
import torch

from physfm.data import spectral
from physfm.eval import statistics as S
from physfm.nn import flow as G

# -- the flow-matching target and loss ---------------------------------------------------------


def test_interpolate_is_the_straight_path_and_its_velocity():
    x0, x1 = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    t = torch.tensor([0.0, 0.25, 1.0])
    xt, u = G.interpolate(x0, x1, t)
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[2], x1[2])
    torch.testing.assert_close(xt[1], 0.75 * x0[1] + 0.25 * x1[1])
    torch.testing.assert_close(u, x1 - x0)


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_least_squares_fit_of_the_loss_target_is_the_marginal_velocity(t):
    """The regression the loss sets up, solved exactly: for Gaussian data the best *linear*
    velocity at time t is the best velocity of all, and it must be the closed form."""
    m, s, n = 1.5, 0.5, 400_000
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x1 = m + s * torch.randn(n, 1, generator=g, dtype=torch.float64)
    xt, u = G.interpolate(x0, x1, torch.full((n,), t, dtype=torch.float64))
    design = torch.cat([torch.ones_like(xt), xt], dim=1)
    intercept, slope = torch.linalg.lstsq(design, u).solution.flatten().tolist()
    var = (1 - t) ** 2 + t**2 * s**2
    assert slope == pytest.approx((t * s**2 - (1 - t)) / var, abs=5e-3)
    assert intercept == pytest.approx(m - slope * t * m, abs=5e-3)
    # and gaussian_velocity is that same line
    probe = torch.tensor([[-1.0], [0.0], [2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        G.gaussian_velocity(m, s)(probe, torch.full((3,), t)), intercept + slope * probe, atol=1e-2, rtol=0
    )


def test_the_exact_velocity_minimises_the_loss_at_its_known_floor():
    m, s, t, n = -1.0, 2.0, 0.6, 200_000
    g = torch.Generator().manual_seed(1)
    x1 = m + s * torch.randn(n, 1, generator=g, dtype=torch.float64)
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    times = torch.full((n,), t, dtype=torch.float64)
    exact = G.gaussian_velocity(m, s)
    best = G.flow_matching_loss(exact, x1, t=times, x0=x0).item()
    var = (1 - t) ** 2 + t**2 * s**2
    floor = 1 + s**2 - (t * s**2 - (1 - t)) ** 2 / var  # Var(x1 - x0 | x_t), the irreducible part
    assert best == pytest.approx(floor, rel=1e-2)
    shifted = G.flow_matching_loss(lambda x, tt: exact(x, tt) + 0.3, x1, t=times, x0=x0).item()
    assert shifted == pytest.approx(best + 0.09, rel=1e-2)  # any other velocity pays its squared distance


def test_loss_draws_noise_and_times_from_the_generator():
    net = G.VelocityNet(2, width=8, blocks=1, spatial_dims=1)
    x1 = torch.randn(4, 2, 8)
    a = G.flow_matching_loss(net, x1, generator=torch.Generator().manual_seed(3))
    b = G.flow_matching_loss(net, x1, generator=torch.Generator().manual_seed(3))
    c = G.flow_matching_loss(net, x1, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() != c.item()
    a.backward()
    assert net.out[-1].weight.grad.abs().sum() > 0


# -- the sampler -------------------------------------------------------------------------------


@pytest.mark.parametrize("method, steps, tol", [("euler", 200, 3e-2), ("heun", 20, 1e-2)])
def test_sampler_with_the_exact_velocity_transports_gaussian_to_gaussian(method, steps, tol):
    m = torch.tensor([2.0, -1.0]).reshape(1, 2, 1)
    s = torch.tensor([0.5, 3.0]).reshape(1, 2, 1)
    x = G.sample(
        G.gaussian_velocity(m, s), (20_000, 2, 1), steps=steps, method=method, generator=torch.Generator().manual_seed(0)
    ).double()
    # compare with the same noise pushed through the exact map x0 -> m + s x0
    x0 = torch.randn((20_000, 2, 1), generator=torch.Generator().manual_seed(0)).double()
    assert ((x - (m + s * x0)).abs() / (1 + x0.abs())).max() < tol
    torch.testing.assert_close(x.mean(0).flatten(), m.flatten().double(), atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0).flatten(), s.flatten().double(), atol=0.05, rtol=0)


def test_heun_is_second_order_and_euler_first():
    m, s = 1.0, 0.2
    x0 = torch.linspace(-2, 2, 9, dtype=torch.float64).reshape(9, 1, 1)
    exact = m + s * x0
    err = {
        (meth, n): (G.sample(G.gaussian_velocity(m, s), x0.shape, steps=n, method=meth, noise=x0) - exact).abs().max().item()
        for meth in G.METHODS
        for n in (8, 16)
    }
    assert err["euler", 8] / err["euler", 16] == pytest.approx(2, rel=0.25)
    assert err["heun", 8] / err["heun", 16] == pytest.approx(4, rel=0.25)


def test_sampler_shapes_path_and_determinism_per_seed():
    net = G.VelocityNet(3, width=8, blocks=1)
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)  # a velocity that moves
    shape = (2, 3, 8, 8)
    a = G.sample(net, shape, steps=3, generator=torch.Generator().manual_seed(7))
    b = G.sample(net, shape, steps=3, generator=torch.Generator().manual_seed(7))
    c = G.sample(net, shape, steps=3, generator=torch.Generator().manual_seed(8))
    assert a.shape == shape and torch.equal(a, b) and not torch.equal(a, c)
    x, path = G.sample(net, shape, steps=3, method="euler", generator=torch.Generator().manual_seed(7), return_path=True)
    assert path.shape == (4, *shape)
    torch.testing.assert_close(path[0], torch.randn(shape, generator=torch.Generator().manual_seed(7)))
    torch.testing.assert_close(path[-1], x)


# -- the velocity network ------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 3])
def test_velocity_net_is_dimension_generic_and_starts_at_zero(d):
    net = G.VelocityNet(4, width=8, blocks=2, spatial_dims=d)
    x = torch.randn(2, 4, *[8] * d)
    v = net(x, torch.tensor([0.1, 0.9]))
    assert v.shape == x.shape and torch.equal(v, torch.zeros_like(v))
    assert net(x, 0.5).shape == x.shape  # a scalar time is broadcast


def test_velocity_net_commutes_with_periodic_shifts_and_depends_on_time():
    torch.manual_seed(0)
    net = G.VelocityNet(2, width=8, blocks=2)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t = torch.randn(1, 2, 8, 8), torch.tensor([0.3])
    shifted = net(torch.roll(x, (2, 5), (2, 3)), t)
    torch.testing.assert_close(shifted, torch.roll(net(x, t), (2, 5), (2, 3)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(x, t), net(x, torch.tensor([0.7])))


# -- statistics --------------------------------------------------------------------------------


def test_spectrum_of_a_cosine_peaks_at_its_wavenumber_with_its_energy():
    n, m = 32, 5
    x = torch.arange(n, dtype=torch.float64)
    field = 3 * torch.cos(2 * math.pi * m * x / n)[:, None] * torch.ones(1, n, dtype=torch.float64)
    stats = S.field_statistics(field[None], 2)
    assert int(stats["spectrum"].argmax()) == m
    assert stats["spectrum"][m].item() == pytest.approx(9 / 2)  # mean of (3 cos)^2
    assert stats["spectrum"].sum().item() == pytest.approx((field**2).mean().item())  # Parseval


def test_radial_spectrum_parseval_for_a_band_limited_2d_field():
    x = spectral.filter_bands(torch.randn(3, 24, 24, dtype=torch.float64), ("low", "mid"), 2)
    _, e = spectral.radial_spectrum(x, 2)
    torch.testing.assert_close(e.sum(-1), (x**2).mean(dim=(-2, -1)))


def test_radial_correlation_of_cosines_by_hand():
    n, m = 32, 3
    x = torch.cos(2 * math.pi * m * torch.arange(n, dtype=torch.float64) / n)
    r, rho = spectral.radial_correlation(x[None], 1)
    assert r.tolist() == list(range(n // 2 + 1))
    torch.testing.assert_close(rho[0], torch.cos(2 * math.pi * m * r.double() / n))
    # 2D, varying along axis 0 only: rho(s) = cos(2 pi m s_0 / n). Shell 1 holds the lags
    # (+-1, 0), (0, +-1) and (+-1, +-1) (|s| = 1.41 rounds to 1): (6 cos(2 pi m / n) + 2) / 8.
    _, rho2 = spectral.radial_correlation(x[:, None].expand(n, n), 2)
    c = math.cos(2 * math.pi * m / n)
    assert rho2[0].item() == pytest.approx(1.0)
    assert rho2[1].item() == pytest.approx((6 * c + 2) / 8)


def test_wasserstein1_by_hand_and_against_scipy():
    a = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert S.wasserstein1(a, a + 0.5) == pytest.approx(0.5)
    assert S.wasserstein1(a, a.flip(0)) == 0.0  # order does not matter, only the values
    assert S.wasserstein1(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0, 2.0])) == pytest.approx(0.5)
    assert S.wasserstein1(torch.zeros(3, 2), torch.ones(6)) == pytest.approx(1.0)  # shapes are flattened
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(501, generator=g, dtype=torch.float64), 2 * torch.rand(77, generator=g, dtype=torch.float64)
    assert S.wasserstein1(u, v) == pytest.approx(stats.wasserstein_distance(u.numpy(), v.numpy()), rel=1e-9)


def test_statistics_distances_by_hand():
    g = torch.Generator().manual_seed(0)
    a = spectral.gaussian_random_field((32, 32), batch=4, slope=3.0, generator=g, dtype=torch.float64)
    same = S.statistics_distances(a, a, 2)
    assert same == {"spectrum": 0.0, "values": 0.0, "correlation": 0.0}
    scaled = S.statistics_distances(a, 10 * a, 2)
    assert scaled["spectrum"] == pytest.approx(2.0)  # energy x 100: two decades at every shell
    assert scaled["correlation"] == pytest.approx(0.0, abs=1e-12)  # correlation ignores amplitude
    assert scaled["values"] == pytest.approx(9 * a.abs().mean().item())
    assert S.statistics_distances(a, a + 1.0, 2)["values"] == pytest.approx(1.0)


def test_spectrum_distance_leaves_out_shells_without_reference_energy():
    g = torch.Generator().manual_seed(0)
    b = spectral.filter_bands(
        torch.randn(8, 32, 32, generator=g, dtype=torch.float64), ("low",), 2
    )  # no energy above the low band
    a = b + 1e-3 * torch.randn(8, 32, 32, generator=g, dtype=torch.float64)  # a little noise everywhere
    kept = S.statistics_distances(a, b, 2)["spectrum"]
    every = S.statistics_distances(a, b, 2, energy_floor=0.0)["spectrum"]
    assert kept < 0.05 < 5 < every  # the log ratio of noise to rounding error swamps the unfiltered distance


def test_nearest_distance_finds_shifted_copies():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(5, 16, 16, generator=g)
    x = torch.stack([torch.roll(ref[3], (4, 7), (0, 1)), 2 * ref[1], torch.randn(16, 16, generator=g)])
    d = S.nearest_distance(x, ref, 2, chunk=2)
    assert d.shape == (3,)
    assert d[0].item() == pytest.approx(0.0, abs=1e-3)  # a shifted copy is a copy
    assert d[1].item() == pytest.approx(0.5, abs=1e-3)  # |2r - r| / |2r|
    assert d[2].item() > 0.9  # independent noise is about sqrt(2) away, at best a bit less


def test_gaussian_random_field_like_matches_the_power_but_not_the_histogram():
    n = 32
    x = torch.arange(n, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    shifts = torch.randint(n, (64, 1), generator=g)
    squares = torch.sign(torch.cos(2 * math.pi * 2 * (x[None] + shifts) / n)) + 0.01  # bimodal values
    fields = spectral.gaussian_random_field_like(squares, 1, batch=4000, generator=g)
    assert fields.shape == (4000, n) and fields.dtype == squares.dtype
    power = lambda f: (torch.fft.fft(f).abs() ** 2).mean(0)
    torch.testing.assert_close(power(fields), power(squares), rtol=0.1, atol=1e-3 * power(squares).max().item())
    kurt = lambda f: ((f - f.mean()) ** 4).mean() / f.var() ** 2
    assert kurt(squares) < 1.1 and kurt(fields) == pytest.approx(3.0, abs=0.1)
    d = S.statistics_distances(fields[:64], squares, 1)
    assert d["values"] > 0.2 and d["spectrum"] < 0.2


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: G.VelocityNet(4, spatial_dims=4), "spatial_dims"),
        (lambda: G.VelocityNet(0), "channels"),
        (lambda: G.VelocityNet(4, width=8, time_dim=7), "time_dim"),
        (lambda: G.VelocityNet(4, width=8)(torch.randn(2, 3, 8, 8), 0.5), r"x must be \(n, 4, \*space\)"),
        (lambda: G.VelocityNet(4, width=8)(torch.randn(2, 4, 8, 8), torch.rand(3)), r"t must be a number or have shape \(2,\)"),
        (lambda: G.sample(lambda x, t: x, (2, 1, 4), method="rk4"), "method must be one of"),
        (lambda: G.sample(lambda x, t: x, (2, 1, 4), steps=0), "steps must be a positive int"),
        (lambda: G.sample(lambda x, t: x, (2, 1, 4), noise=torch.zeros(2, 1, 5)), "noise has shape"),
        (lambda: G.interpolate(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2)), "x0 has shape"),
        (lambda: G.interpolate(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3)), "t must have shape"),
        (lambda: G.flow_matching_loss(lambda x, t: x, torch.arange(4)), "x1 must be a floating-point tensor"),
        (lambda: S.statistics_distances(torch.zeros(2, 8, 8), torch.zeros(2, 8, 6), 2), "grid"),
        (lambda: S.statistics_distances(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), 4), "n_spatial"),
        (lambda: S.field_statistics(torch.zeros(8), 1), "x must be"),
        (lambda: S.wasserstein1(torch.zeros(0), torch.zeros(3)), "both sets need values"),
        (lambda: S.statistics_distances(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), 2, energy_floor=1.0), "energy_floor"),
        (lambda: S.nearest_distance(torch.zeros(2, 8, 8), torch.zeros(3, 8, 4), 2), "grid"),
        (lambda: spectral.radial_correlation(torch.zeros(8), 2), "n_spatial"),
        (lambda: spectral.gaussian_random_field_like(torch.zeros(2, 8), 1, batch=0), "batch"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
