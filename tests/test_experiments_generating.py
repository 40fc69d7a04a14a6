"""physfm.experiments.generating: the three sets, the latent space, the whole run at a small size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physfm.data import streams
from physfm.data.normalise import FieldStats, system_stats
from physfm.data.spec import SystemSpec
from physfm.eval import statistics
from physfm.experiments import generating
from physfm.nn.tokeniser import Tokeniser
from physfm.profiles import resolve


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, cache):
    monkeypatch.delenv("PHYSFM_PROFILE", raising=False)
    monkeypatch.setenv("PHYSFM_CACHE", str(cache))


def _tokeniser():
    torch.manual_seed(0)
    tok = Tokeniser(spatial_dims=2, channels=(4, 8), latent=4, blocks=1, patch=4, time_patch=4, stride=4, time_stride=4)
    return tok.eval().requires_grad_(False)


def test_true_fields_are_normalised_with_the_system_statistics():
    cfg = resolve("generating", "smoke")
    spec, shape = SystemSpec(cfg.system), (cfg.grid,) * 2
    x = generating.true_fields(cfg, 3, "truth_a", every_frame=True)
    assert x.shape == (3 * cfg.frames, cfg.grid, cfg.grid)
    stats = system_stats(spec, shape, cfg.frames)
    names = spec.field_names(2)
    raw, _ = streams.held_out_trajectories(
        spec,
        shape=shape,
        frames=cfg.frames,
        n=3,
        purpose="truth_a",
        stats=FieldStats(names, (0.0,) * len(names), (1.0,) * len(names)),
    )
    k = names.index(cfg.field)
    want = (raw[:, k] - stats.mean[k]) / stats.std[k]
    torch.testing.assert_close(x, want.reshape(x.shape))
    one = generating.true_fields(cfg, 3, "truth_a", every_frame=False)
    assert one.shape == (3, cfg.grid, cfg.grid)
    assert all(any(torch.equal(one[i], f) for f in want[i]) for i in range(3))  # one frame of each trajectory
    with pytest.raises(ValueError, match="not a field of gray_scott"):
        generating.true_fields(dict(cfg, field="w"), 2, "train", every_frame=True)


def test_the_three_sets_come_from_distinct_streams():
    cfg = resolve("generating", "smoke")
    train = generating.true_fields(cfg, 4, "train", every_frame=True)
    a = generating.true_fields(cfg, 4, "truth_a", every_frame=False)
    b = generating.true_fields(cfg, 4, "truth_b", every_frame=False)
    assert float(statistics.nearest_distance(a, train, 2).min()) > 1e-3
    assert float(statistics.nearest_distance(b, train, 2).min()) > 1e-3
    assert float(statistics.nearest_distance(a, b, 2).min()) > 1e-3


def test_latent_space_standardises_the_training_latents():
    cfg = resolve("generating", "smoke")
    fields = generating.true_fields(cfg, 4, "train", every_frame=True)
    space = generating.LatentSpace(_tokeniser(), 4, fields)
    z = space.encode(fields)
    assert z.shape == (len(fields), 4, cfg.grid // 4, cfg.grid // 4)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    assert space.decode(z).shape == fields.shape
    with pytest.raises(ValueError, match=r"fields must be \(n, H, W\)"):
        space.encode(fields[:, None])


def test_run_layout_floor_and_determinism():
    cfg = resolve("generating", "smoke")
    tok = _tokeniser()
    a = generating.run(cfg, tok=tok, tok_cfg={"frames": cfg.frames}, progress=False)
    b = generating.run(cfg, tok=tok, tok_cfg={"frames": cfg.frames}, progress=False)
    assert a.fields.shape == (1 + len(generating.SETS), cfg.n_eval, cfg.grid, cfg.grid)
    assert list(a.set.values) == ["truth A", *generating.SETS]
    assert a.distance.shape == (len(generating.SETS), 3) and a.nearest.shape == (3, cfg.n_eval)
    assert a.by_steps.shape == (2, len({1, 2, 4, 8, cfg.sample_steps}))
    for v in ("fields", "distance", "nearest", "by_steps", "path", "loss", "held_out_loss"):
        assert np.isfinite(a[v]).all(), v
        np.testing.assert_array_equal(a[v], b[v])
    # the floor is truth B against truth A, with the same statistics
    fields = {s: torch.as_tensor(a.fields.sel(set=s).values) for s in a.set.values}
    floor = statistics.statistics_distances(fields["truth B (the floor)"], fields["truth A"], 2)
    np.testing.assert_allclose(a.distance.sel(judged="truth B (the floor)").values, [floor[k] for k in generating.STATISTICS])
    table = generating.summary(a)
    np.testing.assert_allclose(table.times_floor.sel(judged="truth B (the floor)"), 1.0)


def test_matched_spectrum_gaussian_gets_the_spectrum_not_the_values():
    """A claim of the chapter that needs no trained model: the Gaussian field with the training
    set's spectrum is near truth A's spectrum, but its values are far from Gray-Scott's."""
    cfg = resolve("generating", "smoke", n_train=16, n_eval=24, steps=1)
    ds = generating.run(cfg, tok=_tokeniser(), tok_cfg={"frames": cfg.frames}, progress=False)
    d = generating.summary(ds).times_floor
    grf = d.sel(judged="Gaussian, matched spectrum")
    assert float(grf.sel(statistic="values")) > 2 * float(grf.sel(statistic="spectrum")), d.to_pandas()
    assert float(grf.sel(statistic="values")) > 2, d.to_pandas()
