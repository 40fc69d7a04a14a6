"""Does pre-training the tokeniser pay off? The ablation of Sotoudeh et al. (2026), made fair, and its map.

A dynamics model (:class:`~physfm.nn.dynamics.NextFrameModel`: tokeniser encoder -> latent
processor -> tokeniser decoder) is trained for next-frame prediction on one *target* system,
generated on the fly. The arms (:data:`ARMS`) differ only in the tokeniser's start and how it
trains:

================================  ========================================================
``scratch``                       random tokeniser, trained with the processor at the full rate
``scratch_slow``                  the same at ``finetune_lr_scale`` (control for the rate)
``in_domain_finetuned``           pre-trained as an autoencoder on the target, then trained at
                                  ``finetune_lr_scale`` times the processor's rate
``in_domain_full_lr``             the same at the full rate (control for the rate)
``in_domain_frozen``              the same tokeniser, kept fixed: only the processor trains
``cross_domain_finetuned``        pre-trained on the *other* systems only, then trained gently
``cross_domain_frozen``           the same, kept fixed
``scratch_equal_compute``         scratch, given as many extra steps as pre-training processed
                                  field-frames through the tokeniser
================================  ========================================================

Fairness, point by point:

- **paired starts**: at one seed every arm's processor starts from the same weights (drawn from
  ``seed_for("processor", seed)``, apart from the scratch tokeniser's ``seed_for("tokeniser", seed)``),
  and every arm reads the same training windows (the stream ``seed_for("train", seed)``);
- **the learning rate**: pre-trained tokenisers are fine-tuned gently, scratch ones at the full
  rate; ``scratch_slow`` and ``in_domain_full_lr`` separate "pre-trained" from "slower";
- **equal compute** counted in what is processed: a pre-training step encodes and decodes
  ``pre_batch`` crops of ``crop_t`` frames of one field, a dynamics step ``batch`` windows of
  ``window`` frames of every field, so pre-training is worth
  :math:`E = \\lceil S_{pre} B_{pre} T_{crop} / (B F W) \\rceil` dynamics steps
  (:func:`equal_compute_steps`); the FLOPs of both steps are measured too;
- **uncertainty**: every reduction comes with a 95% paired bootstrap interval over seeds and
  validation windows (:mod:`physfm.eval.uncertainty`).

**The map** (``cfg["map"]``): the same comparison (``map_arms`` x ``map_seeds``) at points that
move one axis away from the base configuration: the tokeniser's compression (latent channels and
spatial stride), its capacity relative to the processor (the tokeniser's widths, or the
processor's), the downstream data (distinct
target trajectories; 0 means the unlimited stream) and the pre-training budget. The fifth axis,
the dynamics budget, is read off the learning curves at every evaluation. Pre-trained tokenisers
are cached by recipe (:func:`physfm.training.pretrain_tokeniser`), so points that share a
tokeniser train it once. The **focus** point (``cfg["focus"]``) moves several axes at once, to
where the map puts the effect, and runs ``focus_arms`` with every seed, so that its learning
curves, rollouts and equal-compute view can be shown as the base point's are.

**A target on disk.** ``cfg["target"]`` may also be the folder of a data set in The Well's
layout (:func:`well_target`), as the paper's Euler multi-quadrants is: the dynamics windows are
then read from its training split (:class:`~physfm.data.well_streams.WellWindowStream`, the first
``trajectories`` of them, 0: all), the held-out data from its valid and test splits
(:func:`~physfm.data.well_streams.well_eval_data`; at most as many rollouts as the test split has
trajectories, ``attrs["val_rollouts"]``), the in-domain tokeniser pre-trains on
single-channel crops of its training split (the recipe's ``well``) and the cross-domain one on
every system of ``cfg["systems"]``.

Logged, as in the paper: validation next-frame VRMSE and the low/mid/high spectral NMSE every
``eval_every`` steps (learning curves), the VRMSE of every validation window (for the intervals),
and after training the VRMSE of autoregressive rollouts per lead time.
:func:`run` returns it all in the harness's layout (:mod:`physfm.experiments.harness`, dims
``regime``, ``arm``, ``seed``).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from physfm.data import streams
from physfm.data.spec import specs
from physfm.data.well import WellWindows
from physfm.data.well_streams import WellWindowStream, well_eval_data
from physfm.eval.uncertainty import Interval, paired_reduction
from physfm.experiments import harness
from physfm.experiments.harness import Job
from physfm.nn.dynamics import NextFrameModel
from physfm.nn.lora import count_parameters
from physfm.nn.tokeniser import Tokeniser
from physfm.runtime import cache_dir, one_thread, seed_for
from physfm.training import TrainConfig, pretrain_tokeniser, train
from physfm.training.tokeniser import drop_attrs

__all__ = [
    "Arm",
    "ARMS",
    "PAPER_VRMSE",
    "regimes",
    "focus_regime",
    "tokeniser_recipe",
    "pretrained_tokenisers",
    "build",
    "equal_compute_steps",
    "run",
    "reductions",
    "curve_reductions",
    "map_table",
    "equal_compute",
    "paper_ordering",
    "best_point",
    "well_target",
]


@dataclass(frozen=True)
class Arm:
    """One arm of the ablation.

    Attributes:
        name, label: how results and figures call it.
        tokeniser: ``"scratch"``, ``"in_domain"`` or ``"cross_domain"``: where its tokeniser starts.
        frozen: the tokeniser stays fixed (only the processor trains).
        gentle: the tokeniser trains at ``finetune_lr_scale`` times the processor's rate.
        equal_compute: trained for :func:`equal_compute_steps` more steps.
    """

    name: str
    label: str
    tokeniser: str = "scratch"
    frozen: bool = False
    gentle: bool = False
    equal_compute: bool = False


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("scratch", "scratch"),
        Arm("scratch_slow", "scratch, tokeniser at the gentle rate", gentle=True),
        Arm("in_domain_finetuned", "in-domain, fine-tuned", "in_domain", gentle=True),
        Arm("in_domain_full_lr", "in-domain, fine-tuned at the full rate", "in_domain"),
        Arm("in_domain_frozen", "in-domain, frozen", "in_domain", frozen=True),
        Arm("cross_domain_finetuned", "cross-domain, fine-tuned", "cross_domain", gentle=True),
        Arm("cross_domain_frozen", "cross-domain, frozen", "cross_domain", frozen=True),
        Arm("scratch_equal_compute", "scratch, equal compute", equal_compute=True),
    )
}

# Final validation VRMSE after 10,500 steps on The Well's Euler multi-quadrants, as transcribed
# from Sotoudeh et al. (2026) (third-party transcription; the cross-domain value is the paper's
# single "out-of-domain" configuration).
PAPER_VRMSE = {"scratch": 0.439, "in_domain_finetuned": 0.158, "in_domain_frozen": 0.162, "cross_domain_finetuned": 0.355}

#: parameters a map point may change, and the axis each belongs to
MAP_AXES = {
    "latent": "compression",
    "stride": "compression",
    "patch": "compression",
    "channels": "capacity",
    "width": "capacity",
    "trajectories": "data",
    "pre_steps": "pre-training",
}


# -- configuration -------------------------------------------------------------------------------


def regimes(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``name -> configuration`` of the base point (``"base"``), of every map point (the base
    configuration with the point's overrides; ``cfg["map"]``: axis name -> list of overrides) and
    of the focus point (``cfg["focus"]``, overrides of several axes at once; none if empty)."""
    base = {k: v for k, v in cfg.items() if k not in ("map", "focus")}
    out = {"base": base}

    def point(axis: str, overrides: Mapping[str, Any]) -> None:
        unknown = set(overrides) - set(MAP_AXES)
        if unknown:
            raise ValueError(
                f"regimes: point {dict(overrides)} of {axis!r} changes {sorted(unknown)}; a point may change {sorted(MAP_AXES)}"
            )
        out[f"{axis}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())] = {**base, **overrides, "axis": axis}

    for axis, points in dict(cfg.get("map") or {}).items():
        for overrides in points:
            point(axis, overrides)
    if cfg.get("focus"):
        point("focus", cfg["focus"])
    return out


def focus_regime(cfg: Mapping[str, Any]) -> str | None:
    """The name of the focus point in :func:`regimes`, or ``None``."""
    return next((r for r, c in regimes(cfg).items() if c.get("axis") == "focus"), None)


def _fmt(v: Any) -> str:
    return "x".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def tokeniser_recipe(cfg: Mapping[str, Any], systems: Sequence[str]) -> dict[str, Any]:
    """The pre-training recipe (:func:`physfm.training.pretrain_tokeniser`) of the ablation's
    tokeniser on ``systems`` (with their options from ``cfg["systems"]``): full fields of the
    target's grid, crops of one window's length, one spatial stride, time stride 1."""
    all_specs = specs(cfg["systems"])
    well = well_target(cfg)
    own = [s for s in systems if s != cfg["target"]] if well is not None else list(systems)
    data = (
        {"well": str(well), "well_stats": hashlib.sha256((well / "stats.yaml").read_bytes()).hexdigest()[:16]}
        if well is not None and cfg["target"] in systems
        else {}
    )
    return {
        "systems": {s: {k: v for k, v in all_specs[s].as_dict().items() if k != "name"} for s in own},
        **data,
        "grid": cfg["grid"],
        "frames": cfg["frames"],
        "crop": cfg["grid"],
        "crop_t": cfg["window"],
        "buffer": cfg["buffer"],
        "refresh": cfg["refresh"],
        "channels": list(cfg["channels"]),
        "latent": cfg["latent"],
        "blocks": cfg["blocks"],
        "patch": cfg["patch"],
        "time_patch": 1,
        "strides": [cfg["stride"]],
        "time_strides": [1],
        "steps": cfg["pre_steps"],
        "batch": cfg["pre_batch"],
        "lr": cfg["lr"],
        "warmup": cfg["warmup"],
        "eval_every": cfg["eval_every"],
        "val_crops": cfg["val_windows"],
        "seed": cfg["pretrain_seed"],
    }


def well_target(cfg: Mapping[str, Any]) -> Path | None:
    """The folder of the target when ``cfg["target"]`` names a data set in The Well's layout (a
    folder holding ``stats.yaml``) rather than one of ``cfg["systems"]``; else ``None``."""
    if cfg["target"] in specs(cfg["systems"]):
        return None
    path = Path(cfg["target"])
    return path if (path / "stats.yaml").is_file() else None


def _test_trajectories(path: Path) -> int:
    windows = WellWindows(path, "test", n_steps_input=1, n_steps_output=0)
    n = len(windows.trajectories())
    windows.close()
    return n


def _domains(cfg: Mapping[str, Any]) -> dict[str, list[str]]:
    names = list(specs(cfg["systems"]))
    if well_target(cfg) is not None:  # in-domain: crops of the data set; cross-domain: every system
        return {"in_domain": [cfg["target"]], "cross_domain": names}
    if cfg["target"] not in names:
        raise ValueError(
            f"run: the target {cfg['target']!r} must be one of the systems {names} or the folder of a data set "
            f"in The Well's layout (with a stats.yaml)"
        )
    others = [s for s in names if s != cfg["target"]]
    if not others:
        raise ValueError(f"run: systems {names} must include systems other than the target {cfg['target']!r}")
    return {"in_domain": [cfg["target"]], "cross_domain": others}


def pretrained_tokenisers(
    cfg: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    workers: int = 1,
    domains: Sequence[str] = ("in_domain", "cross_domain"),
) -> dict[str, tuple[Tokeniser, xr.Dataset]]:
    """``domain -> (tokeniser, curves)`` at the base point of ``cfg``: ``in_domain`` (pre-trained
    on the target only) and ``cross_domain`` (on every other system). With ``workers > 1`` they
    train at once in worker processes, into the model cache, from which they are then read."""
    recipes = {d: tokeniser_recipe(cfg, s) for d, s in _domains(cfg).items() if d in domains}
    _pretrain_all(list(recipes.values()), workers=workers, progress=progress, device=device)
    return {d: pretrain_tokeniser(r, device=device, name="ablation", progress=progress) for d, r in recipes.items()}


def _pretrain_job(job: tuple[dict, str]) -> None:
    recipe, folder = job
    pretrain_tokeniser(recipe, device="cpu", name="ablation", progress=False, store=streams.DiskStore(folder))


def _pretrain_all(recipes: list[dict], *, workers: int, progress: bool, device: torch.device | str = "cpu") -> None:
    """Train every distinct recipe into the cache, the longest first (in worker processes when
    ``workers > 1``, so that they finish together; else here on one thread, which gives the
    workers' numbers). Recipes that share their systems, grid and
    seed read the same crop stream, whatever their architecture or budget: its chunks are
    generated once, by the first pre-training that needs them, into a
    :class:`~physfm.data.streams.DiskStore` in a temporary folder of the cache, and read from there
    by the others (in any process), which changes no number."""
    unique = list({repr(sorted(r.items())): r for r in recipes}.values())
    unique.sort(key=lambda r: -r["steps"] * math.prod(r["channels"]))
    cache_dir().mkdir(parents=True, exist_ok=True)  # a fresh cache may not exist yet
    with tempfile.TemporaryDirectory(prefix="chunks-", dir=cache_dir()) as folder:
        if workers > 1 and len(unique) > 1:
            from physfm.runtime import map_jobs

            jobs = [(r, folder) for r in unique]
            map_jobs(_pretrain_job, jobs, workers=workers, desc="pre-training tokenisers", progress=progress)
        else:  # on one thread, as in a worker: the same tokeniser whichever chapter trains it first
            with one_thread(device):
                for r in unique:
                    pretrain_tokeniser(r, device=device, name="ablation", progress=progress, store=streams.DiskStore(folder))


def equal_compute_steps(cfg: Mapping[str, Any], fields: int = 1) -> int:
    """Dynamics steps worth the field-frames one pre-training run passes through the tokeniser:
    ``ceil(pre_steps * pre_batch * window / (batch * fields * window))`` (crops are whole fields of
    ``window`` frames, as in :func:`tokeniser_recipe`)."""
    return math.ceil(cfg["pre_steps"] * cfg["pre_batch"] * cfg["window"] / (cfg["batch"] * fields * cfg["window"]))


def build(arm: Arm, tokeniser: Tokeniser, fields: int, cfg: Mapping[str, Any], *, seed: int) -> NextFrameModel:
    """The model of ``arm`` around ``tokeniser`` (already the arm's: pre-trained or fresh, a copy).

    The processor is drawn from ``seed_for("processor", seed)`` whatever the tokeniser, so at one
    seed every arm starts its processor from the same weights."""
    torch.manual_seed(seed_for("processor", seed))
    model = NextFrameModel(tokeniser, fields, stride=cfg["stride"], width=cfg["width"], blocks=cfg["processor_blocks"])
    if arm.frozen:
        model.freeze_tokeniser()
    return model


def _fresh_tokeniser(cfg: Mapping[str, Any], seed: int) -> Tokeniser:
    torch.manual_seed(seed_for("tokeniser", seed))
    return Tokeniser(
        spatial_dims=2,
        channels=tuple(cfg["channels"]),
        latent=cfg["latent"],
        blocks=cfg["blocks"],
        patch=cfg["patch"],
        time_patch=1,
        stride=cfg["stride"],
        time_stride=1,
    )


def _batches(cfg: Mapping[str, Any], seed: int, device, store: dict):
    """The training windows of one seed: the same for every arm. ``trajectories > 0``: a fixed
    set of that many target trajectories, read again and again; 0: the refreshed stream."""
    n = cfg["trajectories"]
    well = well_target(cfg)
    if well is not None:  # the first n training trajectories of the data set (0: all), read again and again
        stream = WellWindowStream(
            well, "train", window=cfg["window"], trajectories=n or None, seed=seed_for("train", seed), device=device
        )
        return stream, torch.utils.data.DataLoader(stream, batch_size=cfg["batch"])
    target = specs(cfg["systems"])[cfg["target"]]
    stream = streams.WindowStream(
        target,
        shape=(cfg["grid"],) * 2,
        frames=cfg["frames"],
        window=cfg["window"],
        size=n or cfg["buffer"],
        chunk=min(8, n or 8),
        refresh=0.0 if n else cfg["refresh"],
        refresh_every=4 * cfg["buffer"],
        seed=seed_for("train", seed),
        device=device,
        store=store,
    )
    return stream, torch.utils.data.DataLoader(stream, batch_size=cfg["batch"])


# -- the jobs of one run, shared by this process and worker processes ----------------------------

_SHARED: dict[str, Any] = {}


def _share(
    configs: Mapping[str, dict], tokenisers: Mapping[tuple[str, str], tuple[Any, dict]], data: harness.EvalData, device
) -> None:
    """What every job reads: the configuration of each regime, the pre-trained tokenisers
    (``(regime, domain) -> (config, weights)``) and the held-out data."""
    toks = {}
    for key, (config, state) in tokenisers.items():
        toks[key] = Tokeniser(config)
        toks[key].load_state_dict(state)
    _SHARED.clear()
    _SHARED.update(configs=dict(configs), tokenisers=toks, data=data.to(device), device=device, stores={})


#: generated training trajectories kept per process, one store per (trajectories, seed)
_STORES_KEPT = 3


def _store(trajectories: int, seed: int) -> dict:
    """The generated trajectories of one seed's training data (a fixed set of ``trajectories``, or
    the stream): every job of that seed in this process reads them instead of generating them
    again. The most recently used few are kept (the jobs are ordered so that those of one seed
    follow each other)."""
    stores = _SHARED["stores"]
    key = (trajectories, seed)
    store = stores.pop(key, {})
    stores[key] = store  # most recent last
    while len(stores) > _STORES_KEPT:
        stores.pop(next(iter(stores)))
    return store


def same_run(job: Job, points: Mapping[str, Mapping[str, Any]]) -> Job:
    """The job whose run is ``job``'s own: a tokeniser that starts at random does not depend on the
    pre-training budget, so a scratch arm (not the equal-compute one, whose extra steps do) at a
    point that differs from another only in ``pre_steps`` is the same run, and is run once, at the
    first such point (the base point where it is one)."""
    arm = ARMS[job.arm]
    if arm.tokeniser != "scratch" or arm.equal_compute:
        return job

    def key(c):
        return {k: v for k, v in c.items() if k not in ("pre_steps", "axis")}

    for r, c in points.items():
        if key(c) == key(points[job.regime]):
            return Job(job.arm, job.seed, system=job.system, regime=r)
    return job


#: the arms whose rollout of the first held-out trajectory (base point, first seed) a run keeps,
#: ``example_prediction``, beside its truth ``example_truth`` (the first field)
EXAMPLE_ARMS = ("scratch", "in_domain_finetuned", "cross_domain_finetuned")
EXAMPLE_SPACE = ("y", "x")


def _job(job: Job) -> xr.Dataset:
    """Train ``job.arm`` with ``job.seed`` at ``job.regime``; its curves, rollout and sizes."""
    cfg, data, device = _SHARED["configs"][job.regime], _SHARED["data"], _SHARED["device"]
    arm = ARMS[job.arm]
    if arm.tokeniser == "scratch":
        tok = _fresh_tokeniser(cfg, job.seed)
    else:
        src = _SHARED["tokenisers"][job.regime, arm.tokeniser]
        tok = Tokeniser(src.config)
        tok.load_state_dict(src.state_dict())
    fields = data.windows.shape[1]
    model = build(arm, tok, fields, cfg, seed=job.seed).to(device)
    extra = equal_compute_steps(cfg, fields) if arm.equal_compute else 0
    steps = cfg["dyn_steps"] + extra
    stream, loader = _batches(cfg, job.seed, device, _store(cfg["trajectories"], job.seed))
    scale = cfg["finetune_lr_scale"] if arm.gentle else 1.0
    groups = [{"params": list(model.processor.parameters())}, {"params": list(model.tokeniser.parameters()), "lr_scale": scale}]
    tc = TrainConfig(steps=steps, lr=cfg["lr"], warmup=cfg["warmup"], eval_every=cfg["eval_every"], seed=job.seed)
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
    rollout, example = data.rollout_with_example(model.rollout)
    return harness.job_dataset(
        curves,
        rollout=rollout,
        **{harness.EXAMPLE: (("lead", *EXAMPLE_SPACE), example)},
        steps=steps,
        extra_steps=extra,
        trainable=count_parameters(model)[0],
        tokeniser_parameters=sum(p.numel() for p in tok.parameters()),
        processor_parameters=sum(p.numel() for p in model.processor.parameters()),
        **harness.drop_counts(getattr(stream, "buffer", stream)),
    )


def _flops(cfg: Mapping[str, Any], fields: int) -> tuple[float, float]:
    """FLOPs of one pre-training step and of one dynamics step (forward and backward), counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    tok = _fresh_tokeniser(cfg, 0)
    crops = torch.zeros(cfg["pre_batch"], 1, cfg["window"], cfg["grid"], cfg["grid"])
    with FlopCounterMode(display=False) as pre:
        (tok(crops, cfg["stride"], 1) - crops).square().mean().backward()
    model = build(ARMS["scratch"], _fresh_tokeniser(cfg, 0), fields, cfg, seed=0)
    windows = torch.zeros(cfg["batch"], fields, cfg["window"], cfg["grid"], cfg["grid"])
    with FlopCounterMode(display=False) as dyn:
        model.loss(windows).backward()
    return float(pre.get_total_flops()), float(dyn.get_total_flops())


def run(
    cfg: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    arms: Sequence[str] | None = None,
    with_map: bool = True,
    workers: int | None = None,
    folder: str | None = None,
) -> xr.Dataset:
    """Run the ablation of ``cfg`` (the ``pretraining`` preset of :mod:`physfm.profiles`): every
    arm of ``cfg["arms"]`` for every seed at the base point, and ``map_arms`` x ``map_seeds`` at
    every map point (``with_map=False``: the base point only).

    ``workers`` (default ``cfg["workers"]``): on a CPU, pre-trainings and then dynamics runs go to
    that many one-thread worker processes; every run is seeded on its own, so the numbers do not
    depend on which worker ran it. ``folder``: save each finished run there and skip it when the
    same command runs again (:func:`physfm.experiments.harness.run_jobs`).

    Returns the harness's layout with dims ``regime``, ``arm``, ``seed``, and the pre-training
    curves ``pre_vrmse``/``pre_nmse`` per ``regime`` and ``domain``; ``example_truth
    (example_frame, y, x)``, the first field of the first rollout trajectory (context and
    future), and ``example_prediction (example_arm, lead, y, x)``, what each of
    :data:`EXAMPLE_ARMS` that ran predicted for it at the base point with the first seed.
    """
    start = time.perf_counter()
    arms = list(cfg["arms"] if arms is None else arms)
    unknown = [a for a in arms + list(cfg["map_arms"]) + list(cfg.get("focus_arms", ())) if a not in ARMS]
    if unknown:
        raise ValueError(f"run: unknown arms {unknown}; choose from {list(ARMS)}")
    workers = int(cfg.get("workers", 1) if workers is None else workers)
    if torch.device(device).type != "cpu":
        workers = 1
    points = regimes(cfg) if with_map else {"base": regimes(cfg)["base"]}

    # 1. the tokenisers of every point, pre-trained once per distinct recipe
    domains = _domains(cfg)
    recipes = {(r, d): tokeniser_recipe(c, s) for r, c in points.items() for d, s in domains.items()}
    _pretrain_all(list(recipes.values()), workers=workers, progress=progress, device=device)
    # every one is in the cache now: read back without a line per tokeniser
    pre = {k: pretrain_tokeniser(rec, device=device, name="ablation", progress=False) for k, rec in recipes.items()}
    pre_seconds = time.perf_counter() - start
    shared_toks = {k: (tok.config, {n: v.cpu() for n, v in tok.state_dict().items()}) for k, (tok, _) in pre.items()}

    # 2. held-out data of the target (the same for every point: the grid and frames do not change)
    well = well_target(cfg)
    if well is not None:  # The Well's own held-out splits: valid (windows) and test (rollouts, as many as it has)
        data = well_eval_data(
            well,
            window=cfg["window"],
            n_windows=cfg["val_windows"],
            context=cfg["context"],
            steps=cfg["rollout_steps"],
            n_rollouts=min(cfg["val_rollouts"], _test_trajectories(well)),
            device="cpu",
        )
    else:
        data = harness.eval_data(
            specs(cfg["systems"])[cfg["target"]],
            shape=(cfg["grid"],) * 2,
            frames=cfg["frames"],
            window=cfg["window"],
            n_windows=cfg["val_windows"],
            context=cfg["context"],
            steps=cfg["rollout_steps"],
            n_rollouts=cfg["val_rollouts"],
            device="cpu",
        )

    # 3. the dynamics runs: the longest first, so that the workers finish together
    jobs = [Job(a, s, regime="base") for s in cfg["seeds"] for a in arms]
    for r, c in points.items():
        if c.get("axis") == "focus":
            jobs += [Job(a, s, regime=r) for s in cfg["seeds"] for a in cfg["focus_arms"]]
        elif r != "base":
            jobs += [Job(a, s, regime=r) for s in cfg["map_seeds"] for a in cfg["map_arms"]]
    runs = {j: same_run(j, points) for j in jobs}
    todo = list(dict.fromkeys(runs.values()))
    # the longest first, so that the workers finish together; then the jobs of one data set together
    todo.sort(key=lambda j: (not ARMS[j.arm].equal_compute, j.regime != "base", points[j.regime]["trajectories"], j.seed))
    share = (points, shared_toks, data, device)
    if workers == 1:
        _share(*share)
    done = harness.run_jobs(
        _job,
        todo,
        workers=workers,
        initializer=None if workers == 1 else _share,
        initargs=share,
        folder=folder,
        desc=f"{len(todo)} dynamics runs",
        progress=progress,
    )
    results, examples = harness.split_examples({j: done[runs[j]] for j in jobs})
    _SHARED.clear()

    # 4. one dataset
    fields = data.windows.shape[1]
    pre_flops, dyn_flops = _flops(points["base"], fields)
    ds = harness.collect(results, baselines=data.baselines())
    names = list(points)
    ds = ds.reindex(regime=names)
    # one rollout to watch: the first held-out trajectory, the base point's first seed
    shown = [a for a in EXAMPLE_ARMS if a in arms]
    first = list(cfg["seeds"])[0]
    ds["example_truth"] = (("example_frame", *EXAMPLE_SPACE), data.example())
    ds["example_prediction"] = (
        ("example_arm", "lead", *EXAMPLE_SPACE),
        np.stack([examples[Job(a, first, regime="base")].values for a in shown]),
    )
    ds = ds.assign_coords(example_arm=shown)
    ds.attrs.update(example_seed=int(first))
    longest = max((c for _, c in pre.values()), key=lambda c: len(c.eval_step)).eval_step.values
    pre_vrmse = np.full((len(names), len(domains), len(longest)), np.nan)
    pre_nmse = np.full(pre_vrmse.shape + (3,), np.nan)
    for i, r in enumerate(names):
        for j, d in enumerate(domains):
            c = pre[r, d][1]
            pre_vrmse[i, j, : c.sizes["eval_step"]] = c.vrmse.values
            pre_nmse[i, j, : c.sizes["eval_step"]] = c.nmse.values
    ds["pre_vrmse"] = (("regime", "domain", "pre_eval_step"), pre_vrmse)
    ds["pre_nmse"] = (("regime", "domain", "pre_eval_step", "band"), pre_nmse)
    ds = ds.assign_coords(
        domain=list(domains),
        pre_eval_step=longest,
        axis=("regime", [points[r].get("axis", "base") for r in names]),
        compression=("regime", [_fresh_tokeniser(points[r], 0).config.ratio(points[r]["stride"], 1) for r in names]),
        trajectories=("regime", [points[r]["trajectories"] for r in names]),
        pre_steps=("regime", [points[r]["pre_steps"] for r in names]),
        capacity=("regime", [_capacity(points[r], fields) for r in names]),
    )
    pre_drops = {k: v for (r, _), (_, c) in pre.items() if r == "base" for k, v in c.attrs.items() if k.startswith("drop")}
    ds.attrs.update(
        {
            "target": cfg["target"],
            "cross_domain_systems": ", ".join(domains["cross_domain"]),
            "pretraining_seconds": pre_seconds,
            "seconds": time.perf_counter() - start,
            "workers": workers,
            "equal_compute_steps": equal_compute_steps(points["base"], fields),
            "val_rollouts": len(data.trajectories),
            "pretraining_step_flops": pre_flops,
            "dynamics_step_flops": dyn_flops,
            **{f"pretraining_{k}": v for k, v in pre_drops.items()},
            **drop_attrs({f"validation_{data.system}": data.drops}),
        }
    )
    return ds


def _capacity(cfg: Mapping[str, Any], fields: int) -> float:
    """Parameters of the tokeniser over those of the processor."""
    model = build(ARMS["scratch"], _fresh_tokeniser(cfg, 0), fields, cfg, seed=0)
    tok = sum(p.numel() for p in model.tokeniser.parameters())
    return tok / sum(p.numel() for p in model.processor.parameters())


# -- summaries ----------------------------------------------------------------------------------


def _last_step(v: xr.DataArray) -> int:
    """The last evaluation at which every seed of ``v (seed, eval_step)`` has a value."""
    done = ~np.isnan(v).any("seed")
    return int(v.eval_step.where(done, drop=True).max())


def _reduction(ds: xr.Dataset, regime: str, arm: str, against: str, step: int, against_step: int | None = None) -> Interval:
    a = ds.vrmse_window.sel(regime=regime, arm=arm, eval_step=step).dropna("seed", how="all")
    b = ds.vrmse_window.sel(regime=regime, arm=against, eval_step=against_step or step).sel(seed=a.seed)
    return paired_reduction(a.values, b.values)


def reductions(ds: xr.Dataset, *, regime: str = "base", against: str = "scratch") -> xr.Dataset:
    """Per arm at ``regime``: validation VRMSE (mean and standard deviation over seeds) at the arm's
    own last step (the equal-compute arm later than the others), and its reduction against
    ``against`` at that arm's dynamics budget, with a 95% bootstrap interval over seeds and windows
    (``reduction``, ``low``, ``high``, percent; positive is better than ``against``). The equal-compute
    arm is compared with the others at its own end, see :func:`equal_compute`."""
    sub = ds.sel(regime=regime)
    arms = [a for a in sub.arm.values if not np.isnan(sub.vrmse.sel(arm=a)).all()]
    base_step = _last_step(sub.vrmse.sel(arm=against))
    rows = {k: [] for k in ("vrmse_mean", "vrmse_std", "reduction", "low", "high", "step")}
    for a in arms:
        step = _last_step(sub.vrmse.sel(arm=a))
        v = sub.vrmse.sel(arm=a, eval_step=step).dropna("seed")
        iv = _reduction(ds, regime, a, against, step, base_step if step > base_step else None)
        for k, x in zip(rows, (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, *iv, step)):
            rows[k].append(x)
    return xr.Dataset(
        {k: ("arm", np.asarray(v)) for k, v in rows.items()},
        coords={"arm": arms},
        attrs={"regime": regime, "against": against, "eval_step": base_step},
    )


def curve_reductions(ds: xr.Dataset, arm: str, *, regime: str = "base", against: str = "scratch") -> xr.Dataset:
    """The reduction of ``arm`` against ``against`` at every evaluation both reached (the dynamics
    budget axis), with its interval: ``reduction``, ``low``, ``high`` over ``eval_step``."""
    sub = ds.sel(regime=regime)
    common = [int(s) for s in sub.eval_step.values if not np.isnan(sub.vrmse.sel(arm=[arm, against], eval_step=s)).any()]
    ivs = [_reduction(ds, regime, arm, against, s) for s in common]
    return xr.Dataset(
        {k: ("eval_step", np.asarray([iv[i] for iv in ivs])) for i, k in enumerate(("reduction", "low", "high"))},
        coords={"eval_step": common},
        attrs={"arm": arm, "regime": regime, "against": against},
    )


def map_table(
    ds: xr.Dataset,
    *,
    arms: Sequence[str] = ("in_domain_finetuned", "cross_domain_finetuned"),
    against: str = "scratch",
    step: int | None = None,
) -> xr.Dataset:
    """The map: reduction of each of ``arms`` against ``against`` at every regime, at the last
    common dynamics step (or ``step``), with intervals: dims ``regime``, ``arm``."""
    out = {k: np.full((ds.sizes["regime"], len(arms)), np.nan) for k in ("reduction", "low", "high", "vrmse")}
    for i, r in enumerate(ds.regime.values):
        sub = ds.sel(regime=r)
        if np.isnan(sub.vrmse.sel(arm=against)).all():
            continue
        s = step or _last_step(sub.vrmse.sel(arm=against).dropna("seed", how="all"))
        for j, a in enumerate(arms):
            v = sub.vrmse.sel(arm=a, eval_step=s).dropna("seed")
            if v.size == 0:
                continue
            iv = _reduction(ds, r, a, against, s)
            out["reduction"][i, j], out["low"][i, j], out["high"][i, j] = iv
            out["vrmse"][i, j] = float(v.mean())
    return xr.Dataset(
        {k: (("regime", "arm"), v) for k, v in out.items()},
        coords={"regime": ds.regime.values, "arm": list(arms), "axis": ds.axis},
    )


def equal_compute(ds: xr.Dataset, arm: str = "in_domain_finetuned", *, regime: str = "base") -> Interval:
    """The reduction of a pre-trained ``arm`` after its dynamics steps against scratch given the
    pre-training's field-frames as extra steps (``scratch_equal_compute`` at its own end)."""
    sub = ds.sel(regime=regime)
    step = _last_step(sub.vrmse.sel(arm=arm))
    long = _last_step(sub.vrmse.sel(arm="scratch_equal_compute"))
    return _reduction(ds, regime, arm, "scratch_equal_compute", step, long)


def _scan(ds: xr.Dataset, arms: tuple[str, str, str] = ("in_domain_finetuned", "cross_domain_finetuned", "scratch")):
    """Every (regime, evaluation after step 0) at which all of ``arms`` have every seed they ran:
    the three paired intervals in vs scratch, cross vs scratch, in vs cross."""
    inn, cross, base = arms
    for r in ds.regime.values:
        sub = ds.sel(regime=r)
        seeds = sub.vrmse.sel(arm=base).dropna("seed", how="all").seed
        if seeds.size == 0 or any(np.isnan(sub.vrmse.sel(arm=a, seed=seeds)).all() for a in (inn, cross)):
            continue
        for s in sub.eval_step.values[1:]:
            v = sub.vrmse.sel(arm=list(arms), seed=seeds, eval_step=s)
            if np.isnan(v).any():
                continue
            yield (
                str(r),
                int(s),
                _reduction(ds, r, inn, base, int(s)),
                _reduction(ds, r, cross, base, int(s)),
                _reduction(ds, r, inn, cross, int(s)),
            )


def paper_ordering(ds: xr.Dataset, *, threshold: float = 50.0) -> xr.Dataset:
    """The points (regime, dynamics step) at which the paper's finding holds: in-domain below
    cross-domain below scratch, each difference with a 95% interval above zero, and in-domain at
    least ``threshold`` percent below scratch. Dims ``point``; the three reductions and their
    lower bounds."""
    rows = [(r, s, a, b, c) for r, s, a, b, c in _scan(ds) if a.low > 0 and b.low > 0 and c.low > 0 and a.estimate >= threshold]
    return xr.Dataset(
        {
            "in_domain": ("point", [a.estimate for *_, a, _, _ in rows]),
            "in_domain_low": ("point", [a.low for *_, a, _, _ in rows]),
            "cross_domain": ("point", [b.estimate for *_, b, _ in rows]),
            "cross_domain_low": ("point", [b.low for *_, b, _ in rows]),
            "in_vs_cross": ("point", [c.estimate for *_, c in rows]),
            "in_vs_cross_low": ("point", [c.low for *_, c in rows]),
        },
        coords={"regime": ("point", [r for r, *_ in rows]), "step": ("point", [s for _, s, *_ in rows])},
    )


def best_point(ds: xr.Dataset) -> dict[str, Any]:
    """The strongest in-domain reduction against scratch among the points where the paper's
    ordering holds with intervals apart (in < cross < scratch), or, where it holds nowhere, the
    strongest overall: ``regime``, ``step``, the three :class:`Interval`s and ``ordering`` (bool)."""
    points = list(_scan(ds))
    if not points:
        raise ValueError("best_point: no regime has in-domain, cross-domain and scratch runs")
    ordered = [p for p in points if p[2].low > 0 and p[3].low > 0 and p[4].low > 0]
    r, s, a, b, c = max(ordered or points, key=lambda p: p[2].estimate)
    return {"regime": r, "step": s, "in_domain": a, "cross_domain": b, "in_vs_cross": c, "ordering": bool(ordered)}
