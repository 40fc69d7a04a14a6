"""The attribution of benchmarks/profile_chapters.py: nested categories are charged to the innermost
one, once; a real training loop's steps land in forward/backward/optimiser/batches with the
solver's time as generation, and the flops of a step are those of its matrix products."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prof():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("profile_chapters", ROOT / "benchmarks" / "profile_chapters.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_nested_time_goes_to_the_innermost_category_once(prof):
    clock = Clock()
    att = prof.Attributor(clock)

    def generate():
        clock.t += 2.0

    gen = att.wrap("generation", generate)

    def evaluate():
        clock.t += 1.0  # own work
        gen()  # 2 s of generation inside the evaluation
        gen_again = att.wrap("generation", gen)  # generation inside generation: not counted twice
        gen_again()
        clock.t += 0.5

    att.push("chapter")
    clock.t += 0.25
    att.wrap("evaluation", evaluate)()
    att.wrap("timing", lambda: att.wrap("backward", lambda: setattr(clock, "t", clock.t + 3.0))())()
    att.pop()

    seconds = att.innermost()
    assert seconds["evaluation"] == pytest.approx(1.5)
    assert seconds["generation"] == pytest.approx(4.0)
    assert seconds["timing"] == pytest.approx(3.0)  # backward inside a timing benchmark is timing
    assert seconds["backward"] == 0.0
    assert seconds["other"] == pytest.approx(0.25)
    assert sum(seconds.values()) == pytest.approx(clock.t)
    assert att.times[("chapter", "evaluation", "generation", "generation")] == pytest.approx(2.0)


def test_a_training_loop_is_split_into_its_parts(prof):
    from physfm.data import pde
    from physfm.training import TrainConfig, train

    p = prof.Profiler()
    batch, n_in, n_out, steps = 8, 64, 32, 4
    model = torch.nn.Linear(n_in, n_out, bias=False)

    def batches():
        g = torch.Generator().manual_seed(0)
        while True:
            pde.generate("diffusion", batch=1, shape=(16, 16), frames=2, generator=g)  # the solver
            yield torch.randn(batch, n_in, generator=g)

    def loss_fn(m, x, rng):
        return m(x).square().mean()

    def run():
        # the module attribute, as the experiments read it after install()
        from physfm.training import loop

        loop.train(model, loss_fn, batches(), TrainConfig(steps=steps, grad_clip=None), progress=False)

    p.install()
    try:
        assert train is not sys.modules["physfm.training"].train  # the imported name points at the wrapper
        r = p.chapter(run)
    finally:
        p.remove()
    assert sys.modules["physfm.training"].train is train  # and is put back
    assert not hasattr(pde.generate, "__profile_original__")

    s = r["seconds"]
    for c in ("generation", "forward", "backward", "optimiser", "flop count", "loop"):
        assert s[c] > 0, c
    assert r["training_steps"] == steps and r["training_runs"] == 1
    # forward x @ W^T: 2 B n_in n_out; backward: the weight's gradient only (x needs none)
    flops = 2 * batch * n_in * n_out * 2
    assert r["training_flops"] == flops * (steps - 1)
    nested = r["nested_seconds"]
    assert nested["training > batches > generation"] > 0
    assert nested["training > forward"] > 0 and nested["training > optimiser"] > 0
    assert sum(s.values()) == pytest.approx(r["wall_s"], abs=1e-3)
