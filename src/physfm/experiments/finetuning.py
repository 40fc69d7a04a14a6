"""Fine-tuning a pre-trained autoencoder for dynamics: which parts to train, and how many numbers.

Tadpole (TUM 2026) turns its pre-trained autoencoder into a next-frame model with three small
additions (:class:`~physfm.nn.dynamics.AutoencoderDynamics`): LoRA on the encoder and the decoder, a
latent transform :math:`z' = a z + f(z)`, and encoder-to-decoder skips with learnable scales.
This module runs the comparison of the fine-tuning chapter: on a system the tokeniser was
pre-trained on (*seen*) and on one it never saw (*unseen*), train each configuration of

=========================  ==============  =========  =====
configuration              tokeniser       transform  skips
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
parts away) for the same number of steps, with the same optimiser and schedule, for several
seeds, and record the number of trainable parameters of each. Every configuration and seed
fine-tunes on the same small data set of a system, every window of ``train_trajectories``
generated trajectories (fine-tuning adapts a pre-trained model with little data; the
pre-training had the endless stream); the seed sets the initial LoRA factors and transform
weights and the order in which the windows come, epoch after epoch. Validation and rollout
trajectories are generated apart from them.

The tokeniser is the pre-training chapter's *cross-domain* one (:mod:`physfm.experiments.pretraining`):
pre-trained as an autoencoder on every system of that chapter except its target, so the target
(Kolmogorov flow at the default profiles) is the unseen system, generated exactly as there, and
the seen one is any of the others. Both come from the model cache when that chapter has run.

Logged: validation next-frame VRMSE and the low/mid/high spectral NMSE every ``eval_every`` steps
(step 0 is the untouched autoencoder: every configuration starts there), the training loss, the
VRMSE of autoregressive rollouts per lead time after training, and the learned scales
(:math:`a` and the skip scales). :func:`run` returns it all as one :class:`xarray.Dataset`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from physfm.data import pde, streams
from physfm.eval import metrics
from physfm.experiments import pretraining
from physfm.nn.dynamics import AutoencoderDynamics, SkipScales
from physfm.nn.lora import count_parameters
from physfm.experiments.pretraining import tokeniser_recipe
from physfm.data.spectral import BANDS
from physfm.training import TrainConfig, pretrain_tokeniser, train

__all__ = ["CONFIGS", "LABELS", "pretrained_tokeniser", "build", "run", "summary"]

#: configuration -> (adapt, transform, skips), the arguments of AutoencoderDynamics
CONFIGS: dict[str, tuple[str, bool, bool]] = {
    "frozen": ("frozen", True, True),
    "lora_transform_skips": ("lora", True, True),
    "full": ("full", True, True),
    "lora": ("lora", False, False),
    "transform": ("frozen", True, False),
    "skips": ("frozen", False, True),
    "lora_transform": ("lora", True, False),
    "lora_skips": ("lora", False, True),
}

LABELS = {
    "frozen": "frozen + transform + skips",
    "lora_transform_skips": "LoRA + transform + skips",
    "full": "full fine-tuning",
    "lora": "LoRA only",
    "transform": "transform only",
    "skips": "skips only",
    "lora_transform": "LoRA + transform",
    "lora_skips": "LoRA + skips",
}


def pretrained_tokeniser(pre: Mapping[str, Any], *, device: torch.device | str = "cpu", progress: bool = True):
    """The pre-training chapter's cross-domain tokeniser for its parameters ``pre`` (the
    ``pretraining`` preset): ``(tokeniser, curves, systems it was pre-trained on)``.

    The call is the one :func:`physfm.experiments.pretraining.run` makes, so both chapters share one cached model.
    """
    others = [s for s in pre["systems"] if s != pre["target"]]
    if not others:
        raise ValueError(f"pretrained_tokeniser: systems {pre['systems']} must include systems other than the target {pre['target']!r}")
    tok, curves = pretrain_tokeniser(tokeniser_recipe(pre, others), device=device, name="ablation-cross_domain", progress=progress,
                                     system_options={pre["target"]: pretraining._options(pre)}, system_ranges=pretraining._target_ranges(pre))
    return tok, curves, others


def _systems(cfg, pre) -> dict[str, tuple[pde.System, dict]]:
    """name -> (system, generate() options) of the seen and the unseen system."""
    others = [s for s in pre["systems"] if s != pre["target"]]
    if cfg["seen"] not in others:
        raise ValueError(f"run: seen={cfg['seen']!r} must be one of the systems the tokeniser was pre-trained on, {others}")
    return {cfg["seen"]: (pde.get_system(cfg["seen"]), {}), pre["target"]: (pretraining._target(pre), pretraining._options(pre))}


def _trajectories(pre, system, options, n: int, seed: int, device) -> torch.Tensor:
    """``n`` normalised trajectories ``(n, F, frames, *S)`` of ``system`` on the tokeniser's grid."""
    buf = streams.TrajectoryBuffer([system], shape=(pre["grid"],) * 2, frames=pre["frames"], size=n, seed=seed,
                                   device=device, system_options={system.name: options} if options else None)
    return torch.stack(buf.data)


def _batches(trajectories: torch.Tensor, window: int, steps: int, batch: int, seed: int):
    """``steps`` batches ``(batch, F, window, *S)`` of the windows of ``trajectories``, every window
    once per epoch, in an order shuffled by ``seed``."""
    starts = trajectories.shape[2] - window + 1
    n = len(trajectories) * starts
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-steps * batch // n))])[: steps * batch]
    for chunk in order.split(batch):
        yield torch.stack([trajectories[i // starts, :, i % starts : i % starts + window] for i in chunk.tolist()])


def build(config: str, tokeniser, fields: int, cfg: Mapping[str, Any], *, stride: int, seed: int = 0) -> AutoencoderDynamics:
    """The model of ``config`` around a copy of ``tokeniser``; ``seed`` sets the initial LoRA
    factors and the transform's weights."""
    if config not in CONFIGS:
        raise ValueError(f"build: unknown configuration {config!r}; choose from {list(CONFIGS)}")
    adapt, transform, skips = CONFIGS[config]
    torch.manual_seed(seed)
    return AutoencoderDynamics(copy.deepcopy(tokeniser), fields, stride=stride, adapt=adapt, rank=cfg["rank"],
                               transform=transform, skips=skips, width=cfg["width"], blocks=cfg["transform_blocks"],
                               generator=torch.Generator().manual_seed(seed))


def run(cfg: Mapping[str, Any], pre: Mapping[str, Any], *, device: torch.device | str = "cpu", progress: bool = True,
        configs: Sequence[str] | None = None, tokeniser=None) -> xr.Dataset:
    """Run the fine-tuning comparison of ``cfg`` (the ``finetuning`` preset) with the tokeniser
    and data of ``pre`` (the ``pretraining`` preset at the same profile).

    Args:
        configs: configurations to train (default: ``cfg["configs"]``), names of :data:`CONFIGS`.
        tokeniser: the pre-trained tokeniser to use (default: :func:`pretrained_tokeniser`).

    Returns:
        A Dataset with dims ``config``, ``system`` (coordinate ``seen``: whether the tokeniser was
        pre-trained on it), ``seed``, ``eval_step``, ``band``, ``step``, ``lead`` and ``level``:
        ``vrmse``, ``nmse``, ``loss``, ``rollout_vrmse``, ``trainable`` (parameters), ``scale``
        (the transform's :math:`a`), ``skip_scale``, and the references ``persistence_vrmse``
        (copy the last frame) and ``persistence_rollout``.
    """
    configs = list(cfg["configs"] if configs is None else configs)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise ValueError(f"run: unknown configurations {unknown or configs}; choose from {list(CONFIGS)}")
    if cfg["eval_every"] < 1 or cfg["dyn_steps"] < 1:
        raise ValueError(f"run: dyn_steps and eval_every must be >= 1, got dyn_steps={cfg['dyn_steps']}, eval_every={cfg['eval_every']}")
    if cfg["context"] + cfg["rollout_steps"] > pre["frames"]:
        raise ValueError(f"run: context + rollout_steps = {cfg['context'] + cfg['rollout_steps']} must not exceed "
                         f"the {pre['frames']} frames of a trajectory")
    start = time.perf_counter()
    systems = _systems(cfg, pre)
    if tokeniser is None:
        tokeniser, _, _ = pretrained_tokeniser(pre, device=device, progress=progress)
    tokeniser = tokeniser.to(device)
    seeds = list(cfg["seeds"])
    names = list(systems)
    n_eval = cfg["dyn_steps"] // cfg["eval_every"] + 1 + bool(cfg["dyn_steps"] % cfg["eval_every"])
    shape = (len(configs), len(names), len(seeds))
    vr = np.full((*shape, n_eval), np.nan)
    nm = np.full((*shape, n_eval, len(BANDS)), np.nan)
    loss = np.full((*shape, cfg["dyn_steps"]), np.nan)
    roll = np.full((*shape, cfg["rollout_steps"]), np.nan)
    scale = np.full(shape, np.nan)
    skip = np.full((*shape, len(SkipScales.levels)), np.nan)
    trainable = np.zeros((len(configs), len(names)), dtype=np.int64)
    pers = np.zeros(len(names))
    pers_roll = np.zeros((len(names), cfg["rollout_steps"]))
    eval_steps = None
    for k, name in enumerate(names):
        system, options = systems[name]
        val = streams.held_out_windows(system, shape=(pre["grid"],) * 2, frames=pre["frames"], window=pre["window"],
                                       n=cfg["val_windows"], seed=50_000, device=device, system_options=options)
        test = _trajectories(pre, system, options, cfg["val_rollouts"], seed=60_000, device=device)
        ctx, future = test[:, :, : cfg["context"]], test[:, :, cfg["context"] : cfg["context"] + cfg["rollout_steps"]]
        pers[k] = metrics.vrmse(val[:, :, :-1], val[:, :, 1:]).mean().item()
        pers_roll[k] = metrics.vrmse(ctx[:, :, -1:].expand_as(future), future).mean(dim=(0, 1)).cpu().numpy()

        def evaluate(m, val=val):
            pred = m(val[:, :, :-1])
            target = val[:, :, 1:]
            return {"vrmse": metrics.vrmse(pred, target).mean(), "nmse": metrics.spectral_error(pred, target).nmse.mean(dim=(0, 1, 2))}

        data = _trajectories(pre, system, options, cfg["train_trajectories"], seed=70_000, device=device)
        for j, seed in enumerate(seeds):
            for i, config in enumerate(configs):
                model = build(config, tokeniser, val.shape[1], cfg, stride=pre["stride"], seed=seed).to(device)
                trainable[i, k] = count_parameters(model)[0]
                tc = TrainConfig(steps=cfg["dyn_steps"], lr=cfg["lr"], warmup=cfg["warmup"], eval_every=cfg["eval_every"], seed=seed)
                batches = _batches(data, pre["window"], cfg["dyn_steps"], cfg["batch"], seed)
                curves = train(model, lambda m, b, rng: m.loss(b), batches, tc, evaluate=evaluate,
                               desc=f"{name} {config} seed {seed}", progress=progress)
                eval_steps = curves.eval_step.values
                vr[i, k, j] = curves.vrmse.values
                nm[i, k, j] = curves.nmse.values
                loss[i, k, j] = curves.loss.values
                model.eval()
                roll[i, k, j] = metrics.vrmse(model.rollout(ctx, cfg["rollout_steps"]), future).mean(dim=(0, 1)).cpu().numpy()
                if model.transform is not None:
                    scale[i, k, j] = model.transform.scale.item()
                if model.skips is not None:
                    skip[i, k, j] = model.skips.scales.detach().cpu().numpy()
    others = [s for s in pre["systems"] if s != pre["target"]]
    return xr.Dataset(
        {
            "vrmse": (("config", "system", "seed", "eval_step"), vr),
            "nmse": (("config", "system", "seed", "eval_step", "band"), nm),
            "loss": (("config", "system", "seed", "step"), loss),
            "rollout_vrmse": (("config", "system", "seed", "lead"), roll),
            "trainable": (("config", "system"), trainable),
            "scale": (("config", "system", "seed"), scale),
            "skip_scale": (("config", "system", "seed", "level"), skip),
            "persistence_vrmse": (("system",), pers),
            "persistence_rollout": (("system", "lead"), pers_roll),
        },
        coords={
            "config": configs, "system": names, "seen": ("system", [n in others for n in names]), "seed": seeds,
            "eval_step": eval_steps, "band": list(BANDS), "step": np.arange(1, cfg["dyn_steps"] + 1),
            "lead": np.arange(1, cfg["rollout_steps"] + 1), "level": list(SkipScales.levels),
        },
        attrs={"pretrained_on": ", ".join(others), "tokeniser_parameters": int(count_parameters(tokeniser)[1]),
               "seconds": time.perf_counter() - start},
    )


def summary(ds: xr.Dataset) -> xr.Dataset:
    """Final numbers per configuration and system: mean and standard deviation over seeds of
    the last validation VRMSE and band NMSE, and of the rollout VRMSE averaged over all leads."""
    last = ds.isel(eval_step=-1)
    roll = ds.rollout_vrmse.mean("lead")
    ddof = 1 if ds.sizes["seed"] > 1 else 0
    return xr.Dataset({
        "vrmse_mean": last.vrmse.mean("seed"), "vrmse_std": last.vrmse.std("seed", ddof=ddof),
        "nmse_mean": last.nmse.mean("seed"), "nmse_std": last.nmse.std("seed", ddof=ddof),
        "rollout_mean": roll.mean("seed"), "rollout_std": roll.std("seed", ddof=ddof),
        "trainable": ds.trainable, "start_vrmse": ds.vrmse.isel(eval_step=0, drop=True).mean("seed"),
    }).drop_vars("eval_step").assign_attrs(eval_step=int(last.eval_step))
