"""Fine-tuning a pre-trained autoencoder for dynamics: which parts to train, and how many numbers.

Tadpole (TUM 2026) turns its pre-trained autoencoder into a next-frame model with three small
additions (:class:`~physfm.nn.dynamics.AutoencoderDynamics`): LoRA on the encoder and the decoder, a
latent transform :math:`z' = a z + f(z)`, and encoder-to-decoder skips with learnable scales.
This module runs the comparison of the fine-tuning chapter: on a system the tokeniser was
pre-trained on (*seen*) and on one it never saw (*unseen*), train each configuration of

=========================  ==============  =========  =====
arm                        tokeniser       transform  skips
=========================  ==============  =========  =====
``frozen``                 fixed           yes        yes
``lora_transform_skips``   fixed + LoRA    yes        yes
``full``                   every weight    yes        yes
``lora``                   fixed + LoRA    --         --
``transform``              fixed           yes        --
``skips``                  fixed           --         yes
``lora_transform``         fixed + LoRA    yes        --
``lora_skips``             fixed + LoRA    --         yes
=========================  ==============  =========  =====

(the first three are Tadpole's frozen / LoRA / full-parameter fine-tuning; the others take
parts away; each is an :class:`Arm`) for the same number of steps, with the same optimiser and
schedule, for several seeds, and record the number of trainable parameters of each. Every arm
and seed fine-tunes on the same small data set of a system, every window of
``train_trajectories`` trajectories of the stream ``seed_for("train", 0)`` (fine-tuning adapts a
pre-trained model with little data; the pre-training had the endless stream); the seed sets the
initial LoRA factors and transform weights (``seed_for("adapters", seed)``) and the order in
which the windows come, epoch after epoch (``seed_for("order", seed)``). Validation and rollout
trajectories come from their own streams (:func:`physfm.experiments.harness.eval_data`).

The tokeniser is the pre-training chapter's *cross-domain* one (:mod:`physfm.experiments.pretraining`,
at its base point):
pre-trained as an autoencoder on every system of that chapter except its target, so the target
(Kolmogorov flow at the default profiles) is the unseen system, generated exactly as there, and
the seen one is any of the others. Both come from the model cache when that chapter has run.

Logged: validation next-frame VRMSE and the low/mid/high spectral NMSE every ``eval_every`` steps
(step 0 is the untouched autoencoder: every configuration starts there), the training loss, the
VRMSE of autoregressive rollouts per lead time after training, and the learned scales
(:math:`a` and the skip scales). :func:`run` returns it all in the harness's layout (dims
``arm``, ``seed``, ``system``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from physfm.data import streams
from physfm.data.spec import specs
from physfm.experiments import harness, pretraining
from physfm.experiments.harness import Job
from physfm.nn.dynamics import AutoencoderDynamics, SkipScales
from physfm.nn.lora import count_parameters
from physfm.nn.tokeniser import Tokeniser
from physfm.runtime import seed_for
from physfm.training import TrainConfig, train

__all__ = ["Arm", "ARMS", "pretrained_tokeniser", "build", "run", "summary"]


@dataclass(frozen=True)
class Arm:
    """Which parts of :class:`~physfm.nn.dynamics.AutoencoderDynamics` an arm trains."""

    name: str
    label: str
    adapt: str  # "frozen", "lora" or "full"
    transform: bool
    skips: bool


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("frozen", "frozen + transform + skips", "frozen", True, True),
        Arm("lora_transform_skips", "LoRA + transform + skips", "lora", True, True),
        Arm("full", "full fine-tuning", "full", True, True),
        Arm("lora", "LoRA only", "lora", False, False),
        Arm("transform", "transform only", "frozen", True, False),
        Arm("skips", "skips only", "frozen", False, True),
        Arm("lora_transform", "LoRA + transform", "lora", True, False),
        Arm("lora_skips", "LoRA + skips", "lora", False, True),
    )
}


def pretrained_tokeniser(pre: Mapping[str, Any], *, device: torch.device | str = "cpu", progress: bool = True):
    """The pre-training chapter's cross-domain tokeniser for its parameters ``pre`` (the
    ``pretraining`` preset): ``(tokeniser, curves, systems it was pre-trained on)``, the very
    model :func:`physfm.experiments.pretraining.run` trains (both chapters share it through the cache)."""
    toks = pretraining.pretrained_tokenisers(pre, device=device, progress=progress, domains=("cross_domain",))
    tok, curves = toks["cross_domain"]
    return tok, curves, [s for s in specs(pre["systems"]) if s != pre["target"]]


def build(
    arm: Arm | str, tokeniser: Tokeniser, fields: int, cfg: Mapping[str, Any], *, stride: int, seed: int = 0
) -> AutoencoderDynamics:
    """The model of ``arm`` around a copy of ``tokeniser``; ``seed`` sets the initial LoRA factors
    and the transform's weights (``seed_for("adapters", seed)``)."""
    if isinstance(arm, str):
        if arm not in ARMS:
            raise ValueError(f"build: unknown arm {arm!r}; choose from {list(ARMS)}")
        arm = ARMS[arm]
    torch.manual_seed(seed_for("adapters", seed))
    return AutoencoderDynamics(
        copy.deepcopy(tokeniser),
        fields,
        stride=stride,
        adapt=arm.adapt,
        rank=cfg["rank"],
        transform=arm.transform,
        skips=arm.skips,
        width=cfg["width"],
        blocks=cfg["transform_blocks"],
        generator=torch.Generator().manual_seed(seed_for("lora", seed)),
    )


# -- the jobs --------------------------------------------------------------------------------

_SHARED: dict[str, Any] = {}


def _share(cfg, pre, tokeniser: tuple[Any, dict], data: Mapping[str, tuple[torch.Tensor, harness.EvalData]], device) -> None:
    tok = Tokeniser(tokeniser[0])
    tok.load_state_dict(tokeniser[1])
    _SHARED.clear()
    _SHARED.update(
        cfg=dict(cfg),
        pre=dict(pre),
        tokeniser=tok.to(device),
        device=device,
        data={k: (t.to(device), e.to(device)) for k, (t, e) in data.items()},
    )


def _job(job: Job) -> xr.Dataset:
    cfg, pre, device = _SHARED["cfg"], _SHARED["pre"], _SHARED["device"]
    train_set, data = _SHARED["data"][job.system]
    arm = ARMS[job.arm]
    model = build(arm, _SHARED["tokeniser"], train_set.shape[1], cfg, stride=pre["stride"], seed=job.seed).to(device)
    tc = TrainConfig(steps=cfg["dyn_steps"], lr=cfg["lr"], warmup=cfg["warmup"], eval_every=cfg["eval_every"], seed=job.seed)
    batches = streams.epoch_batches(train_set, pre["window"], cfg["dyn_steps"], cfg["batch"], seed_for("order", job.seed))
    curves = train(
        model,
        lambda m, b, rng: m.loss(b),
        batches,
        tc,
        evaluate=data.scores,
        desc=harness.describe_job(job),
        progress=False,
        checkpoint=harness.checkpoint_path(job),
    )
    model.eval()
    levels = len(SkipScales.levels)
    rollout, example = data.rollout_with_example(model.rollout)
    return harness.job_dataset(
        curves,
        rollout=rollout,
        **{harness.EXAMPLE: (("lead", "y", "x"), example)},
        trainable=count_parameters(model)[0],
        scale=model.transform.scale.item() if model.transform is not None else np.nan,
        skip_scale=(
            ("level",),
            model.skips.scales.detach().cpu().numpy() if model.skips is not None else np.full(levels, np.nan),
        ),
    )


def run(
    cfg: Mapping[str, Any],
    pre: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    arms: Sequence[str] | None = None,
    tokeniser: Tokeniser | None = None,
    workers: int | None = None,
    folder: str | None = None,
    example_arm: str | None = None,
) -> xr.Dataset:
    """Run the fine-tuning comparison of ``cfg`` (the ``finetuning`` preset) with the tokeniser
    and data of ``pre`` (the ``pretraining`` preset at the same profile).

    Args:
        arms: arms to train (default: ``cfg["arms"]``), names of :data:`ARMS`.
        tokeniser: the pre-trained tokeniser to use (default: :func:`pretrained_tokeniser`).
        workers: one-thread worker processes on a CPU (default ``cfg["workers"]``).
        folder: save each finished run there and skip it when run again.
        example_arm: the arm whose rollout (first seed) is kept as the example (default:
            Tadpole's ``lora_transform_skips`` when it runs, else the first arm).

    Returns:
        The harness's layout, dims ``arm``, ``seed``, ``system`` (coordinate ``seen``: whether the
        tokeniser was pre-trained on it), plus ``trainable`` parameters, ``scale`` (the
        transform's :math:`a`) and ``skip_scale`` (per ``level``); ``example_truth (system,
        example_frame, y, x)``, the first field of the first rollout trajectory of each system
        (context and future), and ``example_prediction (system, lead, y, x)``, what
        ``example_arm`` (attribute) with the first seed predicted for it.
    """
    arms = list(cfg["arms"] if arms is None else arms)
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"run: unknown arms {unknown or arms}; choose from {list(ARMS)}")
    if example_arm is None:
        example_arm = "lora_transform_skips" if "lora_transform_skips" in arms else arms[0]
    if example_arm not in arms:
        raise ValueError(f"run: example_arm={example_arm!r} is not among the arms run, {arms}")
    if cfg["eval_every"] < 1 or cfg["dyn_steps"] < 1:
        raise ValueError(
            f"run: dyn_steps and eval_every must be >= 1, got dyn_steps={cfg['dyn_steps']}, eval_every={cfg['eval_every']}"
        )
    if cfg["context"] + cfg["rollout_steps"] > pre["frames"]:
        raise ValueError(
            f"run: context + rollout_steps = {cfg['context'] + cfg['rollout_steps']} must not exceed "
            f"the {pre['frames']} frames of a trajectory"
        )
    all_specs = specs(pre["systems"])
    others = [s for s in all_specs if s != pre["target"]]
    if cfg["seen"] not in others:
        raise ValueError(f"run: seen={cfg['seen']!r} must be one of the systems the tokeniser was pre-trained on, {others}")
    workers = int(cfg.get("workers", 1) if workers is None else workers)
    if torch.device(device).type != "cpu":
        workers = 1
    start = time.perf_counter()
    if tokeniser is None:
        tokeniser, _, _ = pretrained_tokeniser(pre, device=device, progress=progress)
    names = [cfg["seen"], pre["target"]]
    shape = (pre["grid"],) * 2
    data, buffers = {}, []
    for name in names:
        train_set, buf = streams.held_out_trajectories(
            all_specs[name], shape=shape, frames=pre["frames"], n=cfg["train_trajectories"], purpose="train"
        )
        buffers.append(buf)
        data[name] = (
            train_set,
            harness.eval_data(
                all_specs[name],
                shape=shape,
                frames=pre["frames"],
                window=pre["window"],
                n_windows=cfg["val_windows"],
                context=cfg["context"],
                steps=cfg["rollout_steps"],
                n_rollouts=cfg["val_rollouts"],
            ),
        )
    jobs = [Job(a, s, system=n) for n in names for s in cfg["seeds"] for a in arms]
    state = (tokeniser.config, {k: v.cpu() for k, v in tokeniser.state_dict().items()})
    share = (dict(cfg), dict(pre), state, data, device)
    if workers == 1:
        _share(*share)
    results = harness.run_jobs(
        _job,
        jobs,
        workers=workers,
        initializer=None if workers == 1 else _share,
        initargs=share,
        folder=folder,
        desc=f"{len(jobs)} fine-tuning runs",
        progress=progress,
    )
    _SHARED.clear()
    results, examples = harness.split_examples(results)
    baselines = xr.concat([data[n][1].baselines() for n in names], dim=xr.DataArray(names, dims="system"))
    drops = streams.drop_summary(buffers)
    ds = harness.collect(
        results,
        baselines=baselines,
        attrs={
            "pretrained_on": ", ".join(others),
            "tokeniser_parameters": int(count_parameters(tokeniser)[1]),
            "seconds": time.perf_counter() - start,
            "workers": workers,
            **{f"dropped_{k}": int(v["dropped"]) for k, v in drops.items()},
            **{f"drop_rate_{k}": float(v["rate"]) for k, v in drops.items()},
        },
    )
    ds = ds.assign_coords(seen=("system", [n in others for n in ds.system.values]), level=list(SkipScales.levels))
    ds["trainable"] = ds.trainable.isel(seed=0, drop=True)
    first = list(cfg["seeds"])[0]
    ds["example_truth"] = (("system", "example_frame", "y", "x"), np.stack([data[n][1].example() for n in names]))
    ds["example_prediction"] = (
        ("system", "lead", "y", "x"),
        np.stack([examples[Job(example_arm, first, system=n)].values for n in names]),
    )
    ds.attrs.update(example_arm=example_arm, example_seed=int(first))
    return ds


def summary(ds: xr.Dataset) -> xr.Dataset:
    """Final numbers per arm and system: mean and standard deviation over seeds of the last
    validation VRMSE and band NMSE, and of the rollout VRMSE averaged over all leads."""
    last = ds.isel(eval_step=-1)
    roll = ds.rollout_vrmse.mean("lead")
    ddof = 1 if ds.sizes["seed"] > 1 else 0
    return (
        xr.Dataset(
            {
                "vrmse_mean": last.vrmse.mean("seed"),
                "vrmse_std": last.vrmse.std("seed", ddof=ddof),
                "nmse_mean": last.nmse.mean("seed"),
                "nmse_std": last.nmse.std("seed", ddof=ddof),
                "rollout_mean": roll.mean("seed"),
                "rollout_std": roll.std("seed", ddof=ddof),
                "trainable": ds.trainable,
                "start_vrmse": ds.vrmse.isel(eval_step=0, drop=True).mean("seed"),
            }
        )
        .drop_vars("eval_step")
        .assign_attrs(eval_step=int(last.eval_step))
    )
