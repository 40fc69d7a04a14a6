"""Pre-training the tokeniser as an autoencoder on the on-the-fly crop stream.

The recipe is plain data (the keys of :data:`RECIPE_KEYS`, taken from a chapter's parameters by
:func:`tokeniser_config`); :func:`pretrain_tokeniser` trains a :class:`~physfm.nn.tokeniser.Tokeniser`
on single-channel crops of the recipe's systems with a random compression ratio per step and
keeps it in the model cache (:mod:`physfm.training.cache`), so chapters that need the same
tokeniser train it once. :func:`crops_by_system` and :func:`evaluate_tokeniser` score a
tokeniser's reconstructions per system and per compression ratio.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from physfm.data import normalise, pde, spectral, streams
from physfm.data import spec as spec_module
from physfm.data.spec import specs
from physfm.data.spectral import BANDS
from physfm.eval import metrics
from physfm.nn import compression
from physfm.nn import tokeniser as tokeniser_module
from physfm.nn.tokeniser import Tokeniser
from physfm.runtime import broadcast_object, data_parallel, gather_objects, is_main_process, seed_for, world_size
from physfm.training import loop
from physfm.training.cache import cache_dir, cached, config_digest
from physfm.training.loop import TrainConfig, train

__all__ = ["RECIPE_KEYS", "CODE", "tokeniser_config", "pretrain_tokeniser", "drop_attrs", "crops_by_system", "evaluate_tokeniser"]

RECIPE_KEYS = (
    "systems",
    "grid",
    "frames",
    "crop",
    "crop_t",
    "buffer",
    "refresh",
    "channels",
    "latent",
    "blocks",
    "patch",
    "time_patch",
    "strides",
    "time_strides",
    "steps",
    "batch",
    "lr",
    "warmup",
    "eval_every",
    "val_crops",
    "seed",
)


def tokeniser_config(cfg: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """The plain-data pre-training recipe inside a chapter's parameters (see the ``tokeniser``
    preset in :mod:`physfm.profiles`), with ``changes`` applied (e.g. other systems). The systems
    become a mapping ``name -> options`` (:func:`physfm.data.spec.specs`), so that a recipe names
    everything that shapes its data."""
    recipe = {k: cfg[k] for k in RECIPE_KEYS}
    if cfg.get("refresh_every") is not None:  # optional: crops read between refreshes (default: buffer)
        recipe["refresh_every"] = cfg["refresh_every"]
    for k in WELL_KEYS:  # optional: crops of a data set in The Well's layout too
        if cfg.get(k):
            recipe[k] = cfg[k]
    recipe.update(changes)
    if recipe["systems"] or not recipe.get("well"):
        recipe["systems"] = {
            name: {k: v for k, v in s.as_dict().items() if k != "name"} for name, s in specs(recipe["systems"]).items()
        }
    else:
        recipe["systems"] = {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}


#: optional recipe keys: ``well``, a data set in The Well's layout whose training split gives the
#: crops instead of generated systems (:class:`~physfm.data.well_streams.WellCropStream`, its
#: ``valid`` split the validation crops), and ``well_stats``, a digest of its ``stats.yaml`` that
#: keys the cache to the data as well as to its path
WELL_KEYS = ("well", "well_stats")

#: the modules whose code shapes a pre-trained tokeniser: a change to any of them trains anew
CODE = (pde, spectral, spec_module, normalise, streams, compression, tokeniser_module, loop, metrics)


def pretrain_tokeniser(
    recipe: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    name: str = "tokeniser",
    progress: bool = True,
    use_cache: bool = True,
    checkpoint: str | os.PathLike | None = None,
    store: MutableMapping | None = None,
):
    """Pre-train a 2D :class:`~physfm.nn.tokeniser.Tokeniser` as an autoencoder on single-channel
    crops streamed from ``recipe["systems"]`` (or read from the training split of the data set
    ``recipe["well"]`` in The Well's layout, :data:`WELL_KEYS`), with a random compression ratio per step.

    Each step draws a spatial stride from ``strides`` and a time stride from ``time_strides``,
    so one set of weights learns every ratio. The training stream is seeded by
    ``seed_for("train", seed)``; the validation set is ``val_crops`` crops from the separate stream
    ``seed_for("validation", seed)`` of the same systems, evaluated at the largest ratio (VRMSE and
    the three spectral bands). The result is cached under ``name`` and the hash of ``recipe`` and
    of the code in :data:`CODE` (see :func:`~physfm.training.cache.cached`), so chapters that need
    the same tokeniser train it once. The training is checkpointed after every evaluation to
    ``checkpoint`` (default, with the cache: ``<cache_dir>/<name>-<same hash>.ckpt.pt``, deleted
    once the model is in the cache), so an interrupted pre-training resumes where it stopped
    (:func:`~physfm.training.loop.train`; the crop stream is replayed, so a checkpoint holds no data).

    Under ``torchrun`` the ranks train one tokeniser together with DistributedDataParallel: the
    recipe's ``batch`` is the batch of a step over all ranks, each rank drawing ``batch / ranks``
    crops of its own stream (its seed offset by its rank, :func:`physfm.data.streams.stream_seed`,
    so no two ranks draw the same trajectories); gradients are averaged, so a step equals one
    process's step on the union of the ranks' crops. Rank 0 evaluates (on the validation set a
    single process uses), writes the checkpoint and the cache, and every rank returns its model
    and curves. The number of ranks is not part of the cache key, like the device: it changes
    which crops are drawn, not the recipe; the curves record it (``ranks``).

    ``store``: generated chunks shared with other pre-trainings of the same systems, grid and
    seed (:class:`~physfm.data.streams.TrajectoryBuffer`; a :class:`~physfm.data.streams.DiskStore`
    shares them between processes), so that tokenisers that differ only in their architecture or
    budget generate their data once. It changes no number: a chunk is a function of its key.

    Returns:
        ``(tokeniser, curves)``; ``curves.attrs`` also hold the generator's throughput and the
        trajectories it dropped per system (``dropped_<system>``, ``drop_rate_<system>``; the
        training streams of every rank counted).
    """
    r = tokeniser_config(recipe)
    if r["systems"] and r.get("well"):
        raise ValueError(
            f"pretrain_tokeniser: a recipe takes its crops from systems or from a data set (well), "
            f"got both: {sorted(r['systems'])} and {r['well']!r}"
        )
    systems = specs(r["systems"]) if r["systems"] else {}
    crop = (int(r["crop_t"]), int(r["crop"]), int(r["crop"]))
    model_args = dict(
        spatial_dims=2,
        channels=tuple(r["channels"]),
        latent=r["latent"],
        blocks=r["blocks"],
        patch=r["patch"],
        time_patch=r["time_patch"],
        stride=max(r["strides"]),
        time_stride=max(r["time_strides"]),
    )
    ranks = world_size()
    if r["batch"] % ranks:
        raise ValueError(f"pretrain_tokeniser: batch={r['batch']} must be a multiple of the {ranks} processes that share it")

    def make():
        torch.manual_seed(seed_for("init", r["seed"]))
        return Tokeniser(**model_args)

    def fit(model):
        model.to(device)
        grid = (r["grid"], r["grid"])
        if r.get("well"):
            from physfm.data.well_streams import WellCropStream

            stream = WellCropStream(r["well"], "train", crop=crop, seed=seed_for("train", r["seed"]), device=device)
        else:
            stream = streams.CropStream(
                systems,
                shape=grid,
                frames=r["frames"],
                crop=crop,
                size=r["buffer"],
                refresh=r["refresh"],
                refresh_every=r.get("refresh_every"),
                seed=seed_for("train", r["seed"]),
                device=device,
                store=store,
            )
        held_out: dict[str, Any] = {}

        def validation():  # rank 0 alone evaluates: the others never draw the validation set
            if not held_out:
                if r.get("well"):
                    held_out["stream"] = WellCropStream(
                        r["well"], "valid", crop=crop, seed=seed_for("validation", r["seed"]), device=device
                    )
                else:
                    held_out["stream"] = streams.CropStream(
                        systems,
                        shape=grid,
                        frames=r["frames"],
                        crop=crop,
                        size=max(len(systems), r["val_crops"] // 2),
                        refresh=0.0,
                        seed=seed_for("validation", r["seed"]),
                        device=device,
                        store=store,
                    )
                held_out["crops"] = streams.take(held_out["stream"], r["val_crops"])
            return held_out["crops"]

        loader = torch.utils.data.DataLoader(stream, batch_size=r["batch"] // ranks)
        strides, time_strides = list(r["strides"]), list(r["time_strides"])

        def loss_fn(m, batch, rng):
            s = strides[int(torch.randint(len(strides), (1,), generator=rng))]
            st = time_strides[int(torch.randint(len(time_strides), (1,), generator=rng))]
            return (m(batch, s, st) - batch).square().mean()

        def evaluate(m):
            val = validation()
            pred = m(val)
            err = metrics.spectral_error(pred, val)
            return {
                "vrmse": metrics.vrmse(pred, val).mean(),
                "mse": err.mse.mean(dim=(0, 1, 2)),
                "nmse": err.nmse.mean(dim=(0, 1, 2)),
            }

        config = TrainConfig(steps=r["steps"], lr=r["lr"], warmup=r["warmup"], eval_every=r["eval_every"], seed=r["seed"])
        # the stream is replayed on resume (a checkpoint holds no crop buffer); every rank its own
        curves = train(
            data_parallel(model), loss_fn, loader, config, evaluate=evaluate, desc=name, progress=progress, checkpoint=checkpoint
        )
        if is_main_process():
            validation()
        drops = gather_objects(_drops(stream))
        if "stream" in held_out:
            drops.append(_drops(held_out["stream"]))
        if hasattr(stream, "buffer"):  # generated crops (a data set's are read, not generated)
            curves.attrs["trajectories_per_second"] = float(stream.buffer.trajectories_per_second)
            curves.attrs["generation_seconds"] = float(stream.buffer.seconds)
        curves.attrs.update(drop_attrs(_summed(drops)))
        model.cpu()
        return broadcast_object(curves)

    if not use_cache:
        model = make()
        return model, fit(model)
    if checkpoint is None:  # beside the cache entry, under the same key; gone once the entry is written
        checkpoint = cache_dir() / f"{name}-{config_digest(r, CODE)}.ckpt.pt"
    out = cached(name, r, make, fit, code=CODE, verbose=progress)
    if is_main_process():
        Path(checkpoint).unlink(missing_ok=True)
    return out


def _drops(stream) -> dict[str, dict[str, float]]:
    """What a crop stream generated and dropped: its buffer's, or a data set's stream's own (none dropped)."""
    return stream.buffer.drops() if hasattr(stream, "buffer") else stream.drops()


def _summed(drops: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per system, :meth:`~physfm.data.streams.TrajectoryBuffer.drops` of several buffers added up."""
    out: dict[str, dict[str, float]] = {}
    for d in drops:
        for system, counts in d.items():
            o = out.setdefault(system, {"kept": 0, "dropped": 0})
            o["kept"] += counts["kept"]
            o["dropped"] += counts["dropped"]
    for o in out.values():
        o["rate"] = o["dropped"] / max(1, o["kept"] + o["dropped"])
    return out


def drop_attrs(drops: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Result attributes from :func:`physfm.data.streams.drop_summary`: ``dropped_<system>`` and
    ``drop_rate_<system>`` (NetCDF attributes are flat)."""
    out: dict[str, float] = {}
    for name, d in drops.items():
        out[f"dropped_{name}"] = int(d["dropped"])
        out[f"drop_rate_{name}"] = float(d["rate"])
    return out


def crops_by_system(
    recipe: Mapping[str, Any], n: int, *, systems: Sequence[str] | None = None, seed: int = 0, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """``n`` held-out crops ``(n, 1, crop_t, crop, crop)`` of each system of ``recipe`` (or of
    ``systems``), each from ``n // 2`` trajectories of the stream ``seed_for("test/<system>", seed)``,
    apart from every training and validation stream (the recipe's grid, frames and crop size)."""
    out = {}
    all_specs = specs(recipe["systems"])
    for name, sp in (specs(systems) if systems is not None else all_specs).items():
        sp = all_specs.get(name, sp)
        stream = streams.CropStream(
            [sp],
            shape=(recipe["grid"],) * 2,
            frames=recipe["frames"],
            crop=(recipe["crop_t"], recipe["crop"], recipe["crop"]),
            size=max(2, n // 2),
            refresh=0.0,
            seed=seed_for(f"test/{name}", seed),
            device=device,
        )
        out[name] = streams.take(stream, n)
    return out


def evaluate_tokeniser(tokeniser: nn.Module, crops: Mapping[str, torch.Tensor], ratios: Sequence[tuple[int, int]]) -> xr.Dataset:
    """Reconstruction VRMSE and per-band NMSE of ``tokeniser`` on each system's crops at each
    ``(stride, time_stride)``: a Dataset with dims ``system``, ``ratio`` (and ``band``), plus the
    compression ratio of each and the VRMSE per frame of the crop (``frame``)."""
    names = list(crops)
    v = np.zeros((len(names), len(ratios)))
    b = np.zeros((len(names), len(ratios), len(BANDS)))
    frames = next(iter(crops.values())).shape[2]
    per_frame = np.zeros((len(names), len(ratios), frames))
    tokeniser.eval()
    with torch.no_grad():
        for i, name in enumerate(names):
            x = crops[name]
            for j, (s, st) in enumerate(ratios):
                pred = tokeniser(x, s, st)
                err = metrics.vrmse(pred, x)  # (n, 1, frames)
                v[i, j] = err.mean().item()
                per_frame[i, j] = err.mean(dim=(0, 1)).cpu().numpy()
                b[i, j] = metrics.spectral_error(pred, x).nmse.mean(dim=(0, 1, 2)).cpu().numpy()
    labels = [f"{s}x{st}" for s, st in ratios]
    return xr.Dataset(
        {
            "vrmse": (("system", "ratio"), v),
            "nmse": (("system", "ratio", "band"), b),
            "vrmse_per_frame": (("system", "ratio", "frame"), per_frame),
        },
        coords={
            "system": names,
            "ratio": labels,
            "band": list(BANDS),
            "frame": np.arange(frames),
            "stride": ("ratio", [s for s, _ in ratios]),
            "time_stride": ("ratio", [st for _, st in ratios]),
            "compression": ("ratio", [tokeniser.config.ratio(s, st) for s, st in ratios]),
        },
    )
