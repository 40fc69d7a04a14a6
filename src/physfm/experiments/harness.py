"""The shared harness of the experiment chapters: jobs, held-out data, one result layout.

Every experiment chapter trains a grid of models, **arms x seeds** (x systems, x regimes: the
points of a map), scores each the same way on held-out data and compares the arms. This module
owns what they share, so that each experiment module only says what differs (its arms, how it
gets data, how it builds a model):

- :class:`Job`: one cell of the grid, ``(arm, seed, system, regime)``; jobs are independent, so
  :func:`run_jobs` shares them out to one-thread worker processes on a CPU
  (:func:`physfm.runtime.map_jobs`), and, given a ``folder``, saves each finished job as it
  completes and skips finished jobs when the same command runs again;
- :class:`EvalData`: the held-out data of one system, validation windows for next-frame
  scores and trajectories for rollouts, drawn from their own seeds (never from a training
  stream), with its persistence baselines;
- :func:`job_dataset`: one job's results in the standard layout; :func:`collect`: every job's
  stacked into one :class:`xarray.Dataset`.

The layout (dimensions ``arm``, ``seed``, ``system`` and, for maps, ``regime``; per job
``eval_step``, ``band``, ``window``, ``step``, ``lead``):

=============================  ==========================================================
``vrmse``                      validation next-frame VRMSE during training (learning curve)
``nmse``                       the same, NMSE per band (low, mid, high)
``vrmse_window``               VRMSE of each validation window (for intervals)
``loss``                       training loss per step
``rollout_vrmse``              VRMSE per lead time of rollouts after training
``persistence_vrmse``          the baseline "nothing changes" on the validation windows
``persistence_rollout_vrmse``  the same baseline per lead time of the rollouts
=============================  ==========================================================

plus each experiment's own variables. Runs of different length share ``eval_step``; a run that
stopped earlier is NaN after its end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from physfm.data import streams
from physfm.data.spec import SystemSpec
from physfm.eval import forecast
from physfm.results import atomic_write
from physfm.runtime import map_jobs

__all__ = ["Job", "EvalData", "eval_data", "job_dataset", "run_jobs", "collect", "describe_job", "drop_counts", "STANDARD"]

STANDARD = ("vrmse", "nmse", "vrmse_window", "loss", "rollout_vrmse")


@dataclass(frozen=True, order=True)
class Job:
    """One cell of an experiment's grid: an arm trained with one seed (on one system, at one
    point of a map, where the experiment has those)."""

    arm: str
    seed: int
    system: str = ""
    regime: str = ""

    @property
    def key(self) -> str:
        """A file name for this job's saved result."""
        parts = [self.regime, self.system, self.arm, f"seed{self.seed}"]
        return "-".join(p for p in parts if p)


@dataclass
class EvalData:
    """Held-out data of one system: ``windows (n, F, window, *S)`` for next-frame scores and
    ``trajectories (m, F, context + steps, *S)`` for rollouts of ``steps`` frames after
    ``context`` true ones; the coefficients of each, scaled to ``[-1, 1]``
    (:meth:`~physfm.data.spec.SystemSpec.scaled`), and the time between frames, for models
    conditioned on physics; what the generator dropped while drawing them."""

    system: str
    windows: torch.Tensor
    trajectories: torch.Tensor
    context: int
    steps: int
    window_coefficients: torch.Tensor
    trajectory_coefficients: torch.Tensor
    interval: float
    drops: dict

    def scores(self, predict: forecast.Predict) -> dict[str, torch.Tensor]:
        """Teacher-forced next-frame scores (:func:`physfm.eval.forecast.next_frame_scores`)."""
        return forecast.next_frame_scores(predict, self.windows)

    def rollout(self, rollout: forecast.Rollout) -> np.ndarray:
        """Rollout VRMSE per lead time ``(steps,)``."""
        return forecast.rollout_vrmse(rollout, self.trajectories, self.context, self.steps).cpu().numpy()

    def baselines(self) -> xr.Dataset:
        """Persistence on the same data: ``persistence_vrmse`` and ``persistence_rollout_vrmse(lead)``."""
        roll = forecast.persistence_rollout_vrmse(self.trajectories, self.context, self.steps).cpu().numpy()
        return xr.Dataset({"persistence_vrmse": ((), float(forecast.persistence_vrmse(self.windows))),
                           "persistence_rollout_vrmse": (("lead",), roll)},
                          coords={"lead": np.arange(1, self.steps + 1)})

    def to(self, device: torch.device | str) -> EvalData:
        return EvalData(self.system, self.windows.to(device), self.trajectories.to(device), self.context, self.steps,
                        self.window_coefficients.to(device), self.trajectory_coefficients.to(device), self.interval, self.drops)


def eval_data(system: str | Mapping | SystemSpec, *, shape: Sequence[int], frames: int, window: int, n_windows: int,
              context: int, steps: int, n_rollouts: int, seed: int = 0, device: torch.device | str | None = None) -> EvalData:
    """Held-out data of ``system``: ``n_windows`` distinct validation windows, one at a random
    start of each trajectory of the stream ``seed_for("validation", seed)``, and ``n_rollouts``
    trajectories of the stream ``seed_for("rollout", seed)``, each cut to ``context + steps`` frames."""
    spec = SystemSpec.of(system)
    if context < 1 or steps < 1 or context + steps > frames:
        raise ValueError(f"eval_data: need context >= 1, steps >= 1 and context + steps <= frames={frames}, "
                         f"got context={context}, steps={steps}")
    if not 2 <= window <= frames:
        raise ValueError(f"eval_data: window={window} must be between 2 and frames={frames}")
    val, vbuf = streams.held_out_trajectories(spec, shape=shape, frames=frames, n=n_windows, seed=seed, purpose="validation",
                                              device=device)
    starts = torch.randint(frames - window + 1, (n_windows,), generator=vbuf.generator).tolist()
    windows = torch.stack([val[i, :, t0 : t0 + window] for i, t0 in enumerate(starts)])
    roll, rbuf = streams.held_out_trajectories(spec, shape=shape, frames=frames, n=n_rollouts, seed=seed, purpose="rollout",
                                               device=device)
    d = len(shape)

    def scaled(buf):
        names = buf.coefficients[0].keys()
        return spec.scaled({k: torch.tensor([c[k] for c in buf.coefficients]) for k in names}, d).to(windows.device)

    drops = streams.drop_summary([vbuf, rbuf])[spec.name]
    return EvalData(spec.name, windows, roll[:, :, : context + steps], context, steps, scaled(vbuf), scaled(rbuf),
                    vbuf.interval(0), drops)


def job_dataset(curves: xr.Dataset, *, rollout: np.ndarray | None = None, **extras: Any) -> xr.Dataset:
    """One job's results in the standard layout, from the curves of :func:`physfm.training.train`
    (``loss``, ``vrmse``, ``nmse``, ``vrmse_window``, whichever it logged) and the rollout VRMSE per
    lead. ``extras``: more variables, each a number or ``(dims, values)``."""
    data: dict[str, Any] = {}
    if "loss" in curves:
        data["loss"] = curves.loss
    for name in ("vrmse", "nmse"):
        if name in curves:
            data[name] = curves[name]
    if "vrmse_window" in curves:
        data["vrmse_window"] = curves.vrmse_window.rename({"vrmse_window_index": "window"})
    if rollout is not None:
        data["rollout_vrmse"] = xr.DataArray(np.asarray(rollout), dims="lead", coords={"lead": np.arange(1, len(rollout) + 1)})
    for name, value in extras.items():
        data[name] = value if isinstance(value, (tuple, xr.DataArray)) else ((), value)
    ds = xr.Dataset(data)
    if "window" in ds.dims:
        ds = ds.assign_coords(window=np.arange(ds.sizes["window"]))
    return ds


def drop_counts(buffers: streams.TrajectoryBuffer | Sequence[streams.TrajectoryBuffer | None] | None) -> dict[str, int]:
    """``kept`` and ``dropped``: the trajectories a job's training buffers generated and those the
    generator dropped (summed over their systems), extras for :func:`job_dataset`; :func:`collect`
    turns them into the result's ``training_dropped`` and ``training_drop_rate`` attributes."""
    if not isinstance(buffers, Sequence):
        buffers = [buffers]
    drops = [d for b in buffers if b is not None for d in b.drops().values()]
    return {"kept": int(sum(d["kept"] for d in drops)), "dropped": int(sum(d["dropped"] for d in drops))}


def _dims(jobs: Sequence[Job]) -> list[str]:
    dims = ["arm", "seed"]
    if any(j.system for j in jobs):
        dims.append("system")
    if any(j.regime for j in jobs):
        dims.insert(0, "regime")
    return dims


def collect(results: Mapping[Job, xr.Dataset], *, baselines: xr.Dataset | None = None,
            attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Every job's dataset stacked along ``arm``, ``seed`` (and ``system``, ``regime`` where the jobs
    have them), in the order the jobs first name them; ``baselines`` (per system) and ``attrs``
    are added. Missing combinations and steps after a run's end are NaN."""
    jobs = list(results)
    if not jobs:
        raise ValueError("collect: no results")
    dims = _dims(jobs)
    order = {d: list(dict.fromkeys(getattr(j, d) for j in jobs)) for d in dims}
    parts = []
    for job, ds in results.items():
        parts.append(ds.expand_dims({d: [getattr(job, d)] for d in dims}))
    out = xr.merge(parts, join="outer", compat="no_conflicts", combine_attrs="drop")
    out = out.reindex({d: order[d] for d in dims})
    for d in dims:  # plain coordinates (merging leaves object arrays)
        out = out.assign_coords({d: np.asarray(order[d])})
    if baselines is not None:
        out = xr.merge([out, baselines], join="outer", combine_attrs="drop")
    if "kept" in out and "dropped" in out:
        kept, dropped = int(np.nansum(out.kept.values)), int(np.nansum(out.dropped.values))
        out.attrs["training_dropped"] = dropped
        out.attrs["training_drop_rate"] = dropped / max(1, kept + dropped)
    out.attrs.update({k: v for k, v in (attrs or {}).items()})
    return out


def run_jobs(fn: Callable[[Job], xr.Dataset], jobs: Sequence[Job], *, workers: int = 1,
             initializer: Callable[..., None] | None = None, initargs: Sequence[Any] = (),
             folder: str | os.PathLike | None = None, desc: str = "runs", progress: bool = True) -> dict[Job, xr.Dataset]:
    """``{job: fn(job)}`` for every job, in ``workers`` one-thread processes on a CPU.

    ``fn`` and ``initializer`` must be module-level functions (see :func:`physfm.runtime.map_jobs`).
    With ``folder``, each finished job's dataset is written there as it completes
    (``<folder>/<job.key>.nc``, atomically), and jobs whose file exists are read back instead
    of run again: an interrupted run resumes where it stopped.
    """
    jobs = list(jobs)
    if len(set(jobs)) != len(jobs):
        raise ValueError("run_jobs: a job is listed twice")
    done: dict[Job, xr.Dataset] = {}
    folder = Path(folder) if folder is not None else None
    if folder is not None:
        for job in jobs:
            path = folder / f"{job.key}.nc"
            if path.exists():
                with xr.open_dataset(path, engine="h5netcdf") as ds:
                    done[job] = ds.load()
    todo = [j for j in jobs if j not in done]
    sink = _Saver(fn, folder) if folder is not None else fn
    outputs = map_jobs(sink, todo, workers=workers, initializer=initializer, initargs=initargs, desc=desc, progress=progress)
    done.update(zip(todo, outputs))
    return {job: done[job] for job in jobs}


class _Saver:
    """``fn`` followed by writing its result (picklable, so it runs in worker processes)."""

    def __init__(self, fn: Callable[[Job], xr.Dataset], folder: Path):
        self.fn, self.folder = fn, folder

    def __call__(self, job: Job) -> xr.Dataset:
        ds = self.fn(job)
        atomic_write(self.folder / f"{job.key}.nc", lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
        return ds


def describe_job(job: Job) -> str:
    """A progress label, e.g. ``"in_domain_finetuned seed 1"``."""
    return " ".join(p for p in (job.regime, job.system, job.arm, f"seed {job.seed}") if p)
