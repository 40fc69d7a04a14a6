"""physfm.experiments.well: the experiments of the chapter "Real data: The Well", on tiny data sets."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from physfm.data.pde import generate
from physfm.data.well import WellWindows, write_well
from physfm.eval import metrics
from physfm.experiments import well
from physfm.nn.tokeniser import Tokeniser

SMALL = {"system": "gray_scott", "grid": 16, "frames": 7, "trajectories": 10, "seed": 0}
FINITE = {
    "window": 3,
    "train_trajectories": (1, 0),
    "width": 8,
    "processor_blocks": 1,
    "stride": 4,
    "dyn_steps": 4,
    "batch": 2,
    "lr": 2e-3,
    "warmup": 1,
    "eval_every": 2,
    "tokeniser_lr_scale": 0.1,
    "val_windows": 4,
    "train_windows": 4,
    "context": 2,
    "rollout_steps": 2,
    "val_rollouts": 1,
    "seed": 0,
}


def _tokeniser(seed: int = 0) -> Tokeniser:
    torch.manual_seed(seed)
    return Tokeniser(spatial_dims=2, channels=(4, 8), latent=2, blocks=1, patch=4, time_patch=1, stride=4, time_stride=1)


@pytest.fixture(scope="module")
def walled_set(tmp_path_factory):
    return well.synthetic_dataset(SMALL, tmp_path_factory.mktemp("well") / "gs")


@pytest.fixture(scope="module")
def wide_set(tmp_path_factory):
    """64 x 64 fields (no physics needed) with a wall along x and open sides along y."""
    t = generate("diffusion", batch=5, shape=(64, 64), frames=3, generator=torch.Generator().manual_seed(1))
    return write_well(t, tmp_path_factory.mktemp("wide") / "wide", boundaries={"x": "wall", "y": "open"}, splits=(0.6, 0.2, 0.2))


def test_synthetic_dataset_has_walls_along_x_and_open_sides_along_y(walled_set):
    counts = {}
    for split in ("train", "valid", "test"):
        w = WellWindows(walled_set, split, n_steps_input=1, n_steps_output=0)
        assert w.boundary_conditions == {"x": ("wall", "wall"), "y": ("open", "open")}
        assert w.shape == (16, 16) and w.field_names == ("u", "v")
        counts[split] = len(w.trajectories())
        w.close()
    assert counts == {"train": 8, "valid": 1, "test": 1}


def test_the_two_readers_agree_value_for_value(walled_set):
    out = well.compare_readers(walled_set, split="train", window=3)
    w = WellWindows(walled_set, "train", n_steps_input=3, n_steps_output=0)
    assert out == {"windows": len(w), "max_abs_difference": 0.0, "same_names": True, "same_boundaries": True}
    assert well.compare_readers(walled_set, split="valid", window=3, n=2)["windows"] == 2
    with pytest.raises(ValueError, match="window"):
        well.compare_readers(walled_set, window=1)


def test_without_the_well_the_comparison_is_one_clear_message(walled_set, monkeypatch):
    monkeypatch.setitem(sys.modules, "the_well.data", None)  # an import of it now fails
    with pytest.raises(ImportError) as e:
        well.compare_readers(walled_set)
    assert str(e.value) == well.READER_MISSING and "not installed" in str(e.value)


@pytest.mark.parametrize("padding", ["circular", "matched"])
def test_errors_by_distance_average_to_the_vrmse(walled_set, padding):
    tok = _tokeniser()
    out = well.boundary_errors(tok, walled_set, stride=4, frames=3, n_windows=3, split="train")
    from physfm.data.well_streams import fixed_windows
    from physfm.nn.compression import padding_for

    x = fixed_windows(walled_set, "train", window=3, n=3, seed=0, purpose="tokeniser").flatten(0, 1).unsqueeze(1)
    tok.set_padding("circular" if padding == "circular" else padding_for({"x": "wall", "y": "open"}))
    with torch.no_grad():
        v = metrics.vrmse(tok(x, 4, 1), x)  # (samples, 1, t)
    assert out.vrmse.sel(padding=padding) == pytest.approx(float(v.mean()), rel=1e-5)
    weights = out.cells / out.cells.sum()
    mean_square = float((out.vrmse_distance.sel(padding=padding) ** 2 * weights).sum())
    assert mean_square == pytest.approx(float(v.square().mean()), rel=1e-5)
    assert int(out.cells.sum()) == 16 * 16 and list(out.distance.values) == list(range(8))
    assert out.attrs["samples"] == 6  # 3 windows x 2 fields


def test_cells_beyond_the_padding_s_reach_do_not_depend_on_it(wide_set):
    tok = _tokeniser()
    out = well.boundary_errors(tok, wide_set, stride=4, frames=2, n_windows=2, split="train")
    c, m = out.vrmse_distance.sel(padding="circular"), out.vrmse_distance.sel(padding="matched")
    far = out.distance >= 28
    assert far.sum() >= 3
    np.testing.assert_allclose(m.where(far, drop=True), c.where(far, drop=True), rtol=1e-5)
    assert abs(float(m.sel(distance=0)) / float(c.sel(distance=0)) - 1) > 1e-3  # the edge cells do see it


def test_boundary_errors_restore_the_padding_and_refuse_periodic_data(walled_set, tmp_path):
    tok = _tokeniser()
    tok.set_padding("zeros")
    well.boundary_errors(tok, walled_set, stride=4, frames=3, n_windows=1)
    assert tok.padding == (("zeros", "zeros"),) * 2
    periodic = write_well(
        generate("diffusion", batch=3, shape=(16, 16), frames=3, generator=torch.Generator().manual_seed(0)),
        tmp_path / "periodic",
    )
    with pytest.raises(ValueError, match="periodic"):
        well.boundary_errors(tok, periodic, stride=4, frames=2, n_windows=1)


def test_finite_data_models_read_only_their_trajectories_and_are_scored_on_held_out_splits(walled_set):
    tok = _tokeniser()
    ds = well.finite_data(FINITE, tok, walled_set, progress=False)
    assert list(ds.arm.values) == ["1 trajectory", "every trajectory"]
    assert ds.train_trajectories.sel(seed=0).values.tolist() == [1, 8]
    assert ds.trajectories.values.tolist() == [1, 0]
    assert ds.vrmse.dims == ("arm", "seed", "eval_step") and list(ds.eval_step.values) == [0, 2, 4]
    assert not np.isnan(ds.vrmse.values).any() and not np.isnan(ds.rollout_vrmse.values).any()
    # both start from the same model: the same held-out score before the first step
    assert float(ds.vrmse.isel(arm=0, seed=0, eval_step=0)) == float(ds.vrmse.isel(arm=1, seed=0, eval_step=0))
    gap = well.generalisation_gap(ds)
    np.testing.assert_allclose(gap.values, (ds.vrmse.isel(eval_step=-1) / ds.train_vrmse).mean("seed").values)
    assert tok.padding == (("circular", "circular"),) * 2  # the caller's tokeniser is untouched
    again = well.finite_data(FINITE, tok, walled_set, progress=False)
    np.testing.assert_array_equal(again.vrmse.values, ds.vrmse.values)  # deterministic for a seed


def test_a_model_trained_on_one_trajectory_does_better_on_it_than_on_held_out_ones(walled_set):
    cfg = {**FINITE, "train_trajectories": (1,), "dyn_steps": 60, "eval_every": 60, "width": 16, "lr": 5e-3}
    ds = well.finite_data(cfg, _tokeniser(), walled_set, progress=False)
    assert float(well.generalisation_gap(ds).sel(arm="1 trajectory")) > 1


def test_bad_training_set_sizes_are_named(walled_set):
    with pytest.raises(ValueError, match="train_trajectories"):
        well.finite_data({**FINITE, "train_trajectories": (-1,)}, _tokeniser(), walled_set, progress=False)
    assert well.arm_name(0) == "every trajectory" and well.arm_name(1) == "1 trajectory" and well.arm_name(4) == "4 trajectories"


# -- the pre-training ablation with a target on disk --------------------------------------------


def test_the_pretraining_ablation_takes_a_data_set_in_the_well_s_layout_as_its_target(tmp_path, monkeypatch):
    from physfm import profiles
    from physfm.data.well_streams import well_eval_data
    from physfm.eval import forecast
    from physfm.experiments import pretraining as P

    monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path / "cache"))
    t = generate("burgers", batch=8, shape=(16, 16), frames=9, generator=torch.Generator().manual_seed(2))
    path = write_well(t, tmp_path / "target", splits=(0.5, 0.25, 0.25))
    cfg = dict(profiles.resolve("pretraining", "smoke"))
    cfg.update(
        target=str(path),
        seeds=(0,),
        dyn_steps=2,
        pre_steps=2,
        eval_every=2,
        trajectories=2,
        val_rollouts=5,
        arms=("scratch", "in_domain_finetuned", "cross_domain_finetuned"),
    )
    assert P.well_target(cfg) == path and P.well_target({**cfg, "target": "navier_stokes"}) is None
    inn, cross = (P.tokeniser_recipe(cfg, s) for s in P._domains(cfg).values())
    assert inn["systems"] == {} and inn["well"] == str(path) and len(inn["well_stats"]) == 16
    assert set(cross["systems"]) == set(cfg["systems"]) and "well" not in cross  # every system is cross-domain
    ds = P.run(cfg, progress=False, with_map=False)
    assert ds.attrs["target"] == str(path) and ds.attrs["cross_domain_systems"] == ", ".join(cfg["systems"])
    assert not np.isnan(ds.vrmse.sel(regime="base")).any()
    assert int(ds.kept.sel(regime="base", arm="scratch", seed=0)) == 2  # the first two training trajectories
    assert ds.attrs["val_rollouts"] == 2  # as many as the test split holds
    held = well_eval_data(
        path, window=cfg["window"], n_windows=cfg["val_windows"], context=cfg["context"], steps=cfg["rollout_steps"], n_rollouts=2
    )
    assert float(ds.persistence_rollout_vrmse.isel(lead=0)) == pytest.approx(
        float(forecast.persistence_rollout_vrmse(held.trajectories, cfg["context"], cfg["rollout_steps"])[0])
    )
    assert float(ds.persistence_vrmse) == pytest.approx(float(forecast.persistence_vrmse(held.windows)))  # the valid split
    assert ds.pre_vrmse.sel(regime="base", domain="in_domain").notnull().all()
    with pytest.raises(ValueError, match="The Well's layout"):
        P.run({**cfg, "target": str(tmp_path / "nothing")}, progress=False, with_map=False)


def test_boundary_errors_do_not_depend_on_the_chunk_size(walled_set):
    a = well.boundary_errors(_tokeniser(), walled_set, stride=4, frames=3, n_windows=3, chunk=1)
    b = well.boundary_errors(_tokeniser(), walled_set, stride=4, frames=3, n_windows=3, chunk=16)
    np.testing.assert_allclose(a.vrmse_distance.values, b.vrmse_distance.values, rtol=1e-6)
    np.testing.assert_allclose(a.vrmse.values, b.vrmse.values, rtol=1e-6)
