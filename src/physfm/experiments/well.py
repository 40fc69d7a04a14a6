"""Real data: The Well. A pre-trained tokeniser and next-frame models on a data set on disk.

The chapter "Real data: The Well" asks what changes when the target is a data set in The
Well's layout (Ohana et al. 2024, arXiv:2412.00568) instead of a generator of periodic
fields. This module holds its experiments; each returns an :class:`xarray.Dataset` (or a plain
dict of numbers) that the chapter plots and states.

- :func:`synthetic_dataset`: a data set in The Well's layout written by physfm: trajectories of
  ``cfg["system"]`` with no-flux walls along x and open sides along y
  (:func:`physfm.data.walls.walled`), saved by :func:`physfm.data.well.write_well`.
- :func:`compare_readers`: every window of a split read by physfm's reader and by The Well's
  own ``the_well.data.WellDataset`` (an optional test dependency), compared value by value.
- :func:`boundary_errors`: a tokeniser pre-trained on periodic systems reconstructs
  single-channel fields of the data set with its convolutions padded circularly (as it was
  trained) and with the padding matched to the data set's boundary conditions
  (:func:`physfm.nn.compression.padding_for`: wall -> symmetric, open -> replicate), the same
  weights; the error is resolved by the distance of a cell to the nearest non-periodic edge
  (:func:`physfm.nn.compression.boundary_distance`). Per distance :math:`d`, with
  :math:`e_i = (\\hat x_i - x_i)^2 / (\\sigma^2 + \\epsilon)` the squared error of cell
  :math:`i` over the variance of its field (the VRMSE's normalisation),
  :math:`\\mathrm{VRMSE}(d) = \\sqrt{\\langle e_i \\rangle_{d(i) = d}}`, averaged over fields,
  frames and windows; at every distance this averages to the field's VRMSE squared.
- :func:`finite_data`: next-frame models (:class:`~physfm.nn.dynamics.NextFrameModel` around the
  pre-trained tokeniser, padding matched) trained on the first ``n`` training trajectories
  (a fixed, small data set, read again and again) or on every training trajectory, scored on
  the validation split during training (the learning curve of held-out VRMSE, through
  :mod:`physfm.experiments.harness`) and, after training, on windows of their own training
  set (the generalisation gap) and by rollouts on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from einops import rearrange

from physfm.data.walls import walled
from physfm.data.well import WellWindows, write_well
from physfm.data.well_streams import WellWindowStream, fixed_windows, well_eval_data
from physfm.eval import forecast
from physfm.experiments import harness
from physfm.experiments.harness import Job
from physfm.nn.compression import boundary_distance, padding_for
from physfm.nn.dynamics import NextFrameModel
from physfm.nn.tokeniser import Tokeniser
from physfm.runtime import seed_for
from physfm.training import TrainConfig, train

__all__ = [
    "synthetic_dataset",
    "compare_readers",
    "boundary_errors",
    "finite_data",
    "arm_name",
    "generalisation_gap",
    "READER_MISSING",
]

EPS = 1e-7  # the VRMSE's (physfm.eval.metrics.EPS)
READER_MISSING = (
    "The Well's package (the-well, a test dependency) is not installed here: the comparison with its "
    "WellDataset is skipped (pip install the-well to run it)."
)


# -- data ---------------------------------------------------------------------------------------


def synthetic_dataset(cfg: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``cfg["trajectories"]`` trajectories of ``cfg["system"]`` on a ``cfg["grid"]``
    square of ``cfg["frames"]`` frames, with no-flux walls at both ends of x and open sides along
    y (:func:`physfm.data.walls.walled`), as a data set in The Well's layout at ``path`` (80/10/10
    train/valid/test, :func:`physfm.data.well.write_well`). Drawn from
    ``seed_for("well/synthetic", cfg["seed"])``. Returns ``path``."""
    g = torch.Generator().manual_seed(seed_for("well/synthetic", cfg["seed"]))
    t = walled(cfg["system"], batch=cfg["trajectories"], shape=(cfg["grid"],) * 2, frames=cfg["frames"], walls=(0,), generator=g)
    root = write_well(t, path, name=f"{cfg['system']}_walls", overwrite=True)
    return root


def compare_readers(path: str | Path, *, split: str = "valid", window: int = 2, n: int = 0) -> dict[str, Any]:
    """Read the first ``n`` windows (0: all) of ``window`` frames of ``split`` with physfm's
    :class:`~physfm.data.well.WellWindows` and with The Well's ``WellDataset`` (no normalisation,
    ``window - 1`` input frames and one output frame), and compare them.

    Returns ``windows`` (compared), ``max_abs_difference`` (over every value), ``same_names``
    (the channel names) and ``same_boundaries`` (the boundary codes per axis and side).

    Raises:
        ImportError: The Well's package is not installed (:data:`READER_MISSING`).
    """
    try:
        from the_well.data import WellDataset
        from the_well.data.utils import flatten_field_names
    except ImportError as e:
        raise ImportError(READER_MISSING) from e
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"compare_readers: window must be an int >= 2 (input frames and one output), got {window!r}")
    ours = WellWindows(path, split, n_steps_input=window - 1, n_steps_output=1, normalization=None)
    theirs = WellDataset(
        path=str(path), well_split_name=split, n_steps_input=window - 1, n_steps_output=1, use_normalization=False
    )
    count = len(ours) if not n else min(int(n), len(ours))
    if len(theirs) != len(ours):
        raise ValueError(f"compare_readers: physfm reads {len(ours)} windows of {split!r}, The Well's reader {len(theirs)}")
    worst, same_bc = 0.0, True
    for i in range(count):
        s = theirs[i]
        w = rearrange(torch.cat([s["input_fields"], s["output_fields"]]), "t ... f -> f t ...")
        worst = max(worst, float((ours[i] - w).abs().max()))
        same_bc &= bool(torch.equal(ours.boundary_codes(), s["boundary_conditions"]))
    names = list(ours.field_names) == flatten_field_names(theirs.metadata, include_constants=False)
    ours.close()
    return {"windows": count, "max_abs_difference": worst, "same_names": bool(names), "same_boundaries": same_bc}


def _boundary_conditions(path: str | Path, split: str) -> dict[str, tuple[str, str]]:
    w = WellWindows(path, split, n_steps_input=1, n_steps_output=0)
    bcs = dict(w.boundary_conditions)
    w.close()
    return bcs


# -- boundaries ---------------------------------------------------------------------------------


@torch.no_grad()
def boundary_errors(
    tokeniser: Tokeniser,
    path: str | Path,
    *,
    stride: int,
    frames: int,
    n_windows: int,
    split: str = "valid",
    seed: int = 0,
    chunk: int = 16,
    device: torch.device | str = "cpu",
) -> xr.Dataset:
    """Reconstruction errors of ``tokeniser`` on the fields of ``split`` with circular and with
    boundary-matched padding (module docstring), the weights unchanged.

    ``n_windows`` distinct windows of ``frames`` frames (:func:`physfm.data.well_streams.fixed_windows`,
    purpose ``"tokeniser"``), every field of each a single-channel sample, z-scored with the data
    set's statistics, encoded and decoded at spatial stride ``stride`` and time stride 1, ``chunk``
    samples at a time.

    Returns ``vrmse (padding)``: the mean VRMSE; ``vrmse_distance (padding, distance)``: the
    VRMSE of the cells ``distance`` cells from the nearest non-periodic edge; ``cells
    (distance)``: how many cells lie there (per field and frame). Attributes: the data set's
    boundary conditions and the matched padding. The tokeniser's padding is restored.
    """
    windows = fixed_windows(path, split, window=frames, n=n_windows, seed=seed, purpose="tokeniser")
    bcs = _boundary_conditions(path, split)
    matched = padding_for(bcs)
    x = rearrange(windows, "n f t ... -> (n f) 1 t ...").to(device)
    dist = boundary_distance(x.shape[3:], matched)
    if torch.isinf(dist).all():
        raise ValueError(f"boundary_errors: every axis of {path} is periodic ({bcs}); there is no edge to measure from")
    distances = torch.unique(dist).tolist()
    before = tokeniser.padding
    was_training = tokeniser.training
    tokeniser.eval()
    out_v, out_d = [], []
    try:
        for padding in ("circular", matched):
            tokeniser.set_padding(padding)
            vrmse, per_cell = [], torch.zeros(x.shape[3:], dtype=torch.float64)
            for part in x.split(chunk):
                var = part.var(dim=(-2, -1), correction=1, keepdim=True)
                e = (tokeniser(part, stride, 1) - part).square() / (var + EPS)  # (samples, 1, t, *space)
                vrmse.append(e.mean(dim=(-2, -1)).sqrt().flatten())
                per_cell += e.sum(dim=(0, 1, 2)).double().cpu()
            out_v.append(float(torch.cat(vrmse).mean()))
            per_cell /= x.shape[0] * x.shape[2]
            out_d.append([float(per_cell[dist == d].mean().sqrt()) for d in distances])
    finally:
        tokeniser.set_padding(before)
        tokeniser.train(was_training)
    return xr.Dataset(
        {
            "vrmse": ("padding", np.asarray(out_v)),
            "vrmse_distance": (("padding", "distance"), np.asarray(out_d)),
            "cells": ("distance", np.asarray([int((dist == d).sum()) for d in distances])),
        },
        coords={"padding": ["circular", "matched"], "distance": np.asarray(distances, dtype=int)},
        attrs={
            "boundary_conditions": str(dict(bcs)),
            "matched_padding": str(matched),
            "samples": int(x.shape[0]),
            "stride": int(stride),
            "frames": int(frames),
        },
    )


# -- finite data --------------------------------------------------------------------------------


def arm_name(trajectories: int) -> str:
    """The arm trained on the first ``trajectories`` training trajectories (0: every one)."""
    return "every trajectory" if trajectories == 0 else f"{trajectories} trajector{'y' if trajectories == 1 else 'ies'}"


_SHARED: dict[str, Any] = {}


def _job(job: Job) -> xr.Dataset:
    cfg, tok_src, data, path, device = (_SHARED[k] for k in ("cfg", "tokeniser", "data", "path", "device"))
    n = _SHARED["arms"][job.arm]
    tok = Tokeniser(tok_src.config)
    tok.load_state_dict(tok_src.state_dict())
    tok.set_padding(_SHARED["padding"])
    fields = data.windows.shape[1]
    torch.manual_seed(seed_for("processor", job.seed))
    model = NextFrameModel(tok, fields, stride=cfg["stride"], width=cfg["width"], blocks=cfg["processor_blocks"]).to(device)
    stream = WellWindowStream(
        path, "train", window=cfg["window"], trajectories=n or None, seed=seed_for("train", job.seed), device=device
    )
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg["batch"])
    groups = [
        {"params": list(model.processor.parameters())},
        {"params": list(model.tokeniser.parameters()), "lr_scale": cfg["tokeniser_lr_scale"]},
    ]
    tc = TrainConfig(steps=cfg["dyn_steps"], lr=cfg["lr"], warmup=cfg["warmup"], eval_every=cfg["eval_every"], seed=job.seed)
    curves = train(
        model,
        lambda m, b, rng: m.loss(b),
        loader,
        tc,
        evaluate=data.scores,
        parameters=groups,
        desc=harness.describe_job(job),
        progress=False,
        checkpoint=harness.checkpoint_path(job),
    )
    model.eval()
    own = fixed_windows(
        path,
        "train",
        window=cfg["window"],
        n=min(cfg["train_windows"], _windows_in(stream)),
        trajectories=n or None,
        seed=job.seed,
        purpose="own",
        device=device,
    )
    with torch.no_grad():
        own_vrmse = float(forecast.next_frame_scores(model, own)["vrmse"])
    return harness.job_dataset(
        curves,
        rollout=data.rollout(model.rollout),
        train_vrmse=own_vrmse,
        train_trajectories=len(stream.chosen),
        **harness.drop_counts(stream),
    )


def _copy(tok: Tokeniser) -> Tokeniser:
    out = Tokeniser(tok.config)
    out.load_state_dict({k: v.detach().cpu() for k, v in tok.state_dict().items()})
    return out


def _windows_in(stream: WellWindowStream) -> int:
    w = stream.windows[stream.strides[0]]
    return sum(w.windows_per_trajectory(k) for k, _ in stream.chosen)


def finite_data(
    cfg: Mapping[str, Any],
    tokeniser: Tokeniser,
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    seeds: Sequence[int] | None = None,
    folder: str | None = None,
) -> xr.Dataset:
    """Next-frame models trained on ``n`` training trajectories for each ``n`` of
    ``cfg["train_trajectories"]`` (0: every training trajectory), one arm each (:func:`arm_name`),
    for ``seeds`` (default ``(cfg["seed"],)``), around copies of ``tokeniser`` with the padding
    matched to the data set's boundaries; otherwise as :mod:`physfm.experiments.pretraining`
    trains its arms (the processor drawn from ``seed_for("processor", seed)``, the tokeniser at
    ``tokeniser_lr_scale`` times the rate, the windows from ``seed_for("train", seed)``).

    Returns the harness's layout (dims ``arm``, ``seed``): held-out ``vrmse`` per ``eval_step``
    on ``val_windows`` windows of the valid split, ``rollout_vrmse`` per ``lead`` on ``val_rollouts``
    test trajectories, the persistence baselines, ``train_vrmse`` (on up to ``train_windows``
    windows of the arm's own training trajectories, after training) and ``train_trajectories``.
    """
    counts = list(cfg["train_trajectories"])
    if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
        raise ValueError(f"finite_data: train_trajectories must be counts >= 0 (0: every trajectory), got {counts!r}")
    start = time.perf_counter()
    data = well_eval_data(
        path,
        window=cfg["window"],
        n_windows=cfg["val_windows"],
        context=cfg["context"],
        steps=cfg["rollout_steps"],
        n_rollouts=cfg["val_rollouts"],
        seed=cfg["seed"],
        device=device,
    )
    bcs = _boundary_conditions(path, "train")
    arms = {arm_name(n): n for n in counts}
    _SHARED.clear()
    _SHARED.update(
        cfg=dict(cfg), tokeniser=_copy(tokeniser), data=data, path=str(path), device=device, arms=arms, padding=padding_for(bcs)
    )
    jobs = [Job(a, s) for s in (seeds or (cfg["seed"],)) for a in arms]
    try:
        results = harness.run_jobs(_job, jobs, folder=folder, desc=f"{len(jobs)} next-frame runs", progress=progress)
    finally:
        _SHARED.clear()
    ds = harness.collect(results, baselines=data.baselines())
    ds = ds.assign_coords(trajectories=("arm", [arms[a] for a in ds.arm.values]))
    ds.attrs.update({"dataset": data.system, "boundary_conditions": str(dict(bcs)), "seconds": time.perf_counter() - start})
    return ds


def generalisation_gap(ds: xr.Dataset) -> xr.DataArray:
    """Per arm: held-out VRMSE at the last evaluation over the VRMSE on its own training windows
    (mean over seeds); 1 means the model does as well on data it never saw."""
    last = ds.vrmse.isel(eval_step=-1).mean("seed")
    return last / ds.train_vrmse.mean("seed")
