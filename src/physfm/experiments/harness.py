"""The shared harness of the experiment chapters: jobs, held-out data, one result layout.

Every experiment chapter trains a grid of models, **arms x seeds** (x systems, x regimes: the
points of a map), scores each the same way on held-out data and compares the arms. This module
owns what they share, so that each experiment module only says what differs (its arms, how it
gets data, how it builds a model):

- :class:`Job`: one cell of the grid, ``(arm, seed, system, regime)``; jobs are independent, so
  :func:`run_jobs` shares them out to the ranks of ``torchrun`` and, on a CPU, to one-thread
  worker processes (:func:`physfm.runtime.map_jobs`), and, given a ``folder``, checkpoints each
  job while it trains (:func:`checkpoint_path`), saves each finished job as it completes and,
  when the same command runs again, skips finished jobs and resumes the interrupted ones;
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

and, where a chapter animates a rollout, ``example_truth`` (first field of the first rollout
trajectory, context and future) and ``example_prediction`` (what one arm and seed predicted for
it), from :meth:`EvalData.example` and :meth:`EvalData.rollout_with_example`.

plus each experiment's own variables. Runs of different length share ``eval_step``; a run that
stopped earlier is NaN after its end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
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
from physfm.runtime import (
    alone,
    broadcast_object,
    distributed,
    gather_objects,
    is_main_process,
    map_jobs,
    rank,
    source_digest,
    world_size,
)

__all__ = [
    "Job",
    "EvalData",
    "eval_data",
    "job_dataset",
    "run_jobs",
    "checkpoint_path",
    "inputs_digest",
    "collect",
    "describe_job",
    "drop_counts",
    "split_examples",
    "EXAMPLE",
    "STANDARD",
]

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

    def rollout_with_example(self, rollout: forecast.Rollout) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rollout`, and what that same rollout predicted for the first field of the first
        trajectory, ``(steps, *S)``: the frames a chapter shows beside :meth:`example` (its
        animation of a rollout), at no extra cost."""
        kept = []

        def keep(context: torch.Tensor, steps: int) -> torch.Tensor:
            predicted = rollout(context, steps)
            kept.append(predicted[0, 0].detach().cpu().numpy())
            return predicted

        return self.rollout(keep), kept[0]

    def example(self) -> np.ndarray:
        """The first field of the first rollout trajectory, ``(context + steps, *S)``: the truth
        beside :meth:`rollout_with_example`'s prediction (its last ``steps`` frames)."""
        return self.trajectories[0, 0].cpu().numpy()

    def baselines(self) -> xr.Dataset:
        """Persistence on the same data: ``persistence_vrmse`` and ``persistence_rollout_vrmse(lead)``."""
        roll = forecast.persistence_rollout_vrmse(self.trajectories, self.context, self.steps).cpu().numpy()
        return xr.Dataset(
            {
                "persistence_vrmse": ((), float(forecast.persistence_vrmse(self.windows))),
                "persistence_rollout_vrmse": (("lead",), roll),
            },
            coords={"lead": np.arange(1, self.steps + 1)},
        )

    def to(self, device: torch.device | str) -> EvalData:
        return EvalData(
            self.system,
            self.windows.to(device),
            self.trajectories.to(device),
            self.context,
            self.steps,
            self.window_coefficients.to(device),
            self.trajectory_coefficients.to(device),
            self.interval,
            self.drops,
        )


def eval_data(
    system: str | Mapping | SystemSpec,
    *,
    shape: Sequence[int],
    frames: int,
    window: int,
    n_windows: int,
    context: int,
    steps: int,
    n_rollouts: int,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> EvalData:
    """Held-out data of ``system``: ``n_windows`` distinct validation windows, one at a random
    start of each trajectory of the stream ``seed_for("validation", seed)``, and ``n_rollouts``
    trajectories of the stream ``seed_for("rollout", seed)``, each cut to ``context + steps`` frames."""
    spec = SystemSpec.of(system)
    if context < 1 or steps < 1 or context + steps > frames:
        raise ValueError(
            f"eval_data: need context >= 1, steps >= 1 and context + steps <= frames={frames}, "
            f"got context={context}, steps={steps}"
        )
    if not 2 <= window <= frames:
        raise ValueError(f"eval_data: window={window} must be between 2 and frames={frames}")
    val, vbuf = streams.held_out_trajectories(
        spec, shape=shape, frames=frames, n=n_windows, seed=seed, purpose="validation", device=device
    )
    starts = torch.randint(frames - window + 1, (n_windows,), generator=vbuf.generator).tolist()
    windows = torch.stack([val[i, :, t0 : t0 + window] for i, t0 in enumerate(starts)])
    roll, rbuf = streams.held_out_trajectories(
        spec, shape=shape, frames=frames, n=n_rollouts, seed=seed, purpose="rollout", device=device
    )
    d = len(shape)

    def scaled(buf):
        names = buf.coefficients[0].keys()
        return spec.scaled({k: torch.tensor([c[k] for c in buf.coefficients]) for k in names}, d).to(windows.device)

    drops = streams.drop_summary([vbuf, rbuf])[spec.name]
    return EvalData(
        spec.name, windows, roll[:, :, : context + steps], context, steps, scaled(vbuf), scaled(rbuf), vbuf.interval(0), drops
    )


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


EXAMPLE = "rollout_example"


def split_examples(
    results: Mapping[Job, xr.Dataset], name: str = EXAMPLE
) -> tuple[dict[Job, xr.Dataset], dict[Job, xr.DataArray]]:
    """Each job's example rollout (the variable ``name``, from :meth:`EvalData.rollout_with_example`)
    taken out of its dataset: ``(results without it, {job: example})``. An experiment keeps the
    examples it shows (one arm and seed) instead of stacking every job's into its result."""
    kept, examples = {}, {}
    for job, ds in results.items():
        if name in ds:
            examples[job] = ds[name]
            ds = ds.drop_vars(name)
        kept[job] = ds
    return kept, examples


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


def collect(
    results: Mapping[Job, xr.Dataset], *, baselines: xr.Dataset | None = None, attrs: Mapping[str, Any] | None = None
) -> xr.Dataset:
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


def run_jobs(
    fn: Callable[[Job], xr.Dataset],
    jobs: Sequence[Job],
    *,
    workers: int = 1,
    initializer: Callable[..., None] | None = None,
    initargs: Sequence[Any] = (),
    folder: str | os.PathLike | None = None,
    desc: str = "runs",
    progress: bool = True,
) -> dict[Job, xr.Dataset]:
    """``{job: fn(job)}`` for every job, shared out to the ranks of ``torchrun`` and, within a
    rank, to ``workers`` one-thread processes on a CPU.

    ``fn`` and ``initializer`` must be module-level functions (see :func:`physfm.runtime.map_jobs`);
    ``initargs`` are the inputs every job reads (configurations, data, pre-trained weights).

    With ``folder``, a run survives interruption:

    - each job checkpoints its training to ``<folder>/<job.key>.<digest>.ckpt.pt`` (``fn`` passes
      :func:`checkpoint_path` to :func:`physfm.training.train`), deleted once the job is done;
    - each finished job's dataset is written to ``<folder>/<job.key>.nc`` as it completes
      (atomically), stamped with the digest, :func:`inputs_digest` of ``fn``'s module,
      ``initargs`` and the library's source;
    - run again, the jobs whose file holds the same digest are read back instead of run, and an
      interrupted job resumes from its checkpoint of the same digest; jobs saved or checkpointed
      from other inputs or code are run again from the start (and said so). A job's dataset is the one read back from its file, whether it ran now
      or before, so a resumed run returns what an uninterrupted one does.

    Without ``folder``, the environment variable ``PHYSFM_RUNS`` gives one:
    ``$PHYSFM_RUNS/<module of fn>-<inputs digest>`` (so a notebook run by papermill resumes too).

    Under ``torchrun`` (:func:`physfm.runtime.distributed`) the jobs left to do are shared out,
    ``todo[rank::world]``: each rank runs its share one job at a time, each job inside
    :func:`physfm.runtime.alone` (its numbers do not depend on the rank that ran it), and every
    rank gets every result (``all_gather_object``). Which jobs are finished is rank 0's view.
    """
    jobs = list(jobs)
    if len(set(jobs)) != len(jobs):
        raise ValueError("run_jobs: a job is listed twice")
    done: dict[Job, xr.Dataset] = {}
    digest = inputs_digest(fn, initargs) if folder is not None or os.environ.get("PHYSFM_RUNS") else ""
    if folder is None and os.environ.get("PHYSFM_RUNS"):
        module = str(getattr(fn, "__module__", "jobs")).rsplit(".", 1)[-1]
        folder = Path(os.environ["PHYSFM_RUNS"]) / f"{module}-{digest}"
    folder = Path(folder) if folder is not None else None
    if folder is not None:
        stale = []
        finished = broadcast_object([j for j in jobs if (folder / f"{j.key}.nc").exists()] if is_main_process() else None)
        for job in finished:
            ds = _read(folder / f"{job.key}.nc")
            if ds.attrs.get(_DIGEST) == digest:
                done[job] = ds
                if is_main_process():  # left behind by a run stopped between saving the job and deleting it
                    _checkpoint_file(folder, digest, job).unlink(missing_ok=True)
            else:
                stale.append(job.key)
        if is_main_process() and (done or stale):
            print(
                f"physfm: {desc}: {len(done)} of {len(jobs)} jobs already done in {folder}"
                + (f"; {len(stale)} saved from other inputs or code run again" if stale else ""),
                flush=True,
            )
    todo = [j for j in jobs if j not in done]
    sink = _Saver(fn, folder, digest) if folder is not None else fn
    if distributed():
        me, world = rank(), world_size()
        mine = todo[me::world]
        # one write, so that the lines of several ranks on one terminal do not mix
        sys.stdout.write(
            f"physfm: {desc}: rank {me} of {world} runs {len(mine)} of {len(todo)} jobs: " + ", ".join(j.key for j in mine) + "\n"
        )
        sys.stdout.flush()
        with alone():
            outputs = (
                map_jobs(
                    sink,
                    mine,
                    workers=workers,
                    initializer=initializer,
                    initargs=initargs,
                    desc=desc,
                    progress=progress and me == 0,
                )
                if mine
                else []
            )
        for part in gather_objects(dict(zip(mine, outputs))):
            done.update(part)
    elif todo:
        outputs = map_jobs(sink, todo, workers=workers, initializer=initializer, initargs=initargs, desc=desc, progress=progress)
        done.update(zip(todo, outputs))
    return {job: done[job] for job in jobs}


_DIGEST = "physfm_inputs"
_RUNNING: list[tuple[Path, str] | None] = [None]  # (folder, inputs digest) of the jobs running in this process


def checkpoint_path(job: Job) -> Path | None:
    """Where ``job`` checkpoints its training while :func:`run_jobs` runs it with a ``folder``:
    ``<folder>/<job.key>.<inputs digest>.ckpt.pt`` (``None`` without a folder: no checkpoints)."""
    return _checkpoint_file(*_RUNNING[0], job) if _RUNNING[0] is not None else None


def _checkpoint_file(folder: Path, digest: str, job: Job) -> Path:
    return folder / f"{job.key}.{digest}.ckpt.pt"


def inputs_digest(fn: Callable, initargs: Sequence[Any]) -> str:
    """A hash of what a job's numbers depend on: the module of ``fn``, the content of ``initargs``
    (plain data, tensors and arrays by value, dataclasses by field) and the library's source
    (:func:`physfm.runtime.source_digest`)."""
    h = hashlib.sha256()
    h.update(f"{getattr(fn, '__module__', '')}|{source_digest()}".encode())
    _feed(h, initargs)
    return h.hexdigest()[:16]


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(type(obj).__name__.encode())
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    elif obj is None or isinstance(obj, (str, int, float, bool, torch.device, torch.dtype)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    else:
        h.update(type(obj).__qualname__.encode())
        _feed(h, vars(obj) if hasattr(obj, "__dict__") else repr(obj))


def _read(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


class _Saver:
    """``fn`` with its checkpoint folder, then writing its result (picklable, so it runs in worker processes)."""

    def __init__(self, fn: Callable[[Job], xr.Dataset], folder: Path, digest: str):
        self.fn, self.folder, self.digest = fn, folder, digest

    def __call__(self, job: Job) -> xr.Dataset:
        _RUNNING[0] = (self.folder, self.digest)
        try:
            ds = self.fn(job)
        finally:
            _RUNNING[0] = None
        ds = ds.copy()
        ds.attrs[_DIGEST] = self.digest
        path = self.folder / f"{job.key}.nc"
        atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
        _checkpoint_file(self.folder, self.digest, job).unlink(missing_ok=True)  # the result is safe: drop its checkpoint
        return _read(path)


def describe_job(job: Job) -> str:
    """A progress label, e.g. ``"in_domain_finetuned seed 1"``."""
    return " ".join(p for p in (job.regime, job.system, job.arm, f"seed {job.seed}") if p)
