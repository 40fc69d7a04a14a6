"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc_per_node=2`` (gloo, CPU).

Usage: ``torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT RECIPE.yaml``

Each rank records, at every step of tokeniser pre-training, its weights before the step and the
batch it read (by wrapping the loss that :func:`physfm.training.pretrain_tokeniser` passes to
the training loop), and every file it writes through :func:`physfm.results.atomic_write`. In
order:

1. an interrupted pre-training (both ranks stop before their third step) into the cache ``OUT/b``,
   then the same call again, which resumes from the checkpoint, then once more (from the cache);
2. the command line, ``python -m physfm.training pretrain RECIPE.yaml``, from nothing into ``OUT/a``.

Everything recorded goes to ``OUT/rank<r>.pt`` for the test to compare.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import yaml

from physfm import cli, results, runtime
from physfm.training import cache, loop
from physfm.training import tokeniser as tokeniser_module

out, recipe_path = Path(sys.argv[1]), Path(sys.argv[2])
recipe = yaml.safe_load(recipe_path.read_text())
runtime.init_distributed("cpu", verbose=False)
rank = runtime.rank()
record: dict = {"world": runtime.world_size(), "backend": torch.distributed.get_backend()}
log: list[str] = []

# every write of a checkpoint, cached model or result goes through atomic_write: log who wrote what
_atomic_write = results.atomic_write


def logged_write(path, write):
    log.append(Path(path).name)
    return _atomic_write(path, write)


for module in (results, loop, cache):
    module.atomic_write = logged_write

_train = tokeniser_module.train
phase = {"name": None, "stop_at": None}


def recording_train(model, loss_fn, batches, config, **kwargs):
    steps = record.setdefault(phase["name"], {"weights": [], "batches": [], "trajectories": None})

    def loss(m, batch, rng):
        if phase["stop_at"] is not None and len(steps["weights"]) == phase["stop_at"]:
            raise KeyboardInterrupt  # both ranks stop at the same step, before any collective call
        inner = m.module if hasattr(m, "module") else m
        steps["weights"].append({k: v.detach().clone() for k, v in inner.named_parameters()})
        steps["batches"].append(batch.clone())
        if steps["trajectories"] is None:
            steps["trajectories"] = [t.clone() for t in batches.dataset.buffer.data]
        return loss_fn(m, batch, rng)

    steps["ddp"] = type(model).__name__
    return _train(model, loss, batches, config, **kwargs)


tokeniser_module.train = recording_train

# 1. interrupted, resumed, then read from the cache
os.environ["PHYSFM_CACHE"] = str(out / "b")
phase.update(name="interrupted", stop_at=2)
try:
    tokeniser_module.pretrain_tokeniser(recipe, device="cpu", name="tiny", progress=False)
    raise AssertionError("the interrupted run did not stop")
except KeyboardInterrupt:
    pass
runtime.barrier()  # rank 0 may still be writing the checkpoint of step 2
record["checkpoint_after_interrupt"] = sorted(p.name for p in (out / "b").glob("*.ckpt.pt"))
phase.update(name="resumed", stop_at=None)
tok, curves = tokeniser_module.pretrain_tokeniser(recipe, device="cpu", name="tiny", progress=False)
record["resumed_final"] = {k: v.detach().clone() for k, v in tok.named_parameters()}
record["resumed_loss"] = curves.loss.values.tolist()
phase.update(name="from_cache")
tok, curves = tokeniser_module.pretrain_tokeniser(recipe, device="cpu", name="tiny", progress=False)
record["cached_final"] = {k: v.detach().clone() for k, v in tok.named_parameters()}
record["cached_ran"] = "from_cache" in record and bool(record["from_cache"]["weights"])

# 2. the command line, from nothing (it closes the process group when it is done)
os.environ["PHYSFM_CACHE"] = str(out / "a")
log.clear()
phase.update(name="cli")
status = cli.main(["pretrain", str(recipe_path), "--name", "tiny", "--device", "cpu", "--quiet"])
record["cli_status"] = status
record["writes"] = list(log)
blob = next(p for p in (out / "a").glob("tiny-*.pt") if not p.name.endswith(".ckpt.pt"))
record["cli_final"] = torch.load(blob, weights_only=False)["model"]
record["cli_curves"] = torch.load(blob, weights_only=False)["curves"]
record["cache_files"] = sorted(p.name for p in (out / "a").iterdir() if p.suffix == ".pt")
torch.save(record, out / f"rank{rank}.pt")
