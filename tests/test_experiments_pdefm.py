"""physfm.experiments.pdefm: PDE-FM's three experiments on the harness."""

from __future__ import annotations

import numpy as np
import pytest

from physfm import profiles
from physfm.experiments import pdefm


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PHYSFM_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = dict(profiles.resolve("pdefm", "smoke"))
    cfg.update(seeds=(0,), steps=2, eval_every=1, timing_lengths=(8,))
    yield cfg, pdefm.run(cfg, progress=False)
    mp.undo()


def test_runner_returns_results_of_the_expected_dimensions(smoke_run):
    cfg, ds = smoke_run
    arms = ["full", "no_spectral_token", "transformer", *[f"without_{s}" for s in cfg["held_out"]]]
    assert list(ds.arm.values) == arms and list(ds.system.values) == list(cfg["systems"])
    assert ds.vrmse.dims == ("arm", "seed", "system", "eval_step") and ds.sizes["seed"] == 1
    assert ds.vrmse_by_position.sizes["position"] == cfg["window"] - 1
    assert ds.rollout_vrmse.sizes["lead"] == cfg["rollout_steps"] and ds.nmse.sizes["band"] == 3
    assert list(ds.eval_step.values) == [0, 1, 2]
    for name, var in ds.data_vars.items():
        assert not np.isnan(np.asarray(var.values, dtype=float)).any(), name
    held = cfg["held_out"][0]
    assert not bool(ds.seen.sel(arm=f"without_{held}", system=held)) and bool(ds.seen.sel(arm="full", system=held))
    assert float(ds.draws.sel(arm=f"without_{held}", system=held).sum()) == 0
    np.testing.assert_allclose(ds.probability.sum("system"), 1.0)
    assert ds.parameters.sel(arm="no_spectral_token") < ds.parameters.sel(arm="full")
    d = pdefm.deltas(ds)
    assert float(abs(d.mean_over_systems.sel(arm="full"))) == 0.0
    assert set(pdefm.summary(ds).data_vars) == {"mean", "std", "mean_over_systems", "std_over_systems"}
    assert ds.backbone_seconds.dims == ("backbone", "length")
    # the example rollouts the chapter animates: the full model, first seed, every system
    n, systems = cfg["grid"], len(cfg["systems"])
    assert ds.example_truth.shape == (systems, cfg["context"] + cfg["rollout_steps"], n, n)
    assert ds.example_prediction.dims == ("system", "lead", "y", "x")
    assert ds.example_prediction.shape == (systems, cfg["rollout_steps"], n, n) and ds.attrs["example_arm"] == "full"


def test_unknown_arm_is_named():
    with pytest.raises(ValueError, match="unknown arms"):
        pdefm.run(profiles.resolve("pdefm", "smoke"), arms=("no_backbone",))
    with pytest.raises(ValueError, match="example_arm='full' is not among the arms run"):
        pdefm.run(profiles.resolve("pdefm", "smoke"), arms=("transformer",))
