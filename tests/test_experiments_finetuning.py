"""physfm.experiments.finetuning: the fine-tuning comparison (frozen, LoRA + transform + skips, full, each part alone)."""

from __future__ import annotations

import numpy as np
import pytest

from physfm import profiles
from physfm.experiments import finetuning


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PHYSFM_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = dict(profiles.resolve("finetuning", "smoke"))
    pre = dict(profiles.resolve("pretraining", "smoke"))
    cfg.update(dyn_steps=3, eval_every=2, seeds=(0, 1))
    a = finetuning.run(cfg, pre, progress=False)
    b = finetuning.run(cfg, pre, progress=False)
    c = finetuning.run({**cfg, "seeds": (5,)}, pre, progress=False, arms=("lora_transform_skips",))
    yield cfg, pre, a, b, c
    mp.undo()


@pytest.mark.slow
def test_runner_returns_results_of_the_expected_dimensions(smoke_runs):
    cfg, pre, ds, _, _ = smoke_runs
    assert list(ds.arm.values) == list(cfg["arms"])
    assert list(ds.system.values) == [cfg["seen"], pre["target"]] and list(ds.seen.values) == [True, False]
    assert ds.vrmse.dims == ("arm", "seed", "system", "eval_step") and ds.sizes["seed"] == 2
    assert list(ds.eval_step.values) == [0, 2, 3]  # before training, every eval_every, and at the end
    assert ds.nmse.sizes["band"] == 3 and ds.rollout_vrmse.sizes["lead"] == cfg["rollout_steps"]
    assert ds.loss.sizes["step"] == cfg["dyn_steps"]
    for name in ("vrmse", "nmse", "vrmse_window", "loss", "rollout_vrmse", "persistence_vrmse", "persistence_rollout_vrmse"):
        assert not np.isnan(ds[name].values).any(), name
    # every configuration starts from the same model: the autoencoder
    start = ds.vrmse.isel(eval_step=0).values
    np.testing.assert_array_equal(start, np.broadcast_to(start[:1], start.shape))
    t = ds.trainable.sel(system=cfg["seen"])
    assert t.sel(arm="skips") == 2
    assert t.sel(arm="transform") < t.sel(arm="frozen") < t.sel(arm="lora_transform_skips") < t.sel(arm="full")
    # the learned scales exist exactly where their part does
    assert np.isnan(ds.scale.sel(arm="lora")).all() and not np.isnan(ds.scale.sel(arm="transform")).any()
    assert np.isnan(ds.skip_scale.sel(arm="transform")).all() and not np.isnan(ds.skip_scale.sel(arm="skips")).any()
    s = finetuning.summary(ds)
    assert set(s.vrmse_mean.dims) == {"arm", "system"} and s.nmse_mean.dims[-1] == "band"
    assert s.attrs["eval_step"] == cfg["dyn_steps"]
    # the example rollout the chapter animates: Tadpole's configuration, first seed, each system
    n = pre["grid"]
    assert ds.example_truth.shape == (2, cfg["context"] + cfg["rollout_steps"], n, n)
    assert ds.example_prediction.dims == ("system", "lead", "y", "x") and ds.example_prediction.shape[1] == cfg["rollout_steps"]
    assert (ds.attrs["example_arm"], ds.attrs["example_seed"]) == ("lora_transform_skips", 0)
    assert np.isfinite(ds.example_prediction).all() and not np.allclose(
        ds.example_prediction, ds.example_truth[:, cfg["context"] :]
    )


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers(smoke_runs):
    _, _, a, b, c = smoke_runs
    for name in ("vrmse", "nmse", "loss", "rollout_vrmse", "scale", "skip_scale"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    other = c.loss.sel(arm="lora_transform_skips", seed=5).values
    assert not np.allclose(other, a.loss.sel(arm="lora_transform_skips", seed=0).values)


def test_bad_arguments_are_named():
    cfg, pre = profiles.resolve("finetuning", "smoke"), profiles.resolve("pretraining", "smoke")
    with pytest.raises(ValueError, match="unknown arms"):
        finetuning.run(cfg, pre, arms=("half_frozen",))
    with pytest.raises(ValueError, match="seen='gray_scott' must be one of the systems the tokeniser was pre-trained on"):
        finetuning.run({**cfg, "seen": "gray_scott"}, pre)
    with pytest.raises(ValueError, match="context \\+ rollout_steps = 12 must not exceed the 9 frames"):
        finetuning.run({**cfg, "rollout_steps": 8}, pre)
    with pytest.raises(ValueError, match="example_arm='full' is not among the arms run"):
        finetuning.run(cfg, pre, arms=("frozen",), example_arm="full")
    with pytest.raises(ValueError, match="unknown arm 'x'"):
        finetuning.build("x", None, 1, cfg, stride=4)
