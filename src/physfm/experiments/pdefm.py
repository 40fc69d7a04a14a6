r"""One model trained across PDE systems: PDE-FM's experiments (arXiv 2511.21861).

**Data.** For every system a :class:`~physfm.data.streams.WindowStream` yields windows of its
trajectories with what the model is conditioned on: the coefficients the trajectory was drawn
with, scaled to :math:`[-1, 1]` (:meth:`~physfm.data.spec.SystemSpec.scaled`), and the time between
the window's frames; a window takes every ``stride``-th frame, so the time step the model sees
varies (``dt = stride * interval``). Every training step draws one system by temperature
(:mod:`physfm.data.mixture`) and a batch of its windows; a fraction ``generic_fraction`` of the
batches goes through the model's generic, single-field path (no system, no coefficients), which
is what makes zero-shot prediction of a held-out system possible at all.

**Arms** (the three experiments PDE-FM proposes, :func:`arms_of`): the full model against

- ``no_spectral_token``: the same without the spectral token and its fusion;
- ``transformer``: the Mamba backbone replaced by a causal transformer with the same number of
  parameters (accuracy, and time per step);
- ``without_<system>``: trained on every system but one, then asked to predict the held-out
  system through the generic adapter (zero-shot transfer).

Every arm reads the same data for a given seed (the streams ``seed_for("train", seed)`` of each
system, and the system drawn at each step from ``seed_for("systems", seed)``), and starts from
weights drawn from ``seed_for("model", seed)``, so seeds can be compared pairwise: a difference
between two arms at the same seed is a difference of the models, not of the data.

Evaluation (every ``eval_every`` steps, on held-out windows of every system: through the
system's own adapter when the arm trained on it, else zero-shot through the generic one) and
the result layout are the harness's (:mod:`physfm.experiments.harness`): ``vrmse`` is the
learning curve per system; the last evaluation adds the band NMSE, the generic path for every
system, the error by context length and rollouts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from physfm.data import streams
from physfm.data.mixture import TemperatureSampler, mixture_batches
from physfm.data.spec import specs
from physfm.data.spectral import BANDS
from physfm.eval import metrics
from physfm.experiments import harness
from physfm.experiments.harness import Job
from physfm.nn.layers import count_parameters
from physfm.nn.pdefm import PDEFM, matched_transformer_hidden, pdefm_loss
from physfm.runtime import one_thread, seed_for
from physfm.training import TrainConfig, train

__all__ = ["Arm", "arms_of", "build_model", "run", "backbone_timing", "summary", "deltas"]


@dataclass(frozen=True)
class Arm:
    """One model of the comparison: its backbone, whether it has the spectral token, and the
    system it never sees in training (``None``: none)."""

    name: str
    label: str
    backbone: str = "mamba"
    spectral_token: bool = True
    held_out: str | None = None

    def trained_on(self, systems: Sequence[str]) -> list[str]:
        return [s for s in systems if s != self.held_out]


def arms_of(cfg: Mapping[str, Any]) -> dict[str, Arm]:
    """``full``, ``no_spectral_token``, ``transformer`` and ``without_<system>`` per held-out system."""
    out = [
        Arm("full", "full model (Mamba)"),
        Arm("no_spectral_token", "no spectral token", spectral_token=False),
        Arm("transformer", "transformer backbone", backbone="transformer"),
    ]
    out += [Arm(f"without_{s}", f"without {s.replace('_', '-')}", held_out=s) for s in cfg["held_out"]]
    return {a.name: a for a in out}


def build_model(
    cfg: Mapping[str, Any], systems: Mapping[str, int], *, backbone: str = "mamba", spectral_token: bool = True
) -> PDEFM:
    """The chapter's :class:`~physfm.nn.pdefm.PDEFM`; a transformer backbone gets the MLP width that
    matches the Mamba backbone's parameter count."""
    args = dict(
        width=cfg["width"],
        dim=cfg["dim"],
        patch=cfg["patch"],
        spectral_modes=cfg["spectral_modes"],
        n_coefficients=cfg["n_coefficients"],
        layers=cfg["layers"],
        d_state=cfg["d_state"],
        decoder_width=cfg["decoder_width"],
        decoder_modes=cfg["decoder_modes"],
        decoder_blocks=cfg["decoder_blocks"],
        heads=cfg["heads"],
        embed=cfg["embed"],
    )
    hidden = 64
    if backbone == "transformer":
        mamba = PDEFM(systems, **args).backbone
        hidden = matched_transformer_hidden(cfg["dim"], cfg["layers"], count_parameters(mamba)[0])
    return PDEFM(systems, backbone=backbone, spectral_token=spectral_token, transformer_hidden=hidden, **args)


def _streams(cfg, names: Sequence[str], seed: int, device, store: dict) -> dict[str, streams.WindowStream]:
    all_specs = specs(cfg["systems"])
    return {
        s: streams.WindowStream(
            all_specs[s],
            shape=(cfg["grid"],) * 2,
            frames=cfg["frames"],
            window=cfg["window"],
            strides=tuple(cfg["strides"]),
            size=cfg["pool"],
            chunk=cfg["chunk"],
            refresh=cfg["chunk"] / cfg["pool"] if cfg["refresh_every"] else 0.0,
            refresh_every=cfg["refresh_every"] or None,
            seed=seed_for("train", seed),
            device=device,
            meta=True,
            store=store,
        )
        for s in names
    }


# -- the jobs ---------------------------------------------------------------------------------

_SHARED: dict[str, Any] = {}


def _share(cfg, data: Mapping[str, harness.EvalData], device) -> None:
    _SHARED.clear()
    _SHARED.update(cfg=dict(cfg), data={k: v.to(device) for k, v in data.items()}, device=device, store=(None, {}))


def _evaluate_all(model: PDEFM, data: Mapping[str, harness.EvalData], trained: Sequence[str]) -> dict[str, torch.Tensor]:
    """Validation VRMSE of every system (own adapter if trained on it, else the generic path)
    and their mean over the trained systems (the learning curve)."""
    out = {}
    for s, d in data.items():
        own = s if s in trained else None
        out[f"vrmse_{s}"] = d.scores(lambda x, d=d, own=own: model(x, own, d.window_coefficients, d.interval))["vrmse"]
    out["vrmse"] = torch.stack([out[f"vrmse_{s}"] for s in trained]).mean()
    return out


def _job(job: Job) -> xr.Dataset:
    cfg, data, device = _SHARED["cfg"], _SHARED["data"], _SHARED["device"]
    arm = arms_of(cfg)[job.arm]
    names = list(data)
    trained = arm.trained_on(names)
    if _SHARED["store"][0] != job.seed:  # the jobs of one seed share its generated trajectories
        _SHARED["store"] = (job.seed, {})
    pools = _streams(cfg, trained, job.seed, device, _SHARED["store"][1])
    sizes = dict(zip(specs(cfg["systems"]), cfg["sizes"]))
    sampler = TemperatureSampler([sizes[s] for s in trained], cfg["temperature"], seed=seed_for("systems", job.seed))
    torch.manual_seed(seed_for("model", job.seed))
    fields = {s: d.windows.shape[1] for s, d in data.items()}
    model = build_model(cfg, {s: fields[s] for s in trained}, backbone=arm.backbone, spectral_token=arm.spectral_token).to(device)
    counts: dict[str, int] = {}
    g = torch.Generator().manual_seed(seed_for("generic", job.seed))

    def batches():
        for name, x, coef, dt in mixture_batches(pools, sampler, cfg["batch"], counts):
            generic = bool(torch.rand((), generator=g) < cfg["generic_fraction"])
            yield (None if generic else name), x, coef, dt

    eval_seconds = [0.0]

    def evaluate(m):
        t0 = time.perf_counter()
        out = _evaluate_all(m, data, trained)
        eval_seconds[0] += time.perf_counter() - t0
        return out

    tc = TrainConfig(steps=cfg["steps"], lr=cfg["lr"], warmup=cfg["warmup"], eval_every=cfg["eval_every"], seed=job.seed)
    loss = lambda m, b, rng: pdefm_loss(
        m(b[1][:, :, :-1], b[0], b[2], b[3]), b[1][:, :, 1:], spectral_weight=cfg["spectral_weight"]
    )
    curves = train(
        model,
        loss,
        batches(),
        tc,
        evaluate=evaluate,
        desc=harness.describe_job(job),
        progress=False,
        checkpoint=harness.checkpoint_path(job),
    )
    gen = sum(p.buffer.seconds for p in pools.values() if p.buffer)  # chunks shared with an earlier arm cost nothing
    model.eval()
    W = cfg["window"] - 1
    per_system: dict[str, list] = {k: [] for k in ("nmse", "vrmse_generic", "vrmse_by_position", "rollout_vrmse", "example")}
    with torch.no_grad():
        for s, d in data.items():
            own = s if s in trained else None
            x, target = d.windows[:, :, :-1], d.windows[:, :, 1:]
            pred = model(x, own, d.window_coefficients, d.interval)
            err = metrics.vrmse(pred, target)
            per_system["vrmse_by_position"].append(err.mean(dim=(0, 1)).cpu().numpy())
            per_system["nmse"].append(metrics.spectral_error(pred, target).nmse.mean(dim=(0, 1, 2)).cpu().numpy())
            generic = pred if own is None else model(x, None, None, d.interval)
            per_system["vrmse_generic"].append(float(metrics.vrmse(generic, target).mean()))
            roll = lambda c, n, d=d, own=own: model.rollout(c, n, own, d.trajectory_coefficients, d.interval, window=W)
            rollout, example = d.rollout_with_example(roll)
            per_system["rollout_vrmse"].append(rollout)
            per_system["example"].append(example)
    curve_system = np.stack([curves[f"vrmse_{s}"].values for s in names])
    ds = harness.job_dataset(curves, rollout=None, **harness.drop_counts([p.buffer for p in pools.values()]))
    ds["curve"] = ds.vrmse
    ds["vrmse"] = (("system", "eval_step"), curve_system)
    ds["nmse"] = (("system", "band"), np.stack(per_system["nmse"]))
    ds["vrmse_generic"] = (("system",), np.asarray(per_system["vrmse_generic"]))
    ds["vrmse_by_position"] = (("system", "position"), np.stack(per_system["vrmse_by_position"]))
    ds["rollout_vrmse"] = (("system", "lead"), np.stack(per_system["rollout_vrmse"]))
    ds[harness.EXAMPLE] = (("system", "lead", "y", "x"), np.stack(per_system["example"]))
    ds["seen"] = (("system",), np.array([s in trained for s in names]))
    ds["draws"] = (("system",), np.array([counts.get(s, 0) for s in names], dtype=float))
    ds["probability"] = (("system",), np.array([sampler.probabilities[trained.index(s)] if s in trained else 0.0 for s in names]))
    ds["parameters"] = ((), count_parameters(model)[0])
    ds["backbone_parameters"] = ((), count_parameters(model.backbone)[0])
    ds["step_seconds"] = ((), (curves.attrs["seconds"] - eval_seconds[0] - gen) / max(1, cfg["steps"]))
    ds["generation_seconds"] = ((), gen)
    return ds.assign_coords(
        system=names, band=list(BANDS), position=np.arange(1, W + 1), lead=np.arange(1, cfg["rollout_steps"] + 1)
    )


def run(
    cfg: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    arms: Sequence[str] | None = None,
    workers: int | None = None,
    folder: str | None = None,
    example_arm: str = "full",
) -> xr.Dataset:
    """Train every arm of :func:`arms_of` for every seed and evaluate it on every system.

    ``cfg`` is the ``pdefm`` preset of :mod:`physfm.profiles`. Returns the harness's layout with
    dims ``arm``, ``seed`` and per job ``system``, ``eval_step`` (``vrmse``: the learning curve per
    system; ``curve``: its mean over the systems the arm trained on), ``band``, ``position``
    (context length of a teacher-forced prediction), ``lead``, plus ``vrmse_generic``, ``seen``,
    ``draws``, ``probability``, ``parameters``, ``backbone_parameters``, ``step_seconds``, the
    persistence baselines, and ``backbone_seconds`` (``backbone``, ``length``) from
    :func:`backbone_timing`; ``example_truth (system, example_frame, y, x)``, the first field of
    the first rollout trajectory of each system (context and future), and ``example_prediction
    (system, lead, y, x)``, what ``example_arm`` (attribute; default the full model) with the
    first seed predicted for it.
    """
    all_arms = arms_of(cfg)
    chosen = list(arms or all_arms)
    unknown = [a for a in chosen if a not in all_arms]
    if unknown:
        raise ValueError(f"run: unknown arms {unknown}; choose from {list(all_arms)}")
    if example_arm not in chosen:
        raise ValueError(f"run: example_arm={example_arm!r} is not among the arms run, {chosen}")
    names = list(specs(cfg["systems"]))
    if len(cfg["sizes"]) != len(names):
        raise ValueError(f"run: sizes {cfg['sizes']} must give one corpus size per system {names}")
    missing = [s for s in cfg["held_out"] if s not in names]
    if missing:
        raise ValueError(f"run: held_out {missing} are not among the systems {names}")
    if cfg["context"] + cfg["rollout_steps"] > cfg["frames"]:
        raise ValueError(f"run: context + rollout_steps = {cfg['context'] + cfg['rollout_steps']} exceeds frames={cfg['frames']}")
    workers = int(cfg.get("workers", 1) if workers is None else workers)
    if torch.device(device).type != "cpu":
        workers = 1
    start = time.perf_counter()
    all_specs = specs(cfg["systems"])
    data = {
        s: harness.eval_data(
            all_specs[s],
            shape=(cfg["grid"],) * 2,
            frames=cfg["frames"],
            window=cfg["window"],
            n_windows=cfg["val_trajectories"],
            context=cfg["context"],
            steps=cfg["rollout_steps"],
            n_rollouts=cfg["val_trajectories"],
        )
        for s in names
    }
    jobs = [Job(a, s) for s in cfg["seeds"] for a in chosen]
    share = (dict(cfg), data, device)
    if workers == 1:
        _share(*share)
    results = harness.run_jobs(
        _job,
        jobs,
        workers=workers,
        initializer=None if workers == 1 else _share,
        initargs=share,
        folder=folder,
        desc=f"{len(jobs)} training runs",
        progress=progress,
    )
    _SHARED.clear()
    results, examples = harness.split_examples(results)
    baselines = xr.concat([d.baselines() for d in data.values()], dim=xr.DataArray(names, dims="system"))
    baselines["persistence_by_position"] = (
        ("system", "position"),
        np.stack(
            [metrics.vrmse(d.windows[:, :, :-1], d.windows[:, :, 1:]).mean(dim=(0, 1)).cpu().numpy() for d in data.values()]
        ),
    )
    ds = harness.collect(results, baselines=baselines)
    ds = ds.assign_coords(system=names)
    ds["fields"] = (("system",), np.array([data[s].windows.shape[1] for s in names]))
    for name in ("seen", "probability", "parameters", "backbone_parameters"):
        ds[name] = ds[name].isel(seed=0, drop=True)
    ds["seen"] = ds.seen.astype(bool)
    ds["backbone_seconds"] = backbone_timing(cfg, device)
    first = list(cfg["seeds"])[0]
    ds["example_truth"] = (("system", "example_frame", "y", "x"), np.stack([data[s].example() for s in names]))
    ds["example_prediction"] = examples[Job(example_arm, first)].assign_coords(system=names)
    ds.attrs.update(
        {
            "seconds": time.perf_counter() - start,
            "generation_seconds": float(ds.generation_seconds.sum()),
            "held_out": ", ".join(cfg["held_out"]),
            "temperature": float(cfg["temperature"]),
            "workers": workers,
            "example_arm": example_arm,
            "example_seed": int(first),
            **{f"dropped_validation_{s}": int(d.drops["dropped"]) for s, d in data.items()},
        }
    )
    return ds


def backbone_timing(cfg: Mapping[str, Any], device: torch.device | str = "cpu") -> xr.DataArray:
    """Seconds per forward and backward pass of each backbone (equal parameters) on
    ``(timing_batch, length, dim)`` tokens, at every length of ``cfg["timing_lengths"]``:
    ``(backbone, length)``. After a warm-up, each pass is
    repeated at least three times and until 0.2 s have been spent (at most 50 times), and the
    fastest is kept: on a machine shared with other work, the least disturbed measurement. On a
    CPU the timing runs on one thread, which other work on the machine disturbs far less than it
    disturbs threads that wait for each other."""
    lengths = list(cfg["timing_lengths"])
    out = np.zeros((2, len(lengths)))
    with one_thread(device):
        _time_backbones(cfg, lengths, device, out)
    return xr.DataArray(out, dims=("backbone", "length"), coords={"backbone": ["mamba", "transformer"], "length": lengths})


def _time_backbones(cfg, lengths: Sequence[int], device, out: np.ndarray) -> None:
    for i, backbone in enumerate(("mamba", "transformer")):
        torch.manual_seed(0)
        net = build_model(cfg, {"a": 1}, backbone=backbone).backbone.to(device)
        for j, length in enumerate(lengths):
            u = torch.randn(cfg["timing_batch"], length, cfg["dim"], device=device)
            net(u).square().mean().backward()  # warm-up
            times: list[float] = []
            while len(times) < 3 or (sum(times) < 0.2 and len(times) < 50):
                start = time.perf_counter()
                net(u).square().mean().backward()
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            out[i, j] = min(times)


def _spread(v: xr.DataArray) -> xr.DataArray:
    return v.std("seed", ddof=1) if v.sizes["seed"] > 1 else xr.zeros_like(v.mean("seed"))


def final(ds: xr.Dataset) -> xr.DataArray:
    """The last validation VRMSE per arm, seed and system."""
    return ds.vrmse.isel(eval_step=-1, drop=True)


def summary(ds: xr.Dataset) -> xr.Dataset:
    """Mean and standard deviation over seeds of the final VRMSE per arm and system, and of its
    mean over systems (``mean_over_systems``, each seed averaged over the systems it trained on)."""
    v = final(ds)
    over = v.where(ds.seen).mean("system")
    return xr.Dataset(
        {"mean": v.mean("seed"), "std": _spread(v), "mean_over_systems": over.mean("seed"), "std_over_systems": _spread(over)}
    )


def deltas(ds: xr.Dataset, *, against: str = "full") -> xr.Dataset:
    """Each arm's final VRMSE minus ``against``'s, seed by seed (the same data and starting
    weights per seed): mean and standard deviation over seeds, per system and over the systems
    both trained on, and the same in percent of ``against``."""
    v = final(ds)
    base = v.sel(arm=against)
    d = v - base
    both = ds.seen & ds.seen.sel(arm=against)
    over = d.where(both).mean("system")
    rel = (100 * d / base).where(both).mean("system")
    return xr.Dataset(
        {
            "mean": d.mean("seed"),
            "std": _spread(d),
            "mean_over_systems": over.mean("seed"),
            "std_over_systems": _spread(over),
            "percent": rel.mean("seed"),
            "percent_std": _spread(rel),
        }
    )
