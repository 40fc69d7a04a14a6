"""physfm.experiments.scan: the selective hold, the scan timing, the latent-dynamics model.

Small sizes that still show the chapter's claims: the selective model solves the hold task and
the LTI one does not; the dynamics model is causal and, once it has seen two frames, predicts
far better than from one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physfm.eval import forecast
from physfm.experiments import scan
from physfm.profiles import resolve


@pytest.fixture(autouse=True)
def _no_forced_profile(monkeypatch):
    monkeypatch.delenv("PHYSFM_PROFILE", raising=False)


def test_hold_batch_targets_the_value_at_the_last_marker():
    u, y = scan.hold_batch(5, 40, torch.Generator().manual_seed(0), marks=0.2)
    assert u.shape == (5, 40, 2) and y.shape == (5, 40)
    assert (u[:, 0, 1] == 1).all()
    for b in range(5):
        last = 0
        for t in range(40):
            if u[b, t, 1]:
                last = t
            assert y[b, t] == u[b, last, 0]
    with pytest.raises(ValueError, match="marks must be a probability"):
        scan.hold_batch(2, 4, torch.Generator(), marks=0.0)
    with pytest.raises(ValueError, match="batch and length"):
        scan.hold_batch(0, 4, torch.Generator())


def test_the_two_hold_models_start_from_the_same_projections():
    cfg = resolve("scan", "smoke")
    sel, lti = scan.hold_model(cfg, True, 0), scan.hold_model(cfg, False, 0)
    for i in (0, 2):
        torch.testing.assert_close(sel[i].weight, lti[i].weight)
    assert sel[1].selective and not lti[1].selective


def test_run_hold_layout_and_determinism():
    cfg = resolve("scan", "smoke", hold_steps=2, hold_length=8, hold_batch=4)
    a = scan.run_hold(cfg, n_test=8, progress=False)
    b = scan.run_hold(cfg, n_test=8, progress=False)
    assert list(a.model.values) == ["selective", "lti"]
    assert a.test_mse.shape == (2, 3) and a.prediction.shape == (2, 8) and a.delta.shape == (8, 2 * cfg.hold_width)
    assert np.isfinite(a.test_mse).all() and (a.delta > 0).all()
    np.testing.assert_array_equal(a.test_mse, b.test_mse)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    assert bool(a.marked[0]) and a.target[0] == a.value[0]


def test_selective_solves_the_hold_task_where_lti_cannot():
    """The chapter's claim at a small size: same layers, same data, same steps."""
    cfg = resolve(
        "scan", "smoke", hold_length=16, hold_steps=300, hold_batch=16, hold_width=8, hold_state=4, hold_lr=3e-2, hold_marks=0.2
    )
    ds = scan.run_hold(cfg, n_test=128, progress=False)
    sel, lti = float(ds.final_mse.sel(model="selective")), float(ds.final_mse.sel(model="lti"))
    assert sel < 0.05, ds.final_mse.values  # predicting 0 scores about 1
    assert lti > 10 * sel, ds.final_mse.values
    # the selective block switches its step at the marked steps: up in many channels, down in others
    ratio = (ds.delta.where(ds.marked).mean("t") / ds.delta.where(~ds.marked).mean("t")).values
    assert (ratio > 1.5).sum() > len(ratio) / 4 and (ratio < 0.1).any(), ratio


def test_time_scans_layout_and_errors():
    ds = scan.time_scans([16, 32], repeats=1, progress=False)
    assert ds.seconds.shape == (3, 2) and (ds.seconds > 0).all()
    assert list(ds.way.values) == list(scan.WAYS) and ds.attrs["speedup"] > 0
    with pytest.raises(ValueError, match="unknown ways"):
        scan.time_scans([16], ways=("fastest",))
    with pytest.raises(ValueError, match="repeats"):
        scan.time_scans([16], repeats=0)


def test_fourier_latent_is_a_projection_on_the_first_modes():
    lat = scan.FourierLatent(3, 16)
    x = torch.linspace(0, 2 * math.pi, 17)[:-1]
    u = (torch.cos(2 * x) + 0.5 * torch.sin(x) + 0.3 + torch.cos(6 * x)).reshape(1, 1, 1, 16)
    z = lat.encode(u)
    assert z.shape == (1, 1, 6)
    kept = (torch.cos(2 * x) + 0.5 * torch.sin(x) + 0.3).reshape(1, 1, 1, 16)
    torch.testing.assert_close(lat.project(u), kept, atol=1e-5, rtol=0)
    torch.testing.assert_close(lat.project(lat.project(u)), lat.project(u), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="modes must be"):
        scan.FourierLatent(9, 16)
    with pytest.raises(ValueError, match=r"u must be \(n, 1, T, 16\)"):
        lat.encode(torch.zeros(1, 2, 3, 16))


def test_latent_dynamics_is_causal_and_rolls_out():
    cfg = resolve("scan", "smoke")
    model = scan.dynamics_model(cfg, scale=0.5).eval()
    z = torch.randn(2, 7, 2 * cfg.modes, generator=torch.Generator().manual_seed(0))
    changed = z.clone()
    changed[:, 4:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, :4], model(z)[:, :4], rtol=0, atol=1e-6)
    assert model.rollout(z[:, :3], 5).shape == (2, 5, 2 * cfg.modes)


def test_run_dynamics_layout_baselines_and_determinism():
    cfg = resolve("scan", "smoke", dyn_steps=2)
    a = scan.run_dynamics(cfg, progress=False)
    b = scan.run_dynamics(cfg, progress=False)
    horizon = cfg.frames - cfg.context
    assert a.vrmse_position.shape == (cfg.frames - 1,) and a.rollout_vrmse.shape == (horizon,)
    assert a.example_rollout.shape == (cfg.frames, cfg.grid)
    for v in ("vrmse_position", "rollout_vrmse", "persistence_rollout_vrmse", "val_vrmse"):
        assert np.isfinite(a[v]).all(), v
        np.testing.assert_array_equal(a[v], b[v])
    assert float(a.causal_leak) == 0.0
    # the example starts with its true context
    np.testing.assert_array_equal(a.example_rollout[: cfg.context], a.example_truth[: cfg.context])
    # persistence per lead is what forecast computes from the same projected trajectories
    u_train, u_val, _ = scan.dynamics_data(cfg)
    truth = scan.FourierLatent(cfg.modes, cfg.grid).project(u_val)
    np.testing.assert_allclose(
        a.persistence_rollout_vrmse, forecast.persistence_rollout_vrmse(truth, cfg.context, horizon).numpy(), rtol=1e-6
    )
    # training and validation trajectories come from different streams
    assert not torch.allclose(u_train[: len(u_val)], u_val)


def test_dynamics_model_infers_the_velocity_in_context():
    """Trained briefly on small data, the model predicts frames seen after two others far better
    than the first frame (which no model can predict better than a guess of the velocity)."""
    cfg = resolve(
        "scan", "smoke", grid=16, frames=8, modes=3, n_train=64, n_val=16, dyn_steps=300, dyn_batch=16, dyn_width=32, dyn_lr=1e-2
    )
    ds = scan.run_dynamics(cfg, progress=False)
    v = ds.vrmse_position.values
    assert v[2:].mean() < v[0] / 2, v
    assert v[2:].mean() < ds.persistence_position.values[2:].mean(), (v, ds.persistence_position.values)
