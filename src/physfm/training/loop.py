"""One training loop for every chapter: progress bar, learning curves, checkpoints that resume exactly.

Configuration is plain data (:class:`TrainConfig`); the model, the loss and the data are passed in::

    curves = train(model, loss_fn, batches, TrainConfig(steps=500, lr=1e-3, eval_every=50),
                   evaluate=lambda m: {"vrmse": ..., "nmse": tensor_of_3_bands},
                   checkpoint="runs/tok.pt", state=[stream])

- ``loss_fn(model, batch, rng) -> scalar tensor``; ``rng`` is the loop's own ``torch.Generator``
  (for random choices inside a step, e.g. a random compression ratio), saved in checkpoints;
- ``batches`` is any iterable of batches, read one batch per step;
- ``evaluate(model)`` is called before the first step, every ``eval_every`` steps and after the
  last; it returns scalars or 1-D tensors (one named ``...mse`` with three entries is taken to be
  the low/mid/high bands; any other 1-D value gets its own axis ``<name>_index``).

The learning curves come back as an :class:`xarray.Dataset` (dims ``step`` for the training
loss and learning rate, ``eval_step`` and ``band`` for evaluations), ready for
:func:`physfm.results.save` (pass ``results=path`` to have the loop do it).

**Checkpoints.** With ``checkpoint=path`` a checkpoint is written atomically every
``checkpoint_every`` steps (0: after every evaluation) and at the end; if one exists when
``train`` starts, the run continues from it, and a resumed run gives the same numbers as an
uninterrupted one (on the same device and number of threads). A checkpoint holds the model,
the optimiser, the step, the curves so far, the loop's generator and torch's global CPU (and
CUDA) generator states; the learning-rate schedule is a pure function of the step
(:meth:`TrainConfig.lr_at`), so the step is its whole state. Where the data resumes from:

- objects in ``state`` (and ``batches`` itself, when it has ``state_dict``/``load_state_dict``)
  are saved with the checkpoint and put back, so the source continues where it was;
- with no such object, the source is *replayed*: on resume the loop draws and discards the
  batches of the steps already done, so a deterministic source (one that draws from its own
  generators, as every stream of :mod:`physfm.data.streams` does) yields exactly the batches
  the uninterrupted run would have had next. Replay costs the data of the steps done (no
  model computation) and keeps checkpoints small (no data buffers in them).

Resuming with a different configuration (other than ``steps``, ``eval_every`` or
``checkpoint_every``) is refused. Building the iterator of ``batches`` and replaying it leave
torch's global generator as it was (a DataLoader draws a seed from it when it starts).

**Several processes** (``torchrun``). Pass the model wrapped by
:func:`physfm.runtime.data_parallel` (DistributedDataParallel) and the ranks train it together:
each reads its own ``batches`` (streams seed themselves by rank), gradients are averaged, the
loss in the curves is the mean over all ranks' batches, only rank 0 evaluates (on its own,
unwrapped model) and shows progress, the random and data states of every rank are gathered into
the checkpoint, which rank 0 alone writes (on resume each rank takes back its own), and every
rank returns rank 0's curves. A plain module under ``torchrun`` trains on its own: inside
:func:`physfm.runtime.alone` (one job per rank) it writes its own checkpoint and results.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from physfm.data.spectral import BANDS
from physfm.results import atomic_write
from physfm.runtime import broadcast_object, distributed, gather_objects, is_main_process, progress_bar, rank, world_size

__all__ = ["TrainConfig", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Plain-data settings of a training run.

    Attributes:
        steps: optimiser steps in total (a resumed run continues up to this).
        lr: peak learning rate of AdamW; ``weight_decay`` its decoupled weight decay.
        warmup: steps of linear warm-up; then cosine decay to ``lr * final_lr_fraction``
            (``schedule="cosine"``) or constant (``"constant"``).
        grad_clip: clip the gradient norm to this (``None``: no clipping).
        eval_every: evaluate every so many steps (0: only before and after).
        checkpoint_every: write a checkpoint every so many steps (0: after every evaluation),
            and at the end; only when :func:`train` is given a ``checkpoint`` path.
        seed: seed of the loop's generator passed to ``loss_fn``.
    """

    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 0
    schedule: str = "cosine"
    final_lr_fraction: float = 0.1
    grad_clip: float | None = 1.0
    eval_every: int = 0
    checkpoint_every: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"TrainConfig: steps must be >= 0, got {self.steps}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig: schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.lr <= 0 or self.warmup < 0 or self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError(f"TrainConfig: need lr > 0 and warmup, eval_every, checkpoint_every >= 0, got {self}")

    def lr_at(self, step: int) -> float:
        """Learning rate used for the update that follows ``step`` completed steps."""
        if self.warmup and step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant" or self.steps <= self.warmup:
            return self.lr
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        floor = self.final_lr_fraction
        return self.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _own(states: list[Any]) -> Any:
    """This rank's entry of the per-rank states of a checkpoint."""
    if len(states) != world_size():
        raise ValueError(f"train: the checkpoint was written by {len(states)} processes, this run has {world_size()}")
    return states[rank()]


def _global_rng() -> list[Any]:
    """torch's global generators: the CPU's and, once CUDA is in use, this process's GPU's (only
    its own: reading every GPU's would start a CUDA context on each from every rank)."""
    out = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out.append(torch.cuda.get_rng_state())
    return out


def _set_global_rng(states: list[Any]) -> None:
    torch.set_rng_state(states[0])
    if len(states) > 1 and torch.cuda.is_available():
        cuda = states[1]
        torch.cuda.set_rng_state_all(cuda) if isinstance(cuda, (list, tuple)) else torch.cuda.set_rng_state(cuda)


def _is_data_parallel(model: nn.Module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, DistributedDataParallel)


_MAY_CHANGE_ON_RESUME = ("steps", "eval_every", "checkpoint_every")


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any, torch.Generator], torch.Tensor],
    batches: Iterable,
    config: TrainConfig,
    *,
    evaluate: Callable[[nn.Module], Mapping[str, Any]] | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    checkpoint: str | os.PathLike | None = None,
    state: Sequence[Any] = (),
    desc: str = "training",
    progress: bool = True,
    results: str | os.PathLike | None = None,
    params: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Train ``model`` for ``config.steps`` AdamW steps and return its learning curves.

    Args:
        parameters: what to optimise (default: every parameter with ``requires_grad``), or
            parameter groups ``[{"params": [...], "lr_scale": 0.1}, ...]`` whose learning rate is
            ``lr_scale`` times the schedule's (fine-tuning pre-trained weights more gently).
        checkpoint: file to save to and resume from; ``None`` for no checkpoints.
        state: extra objects with ``state_dict``/``load_state_dict`` to checkpoint (data streams);
            ``batches`` itself is added when it has both methods.
        desc: label of the progress bar.
        results: write the curves there with :func:`physfm.results.save` (rank 0 only), with
            ``params`` (default: the training configuration) as their provenance.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: config must be a TrainConfig, got {type(config).__name__}")
    collective = _is_data_parallel(model)
    if collective and not distributed():
        raise ValueError(
            "train: model is a DistributedDataParallel, but no process group is running here "
            "(outside torchrun, or inside physfm.runtime.alone()); pass the plain module"
        )
    if distributed() and not collective and (checkpoint is not None or results is not None):
        raise ValueError(
            "train: under torchrun, pass the model wrapped by physfm.runtime.data_parallel (the ranks train "
            "it together) or train inside physfm.runtime.alone() (each rank its own model); a plain module "
            "with a checkpoint or results to write would have every rank write the same file"
        )
    inner = model.module if collective else model
    main = is_main_process()
    groups = _param_groups(parameters if parameters is not None else model.parameters())
    params_list = [p for g in groups for p in g["params"]]
    if not params_list:
        raise ValueError("train: nothing to train: no parameter requires a gradient")
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    rng = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    lrs: list[float] = []
    evals: list[tuple[int, dict[str, np.ndarray]]] = []
    step = 0
    path = Path(checkpoint) if checkpoint is not None else None
    state = list(state)
    if hasattr(batches, "state_dict") and hasattr(batches, "load_state_dict") and not any(o is batches for o in state):
        state.append(batches)
    for obj in state:
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"train: state entries need state_dict/load_state_dict, got {type(obj).__name__}")

    def random_states() -> dict[str, Any]:
        return {"rng": rng.get_state(), "global_rng": _global_rng(), "state": [obj.state_dict() for obj in state]}

    if path is not None and path.exists():
        ck = torch.load(path, map_location="cpu", weights_only=False)
        changed = {
            k: (ck["config"].get(k), v)
            for k, v in asdict(config).items()
            if k not in _MAY_CHANGE_ON_RESUME and ck["config"].get(k) != v
        }
        if changed:
            raise ValueError(
                f"train: the checkpoint {path} was written with other settings "
                f"(name: (checkpoint, now)) {changed}; delete it or use another checkpoint path"
            )
        inner.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        own = _own(ck["ranks"])
        rng.set_state(own["rng"])
        if "global_rng" not in own:  # written before the CPU and CUDA states were kept together
            own["global_rng"] = [own["torch_rng"], *([own["cuda_rng"]] if "cuda_rng" in own else [])]
        _set_global_rng(own["global_rng"])
        if len(own["state"]) != len(state):
            raise ValueError(f"train: the checkpoint holds {len(own['state'])} data states, this run passes {len(state)}")
        for obj, st in zip(state, own["state"]):
            obj.load_state_dict(st)
        step, losses, lrs, evals = ck["step"], ck["losses"], ck["lrs"], ck["evals"]
        if main:
            print(f"physfm: {desc}: resuming from {path} at step {step} of {config.steps}", flush=True)

    def save_checkpoint():
        if path is None:
            return
        ranks = gather_objects(random_states()) if collective else [random_states()]  # collective: every rank takes part
        if not main:
            return
        ck = {
            "model": inner.state_dict(),
            "optimizer": opt.state_dict(),
            "ranks": ranks,
            "step": step,
            "losses": losses,
            "lrs": lrs,
            "evals": evals,
            "config": asdict(config),
        }
        atomic_write(path, lambda tmp: torch.save(ck, tmp))

    def run_eval():
        if evaluate is None or (evals and evals[-1][0] == step) or (collective and not main):
            return
        was_training = inner.training
        inner.eval()
        with torch.no_grad():
            values = {k: _as_array(v) for k, v in evaluate(inner).items()}
        inner.train(was_training)
        evals.append((step, values))

    # building the iterator (a DataLoader draws a seed) and replaying it leave the global generator alone
    outside = _global_rng()
    it: Iterator = iter(batches)
    if not state and step < config.steps:
        for _ in range(step):  # replay: the batches of the steps already done
            next(it)
    _set_global_rng(outside)
    start_time = time.perf_counter()
    if step == 0:
        run_eval()
    bar = progress_bar(config.steps, desc, disable=not (progress and main), initial=step)
    model.train()
    world = world_size() if collective else 1
    while step < config.steps:
        lr = config.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        loss = loss_fn(model, next(it), rng)
        value = loss.detach()
        if collective:  # the mean over every rank's batch, and every rank stops together on a bad loss
            value = value.clone()
            torch.distributed.all_reduce(value)
            value = value / world
        value = value.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"train: loss became {value} at step {step}; lower lr (now {lr:g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params_list, config.grad_clip)
        opt.step()
        step += 1
        losses.append(value)
        lrs.append(lr)
        bar.update(1)
        if step % 10 == 0 or step == config.steps:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3g}", refresh=False)
        if config.eval_every and step % config.eval_every == 0:
            run_eval()
        every = config.checkpoint_every or config.eval_every
        if every and step % every == 0 and step < config.steps:
            save_checkpoint()
    run_eval()
    bar.close()
    save_checkpoint()
    if collective:
        evals = broadcast_object(evals)
    curves = _curves(losses, lrs, evals, desc, time.perf_counter() - start_time)
    curves.attrs["ranks"] = world
    if results is not None and main:
        from physfm.results import save

        save(curves, results, params=dict(params) if params is not None else asdict(config), device=params_list[0].device)
    return curves


def _param_groups(parameters: Iterable) -> list[dict[str, Any]]:
    """Parameters, or groups of them with an ``lr_scale``, as optimiser groups of the trainable ones."""
    items = list(parameters)
    if not all(isinstance(g, Mapping) for g in items):
        items = [{"params": items}]
    groups = []
    for g in items:
        if set(g) - {"params", "lr_scale"}:
            raise ValueError(f"train: a parameter group may hold 'params' and 'lr_scale', got keys {sorted(g)}")
        scale = float(g.get("lr_scale", 1.0))
        if scale < 0:
            raise ValueError(f"train: lr_scale must be >= 0, got {scale}")
        params = [p for p in g["params"] if p.requires_grad]
        if params:
            groups.append({"params": params, "lr_scale": scale})
    return groups


def _curves(losses, lrs, evals, desc, seconds) -> xr.Dataset:
    data = {
        "loss": (("step",), np.asarray(losses, dtype=np.float64)),
        "lr": (("step",), np.asarray(lrs, dtype=np.float64)),
    }
    coords: dict[str, Any] = {"step": np.arange(1, len(losses) + 1)}
    if evals:
        coords["eval_step"] = np.asarray([s for s, _ in evals])
        for key in evals[0][1]:
            stacked = np.stack([v[key] for _, v in evals])
            if stacked.ndim == 1:
                data[key] = (("eval_step",), stacked)
            elif key.endswith("mse") and stacked.shape[1] == len(BANDS):
                data[key] = (("eval_step", "band"), stacked)
                coords["band"] = list(BANDS)
            else:
                data[key] = (("eval_step", f"{key}_index"), stacked)
    return xr.Dataset(data, coords=coords, attrs={"run": desc, "seconds": float(seconds)})
