"""physfm.data.pde: exact solutions, 4th-order convergence, conservation, torchfsm as oracle, the
step rule, band-limited initial states, what is dropped and why, and argument checks."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchfsm.pde import Burgers as FsmBurgers
from torchfsm.pde import KuramotoSivashinskyHighDim, NavierStokesVorticity

from physfm.data import pde
from physfm.data.spectral import dealias_mask, gaussian_random_field

F64 = torch.float64


def _lowpass(u, shape):
    """Keep the modes the 2/3 rule retains (where both libraries must agree exactly)."""
    dims = tuple(range(-len(shape), 0))
    return torch.fft.irfftn(torch.fft.rfftn(u, dim=dims) * dealias_mask(shape, real=True), s=shape, dim=dims)


@pytest.mark.parametrize("shape", [(64,), (32, 24), (12, 16, 8)], ids=str)
def test_diffusion_matches_the_exact_solution(shape):
    sys = pde.Diffusion()
    g = torch.Generator().manual_seed(0)
    u0 = sys.initial(2, shape, g)
    c = sys.sample(2, g)
    t = 0.7
    out = pde.simulate(sys, u0, c, dt=0.1, steps=7, save_every=7)[:, :, -1]
    grid = pde.SpectralGrid(shape, sys.length, dtype=F64)
    exact = grid.to_physical(grid.to_spectral(u0) * torch.exp(-c["nu"].reshape(-1, *[1] * (len(shape) + 1)) * grid.k2 * t))
    torch.testing.assert_close(out, exact, rtol=1e-12, atol=1e-12)


def test_advection_diffusion_moves_the_field_by_ct():
    """Velocity chosen so that c t is a whole number of cells: the exact solution is a roll."""
    n, length, t = 32, 2 * math.pi, 1.0
    cells = (3, -5)
    c = {
        "nu": torch.tensor([1e-12], dtype=F64),
        "c0": torch.tensor([cells[0] * length / n / t], dtype=F64),
        "c1": torch.tensor([cells[1] * length / n / t], dtype=F64),
        "c2": torch.tensor([0.0], dtype=F64),
    }
    sys = pde.AdvectionDiffusion()
    u0 = sys.initial(1, (n, n), torch.Generator().manual_seed(1))
    out = pde.simulate(sys, u0, c, dt=0.05, steps=20, save_every=20)[:, :, -1]
    torch.testing.assert_close(out, torch.roll(u0, shifts=cells, dims=(-2, -1)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "name, dts", [("kuramoto_sivashinsky", [1 / 80, 1 / 160, 1 / 320]), ("burgers", [1 / 40, 1 / 80, 1 / 160])]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fourth_order_in_time(name, dts, seed):
    """Halving the step divides the error by about 2^4 = 16 (once dt is small enough for the
    stiff KS problem to be in the asymptotic regime: at dt = 0.1 the ratio is still ~5)."""
    sys = pde.KuramotoSivashinsky(ranges={"nu": 1.0}) if name == "kuramoto_sivashinsky" else pde.Burgers(ranges={"nu": 0.05})
    g = torch.Generator().manual_seed(seed)
    u0 = _lowpass(gaussian_random_field((64,), batch=1, slope=4.0, generator=g, dtype=F64)[:, None], (64,))
    errs = pde.step_errors(sys, u0, sys.sample(1, g), dts).numpy()
    ratios = errs[:-1] / errs[1:]
    order = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert all(13 < r < 19 for r in ratios), f"error ratios {ratios}, errors {errs}"
    assert 3.7 < order < 4.3


@pytest.mark.parametrize(
    "name, shape",
    [
        ("diffusion", (32, 32)),
        ("advection_diffusion", (32,)),
        ("burgers", (64,)),
        ("kuramoto_sivashinsky", (32, 32)),
        ("navier_stokes", (32, 32)),
    ],
)
def test_mean_is_conserved(name, shape):
    sys = pde.get_system(name)
    g = torch.Generator().manual_seed(3)
    u0 = sys.initial(2, shape, g)
    if name == "navier_stokes":
        u0 = u0 - u0.mean(dim=(-2, -1), keepdim=True)
    dt = {"diffusion": 0.05, "advection_diffusion": 0.05, "burgers": 0.02, "kuramoto_sivashinsky": 0.1, "navier_stokes": 0.025}[
        name
    ]
    traj = pde.simulate(sys, u0, sys.sample(2, g), dt=dt, steps=40, save_every=10)
    means = traj.mean(dim=tuple(range(3, traj.ndim)))
    torch.testing.assert_close(means, means[:, :, :1].expand_as(means), rtol=0, atol=1e-10)


def test_systems_that_should_not_conserve_the_mean_do_not_claim_to():
    assert not pde.GrayScott.conserves_mean and not pde.Burgers.conserves_mean


# torchfsm integrates the same equations with the same ETDRK4 scheme. It applies the 2/3 rule
# to the input of the nonlinear term and we to its output; both leave the modes the rule retains
# identical, so those are compared. torchfsm removes the mean of the KS nonlinear term over the
# whole batch rather than per sample, so one trajectory is integrated at a time.


@pytest.mark.parametrize(
    "ours, theirs, shape, length, dt",
    [
        (lambda: pde.KuramotoSivashinsky(ranges={"nu": 1.0}), lambda: KuramotoSivashinskyHighDim(), (32, 32), 12 * math.pi, 0.05),
        (lambda: pde.KuramotoSivashinsky(ranges={"nu": 1.0}), lambda: KuramotoSivashinskyHighDim(), (64,), 12 * math.pi, 0.05),
        (lambda: pde.Burgers(ranges={"nu": 0.03}), lambda: FsmBurgers(0.03), (32, 32), 2 * math.pi, 0.01),
        (lambda: pde.Burgers(ranges={"nu": 0.03}), lambda: FsmBurgers(0.03), (64,), 2 * math.pi, 0.01),
        (
            lambda: pde.NavierStokes2D(ranges={"nu": 0.01, "drag": 0.0, "forcing": 0.0}),
            lambda: NavierStokesVorticity(100.0),
            (32, 32),
            2 * math.pi,
            0.01,
        ),
    ],
    ids=["ks-2d", "ks-1d", "burgers-2d", "burgers-1d", "navier-stokes"],
)
def test_agrees_with_torchfsm(ours, theirs, shape, length, dt):
    sys = ours()
    g = torch.Generator().manual_seed(4)
    u0 = _lowpass(sys.initial(1, shape, g), shape)
    mine = pde.simulate(sys, u0, sys.sample(1, g), dt=dt, steps=60, save_every=60, length=length)[:, :, -1]
    ref = theirs().integrate(u_0=u0, dt=dt, step=60, mesh=[(0, length, n) for n in shape])
    torch.testing.assert_close(_lowpass(mine, shape), _lowpass(ref, shape), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# The stepper against a plain ETDRK4: the textbook stages and nonlinear terms, written out
# ---------------------------------------------------------------------------------------------


def _plain_nonlinear(name, u_hat, shape, length, c, dealias):
    """Each system's nonlinear term as its docstring writes it, with torch.fft and a mask of the
    kept modes: no spectral factor, no fused products, no buffers reused."""
    dims = tuple(range(-len(shape), 0))
    ks = [
        2 * math.pi / length * n * (torch.fft.rfftfreq(n, dtype=F64) if i == len(shape) - 1 else torch.fft.fftfreq(n, dtype=F64))
        for i, n in enumerate(shape)
    ]
    ks = [k.reshape([-1 if j == i else 1 for j in range(len(shape))]).to(u_hat.real.dtype) for i, k in enumerate(ks)]
    m = [torch.round(k.abs() * length / (2 * math.pi)) for k in ks]
    keep = [math.ceil(dealias * n / 2) for n in shape]
    mask = math.prod(mi < kp for mi, kp in zip(m, keep))
    phys = lambda v: torch.fft.irfftn(v, s=shape, dim=dims)
    spec = lambda v: torch.fft.rfftn(v, dim=dims) * mask
    d = lambda v, i: phys(1j * ks[i] * v)
    if name == "burgers":  # -(u . grad) u
        u = phys(u_hat)
        return -spec(sum(u[:, i : i + 1] * d(u_hat, i) for i in range(len(shape))))
    if name == "kuramoto_sivashinsky":  # -1/2 (|grad u|^2 - its mean)
        out = -0.5 * spec(sum(d(u_hat, i) ** 2 for i in range(len(shape))))
        out[(..., *[0] * len(shape))] = 0
        return out
    if name == "navier_stokes":  # -n A cos(n y) - u . grad w, u = (d_y psi, -d_x psi), psi = w / |k|^2
        k2 = ks[0] ** 2 + ks[1] ** 2
        psi = torch.where(k2 > 0, u_hat / torch.where(k2 > 0, k2, 1.0), 0)
        y = torch.arange(shape[1], dtype=u_hat.real.dtype) * length / shape[1]
        n = (torch.round(c["wavenumber"]) * 2 * math.pi / length).to(y.dtype)[:, None, None, None]
        forcing = torch.fft.rfftn(
            (-n * c["forcing"].to(y.dtype)[:, None, None, None] * torch.cos(n * y)).expand(-1, 1, *shape), dim=dims
        )
        return forcing - spec(d(psi, 1) * d(u_hat, 0) - d(psi, 0) * d(u_hat, 1))
    if name == "gray_scott":  # (-u v^2 + F (1 - u), u v^2 - (F + kappa) v), the linear parts in L
        u, v = phys(u_hat).unbind(dim=1)
        r = (u * v * v)[:, None]
        return spec(torch.cat([c["F"].to(r.dtype).reshape(-1, *[1] * (r.ndim - 1)) - r, r], dim=1))
    return torch.zeros_like(u_hat)


@pytest.mark.parametrize(
    "name, shape, dt",
    [
        ("kuramoto_sivashinsky", (64,), 0.05),
        ("kuramoto_sivashinsky", (32, 48), 0.05),
        ("burgers", (64,), 0.01),
        ("burgers", (32, 24), 0.01),
        ("burgers", (8, 12, 16), 0.01),
        ("navier_stokes", (32, 32), 0.01),
        ("gray_scott", (24, 32), 1.0),
        ("gray_scott", (8, 8, 8), 1.0),
        ("diffusion", (16, 16), 0.1),
        ("advection_diffusion", (16, 12), 0.1),
    ],
    ids=str,
)
def test_the_stepper_is_plain_etdrk4(name, shape, dt):
    """Five steps of ``pde.simulate`` in float32 (folded factors, fused products, buffers reused)
    against ETDRK4 written out (Cox & Matthews' stages on the same contour-integral coefficients)
    with each system's nonlinear term as its docstring writes it: within 1e-5 of the largest value,
    from raw, not band-limited, initial states. Their float64 runs agree to 1e-12."""
    sys = pde.get_system(name)
    g = torch.Generator().manual_seed(7)
    c = pde._coefficients(sys, sys.sample(3, g), 3, "test")
    raw = sys.initial(3, shape, g)
    for dtype, tol in ((torch.float32, 1e-5), (F64, 1e-12)):
        u0 = raw.to(dtype)
        plain = _plain_etdrk4(name, sys, u0, c, dt, steps=5)
        ours = pde.simulate(sys, u0, c, dt=dt, steps=5)
        assert ours.dtype == dtype
        err = ((ours - plain).abs().max() / plain.abs().max()).item()
        assert err < tol, (dtype, err)


def _plain_etdrk4(name, sys, u0, c, dt, steps):
    """Cox & Matthews' ETDRK4 stages as the module docstring writes them, every frame saved."""
    shape, dims = u0.shape[2:], tuple(range(2, u0.ndim))
    grid = pde.SpectralGrid(shape, sys.length, dealias=sys.dealias, dtype=F64)
    cdtype = torch.complex64 if u0.dtype == torch.float32 else torch.complex128
    E, E2, Q, f1, f2, f3 = (x.to(cdtype) for x in pde._etdrk4_coefficients(sys.linear(grid, c), dt))

    def N(v):
        return _plain_nonlinear(name, v, shape, sys.length, c, sys.dealias).to(cdtype)

    u, frames = torch.fft.rfftn(u0, dim=dims), [u0]
    for _ in range(steps):
        nu = N(u)
        a = E2 * u + Q * nu
        na = N(a)
        b = E2 * u + Q * na
        nb = N(b)
        cc = E2 * a + Q * (2 * nb - nu)
        u = E * u + f1 * nu + 2 * f2 * (na + nb) + f3 * N(cc)
        frames.append(torch.fft.irfftn(u, s=shape, dim=dims))
    return torch.stack(frames, dim=2)


@pytest.mark.parametrize("name", ["kuramoto_sivashinsky", "burgers", "gray_scott"])
def test_folding_the_spectral_factor_changes_no_bit(name):
    """ETDRK4 folds a system's spectral factor (the dealiasing mask, -1/2 or -1, the removed
    mean) into its coefficients; the same system that applies it to every nonlinear term instead
    gives the same trajectory, bit for bit (float32, 2D and 1D or 3D)."""
    base = type(pde.get_system(name))

    class Unfolded(base):
        def spectral_factor(self, grid):
            return None

        def nonlinear(self, u_hat, grid, c):
            return base.spectral_factor(self, grid) * self.products(u_hat, grid, c)

    g = torch.Generator().manual_seed(3)
    for shape in ((24, 32), (64,) if name != "gray_scott" else (8, 8, 8)):
        sys = base()
        c, u0 = sys.sample(2, g), sys.initial(2, shape, g).float()
        dt = 1.0 if name == "gray_scott" else 0.01
        folded = pde.simulate(sys, u0, c, dt=dt, steps=10, save_every=5)
        unfolded = pde.simulate(Unfolded(), u0, c, dt=dt, steps=10, save_every=5)
        assert torch.equal(folded, unfolded)


def test_a_step_does_not_page_fault():
    """The allocator keeps the memory a step frees (``pde._raise_malloc_thresholds``): in a fresh
    process, twenty Burgers steps at 64^2 (batch 8, float32, one thread) take under a thousand minor
    page faults, where glibc's default thresholds hand freed pages back to the system and take
    300-1900 faults a step."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's allocator")
    code = (
        "import resource, torch\n"
        "from physfm.data import pde\n"
        "torch.set_num_threads(1)\n"
        "sys = pde.Burgers(ranges={'nu': 0.03})\n"
        "u0 = sys.initial(8, (64, 64), torch.Generator().manual_seed(0)).float()\n"
        "grid = pde.SpectralGrid((64, 64), sys.length, dtype=torch.float32)\n"
        "stepper = pde.ETDRK4(sys, grid, pde._coefficients(sys, {'nu': 0.03}, 8, 'test'), 0.01)\n"
        "u = grid.to_spectral(u0)\n"
        "for _ in range(5):\n"
        "    u = stepper.step(u)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20):\n"
        "    u = stepper.step(u)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    src = str(Path(pde.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True)
    faults = int(out.stdout.split()[-1])
    assert faults < 1000, faults


def test_generate_shapes_dtypes_and_determinism():
    g = lambda: torch.Generator().manual_seed(5)
    a = pde.generate("gray_scott", batch=3, shape=(24, 24), frames=4, generator=g(), warmup=20.0, interval=10.0)
    b = pde.generate("gray_scott", batch=3, shape=(24, 24), frames=4, generator=g(), warmup=20.0, interval=10.0)
    assert a.data.shape == (3, 2, 4, 24, 24) and a.data.dtype == torch.float32
    assert a.fields == ("u", "v") and set(a.coefficients) == {"F", "kappa", "Du", "Dv"}
    assert torch.equal(a.data, b.data)
    c = pde.generate("burgers", batch=2, shape=(8, 8, 8), frames=3, generator=g(), dtype=F64)
    assert c.data.shape == (2, 3, 3, 8, 8, 8) and c.data.dtype == F64
    ns = [pde.generate("navier_stokes", batch=2, shape=(16, 16), frames=2, generator=g(), warmup=1.0) for _ in range(2)]
    assert ns[0].fields == ("vorticity",) and torch.equal(ns[0].data, ns[1].data) and ns[0].steps == ns[1].steps


def test_non_finite_trajectories_are_dropped_regenerated_and_counted():
    class Explosive(pde.Diffusion):
        """Unstable for large coefficients: u_t = +a u (blows up for a*t large)."""

        ranges = {"nu": (0.0, 0.0), "a": (0.0, 40.0)}

        def linear(self, grid, c):
            return c["a"].reshape(-1, *[1] * (grid.d + 1)) + 0 * grid.k2

    g = torch.Generator().manual_seed(6)
    tr = pde.generate(Explosive(), batch=6, shape=(8,), frames=3, generator=g, dt=0.05, interval=0.5)
    assert tr.data.shape[0] == 6
    assert torch.isfinite(tr.data).all()
    assert tr.dropped > 0
    # e^(a t) at t = 1 stays below the 1e6 blow-up threshold only for a < ln(1e6) = 13.8
    assert (tr.coefficients["a"] < math.log(1e6)).all() and len(tr.coefficients["a"]) == 6
    # every draw with a > 13.8 was dropped for blowing up (e^40 is finite in float32), none for other reasons
    assert tr.drop_reasons == {"non-finite": 0, "blew up": tr.dropped, "lost all structure": 0}
    assert tr.drawn == 6 + tr.dropped
    with pytest.raises(RuntimeError, match=r"after 2 attempts \(dropped: 4 blew up\)") as info:
        pde.generate(
            Explosive(ranges={"a": (30.0, 40.0)}),
            batch=2,
            shape=(8,),
            frames=3,
            generator=g,
            dt=0.05,
            interval=0.5,
            max_attempts=2,
        )
    assert isinstance(info.value, pde.GenerationError) and info.value.dropped == 4
    assert info.value.drop_reasons == {"non-finite": 0, "blew up": 4, "lost all structure": 0}
    # e^(a t) with a = 100 overflows float32 at t = 0.9: non-finite
    with pytest.raises(pde.GenerationError, match=r"\(dropped: 2 non-finite\)") as info:
        pde.generate(
            Explosive(ranges={"a": 100.0}), batch=2, shape=(8,), frames=3, generator=g, dt=0.05, interval=0.5, max_attempts=1
        )
    assert info.value.drop_reasons == {"non-finite": 2, "blew up": 0, "lost all structure": 0}


def _gen(**kw):
    args = {"batch": 1, "shape": (8,), "frames": 2, **kw}
    return lambda: pde.generate("burgers", **args)


def _sim(**kw):
    args = {"dt": 0.1, "steps": 1, **kw}
    coefficients = args.pop("coefficients", {"nu": torch.full((1,), 0.02)})
    return lambda: pde.simulate("diffusion", torch.zeros(1, 1, 8), coefficients, **args)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: pde.generate("heat", batch=1, shape=(8,), frames=2), ValueError, "unknown system 'heat'"),
        (lambda: pde.generate(3, batch=1, shape=(8,), frames=2), TypeError, "system must be a name"),
        (
            lambda: pde.generate("navier_stokes", batch=1, shape=(8,), frames=2),
            ValueError,
            r"available in \(2,\) spatial dimensions, not 1",
        ),
        # sizes: positive ints, the grid's at least 4
        (_gen(batch=0), ValueError, r"generate: batch must be an int >= 1, got 0"),
        (_gen(batch=-2), ValueError, r"generate: batch must be an int >= 1, got -2"),
        (_gen(batch=2.5), TypeError, r"generate: batch must be an int >= 1, got float 2.5"),
        (_gen(batch="4"), TypeError, r"generate: batch must be an int >= 1, got str '4'"),
        (_gen(batch=True), TypeError, r"generate: batch must be an int >= 1, got bool True"),
        (_gen(frames=0), ValueError, r"generate: frames must be an int >= 1, got 0"),
        (_gen(frames=3.0), TypeError, r"generate: frames must be an int >= 1, got float 3.0"),
        (_gen(max_attempts=0), ValueError, r"generate: max_attempts must be an int >= 1, got 0"),
        (_gen(shape=(2, 8)), ValueError, r"generate: shape\[0\] must be an int >= 4, got 2"),
        (_gen(shape=(32.5, 32)), TypeError, r"generate: shape\[0\] must be an int >= 4, got float 32.5"),
        (_gen(shape="32"), TypeError, r"generate: shape must be a sequence of 1 to 3 ints \(grid sizes\), got str '32'"),
        (_gen(shape=32), TypeError, r"generate: shape must be a sequence of 1 to 3 ints \(grid sizes\), got int 32"),
        (_gen(shape=(8, 8, 8, 8)), ValueError, r"generate: shape must list 1 to 3 grid sizes, got \(8, 8, 8, 8\)"),
        # times and lengths: positive numbers (warmup may be 0); 0 is not "the default"
        (_gen(dt=0), ValueError, r"generate: dt must be a positive number, got 0"),
        (_gen(dt=-0.01), ValueError, r"generate: dt must be a positive number, got -0.01"),
        (_gen(dt=float("nan")), ValueError, r"generate: dt must be a positive number, got nan"),
        (_gen(dt="0.1"), TypeError, r"generate: dt must be a positive number, got str '0.1'"),
        (_gen(interval=0), ValueError, r"generate: interval must be a positive number, got 0"),
        (_gen(interval=-1.0), ValueError, r"generate: interval must be a positive number, got -1.0"),
        (_gen(length=0), ValueError, r"generate: length must be a positive number, got 0"),
        (_gen(length=-6.0), ValueError, r"generate: length must be a positive number, got -6.0"),
        (_gen(warmup=-1.0), ValueError, r"generate: warmup must be a number >= 0, got -1.0"),
        (_gen(cfl=0), ValueError, r"generate: cfl must be a positive number, got 0"),
        (_gen(cfl=3.0), ValueError, r"generate: cfl must be a positive number at most CFL_REJECT = 2.5, got 3.0"),
        (_gen(dtype=torch.float16), TypeError, r"generate: dtype must be torch.float32 or torch.float64, got torch.float16"),
        # coefficient ranges: numbers, not booleans or strings
        (lambda: pde.Burgers(ranges={"mu": (0.1, 0.2)}), ValueError, "unknown coefficient 'mu'"),
        (lambda: pde.Burgers(ranges={"nu": (0.2, 0.1)}), ValueError, "low <= high"),
        (lambda: pde.Burgers(ranges={"nu": (-0.1, 0.1)}), ValueError, "'nu' must be positive"),
        (
            lambda: pde.Burgers(ranges={"nu": True}),
            TypeError,
            r"Burgers: range of 'nu' must be a number or a \(low, high\) pair of numbers, got bool True",
        ),
        (
            lambda: pde.Burgers(ranges={"nu": (False, 0.1)}),
            TypeError,
            r"range of 'nu' must be a number or a \(low, high\) pair of numbers, got bool False",
        ),
        (
            lambda: pde.Burgers(ranges={"nu": "0.1"}),
            TypeError,
            r"range of 'nu' must be a number or a \(low, high\) pair of numbers, got '0.1'",
        ),
        (
            lambda: pde.Burgers(ranges={"nu": (0.1, 0.2, 0.3)}),
            TypeError,
            r"range of 'nu' must be a number or a \(low, high\) pair",
        ),
        (lambda: pde.Burgers(ranges=[("nu", 0.1)]), TypeError, "ranges must map coefficient names"),
        # simulate: a positive step (no running the heat equation backwards), int counts, every coefficient a number
        (_sim(dt=0), ValueError, r"simulate: dt must be a positive number, got 0"),
        (_sim(dt=-0.1), ValueError, r"simulate: dt must be a positive number, got -0.1"),
        (_sim(steps=-1), ValueError, r"simulate: steps must be an int >= 0, got -1"),
        (_sim(steps=2.0), TypeError, r"simulate: steps must be an int >= 0, got float 2.0"),
        (_sim(save_every=0), ValueError, r"simulate: save_every must be an int >= 1, got 0"),
        (_sim(length=0), ValueError, r"simulate: length must be a positive number, got 0"),
        (
            _sim(coefficients={"nu": True}),
            TypeError,
            r"simulate: coefficient 'nu' must be a number or a \(1,\) tensor, got bool True",
        ),
        (
            _sim(coefficients={"nu": torch.tensor([True])}),
            TypeError,
            r"simulate: coefficient 'nu' must be real numbers, got a torch.bool tensor",
        ),
        (
            _sim(coefficients={"nu": torch.ones(3)}),
            ValueError,
            r"simulate: coefficient 'nu' must have shape \(\) or \(1,\) \(the batch\), got \(3,\)",
        ),
        (
            _sim(coefficients={}),
            ValueError,
            r"simulate: coefficients of diffusion must be \['nu'\]; missing \['nu'\], unknown \[\]",
        ),
        (_sim(coefficients={"nu": 0.1, "mu": 0.1}), ValueError, r"missing \[\], unknown \['mu'\]"),
        (_sim(coefficients={"nu": float("inf")}), ValueError, r"simulate: coefficient 'nu' must be finite"),
        (
            lambda: pde.simulate("burgers", torch.zeros(1, 1, 8, 8), {"nu": torch.ones(1)}, dt=0.1, steps=1),
            ValueError,
            "burgers has 2 fields in 2D, u0 has 1",
        ),
        (
            lambda: pde.simulate("diffusion", [[0.0] * 8], {"nu": 0.1}, dt=0.1, steps=1),
            TypeError,
            "simulate: u0 must be a tensor",
        ),
        (
            lambda: pde.evolve("diffusion", torch.zeros(1, 1, 8), {"nu": 0.1}, frames=0),
            ValueError,
            r"evolve: frames must be an int >= 1, got 0",
        ),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_simulate_accepts_numbers_as_coefficients_and_runs_forwards_only():
    u0 = pde.Diffusion().initial(2, (16,), torch.Generator().manual_seed(0))
    a = pde.simulate("diffusion", u0, {"nu": 0.01}, dt=0.1, steps=3)
    b = pde.simulate("diffusion", u0, {"nu": torch.full((2,), 0.01, dtype=F64)}, dt=0.1, steps=3)
    assert torch.equal(a, b)
    energy = a.square().sum(dim=(1, 3))  # (batch, time): the heat equation only loses energy
    assert (energy.diff(dim=1) < 0).all()


def test_patterns_that_die_out_are_dropped():
    """Gray-Scott with a kill rate too high for its feed decays to the uniform state: dropped."""
    g = torch.Generator().manual_seed(7)
    dying = pde.GrayScott(ranges={"F": 0.025, "kappa": 0.065})
    with pytest.raises(RuntimeError, match=r"after 2 attempts \(dropped: 4 lost all structure\)") as info:
        pde.generate(dying, batch=2, shape=(32, 32), frames=3, generator=g, max_attempts=2)
    assert info.value.drop_reasons == {"non-finite": 0, "blew up": 0, "lost all structure": 4}
    tr = pde.generate("gray_scott", batch=8, shape=(32, 32), frames=3, generator=g)
    assert (tr.data[:, 1, -1].std(dim=(-2, -1)) > 0.01).all()


def test_a_new_system_is_one_small_class_kdv_soliton():
    """Korteweg-de Vries, u_t + 6 u u_x + u_xxx = 0, added as a subclass (the chapter's exercise):
    L = i k^3 (purely imaginary, dispersive), N = -3 d_x(u^2), and the rate of the step rule. A
    soliton (c/2) sech^2(sqrt(c)/2 (x - c t)) moves unchanged at speed c."""

    class KdV(pde.System):
        name, dims, ranges = "kdv", (1,), {}

        def linear(self, grid, c):
            return 1j * grid.ks[0] ** 3

        def nonlinear(self, u_hat, grid, c):
            u = grid.to_physical(u_hat)
            return -3 * grid.iks[0] * grid.to_spectral(u * u, dealiased=True)

        def rate(self, u_hat, grid, c, stable):  # the step rule: advection at the speed 6 u
            return pde.advective_rate(6 * grid.to_physical(u_hat)[None, :, 0], grid, stable)

    n, length, speed, t = 256, 50.0, 1.44, 2.0
    x = torch.arange(n, dtype=F64) * length / n
    soliton = lambda x0: 0.5 * speed / torch.cosh(0.5 * math.sqrt(speed) * (x - x0)) ** 2
    out = pde.simulate(KdV(), soliton(20.0)[None, None], {}, dt=2e-3, steps=1000, save_every=1000, length=length)
    torch.testing.assert_close(out[0, 0, -1], soliton(20.0 + speed * t), rtol=0, atol=1e-8)
    # with the step rule (64 steps of 1/32 here, CFL number 1.44): within 2e-5 of the exact soliton
    traj, info = pde.evolve(KdV(), soliton(20.0)[None, None], {}, frames=2, interval=t, warmup=0.0, length=length)
    torch.testing.assert_close(traj[0, 0, -1], soliton(20.0 + speed * t), rtol=0, atol=2e-5)
    assert info["substeps"] == [(t, 64)]


# ---------------------------------------------------------------------------------------------
# Exact solutions of nonlinear systems, through the generator's own path (pde.evolve)
# ---------------------------------------------------------------------------------------------


def test_kolmogorov_flow_relaxes_exactly_to_its_laminar_state():
    """A vorticity that depends on y alone, w = b(t) cos(n y), is not advected (u = (u_x(y), 0),
    u . grad w = 0), so with the forcing term -n A cos(n y) of the docstring
    b' = -(nu n^2 + alpha) b - n A: b(t) = b* + (b0 - b*) exp(-(nu n^2 + alpha) t), b* = -n A / (nu n^2 + alpha).
    The linear part is integrated exactly and ETDRK4 is exact for a constant N (f1 + 4 f2 + f3 =
    (e^z - 1) / L), so both the fixed step and the step rule agree to rounding (1e-13 of |w|)."""
    n, N = 4, 32
    c = {
        "nu": torch.tensor([0.002, 0.01, 0.005], dtype=F64),
        "drag": torch.tensor([0.05, 0.15, 0.1], dtype=F64),
        "forcing": torch.tensor([1.5, 0.5, 1.0], dtype=F64),
        "wavenumber": 4.0,
    }
    rate = c["nu"] * n**2 + c["drag"]
    b_star = -n * c["forcing"] / rate
    b0 = torch.tensor([2.0, -1.0, 0.0], dtype=F64)
    y = torch.arange(N, dtype=F64) * 2 * math.pi / N  # axis 1 is y
    w = lambda b: (b[:, None, None, None] * torch.cos(n * y)).expand(3, 1, N, N)
    exact = lambda t: w(b_star + (b0 - b_star) * torch.exp(-rate * t))
    scale = b_star.abs().max().item()

    fixed = pde.simulate("navier_stokes", w(b0).contiguous(), c, dt=0.5, steps=20, save_every=20)[:, :, -1]
    torch.testing.assert_close(fixed, exact(10.0), rtol=0, atol=1e-13 * scale)

    traj, info = pde.evolve("navier_stokes", w(b0).contiguous(), c, frames=5, interval=2.5, warmup=0.0)
    for i in range(5):
        torch.testing.assert_close(traj[:, :, i], exact(2.5 * i), rtol=0, atol=1e-13 * scale)
    # the flow speeds up towards the laminar state, and the step rule follows it
    steps = [m for _, m in info["substeps"]]
    assert steps == sorted(steps) and steps[-1] > steps[0]
    assert 0 < info["cfl"] <= pde.CFL_REJECT


def _gray_scott_ode(F, kappa, u, v, t_end, h=0.05):
    """Classical RK4 in float64 of the reaction ODE u' = -u v^2 + F (1 - u), v' = u v^2 - (F + kappa) v
    (step 0.05: its own error at t = 200 is below 1e-11, far below ETDRK4's)."""
    f = lambda u, v: (-u * v * v + F * (1 - u), u * v * v - (F + kappa) * v)
    for _ in range(round(t_end / h)):
        a = f(u, v)
        b = f(u + h / 2 * a[0], v + h / 2 * a[1])
        c = f(u + h / 2 * b[0], v + h / 2 * b[1])
        d = f(u + h * c[0], v + h * c[1])
        u, v = u + h / 6 * (a[0] + 2 * b[0] + 2 * c[0] + d[0]), v + h / 6 * (a[1] + 2 * b[1] + 2 * c[1] + d[1])
    return u, v


def test_gray_scott_from_a_uniform_state_follows_its_reaction_ode():
    """A uniform state stays uniform (the diffusion terms vanish), so Gray-Scott reduces to its
    reaction ODE. Against RK4 in float64: the fixed step converges at fourth order (halving dt
    divides the error by 13-19) with an error below 3e-7 at dt = 1 over t = 200, and the step
    rule (8-12 steps per 40 time units) stays within 2e-4."""
    F = torch.tensor([0.03, 0.04, 0.05, 0.026], dtype=F64)
    kappa = torch.tensor([0.06, 0.062, 0.058, 0.06], dtype=F64)
    u0, v0 = torch.tensor([0.5, 0.3, 0.7, 0.4], dtype=F64), torch.tensor([0.25, 0.4, 0.2, 0.3], dtype=F64)
    c = {"F": F, "kappa": kappa, "Du": 2e-5, "Dv": 1e-5}
    state = torch.stack([u0, v0], dim=1)[:, :, None, None].expand(4, 2, 8, 8).contiguous()
    t_end = 200.0
    ref = torch.stack(_gray_scott_ode(F, kappa, u0, v0, t_end), dim=1)[:, :, None, None]  # (4, 2, 1, 1)
    assert ref[2, 1] > 0.1  # one trajectory keeps its activator (the others decay to u = 1, v = 0)

    def error(dt):
        out = pde.simulate("gray_scott", state, c, dt=dt, steps=round(t_end / dt), save_every=round(t_end / dt))[:, :, -1]
        return (out - ref).abs().max().item()

    errors = [error(dt) for dt in (2.0, 1.0, 0.5)]
    assert errors[1] < 3e-7, errors
    assert all(13 < a / b < 19 for a, b in zip(errors, errors[1:])), errors

    traj, info = pde.evolve("gray_scott", state, c, frames=6, interval=40.0, warmup=0.0)
    assert (traj[:, :, -1] - ref).abs().max() < 2e-4
    assert traj.std(dim=(-2, -1)).max() == 0  # still uniform


# ---------------------------------------------------------------------------------------------
# The step rule
# ---------------------------------------------------------------------------------------------


def test_etdrk4_is_stable_below_the_bound_the_step_rule_uses():
    """|R| <= 1 for h|lambda| <= max(2 sqrt 2, h mu / sqrt 2) (lambda imaginary: advection), and the
    bound is tight where there is no damping (RK4's imaginary-axis limit 2 sqrt 2)."""
    x = torch.cat([torch.linspace(0, 20, 201), torch.logspace(math.log10(20), 5, 100)]).double()
    limit = torch.maximum(torch.full_like(x, 2 * math.sqrt(2)), x / math.sqrt(2))
    y = limit[:, None] * torch.linspace(0, 1, 400, dtype=F64)[None, :] * (1 - 1e-6)
    r = pde.amplification(x[:, None], 1j * y).abs()
    assert r.max() <= 1 + 1e-12
    assert pde.amplification(torch.tensor(0.0), torch.tensor(1j * 2.84)).abs() > 1
    # at mu = 0 it is classical RK4: R = 1 + z + z^2/2 + z^3/6 + z^4/24
    z = torch.tensor([0.3j, -0.5, 1 + 1j], dtype=torch.complex128)
    torch.testing.assert_close(pde.amplification(torch.zeros(3, dtype=F64), z), 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24)


def test_substeps_are_powers_of_two_and_three_times_powers_of_two():
    assert [pde.substeps(x) for x in (0, 0.3, 1, 1.01, 2, 2.5, 3, 3.2, 5, 7, 11.9, 12.1, 17)] == [
        1,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        6,
        8,
        12,
        16,
        24,
    ]
    assert pde.substeps(float("nan")) == 1 and pde.substeps(1e9) == pde.MAX_SUBSTEPS


def test_advective_rate_of_a_uniform_velocity():
    """For a constant velocity (V0, V1) the largest |v . k| over the kept modes is at the corner:
    V0 k0_max + V1 k1_max, k_max = 2 pi (K - 1) / L with K - 1 = 10 kept modes of 32 (2/3 rule)."""
    grid = pde.SpectralGrid((32, 32), 2 * math.pi, dtype=F64)
    v = torch.tensor([[0.7, -2.0], [0.3, 0.5]], dtype=F64)[:, :, None, None].expand(2, 2, 32, 32)  # (d, batch, ...)
    rho = pde.advective_rate(v, grid)
    torch.testing.assert_close(rho, (v[0, :, 0, 0].abs() + v[1, :, 0, 0].abs()) * 10)
    # modes damped faster than they turn are stable at any step and do not count
    stable = torch.full((2, 32, 17), 1e9, dtype=F64)
    assert (pde.advective_rate(v, grid, stable) == 0).all()


def test_linear_systems_take_one_exact_step_per_frame():
    """Diffusion and advection-diffusion (the advection is in L, integrated exactly): one step per
    frame whatever the Courant number, and every frame equal to the exact solution
    u_k(t) = exp(L(k) t) u_k(0) of the first frame."""
    for name, shape in (("diffusion", (32, 32)), ("advection_diffusion", (64,)), ("advection_diffusion", (16, 16))):
        sys = pde.get_system(name)
        tr = pde.generate(
            sys, batch=3, shape=shape, frames=5, generator=torch.Generator().manual_seed(8), dtype=F64, interval=2.0
        )
        assert tr.steps == 4 and tr.dt == 2.0 and tr.cfl == 0
        grid = pde.SpectralGrid(shape, sys.length, dtype=F64)
        lin = sys.linear(grid, tr.coefficients)
        first = grid.to_spectral(tr.data[:, :, 0])
        for i in range(5):
            exact = grid.to_physical(first * torch.exp(lin * 2.0 * i))
            torch.testing.assert_close(tr.data[:, :, i], exact, rtol=0, atol=1e-12)


def test_the_step_follows_the_grid_and_the_cfl_number():
    """Halving the grid spacing doubles the advective rate: the step rule takes about twice as
    many steps; the CFL number stays within its bounds; an explicit cfl halves the step."""
    g = lambda: torch.Generator().manual_seed(9)
    kw = dict(batch=2, frames=3, warmup=1.0)
    coarse = pde.generate("burgers", shape=(16, 16), generator=g(), **kw)
    fine = pde.generate("burgers", shape=(32, 32), generator=g(), **kw)
    assert 1.3 < fine.steps / coarse.steps < 3
    assert 0 < coarse.cfl <= pde.CFL_REJECT and 0 < fine.cfl <= pde.CFL_REJECT
    half = pde.generate("burgers", shape=(32, 32), generator=g(), cfl=pde.CFL / 2, **kw)
    assert 1.3 < half.steps / fine.steps < 3 and half.cfl <= pde.CFL_REJECT / 2 + 0.5


def test_navier_stokes_at_128_in_the_hardest_corner_of_its_box():
    """The low-viscosity, strongly forced, weakly damped corner at 128^2 blows up at the old fixed
    step 0.025 (a CFL number near 8), and is generated without a drop by the step rule."""
    corner = pde.NavierStokes2D(ranges={"nu": 0.002, "forcing": 1.5, "drag": 0.05})
    kw = dict(batch=2, shape=(128, 128), frames=2, warmup=4.5, max_attempts=1)
    with pytest.raises(pde.GenerationError, match="non-finite"):
        pde.generate(corner, generator=torch.Generator().manual_seed(10), dt=0.025, **kw)
    tr = pde.generate(corner, generator=torch.Generator().manual_seed(10), **kw)
    assert tr.dropped == 0 and torch.isfinite(tr.data).all() and tr.cfl <= pde.CFL_REJECT


@pytest.mark.parametrize("name", ["burgers", "kuramoto_sivashinsky", "gray_scott", "navier_stokes"])
def test_one_frame_with_the_step_rule_is_accurate(name):
    """From a developed state (float64, 32^2), one frame interval with the step rule is within
    1e-3 (relative L2) of a run at a quarter of its step: the rule's accuracy at the default CFL
    number 1.5 (measured on 8 trajectories each: 1e-7 to 7e-5 for Burgers, Kuramoto-Sivashinsky
    and Gray-Scott, 5e-7 to 7e-4 for the under-resolved Navier-Stokes flows at 32^2, up to 7e-5 at 64^2)."""
    sys = pde.get_system(name)
    tr = pde.generate(sys, batch=2, shape=(32, 32), frames=1, generator=torch.Generator().manual_seed(11), dtype=F64)
    u0 = tr.data[:, :, 0]
    rule, info = pde.evolve(sys, u0, tr.coefficients, frames=2, warmup=0.0)
    m = info["substeps"][-1][1]
    fine, _ = pde.evolve(sys, u0, tr.coefficients, frames=2, warmup=0.0, dt=sys.interval / (4 * m))
    err = (rule[:, :, -1] - fine[:, :, -1]).flatten(1).norm(dim=1) / fine[:, :, -1].flatten(1).norm(dim=1)
    assert err.max() < 1e-3, (err, info["substeps"])
    assert err.max() > 0  # the two runs did take different steps


# ---------------------------------------------------------------------------------------------
# Band-limited initial states
# ---------------------------------------------------------------------------------------------


def _energy_above_cutoff(u, grid):
    """Fraction of the spectral energy of ``u (..., *space)`` in the modes the dealiasing rule removes."""
    u_hat = grid.to_spectral(u)
    kept = grid.dealias_(u_hat.clone())
    return ((u_hat - kept).abs().square().sum() / u_hat.abs().square().sum()).item()


@pytest.mark.parametrize(
    "name, shape",
    [
        ("burgers", (32, 32)),
        ("kuramoto_sivashinsky", (64,)),
        ("gray_scott", (32, 32)),
        ("navier_stokes", (32, 32)),
        ("diffusion", (8, 8, 8)),
    ],
)
def test_initial_states_are_band_limited_before_the_first_step(name, shape):
    """The random initial fields put part of their fluctuation energy above the dealiasing cut-off
    (on 64 draws each: 1e-5 to 4e-3 for Kuramoto-Sivashinsky on 64 points, 1e-3 to 0.1 for the 2D
    systems on 32^2, up to a third for diffusion on 8^3); the generator removes it before the first step: the first frame (no warm-up) and every later
    one hold none of it, to rounding."""
    sys = pde.get_system(name)
    grid = pde.SpectralGrid(shape, sys.length, dealias=sys.dealias, dtype=F64)
    g = torch.Generator().manual_seed(12)
    sys.sample(4, g)  # generate draws the coefficients first, then the initial states
    raw = sys.initial(4, shape, g)
    assert _energy_above_cutoff(raw - raw.mean(dim=tuple(range(2, raw.ndim)), keepdim=True), grid) > 1e-6
    tr = pde.generate(sys, batch=4, shape=shape, frames=3, generator=torch.Generator().manual_seed(12), dtype=F64, warmup=0.0)
    for i in range(3):
        assert _energy_above_cutoff(tr.data[:, :, i], grid) < 1e-28
    # the first frame is exactly the raw draw band-limited
    torch.testing.assert_close(tr.data[:, :, 0], grid.to_physical(grid.to_spectral(raw, dealiased=True)), rtol=0, atol=1e-14)
