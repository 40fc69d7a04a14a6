"""Tokeniser pre-training on two processes: a real ``torchrun --nproc_per_node=2`` with gloo on the CPU.

One launch (``tests/ddp_worker.py``, a few steps of a tiny recipe) records every rank's weights
and batch at every step and every file it writes; the tests compare the ranks with each other,
with an interrupted and resumed run, and with one process that reads, at every step, the union
of the two ranks' batches from the same streams.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from physfm import cli
from physfm.training import tokeniser as tokeniser_module

HERE = Path(__file__).parent

#: a tiny recipe: two systems on a 16^2 grid, 6 steps of 4 crops (2 per rank), evaluated every 2 steps
RECIPE = {
    "systems": ["diffusion", "burgers"],
    "grid": 16,
    "frames": 5,
    "crop": 8,
    "crop_t": 5,
    "buffer": 4,
    "refresh": 0.5,
    "refresh_every": 4,
    "channels": [4, 8],
    "latent": 2,
    "blocks": 1,
    "patch": 4,
    "time_patch": 4,
    "strides": [2, 4],
    "time_strides": [1, 2, 4],
    "steps": 6,
    "batch": 4,
    "lr": 2e-3,
    "warmup": 1,
    "eval_every": 2,
    "val_crops": 4,
    "seed": 0,
}


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(tokeniser_module.__file__).resolve().parents[2])
    env.update(
        PYTHONPATH=os.pathsep.join([src, env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
        PHYSFM_CACHE=str(tmp_path / "unused"),
        PHYSFM_RESULTS=str(tmp_path / "results"),
    )
    env.pop("PHYSFM_DEVICE", None)
    return env


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The records of both ranks of one two-process run."""
    tmp = tmp_path_factory.mktemp("ddp")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "ddp_worker.py"),
        str(tmp),
        str(recipe),
    ]
    proc = subprocess.run(cmd, env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return ranks, proc.stdout + proc.stderr


def _reference(monkeypatch, tmp_path):
    """One process, batch 4: at every step the 2 crops rank 0 reads followed by the 2 crops rank 1 reads
    (the stream of rank r is the recipe's seeded with ``seed + 1009 r``, physfm.data.streams.stream_seed)."""
    monkeypatch.setenv("PHYSFM_CACHE", str(tmp_path / "cache"))
    real = tokeniser_module.train
    weights: list[dict] = []

    def union_of_ranks(model, loss_fn, batches, config, **kwargs):
        rank0 = batches.dataset
        rank1 = copy.copy(rank0)
        rank1.seed, rank1.buffer = rank0.seed + 1009, None
        half = batches.batch_size // 2
        loaders = [torch.utils.data.DataLoader(s, batch_size=half) for s in (rank0, rank1)]
        union = (torch.cat([a, b]) for a, b in zip(*loaders))

        def loss(m, batch, rng):
            weights.append({k: v.detach().clone() for k, v in m.named_parameters()})
            return loss_fn(m, batch, rng)

        return real(model, loss, union, config, **kwargs)

    monkeypatch.setattr(tokeniser_module, "train", union_of_ranks)
    tok, curves = tokeniser_module.pretrain_tokeniser(RECIPE, device="cpu", name="reference", progress=False, use_cache=False)
    weights.append({k: v.detach().clone() for k, v in tok.named_parameters()})
    return weights, curves


def _steps(record: dict, phase: str, final: dict) -> list[dict]:
    """Weights before every step of ``phase``, then after the last."""
    return [*record[phase]["weights"], {k: final[k] for k in record[phase]["weights"][0]}]


@pytest.mark.slow
def test_two_ranks_train_one_model_with_ddp_on_gloo(ddp):
    ranks, _ = ddp
    for r in ranks:
        assert r["world"] == 2 and r["backend"] == "gloo" and r["cli_status"] == 0
        assert r["cli"]["ddp"] == "DistributedDataParallel"
    a, b = (_steps(r, "cli", r["cli_final"]) for r in ranks)
    assert len(a) == RECIPE["steps"] + 1
    for step, (wa, wb) in enumerate(zip(a, b)):  # identical weights on both ranks after every step
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (step, name)
    assert any(not torch.equal(a[0][k], a[-1][k]) for k in a[0])  # ... and they did train


@pytest.mark.slow
def test_the_ranks_read_different_data(ddp):
    ranks, _ = ddp
    batches = [r["cli"]["batches"] for r in ranks]
    assert batches[0][0].shape == (RECIPE["batch"] // 2, 1, RECIPE["crop_t"], RECIPE["crop"], RECIPE["crop"])
    for x, y in zip(*batches):
        assert not torch.allclose(x, y)
    t0, t1 = (r["cli"]["trajectories"] for r in ranks)  # no trajectory is in both ranks' buffers
    gaps = [float((a - b).abs().max()) for a in t0 for b in t1 if a.shape == b.shape]
    assert gaps and min(gaps) > 1e-3


@pytest.mark.slow
def test_rank_0_alone_writes_checkpoints_and_the_cache(ddp):
    ranks, _ = ddp
    assert ranks[1]["writes"] == []
    written = ranks[0]["writes"]
    checkpoints = [w for w in written if w.endswith(".ckpt.pt")]
    cached = [w for w in written if w.startswith("tiny-") and not w.endswith(".ckpt.pt")]
    assert len(checkpoints) == RECIPE["steps"] // RECIPE["eval_every"] and len(cached) == 1
    assert ranks[0]["cache_files"] == cached  # the checkpoint is gone once the model is in the cache
    for name, value in ranks[0]["cli_final"].items():  # both ranks read the same file
        assert torch.equal(value, ranks[1]["cli_final"][name])


@pytest.mark.slow
def test_an_interrupted_two_rank_run_resumes_to_the_same_weights(ddp):
    ranks, out = ddp
    assert "resuming from" in out and "at step 2 of 6" in out
    for r in ranks:
        assert len(r["checkpoint_after_interrupt"]) == 1
        assert len(r["resumed"]["weights"]) == RECIPE["steps"] - 2  # it went on from step 2
        for name, value in r["resumed_final"].items():
            assert torch.equal(value, r["cli_final"][name]), name
            assert torch.equal(value, r["cached_final"][name]), name
        assert not r["cached_ran"]  # the third call read the cache
        assert r["resumed_loss"] == list(r["cli_curves"]["data_vars"]["loss"]["data"])


@pytest.mark.slow
def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b_on_the_same_samples(ddp, monkeypatch, tmp_path):
    ranks, _ = ddp
    ddp_steps = _steps(ranks[0], "cli", ranks[0]["cli_final"])
    ref_steps, ref_curves = _reference(monkeypatch, tmp_path)
    assert len(ref_steps) == len(ddp_steps)
    worst = 0.0
    for wd, wr in zip(ddp_steps, ref_steps):
        for name in wr:
            worst = max(worst, float((wd[name] - wr[name]).abs().max()))
            torch.testing.assert_close(wd[name], wr[name], rtol=1e-5, atol=1e-6)
    print(f"largest weight difference, two ranks against one process: {worst:.3g}")
    ddp_loss = torch.tensor(ranks[0]["cli_curves"]["data_vars"]["loss"]["data"], dtype=torch.float64)
    print(
        f"largest relative loss difference: {float(((ddp_loss - torch.tensor(ref_curves.loss.values)) / ddp_loss).abs().max()):.3g}"
    )
    torch.testing.assert_close(ddp_loss, torch.tensor(ref_curves.loss.values), rtol=1e-5, atol=0)
    # the weights moved by far more than the tolerance: the comparison can fail
    moved = max(float((ref_steps[-1][k] - ref_steps[0][k]).abs().max()) for k in ref_steps[0])
    assert moved > 1e3 * max(worst, 1e-9)


def test_the_command_line_names_bad_input(tmp_path, capsys):
    assert cli.main(["run", "pdefm", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "parameter file" in capsys.readouterr().err
    bad = tmp_path / "recipe.yaml"
    bad.write_text(yaml.safe_dump({k: v for k, v in RECIPE.items() if k != "latent"}))
    assert cli.main(["pretrain", str(bad)]) == 2
    assert "lacks ['latent']" in capsys.readouterr().err
    params = tmp_path / "params" / "metrics" / "smoke.yaml"
    params.parent.mkdir(parents=True)
    params.write_text("profile: smoke\nseed: 0\n")
    assert cli.main(["pretrain", str(params)]) == 2
    assert "pre-trains no tokeniser" in capsys.readouterr().err
    params.write_text("profile: smoke\nbogus: 3\n")
    assert cli.main(["pretrain", str(params), "--chapter", "tokeniser"]) == 2
    assert "has no parameter 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "metrics", "-f", str(params)])  # argparse: not an experiment chapter
