"""physfm.training: curves, exact resume from a checkpoint, the model cache."""

from __future__ import annotations

import pytest
import torch

from physfm import training
from physfm.data import streams
from physfm.eval import metrics
from physfm.nn.tokeniser import Tokeniser
from physfm.training.loop import _curves


def _setup(seed=0):
    torch.manual_seed(seed)
    model = Tokeniser(spatial_dims=1, channels=(4, 8), latent=2, blocks=1)
    stream = streams.CropStream(
        ["diffusion", "burgers"], shape=(16,), frames=5, crop=(5, 8), size=4, chunk=2, refresh=0.5, refresh_every=3, seed=seed
    )
    loader = torch.utils.data.DataLoader(stream, batch_size=4)
    val = streams.take(streams.CropStream(["diffusion"], shape=(16,), frames=5, crop=(5, 8), size=2, seed=99), 4)
    return model, stream, loader, val


def _loss(model, batch, rng):
    stride = [1, 2, 4][int(torch.randint(3, (1,), generator=rng))]
    return (model(batch, stride, 1) - batch).square().mean()


def _evaluate(val):
    def ev(model):
        pred = model(val)
        return {"vrmse": metrics.vrmse(pred, val).mean(), "nmse": metrics.spectral_error(pred, val).nmse.mean(dim=(0, 1, 2))}

    return ev


def test_curves_have_the_expected_dimensions_and_no_nan():
    model, stream, loader, val = _setup()
    curves = training.train(
        model,
        _loss,
        loader,
        training.TrainConfig(steps=6, lr=1e-3, eval_every=3, warmup=2),
        evaluate=_evaluate(val),
        progress=False,
    )
    assert curves.loss.shape == (6,) and curves.lr.shape == (6,)
    assert list(curves.eval_step.values) == [0, 3, 6]
    assert curves.nmse.dims == ("eval_step", "band") and list(curves.band.values) == ["low", "mid", "high"]
    assert not curves.to_array().isnull().any()
    assert curves.lr.values[0] == pytest.approx(0.5e-3)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = dict(lr=2e-3, eval_every=2, checkpoint_every=4)
    model, stream, loader, val = _setup()
    full = training.train(model, _loss, loader, training.TrainConfig(steps=8, **cfg), evaluate=_evaluate(val), progress=False)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    ck = tmp_path / "run.pt"
    model, stream, loader, val = _setup()
    calls = []

    def interrupted(model, batch, rng):  # the run is killed during its sixth step
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return _loss(model, batch, rng)

    with pytest.raises(KeyboardInterrupt):
        training.train(
            model,
            interrupted,
            loader,
            training.TrainConfig(steps=8, **cfg),
            evaluate=_evaluate(val),
            checkpoint=ck,
            state=[stream],
            progress=False,
        )
    # a new process: fresh objects (another seed, to prove everything comes from the checkpoint)
    model, stream, loader, val = _setup(seed=5)
    _, _, _, val = _setup()
    resumed = training.train(
        model,
        _loss,
        loader,
        training.TrainConfig(steps=8, **cfg),
        evaluate=_evaluate(val),
        checkpoint=ck,
        state=[stream],
        progress=False,
    )
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, reference[k], rtol=0, atol=0)
    assert resumed.loss.values.tolist() == full.loss.values.tolist()
    assert resumed.vrmse.values.tolist() == full.vrmse.values.tolist()


def test_cache_trains_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path))
    calls = []

    def make():
        torch.manual_seed(1)
        return torch.nn.Linear(2, 2)

    def fit(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(3.0)
        return _curves([1.0], [0.1], [], "fit", 0.0)

    a, curves = training.cached("lin", {"width": 2}, make, fit, verbose=False)
    b, curves_b = training.cached("lin", {"width": 2}, make, fit, verbose=False)
    assert len(calls) == 1 and torch.equal(b.weight, torch.full((2, 2), 3.0))
    assert curves_b.loss.values.tolist() == [1.0]
    training.cached("lin", {"width": 3}, make, fit, verbose=False)
    assert len(calls) == 2  # another configuration, another model


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="schedule must be 'cosine' or 'constant'"):
        training.TrainConfig(steps=3, schedule="linear")
    with pytest.raises(ValueError, match="steps must be >= 0"):
        training.TrainConfig(steps=-1)
    with pytest.raises(ValueError, match="nothing to train"):
        m = torch.nn.Linear(2, 2).requires_grad_(False)
        training.train(m, _loss, iter([]), training.TrainConfig(steps=1))


class _Counter:
    """A stateful batch source: resuming must continue its count, not restart it."""

    def __init__(self):
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        g = torch.Generator().manual_seed(self.i)
        return torch.randn(2, 1, 5, 8, generator=g)

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def test_a_stateful_batch_source_is_checkpointed_and_settings_are_checked(tmp_path):
    def setup():
        torch.manual_seed(0)
        return Tokeniser(spatial_dims=1, channels=(4, 8), latent=2, blocks=1), _Counter()

    model, source = setup()
    full = training.train(model, _loss, source, training.TrainConfig(steps=4, schedule="constant"), progress=False)
    ck = tmp_path / "run.pt"
    model, source = setup()
    training.train(
        model,
        _loss,
        source,
        training.TrainConfig(steps=2, schedule="constant", checkpoint_every=2),
        checkpoint=ck,
        progress=False,
    )
    model, source = setup()  # the source restarts at 0 ...
    resumed = training.train(
        model, _loss, source, training.TrainConfig(steps=4, schedule="constant"), checkpoint=ck, progress=False
    )
    assert source.i == 4  # ... and was put back to where the checkpoint left it
    assert resumed.loss.values.tolist() == full.loss.values.tolist()
    with pytest.raises(ValueError, match=r"other settings .*'lr': \(0.001, 0.01\)"):
        training.train(
            model, _loss, source, training.TrainConfig(steps=6, lr=1e-2, schedule="constant"), checkpoint=ck, progress=False
        )


def test_curves_are_saved_with_provenance(tmp_path):
    from physfm import results

    model, stream, loader, val = _setup()
    out = tmp_path / "curves.nc"
    curves = training.train(
        model,
        _loss,
        loader,
        training.TrainConfig(steps=2, eval_every=1),
        evaluate=_evaluate(val),
        progress=False,
        results=out,
        params={"what": "test"},
    )
    saved = results.load(out)
    assert saved.loss.values.tolist() == curves.loss.values.tolist()
    assert results.parameters(saved) == {"what": "test"}
    assert saved.nmse.dims == ("eval_step", "band")


def test_parameter_groups_scale_the_learning_rate():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    model = torch.nn.Sequential(a, b)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 2)
    groups = [{"params": a.parameters()}, {"params": b.parameters(), "lr_scale": 0.0}]
    training.train(
        model,
        lambda m, batch, rng: m(batch).square().mean(),
        iter([x] * 3),
        training.TrainConfig(steps=3, lr=1e-2),
        parameters=groups,
        progress=False,
    )
    assert not torch.equal(model[0].weight, before["0.weight"])  # full rate: moved
    assert torch.equal(model[1].weight, before["1.weight"])  # lr_scale 0: kept
    with pytest.raises(ValueError, match="lr_scale must be >= 0, got -1.0"):
        training.train(
            model,
            lambda m, batch, rng: m(batch).sum(),
            iter([x]),
            training.TrainConfig(steps=1),
            parameters=[{"params": a.parameters(), "lr_scale": -1}],
            progress=False,
        )
