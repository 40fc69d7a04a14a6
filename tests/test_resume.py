"""Runs that survive ``kill -9``: an experiment run killed mid-way and run again equals an uninterrupted one.

The command line (``python -m physfm.training run pdefm``, a smoke-sized run of three jobs) runs in
a real subprocess; it is killed with SIGKILL once one job has finished (its result file is in the
run folder) and another has started and checkpointed (its ``.ckpt.pt`` is there). The same command
run again must read the finished job back, resume the interrupted one from its checkpoint, and
write a result equal to that of a run that was never interrupted: every number exactly, except
the variables that are wall-clock timings.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from physfm import results
from physfm.experiments import harness

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "data_recipes" / "params" / "pdefm" / "smoke.yaml"
#: three jobs (the full model, no spectral token, the transformer) of 16 steps, checkpointed every 2
OVERRIDES = ["-p", "steps", "16", "-p", "seeds", "[0]", "-p", "held_out", "[]"]
#: wall-clock measurements, different in every run
TIMINGS = ["step_seconds", "generation_seconds", "backbone_seconds"]
TIMING_ATTRS = {"seconds", "generation_seconds", "date"}


def _command(runs: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "physfm.training",
        "run",
        "pdefm",
        "-f",
        str(PARAMS),
        *OVERRIDES,
        "--runs",
        str(runs),
        "--results",
        str(out),
        "--quiet",
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(harness.__file__).resolve().parents[2])
    env.update(PYTHONPATH=os.pathsep.join([src, env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env.pop("PHYSFM_DEVICE", None)
    return env


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _job(name: str) -> str:
    """The job of a file in a run folder: ``<job>.nc`` or ``<job>.<digest>.ckpt.pt``."""
    return name.removesuffix(".nc") if name.endswith(".nc") else name.rsplit(".", 3)[0]


def _kill_mid_way(cmd: list[str], runs: Path) -> tuple[list[str], list[str]]:
    """Start ``cmd``; SIGKILL it once a job has finished and another has checkpointed. Returns the
    finished jobs' and the checkpoints' file names at that moment."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            finished = sorted(p.name for p in runs.glob("*/*.nc"))
            started = sorted(p.name for p in runs.glob("*/*.ckpt.pt"))
            if finished and set(_job(f) for f in started) - set(_job(f) for f in finished):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                # what the folder holds now that the process is gone (a job may have ended meanwhile)
                finished = sorted(p.name for p in runs.glob("*/*.nc"))
                started = sorted(p.name for p in runs.glob("*/*.ckpt.pt"))
                assert set(_job(f) for f in started) - set(_job(f) for f in finished), (
                    "killed just as the running job ended: no job was left mid-way"
                )
                return finished, started
            if proc.poll() is not None:
                pytest.fail(f"the run ended (status {proc.returncode}) before it could be killed mid-way")
            time.sleep(0.02)
        pytest.fail("the run never reached a finished job and a started one")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_same_result(path_a: Path, path_b: Path) -> None:
    a, b = results.load(path_a), results.load(path_b)
    assert set(a.data_vars) == set(b.data_vars) and all(t in a for t in TIMINGS)
    xr.testing.assert_equal(a.drop_vars(TIMINGS), b.drop_vars(TIMINGS))  # every other number, exactly
    for key in set(a.attrs) - TIMING_ATTRS:
        assert a.attrs[key] == b.attrs[key], key
    assert np.isfinite(a.vrmse.values).all()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    _run(_command(tmp / "runs", tmp / "result.nc"))
    return tmp / "result.nc"


@pytest.mark.slow
def test_a_run_killed_mid_way_and_run_again_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    runs, resumed = tmp_path / "runs-b", tmp_path / "resumed.nc"
    finished, started = _kill_mid_way(_command(runs, resumed), runs)
    assert not resumed.exists()  # killed before the end
    out = _run(_command(runs, resumed))
    assert f"{len(finished)} of 3 jobs already done" in out
    steps = [int(s) for s in re.findall(r"resuming from \S+ at step (\d+) of 16", out)]
    assert steps and all(s > 0 for s in steps), out  # the interrupted job went on from its checkpoint
    assert not list(runs.glob("*/*.ckpt.pt"))  # checkpoints are deleted once their job is saved

    _assert_same_result(uninterrupted, resumed)


@pytest.mark.slow
def test_two_ranks_share_out_the_jobs_and_give_the_one_process_result(tmp_path, uninterrupted):
    """``torchrun --nproc_per_node=2 -m physfm.training run ...``: each rank runs its share of the
    jobs on its own (``jobs[rank::2]``), rank 0 saves the gathered result, and it equals the
    result of one process: a job's numbers do not depend on the rank that ran it."""
    out = tmp_path / "two-ranks.nc"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        *_command(tmp_path / "runs", out)[2:],
    ]
    log = _run(cmd)
    shares = dict(re.findall(r"rank (\d) of 2 runs \d of 3 jobs: ([^\n]*)", log))
    assert sorted(shares) == ["0", "1"], log
    keys = [k for v in shares.values() for k in v.split(", ")]
    assert sorted(keys) == ["full-seed0", "no_spectral_token-seed0", "transformer-seed0"]  # each job once
    assert log.count("physfm: saved") == 1  # rank 0 alone writes the result
    _assert_same_result(uninterrupted, out)


def test_a_job_file_from_other_inputs_is_run_again(tmp_path):
    """The digest that guards resumption: a saved job is only taken back for the same inputs."""
    from physfm.experiments.harness import Job

    def job(j):
        return xr.Dataset({"x": ((), float(j.seed))})

    harness.run_jobs(job, [Job("a", 0)], initargs=({"lr": 1.0},), folder=tmp_path, progress=False)
    assert harness.inputs_digest(job, ({"lr": 1.0},)) != harness.inputs_digest(job, ({"lr": 2.0},))
    ran = []

    def counting(j):
        ran.append(j)
        return job(j)

    harness.run_jobs(counting, [Job("a", 0)], initargs=({"lr": 1.0},), folder=tmp_path, progress=False)
    assert ran == []  # same inputs: read back
    harness.run_jobs(counting, [Job("a", 0)], initargs=({"lr": 2.0},), folder=tmp_path, progress=False)
    assert ran == [Job("a", 0)]  # other inputs: run again


def test_physfm_runs_gives_runs_without_a_folder_one(tmp_path, monkeypatch):
    from physfm.experiments.harness import Job

    def job(j):
        return xr.Dataset({"x": ((), float(j.seed))})

    monkeypatch.setenv("PHYSFM_RUNS", str(tmp_path))
    harness.run_jobs(job, [Job("a", 0), Job("a", 1)], initargs=(3,), progress=False)
    folder = tmp_path / f"{job.__module__.rsplit('.', 1)[-1]}-{harness.inputs_digest(job, (3,))}"
    assert sorted(p.name for p in folder.iterdir()) == ["a-seed0.nc", "a-seed1.nc"]


@pytest.mark.parametrize("every, last", [(0, 6), (4, 4)])
def test_a_source_without_state_is_replayed_to_where_the_checkpoint_stopped(tmp_path, every, last):
    """A plain generator (here the fine-tuning chapter's epoch batches) has no state to save: the
    loop draws again the batches of the steps already done. Checkpoints follow the evaluations
    (``checkpoint_every=0``) or their own period, and a resumed run adds no evaluation of its own."""
    import torch

    from physfm import training
    from physfm.data import streams

    data = torch.randn(3, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    cfg = training.TrainConfig(steps=8, lr=1e-2, eval_every=3, checkpoint_every=every, seed=1)

    def setup():
        torch.manual_seed(0)
        return torch.nn.Conv1d(3, 1, 3, padding=1), streams.epoch_batches(data, 4, 8, 2, seed=7)

    def loss(m, batch, rng):
        x = batch.flatten(1, 2)
        return (m(x[:, :3]) - x[:, 3:4]).square().mean()

    def evaluate(m):
        return {"vrmse": loss(m, data[:, :, :4], None)}

    model, batches = setup()
    full = training.train(model, loss, batches, cfg, evaluate=evaluate, progress=False)
    reference = model.weight.detach().clone()

    ck = tmp_path / "run.pt"
    model, batches = setup()
    calls = []

    def interrupted(m, batch, rng):
        calls.append(1)
        if len(calls) == 8:  # killed in its eighth step, after the checkpoint of step `last`
            raise KeyboardInterrupt
        return loss(m, batch, rng)

    with pytest.raises(KeyboardInterrupt):
        training.train(model, interrupted, batches, cfg, evaluate=evaluate, checkpoint=ck, progress=False)
    assert torch.load(ck, weights_only=False)["step"] == last
    model, batches = setup()
    with torch.no_grad():
        model.weight.zero_()  # everything must come from the checkpoint
    resumed = training.train(model, loss, batches, cfg, evaluate=evaluate, checkpoint=ck, progress=False)
    assert torch.equal(model.weight, reference)
    assert resumed.loss.values.tolist() == full.loss.values.tolist()
    assert resumed.eval_step.values.tolist() == full.eval_step.values.tolist() == [0, 3, 6, 8]
    assert resumed.vrmse.values.tolist() == full.vrmse.values.tolist()
