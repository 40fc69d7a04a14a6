"""physfm.experiments.pretraining: the fair ablation (paired starts, rate controls, equal compute,
intervals) and its map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physfm import profiles
from physfm.experiments import pretraining as P
from physfm.runtime import one_thread


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PHYSFM_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = dict(profiles.resolve("pretraining", "smoke"))
    cfg.update(
        seeds=(0, 1),
        dyn_steps=3,
        pre_steps=2,
        eval_every=3,
        map={"compression": ({"latent": 1},), "pre-training": ({"pre_steps": 4},)},
        focus={"latent": 2},
    )
    yield cfg
    mp.undo()


@pytest.fixture(scope="module")
def runs(small):
    a = P.run(small, progress=False)
    b = P.run(small, progress=False, with_map=False)
    return a, b


def test_every_arm_and_point_in_one_layout(small, runs):
    ds, _ = runs
    assert list(ds.regime.values) == ["base", "compression: latent=1", "pre-training: pre_steps=4", "focus: latent=2"]
    assert P.focus_regime(small) == "focus: latent=2"
    assert list(ds.arm.values) == list(small["arms"])  # in the preset's order
    assert ds.vrmse.dims == ("regime", "arm", "seed", "eval_step") and ds.vrmse_window.sizes["window"] == small["val_windows"]
    extra = P.equal_compute_steps(small)
    assert extra == -(-small["pre_steps"] * small["pre_batch"] // small["batch"])  # one field, crops of a window
    assert int(ds.steps.sel(regime="base", arm="scratch_equal_compute", seed=0)) == small["dyn_steps"] + extra
    assert not np.isnan(ds.vrmse.sel(regime="base", arm="scratch_equal_compute")).any()
    last = small["dyn_steps"]
    base = ds.sel(regime="base")
    for arm in small["arms"]:
        assert not np.isnan(base.vrmse.sel(arm=arm, eval_step=[0, last])).any(), arm
        assert not np.isnan(base.rollout_vrmse.sel(arm=arm)).any(), arm
    # the map runs its own arms and seeds only
    point = ds.sel(regime="compression: latent=1")
    assert not np.isnan(point.vrmse.sel(arm=list(small["map_arms"]), seed=list(small["map_seeds"]), eval_step=last)).any()
    assert np.isnan(point.vrmse.sel(arm="scratch_slow")).all()
    assert float(ds.compression.sel(regime="compression: latent=1")) == 4 * float(ds.compression.sel(regime="base"))
    assert ds.pre_vrmse.dims == ("regime", "domain", "pre_eval_step")
    assert ds.attrs["dynamics_step_flops"] > 0 and ds.attrs["pretraining_step_flops"] > 0
    assert "training_drop_rate" in ds.attrs and "drop_rate_validation_navier_stokes" in ds.attrs
    # the rollout kept to watch: its truth, and each example arm's prediction, the one its rollout scored
    assert ds.example_truth.shape == (small["context"] + small["rollout_steps"], small["grid"], small["grid"])
    assert list(ds.example_arm.values) == list(P.EXAMPLE_ARMS)
    assert ds.example_prediction.shape == (len(P.EXAMPLE_ARMS), small["rollout_steps"], small["grid"], small["grid"])
    assert not np.array_equal(ds.example_prediction.values[0], ds.example_prediction.values[1])


def test_a_scratch_run_does_not_depend_on_the_pre_training_budget_and_runs_once(small, runs):
    ds, _ = runs
    points = P.regimes(small)
    budget = "pre-training: pre_steps=4"
    assert P.same_run(P.Job("scratch", 0, regime=budget), points) == P.Job("scratch", 0, regime="base")
    for arm in ("in_domain_finetuned", "scratch_equal_compute"):  # these depend on the pre-training
        assert P.same_run(P.Job(arm, 0, regime=budget), points).regime == budget
    assert P.same_run(P.Job("scratch", 0, regime="compression: latent=1"), points).regime == "compression: latent=1"
    seed = small["map_seeds"][0]
    base, point = (ds.vrmse.sel(regime=r, arm="scratch", seed=seed) for r in ("base", budget))
    np.testing.assert_array_equal(base.values, point.values)
    assert not np.array_equal(
        ds.vrmse.sel(regime="base", arm="in_domain_finetuned", seed=seed).values,
        ds.vrmse.sel(regime=budget, arm="in_domain_finetuned", seed=seed).values,
    )


def test_at_one_seed_every_arm_starts_its_processor_from_the_same_weights(small):
    tok_a = P._fresh_tokeniser(small, 0)
    tok_b = P._fresh_tokeniser(small, 0)
    with torch.no_grad():  # a "pre-trained" tokeniser: other weights
        for p in tok_b.parameters():
            p.add_(1.0)
    a = P.build(P.ARMS["scratch"], tok_a, 1, small, seed=0)
    b = P.build(P.ARMS["in_domain_frozen"], tok_b, 1, small, seed=0)
    c = P.build(P.ARMS["scratch"], P._fresh_tokeniser(small, 0), 1, small, seed=1)
    for (k, v), w in zip(a.processor.state_dict().items(), b.processor.state_dict().values()):
        assert torch.equal(v, w), k
    assert any(not torch.equal(v, u) for v, u in zip(a.processor.state_dict().values(), c.processor.state_dict().values()))
    assert not any(p.requires_grad for p in b.tokeniser.parameters())
    # every arm reads the same windows at one seed
    first = [next(iter(P._batches(small, 0, "cpu", {})[1])) for _ in range(2)]
    assert torch.equal(*first)
    other = next(iter(P._batches(small, 1, "cpu", {})[1]))
    assert not torch.equal(first[0], other)


def test_the_learning_rate_controls_separate_pre_training_from_a_slower_tokeniser():
    arms = P.ARMS
    assert arms["scratch_slow"].gentle and arms["scratch_slow"].tokeniser == "scratch"
    assert not arms["in_domain_full_lr"].gentle and arms["in_domain_full_lr"].tokeniser == "in_domain"
    assert arms["in_domain_finetuned"].gentle and not arms["scratch"].gentle


def test_reductions_carry_intervals(small, runs):
    ds, _ = runs
    red = P.reductions(ds)
    assert float(red.reduction.sel(arm="scratch")) == 0.0 and float(red.low.sel(arm="scratch")) == 0.0
    assert (red.low <= red.reduction).all() and (red.reduction <= red.high).all()
    assert int(red.step.sel(arm="scratch_equal_compute")) > int(red.step.sel(arm="scratch"))
    curve = P.curve_reductions(ds, "in_domain_finetuned")
    assert list(curve.eval_step.values) == [0, small["dyn_steps"]]
    table = P.map_table(ds)
    assert table.reduction.dims == ("regime", "arm") and not np.isnan(table.reduction).any()
    best = P.best_point(ds)
    assert best["regime"] in ds.regime.values and best["step"] > 0 and isinstance(best["ordering"], bool)
    found = P.paper_ordering(ds, threshold=-1e9)  # every point with the ordering, whatever its size
    assert set(found.data_vars) >= {"in_domain", "cross_domain", "in_vs_cross"}
    assert all(found.in_domain_low > 0) and all(found.cross_domain_low > 0) and all(found.in_vs_cross_low > 0)
    iv = P.equal_compute(ds)
    assert iv.low <= iv.estimate <= iv.high


def test_same_seed_same_numbers_and_the_base_point_alone(runs):
    a, b = runs
    np.testing.assert_array_equal(a.vrmse.sel(regime="base").values, b.vrmse.sel(regime="base").values)
    np.testing.assert_array_equal(a.rollout_vrmse.sel(regime="base").values, b.rollout_vrmse.sel(regime="base").values)


@pytest.mark.slow
def test_worker_processes_give_the_numbers_of_one_process(small, runs):
    """Runs shared out to two one-thread workers equal the in-process runs (up to the rounding
    of one thread against several)."""
    _, b = runs
    w = P.run({**small, "workers": 2}, progress=False, with_map=False)
    np.testing.assert_allclose(w.vrmse.values, b.vrmse.values, rtol=1e-3)
    assert w.attrs["workers"] == 2


def test_pre_trainings_of_one_stream_generate_it_once_and_keep_their_numbers(small, tmp_path, monkeypatch):
    """Tokenisers that differ in architecture and budget but read the same crop stream share its
    generated chunks: the longest generates them, the others read them, with the weights they
    get alone."""
    monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path / "not yet made"))  # a cache folder that does not exist yet
    systems = P._domains(small)["in_domain"]
    long, short = (P.tokeniser_recipe({**small, **o}, systems) for o in ({"pre_steps": 6}, {"pre_steps": 3, "latent": 1}))
    P._pretrain_all([short, long], workers=1, progress=False)
    (t_long, c_long), (t_short, c_short) = (P.pretrain_tokeniser(r, name="ablation", progress=False) for r in (long, short))
    assert c_long.attrs["generation_seconds"] > 0 and c_short.attrs["generation_seconds"] == 0.0
    # the shared chunks are gone once every tokeniser is in the cache
    assert not list((tmp_path / "not yet made").glob("chunks-*"))
    with one_thread():  # as _pretrain_all trains here
        alone, _ = P.pretrain_tokeniser(short, name="ablation", progress=False, use_cache=False)
    for a, b in zip(alone.state_dict().values(), t_short.state_dict().values()):
        assert torch.equal(a, b)


def test_a_tokeniser_pre_trained_here_equals_one_pre_trained_in_a_worker(small, tmp_path, monkeypatch):
    """The fine-tuning chapter pre-trains in its own process what the pre-training chapter
    pre-trains in one-thread workers: in-process pre-training runs on one thread too, so the
    cache holds the same tokeniser whichever chapter ran first."""
    recipes = [P.tokeniser_recipe(small, s) for s in P._domains(small).values()]
    weights = []
    for workers in (1, 2):
        monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path / f"workers-{workers}"))
        P._pretrain_all(recipes, workers=workers, progress=False)
        weights.append([P.pretrain_tokeniser(r, name="ablation", progress=False)[0].state_dict() for r in recipes])
    for here, there in zip(*weights):
        for k in here:
            assert torch.equal(here[k], there[k]), k


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with one_thread("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_bad_arguments_are_named(small):
    with pytest.raises(ValueError, match="unknown arms"):
        P.run(small, arms=("warm_start",))
    with pytest.raises(ValueError, match="a point may change"):
        P.regimes({**small, "map": {"x": ({"lr": 1.0},)}})
