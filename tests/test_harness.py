"""physfm.experiments.harness: jobs, held-out data, one result layout, runs that resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from physfm.experiments import harness
from physfm.experiments.harness import Job
from physfm.training.loop import _curves


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path / "cache"))


def _result(job: Job, steps: int = 4) -> xr.Dataset:
    evals = [
        (s, {"vrmse": np.float64(job.seed + s), "nmse": np.ones(3) * s, "vrmse_window": np.arange(2.0) + s})
        for s in range(0, steps + 1, 2)
    ]
    curves = _curves([1.0] * steps, [0.1] * steps, evals, "x", 0.0)
    return harness.job_dataset(curves, rollout=np.arange(3.0), trainable=7, kept=5, dropped=1)


def test_one_layout_for_every_job():
    jobs = [Job("a", 0), Job("b", 0), Job("a", 1)]
    results = {j: _result(j, steps=8 if j.arm == "b" else 4) for j in jobs}
    base = xr.Dataset({"persistence_vrmse": ((), 0.5)})
    ds = harness.collect(results, baselines=base, attrs={"note": "x"})
    assert ds.vrmse.dims == ("arm", "seed", "eval_step") and list(ds.arm.values) == ["a", "b"]
    assert list(ds.eval_step.values) == [0, 2, 4, 6, 8]
    assert np.isnan(ds.vrmse.sel(arm="a", eval_step=8)).all()  # shorter runs are NaN after their end
    assert np.isnan(ds.vrmse.sel(arm="b", seed=1)).all()  # a combination that was not run
    assert ds.nmse.dims == ("arm", "seed", "eval_step", "band") and ds.vrmse_window.sizes["window"] == 2
    assert ds.rollout_vrmse.sizes["lead"] == 3 and float(ds.persistence_vrmse) == 0.5
    assert ds.attrs["training_dropped"] == 3 and ds.attrs["training_drop_rate"] == pytest.approx(3 / 18)
    assert ds.attrs["note"] == "x"
    with_regime = harness.collect({Job("a", 0, system="s", regime="r"): _result(Job("a", 0))})
    assert with_regime.vrmse.dims == ("regime", "arm", "seed", "system", "eval_step")


def test_finished_jobs_are_saved_and_not_run_again(tmp_path):
    jobs = [Job("a", 0), Job("b", 0)]
    first = harness.run_jobs(_result, jobs, folder=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-seed0.nc", "b-seed0.nc"]

    def fail(job):
        raise AssertionError(f"{job} ran again")

    again = harness.run_jobs(fail, jobs, folder=tmp_path, progress=False)
    for j in jobs:
        xr.testing.assert_equal(first[j], again[j])
    more = harness.run_jobs(_result, [*jobs, Job("c", 1)], folder=tmp_path, progress=False)
    assert list(more) == [*jobs, Job("c", 1)]
    with pytest.raises(ValueError, match="listed twice"):
        harness.run_jobs(_result, [jobs[0], jobs[0]], progress=False)


def test_held_out_data_are_distinct_windows_with_their_metadata():
    data = harness.eval_data(
        "advection_diffusion", shape=(16,), frames=8, window=3, n_windows=6, context=2, steps=3, n_rollouts=4
    )
    assert data.windows.shape == (6, 1, 3, 16) and data.trajectories.shape == (4, 1, 5, 16)
    assert data.window_coefficients.shape == (6, 2) and data.trajectory_coefficients.shape == (4, 2)
    flat = data.windows.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(6) * 1e9).min() > 1e-3
    assert torch.cdist(flat, data.trajectories[:, :, :3].flatten(1)).min() > 1e-3  # validation is not rollout data
    b = data.baselines()
    assert b.persistence_rollout_vrmse.sizes["lead"] == 3 and float(b.persistence_vrmse) > 0
    assert set(data.drops) == {"kept", "dropped", "rate"}
    with pytest.raises(ValueError, match="context \\+ steps <= frames=8"):
        harness.eval_data("diffusion", shape=(16,), frames=8, window=3, n_windows=2, context=4, steps=5, n_rollouts=2)


def test_a_rollout_keeps_its_example_and_its_score():
    data = harness.eval_data("burgers", shape=(16,), frames=8, window=3, n_windows=2, context=2, steps=3, n_rollouts=3)

    def persistence(context, steps):
        return context[:, :, -1:].repeat(1, 1, steps, 1)

    score, example = data.rollout_with_example(persistence)
    np.testing.assert_array_equal(score, data.rollout(persistence))
    truth = data.example()
    assert truth.shape == (5, 16) and example.shape == (3, 16)  # first field of the first trajectory
    np.testing.assert_array_equal(truth, data.trajectories[0, 0].numpy())
    np.testing.assert_array_equal(example, np.broadcast_to(truth[1], (3, 16)))  # the last context frame, repeated
    ds = harness.job_dataset(_curves([1.0], [0.1], [], "x", 0.0), rollout=score, **{harness.EXAMPLE: (("lead", "x"), example)})
    kept, examples = harness.split_examples({Job("a", 0): ds, Job("b", 0): ds.drop_vars(harness.EXAMPLE)})
    assert list(examples) == [Job("a", 0)] and all(harness.EXAMPLE not in d for d in kept.values())
    np.testing.assert_array_equal(examples[Job("a", 0)].values, example)
