"""physfm.dynamics and physfm.pretraining: next-frame model, rollout, and the ablation runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physfm import pretraining, profiles
from physfm.autoencoder import Tokeniser
from physfm.dynamics import NextFrameModel


def _model(fields=1, seed=0):
    torch.manual_seed(seed)
    tok = Tokeniser(spatial_dims=2, channels=(4, 8), latent=2, blocks=1, patch=2, time_patch=1, stride=2)
    return NextFrameModel(tok, fields, stride=2, width=8, blocks=1)


def test_untrained_model_predicts_persistence_through_the_tokeniser():
    model = _model()
    x = torch.randn(2, 1, 4, 8, 8)
    recon = model.tokeniser(x, 2, 1)
    torch.testing.assert_close(model(x), recon)


@pytest.mark.parametrize("fields", [1, 2, 3])
def test_shapes_and_causality(fields):
    model = _model(fields)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, fields, 5, 8, 8)
    y = model(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, :, 3:] += 1.0
    torch.testing.assert_close(model(x2)[:, :, :3], y[:, :, :3])


def test_rollout_feeds_predictions_back():
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = torch.randn(1, 1, 3, 8, 8)
    out = model.rollout(ctx, 3)
    assert out.shape == (1, 1, 3, 8, 8)
    first = model(ctx)[:, :, -1:]
    torch.testing.assert_close(out[:, :, :1], first)
    second = model(torch.cat([ctx, first], 2)[:, :, -3:])[:, :, -1:]
    torch.testing.assert_close(out[:, :, 1:2], second)


def test_frozen_tokeniser_only_processor_learns():
    model = _model()
    model.freeze_tokeniser()
    before = {k: v.clone() for k, v in model.tokeniser.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(2, 1, 4, 8, 8)
    for _ in range(3):
        loss = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in model.tokeniser.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(p.grad is not None for p in model.processor.parameters())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"expected frames \(n, 2 fields, time, \*space\)"):
        _model(2)(torch.randn(1, 1, 3, 8, 8))


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    import os

    os.environ["PHYSFM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    cfg = profiles.resolve("pretraining", "smoke")
    small = dict(cfg)
    small.update(seeds=(0, 1), dyn_steps=3, pre_steps=2, eval_every=3)
    a = pretraining.run(small, progress=False)
    b = pretraining.run(small, progress=False)
    c = pretraining.run({**small, "seeds": (5,)}, progress=False, configs=("scratch", "in_domain_frozen"))
    return small, a, b, c


@pytest.mark.slow
def test_runner_returns_curves_of_the_expected_dimensions(smoke_runs):
    cfg, ds, _, _ = smoke_runs
    assert list(ds.config.values) == list(pretraining.CONFIGS)
    assert ds.vrmse.dims == ("config", "seed", "eval_step") and ds.sizes["seed"] == 2
    assert ds.nmse.sizes["band"] == 3 and ds.rollout_vrmse.sizes["lead"] == cfg["rollout_steps"]
    # equal-step configurations end at dyn_steps, the equal-compute one at dyn_steps + pre_steps
    last = ds.eval_step.values.max()
    assert last == cfg["dyn_steps"] + cfg["pre_steps"]
    assert not np.isnan(ds.vrmse.sel(config="scratch", eval_step=cfg["dyn_steps"])).any()
    assert np.isnan(ds.vrmse.sel(config="scratch", eval_step=last)).all()
    assert not np.isnan(ds.vrmse.sel(config="scratch_equal_compute")).any()
    assert not np.isnan(ds.rollout_vrmse).any()
    assert ds.persistence_rollout_vrmse.dims == ("lead",) and np.isfinite(ds.persistence_rollout_vrmse).all()
    assert 0 < float(ds.persistence_vrmse) < 10
    red = pretraining.reductions(ds)
    assert float(red.reduction_percent.sel(config="scratch")) == 0.0


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers(smoke_runs):
    _, a, b, c = smoke_runs
    np.testing.assert_array_equal(a.vrmse.values, b.vrmse.values)
    np.testing.assert_array_equal(a.rollout_vrmse.values, b.rollout_vrmse.values)
    assert not np.allclose(c.vrmse.sel(config="scratch", seed=5).values[-1], a.vrmse.sel(config="scratch").values[:, -1])


@pytest.mark.slow
def test_worker_processes_give_the_numbers_of_one_process(smoke_runs):
    """Runs shared out to two one-thread workers equal the in-process runs (up to the rounding
    of one thread against several)."""
    cfg, a, _, _ = smoke_runs
    b = pretraining.run({**cfg, "workers": 2}, progress=False)
    np.testing.assert_allclose(b.vrmse.values, a.vrmse.values, rtol=1e-3)
    np.testing.assert_allclose(b.rollout_vrmse.values, a.rollout_vrmse.values, rtol=1e-3)
    assert b.attrs["workers"] == 2


def test_unknown_configuration_is_named():
    with pytest.raises(ValueError, match="unknown configurations"):
        pretraining.run(profiles.resolve("pretraining", "smoke"), configs=("warm_start",))
