"""physfm.data.streams: crops and windows from a refreshed ring buffer, reproducible per seed and worker."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from physfm.data import streams

FAST = {"gray_scott": {"warmup": 20.0, "interval": 10.0}}


def _crops(**kw):
    args = dict(shape=(16, 16), frames=4, crop=(2, 8, 8), size=4, chunk=2, seed=0, system_options=FAST)
    args.update(kw)
    return streams.CropStream(["diffusion", "gray_scott"], **args)


def test_crop_shapes_and_normalisation():
    s = _crops()
    x = streams.take(s, 10)
    assert x.shape == (10, 1, 2, 8, 8)
    buf = s.buffer
    for traj in buf.data:
        assert traj.shape[1:] == (4, 16, 16)
        torch.testing.assert_close(traj.mean(dim=(1, 2, 3)), torch.zeros(traj.shape[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(traj.std(dim=(1, 2, 3)), torch.ones(traj.shape[0]), atol=1e-3, rtol=0)


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
    s = streams.WindowStream("kuramoto_sivashinsky", shape=(32,), frames=6, window=3, size=2, chunk=2,
                             system_options={"warmup": 1.0})
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
        (lambda: streams.WindowStream("burgers", shape=(8,), frames=2, window=3), "window=3 must be between 1 and frames=2"),
        (lambda: streams.CropStream(["burgers"], shape=(8,), frames=2, crop=(1, 4), system_options={"ks": {}}), "not among the systems"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
