"""physfm.data.streams: crops and windows from a refreshed ring buffer, reproducible per seed and worker."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from physfm.data import normalise, spec, streams
from physfm.runtime import seed_for

SYSTEMS = {"diffusion": {}, "gray_scott": {"warmup": 20.0, "interval": 10.0}}
SYSTEMS_SPECS = spec.specs(SYSTEMS)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path / "cache"))


def _crops(**kw):
    args = dict(shape=(16, 16), frames=4, crop=(2, 8, 8), size=4, chunk=2, seed=0)
    args.update(kw)
    return streams.CropStream(SYSTEMS, **args)


def test_crop_shapes_and_normalisation_by_the_systems_statistics():
    s = _crops()
    x = streams.take(s, 10)
    assert x.shape == (10, 1, 2, 8, 8)
    buf = s.buffer
    for traj, label in zip(buf.data, buf.labels):
        assert traj.shape[1:] == (4, 16, 16)
        name = buf.specs[label].name
        stats = normalise.system_stats(SYSTEMS_SPECS[name], (16, 16), 4)
        assert buf.stats[name] == stats
    # the trajectories are normalised by the system's statistics, not by their own: a single
    # trajectory is not exactly zero-mean and unit-variance
    own = torch.stack([t.std(dim=(1, 2, 3)) for t in buf.data if t.shape[0] == 1])
    assert (own - 1).abs().max() > 1e-3


def test_normalising_a_window_never_uses_its_future():
    stats = normalise.system_stats("diffusion", (16, 16), 4)
    x = spec.SystemSpec("diffusion").generate(2, (16, 16), 4, generator=torch.Generator().manual_seed(0)).data
    y = x.clone()
    y[:, :, 2:] = 100 * torch.randn_like(y[:, :, 2:])  # change the future frames
    a, b = normalise.normalise_fields(x, stats), normalise.normalise_fields(y, stats)
    assert torch.equal(a[:, :, :2], b[:, :, :2])


def test_statistics_are_estimated_from_a_separate_sample_and_cached(tmp_path):
    est = normalise.estimate_stats("gray_scott", (16, 16), 4, n=4)
    assert est.fields == ("u", "v") and est.trajectories == 4
    again = normalise.estimate_stats("gray_scott", (16, 16), 4, n=4)
    assert est == again  # seeded by the "statistics" stream alone
    cached = normalise.system_stats("gray_scott", (16, 16), 4, n=4)
    assert cached == est
    path = normalise.stats_path(spec.SystemSpec("gray_scott"), (16, 16), 4, n=4)
    assert path.exists() and "mean:" in path.read_text()
    assert normalise.FieldStats.from_yaml(path.read_text()) == est


def test_every_field_and_system_is_sampled():
    s = _crops(size=2)
    buf = s._ensure_buffer()
    assert sorted(buf.labels) == [0, 1]  # equal shares of the two systems
    seen = set()
    for _ in range(200):
        x, label = s.sample()
        traj = [t for t, l in zip(buf.data, buf.labels) if l == label]
        for t in traj:
            for f in range(t.shape[0]):
                for t0 in range(t.shape[1] - 1):
                    window = t[f, t0 : t0 + 2]
                    # find the crop in the (periodically extended) window
                    tiled = torch.cat([torch.cat([window, window], -1)] * 2, -2)
                    patches = tiled.unfold(-2, 8, 1).unfold(-2, 8, 1)[:, :16, :16]
                    if (patches - x[0, :, None, None]).abs().amax(dim=(0, -2, -1)).min() < 1e-6:
                        seen.add((label, f))
        s.buffer.refresh(0)
    assert seen == {(0, 0), (1, 0), (1, 1)}  # diffusion's one field, both Gray-Scott fields


def test_same_seed_same_crops_other_seed_other_crops():
    a = streams.take(_crops(seed=3), 6)
    b = streams.take(_crops(seed=3), 6)
    c = streams.take(_crops(seed=4), 6)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 0.1


def test_refresh_replaces_the_oldest_trajectories():
    s = _crops(size=4, chunk=2, refresh=0.5, refresh_every=3)
    it = iter(s)
    before = [t.clone() for t in s._ensure_buffer().data]
    for _ in range(3):
        next(it)
    after = s.buffer.data
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    assert torch.equal(before[2], after[2]) and torch.equal(before[3], after[3])
    assert s.buffer.generated == 6
    assert set(s.buffer.drops()) == {"diffusion", "gray_scott"}
    assert all(d["rate"] == d["dropped"] / (d["kept"] + d["dropped"]) for d in s.buffer.drops().values())


def test_resume_from_state_continues_exactly():
    s = _crops(refresh=0.5, refresh_every=2)
    streams.take(s, 5)
    state = s.state_dict()
    expected = streams.take(s, 7)
    t = _crops(refresh=0.5, refresh_every=2, seed=99)
    t.load_state_dict(state)
    torch.testing.assert_close(streams.take(t, 7), expected)


def test_workers_draw_different_data():
    s = _crops(size=2)
    loader = DataLoader(s, batch_size=4, num_workers=2)
    it = iter(loader)
    first, second = next(it), next(it)  # one batch from each worker
    assert first.shape == (4, 1, 2, 8, 8)
    assert (first - second).abs().max() > 0.1


def test_window_stream_yields_consecutive_frames():
    s = streams.WindowStream({"name": "kuramoto_sivashinsky", "warmup": 1.0}, shape=(32,), frames=6, window=3, size=2, chunk=2)
    w = s.sample()
    assert w.shape == (1, 3, 32)
    traj = s.buffer.data
    found = any(torch.equal(w, t[:, i : i + 3]) for t in traj for i in range(4))
    assert found


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _crops(crop=(2, 32, 8)), r"spatial crop \(32, 8\) is larger than the grid \(16, 16\)"),
        (lambda: _crops(crop=(5, 8, 8)), "crop length t=5 must be between 1 and frames=4"),
        (lambda: _crops(crop=(2, 8)), r"crop must be \(t, \*space\) with 2 spatial sizes"),
        (lambda: _crops(refresh=1.5), "refresh must be a fraction"),
        (lambda: streams.CropStream(["plasma"], shape=(8, 8), frames=2, crop=(1, 4, 4)), "unknown system 'plasma'"),
        (lambda: streams.CropStream(["navier_stokes"], shape=(8, 8, 8), frames=2, crop=(1, 4, 4, 4)), "not 3"),
        (
            lambda: streams.WindowStream("burgers", shape=(8,), frames=2, window=3),
            "window=3 at stride 1 spans 3 frames; it must be between 1 and frames=2",
        ),
        (lambda: streams.CropStream({"burgers": {"viscosity": 1}}, shape=(8,), frames=2, crop=(1, 4)), "unknown options"),
        (
            lambda: streams.CropStream({"burgers": {"ranges": {"mu": (1, 2)}}}, shape=(8,), frames=2, crop=(1, 4)),
            "unknown coefficient 'mu'",
        ),
        (lambda: streams.WindowStream("burgers", shape=(8,), frames=5, window=3, strides=(3,)), "spans 7 frames"),
        (lambda: streams.held_out_windows("burgers", shape=(8,), frames=5, window=6, n=2), "window=6 must be between"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_strided_windows_with_metadata():
    s = streams.WindowStream(
        {"name": "advection_diffusion", "interval": 0.5},
        shape=(16,),
        frames=7,
        window=3,
        strides=(1, 3),
        size=2,
        chunk=2,
        meta=True,
    )
    seen = set()
    for _ in range(20):
        x, coef, dt = s.sample()
        assert x.shape == (1, 3, 16) and coef.shape == (2,)  # nu and one velocity component act in 1D
        assert (coef.abs() <= 1).all()
        seen.add(round(float(dt), 6))
    assert seen == {0.5, 1.5}


def test_held_out_windows_are_distinct_and_never_in_training():
    kw = dict(shape=(16, 16), frames=6)
    val = streams.held_out_windows("diffusion", window=3, n=12, seed=0, **kw)
    assert val.shape == (12, 1, 3, 16, 16)
    flat = val.flatten(1)
    assert len({tuple(r.tolist()) for r in flat}) == 12  # no window twice
    # one window from each of 12 trajectories: no two share their first frame's field
    assert torch.cdist(flat, flat).add(torch.eye(12) * 1e9).min() > 1e-3
    train = streams.TrajectoryBuffer(["diffusion"], size=32, chunk=8, seed=seed_for("train", 0), **kw)
    windows = torch.stack([t[:, i : i + 3] for t in train.data for i in range(4)]).flatten(1)
    assert torch.cdist(flat, windows).min() > 1e-3  # no validation window is a training window


def test_epoch_batches_read_every_window_once_per_epoch():
    data = torch.arange(2 * 1 * 4 * 3, dtype=torch.float32).reshape(2, 1, 4, 3)
    batches = list(streams.epoch_batches(data, window=2, steps=3, batch=2, seed=0))
    assert len(batches) == 3 and batches[0].shape == (2, 1, 2, 3)
    firsts = sorted(float(w[0, 0, 0]) for b in batches for w in b)  # 6 windows = one epoch
    assert firsts == sorted(float(data[i, 0, t, 0]) for i in range(2) for t in range(3))


def test_a_disk_store_shares_chunks_and_changes_no_number(tmp_path):
    store = streams.DiskStore(tmp_path / "chunks")
    plain = streams.take(_crops(refresh=0.5, refresh_every=2), 8)
    first = _crops(refresh=0.5, refresh_every=2, store=store)
    a = streams.take(first, 8)
    assert len(store) > 0 and first.buffer.seconds > 0
    # a second reader (here: a reader that reads further) generates only what the store lacks
    second = _crops(refresh=0.5, refresh_every=2, store=streams.DiskStore(tmp_path / "chunks"))
    b = streams.take(second, 8)
    assert second.buffer.seconds == 0.0 and second.buffer.generated == first.buffer.generated
    assert torch.equal(plain, a) and torch.equal(a, b)
    assert second.buffer.drops() == first.buffer.drops()
    with pytest.raises(KeyError):
        store[("no such chunk",)]
