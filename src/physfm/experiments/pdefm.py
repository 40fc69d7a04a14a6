r"""One model trained across PDE systems: metadata windows, temperature sampling, PDE-FM's experiments.

**Data.** For every system a :class:`SystemWindows` pool holds trajectories made by the
on-the-fly generator (:func:`physfm.data.pde.generate`), each field normalised to zero mean and unit
variance over its time and space (as :mod:`physfm.data.streams` does), together with what the model
is conditioned on: the coefficients the trajectory was drawn with, scaled to :math:`[-1, 1]`
(:func:`scale_coefficients`), and the time between its frames. A window takes every
``stride``-th frame, so the time step the model sees varies (``dt = stride * interval``). The
pool is refreshed as it is read: every ``refresh_every`` windows of a system, its oldest chunk
of trajectories is replaced by a newly generated one.

**Temperature sampling.** Every training step draws one system and a batch of its windows. With
:math:`n_i` the size of system :math:`i`'s share of the corpus and a temperature :math:`T`,

.. math::  p_i = \frac{n_i^{1/T}}{\sum_j n_j^{1/T}},

so :math:`T = 1` samples in proportion to the data (a large system dominates), :math:`T \to \infty`
samples every system equally, and values in between flatten the imbalance (the multilingual
recipe of Arivazhagan et al. 2019, used by PDE-FM to keep one domain from dominating). Data
generated on the fly has no size of its own, so the corpus sizes :math:`n_i` are a parameter:
the book sets them unequal on purpose, as real collections are (The Well's datasets differ in
size by more than an order of magnitude).

**Experiments** (the three PDE-FM proposes, :func:`run`): the full model against

- ``no_spectral_token``: the same without the spectral token and its fusion;
- ``transformer``: the Mamba backbone replaced by a causal transformer with the same number of
  parameters (accuracy, and time per step);
- ``without_<system>``: trained on every system but one, then asked to predict the held-out
  system through the generic adapter (zero-shot transfer).

Every configuration sees the same data stream for a given seed (the chunks of generated
trajectories are shared, and the draws are made by a generator seeded by the seed), so seeds
can be compared pairwise: a difference between two configurations at the same seed is a
difference of the models, not of the data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from physfm.data import pde
from physfm.eval import metrics
from physfm.nn.pdefm import PDEFM, count_parameters, matched_transformer_hidden, pdefm_loss
from physfm.data.spectral import BANDS
from physfm.training import TrainConfig, train

__all__ = [
    "temperature_probabilities", "TemperatureSampler", "coefficient_names", "scale_coefficients",
    "system_for", "SystemWindows", "configurations", "build_model", "run", "summary", "deltas", "persistence",
]

# A stable index per system (seeds its chunks), whatever subset a configuration trains on.
_INDEX = {name: i for i, name in enumerate(sorted(pde.SYSTEMS))}


# ----------------------------------------------------------------------------------------------
# Temperature-scaled sampling across systems
# ----------------------------------------------------------------------------------------------


def temperature_probabilities(sizes: Sequence[float], temperature: float) -> np.ndarray:
    """``p_i = n_i^(1/T) / sum_j n_j^(1/T)``; ``temperature=math.inf`` gives equal shares."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise ValueError(f"temperature_probabilities: sizes must be positive numbers, got {list(sizes)!r}")
    if isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature_probabilities: temperature must be > 0 (math.inf: uniform), got {temperature!r}")
    w = np.exp(np.log(n) / temperature)
    return w / w.sum()


class TemperatureSampler:
    """Draws system indices with :func:`temperature_probabilities`, from its own generator."""

    def __init__(self, sizes: Sequence[float], temperature: float, *, seed: int = 0):
        self.probabilities = temperature_probabilities(sizes, temperature)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._p = torch.as_tensor(self.probabilities)

    def draw(self, n: int | None = None) -> int | torch.Tensor:
        """One index (``n=None``) or ``n`` of them."""
        idx = torch.multinomial(self._p, 1 if n is None else n, replacement=True, generator=self.generator)
        return int(idx) if n is None else idx


# ----------------------------------------------------------------------------------------------
# Metadata: the coefficients of a trajectory, on a common scale
# ----------------------------------------------------------------------------------------------


def coefficient_names(system: str | pde.System, spatial_dims: int) -> list[str]:
    """The coefficients that vary (``low < high``) and act in ``spatial_dims`` dimensions (the
    advection velocity has one component per axis), in the order of ``system.ranges``."""
    system = pde.get_system(system)
    names = []
    for name, (lo, hi) in system.ranges.items():
        if lo == hi:
            continue
        if isinstance(system, pde.AdvectionDiffusion) and name.startswith("c") and int(name[1:]) >= spatial_dims:
            continue
        names.append(name)
    return names


def scale_coefficients(system: str | pde.System, coefficients: Mapping[str, torch.Tensor], spatial_dims: int) -> torch.Tensor:
    """``(n, k)``: each coefficient of :func:`coefficient_names` mapped from its range to ``[-1, 1]``
    (on a log scale for those drawn log-uniformly)."""
    system = pde.get_system(system)
    cols = []
    for name in coefficient_names(system, spatial_dims):
        if name not in coefficients:
            raise ValueError(f"scale_coefficients: {system.name} needs coefficient {name!r}, got {sorted(coefficients)}")
        lo, hi = system.ranges[name]
        v = coefficients[name].to(torch.float64)
        if name in system.log_uniform and lo > 0:
            v, lo, hi = torch.log(v), math.log(lo), math.log(hi)
        cols.append(2 * (v - lo) / (hi - lo) - 1)
    n = len(next(iter(coefficients.values()))) if coefficients else 0
    return torch.stack(cols, dim=1).float() if cols else torch.zeros(n, 0)


# ----------------------------------------------------------------------------------------------
# Pools of windows with their metadata
# ----------------------------------------------------------------------------------------------


def system_for(name: str, options: Mapping[str, Mapping]) -> tuple[pde.System, dict]:
    """The system with the chapter's coefficient ranges, and the remaining generate() options."""
    opts = dict(options.get(name, {}))
    ranges = opts.pop("ranges", None)
    system = pde.SYSTEMS[name](ranges={k: tuple(v) if isinstance(v, list) else v for k, v in ranges.items()}) if ranges else pde.get_system(name)
    return system, opts


class SystemWindows:
    """Normalised trajectories of one system, their scaled coefficients and frame interval.

    Trajectories are generated in chunks of ``chunk``; chunk ``j`` is drawn from a generator
    seeded by ``(seed, system, j)`` alone, so every reader with the same seed sees the same
    chunks in the same order, and ``store`` (a dict shared between readers) lets them share the
    work of generating them. The pool holds ``size`` trajectories; every ``refresh_every`` windows
    read (0: never) the oldest chunk is replaced by the next one.
    """

    def __init__(self, name: str, *, shape: Sequence[int], frames: int, size: int, chunk: int, seed: int,
                 refresh_every: int = 0, options: Mapping[str, Mapping] | None = None,
                 store: dict | None = None, device: torch.device | str = "cpu"):
        if name not in pde.SYSTEMS:
            raise ValueError(f"SystemWindows: unknown system {name!r}; known systems: {sorted(pde.SYSTEMS)}")
        if size < chunk or size % chunk:
            raise ValueError(f"SystemWindows: size={size} must be a positive multiple of chunk={chunk}")
        self.name, self.shape, self.frames = name, tuple(shape), int(frames)
        self.system, self.options = system_for(name, options or {})
        self.chunk, self.seed, self.refresh_every = int(chunk), int(seed), int(refresh_every)
        self.store = store if store is not None else {}
        self.device = device
        self.fields = self.system.n_fields(len(self.shape))
        self.seconds = 0.0
        self.reads = 0
        self.next_chunk = size // chunk
        self.pool = [self._chunk(j) for j in range(self.next_chunk)]

    def _chunk(self, j: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        key = (self.name, self.seed, j, self.shape, self.frames, self.chunk)
        if key not in self.store:
            start = time.perf_counter()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 10_007 * _INDEX[self.name] + j)
            tr = pde.generate(self.system, batch=self.chunk, shape=self.shape, frames=self.frames, generator=g,
                              device=self.device, **self.options)
            dims = tuple(range(2, tr.data.ndim))
            data = (tr.data - tr.data.mean(dim=dims, keepdim=True)) / (tr.data.std(dim=dims, keepdim=True) + 1e-6)
            coef = scale_coefficients(self.system, tr.coefficients, len(self.shape)).to(self.device)
            self.store[key] = (data, coef, tr.interval)
            self.seconds += time.perf_counter() - start
        return self.store[key]

    def sample(self, batch: int, window: int, strides: Sequence[int], generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch`` windows of ``window`` frames, each at a stride drawn from ``strides``:
        ``(x: (batch, F, window, *space), coefficients: (batch, k), dt: (batch,))``."""
        xs, cs, dts = [], [], []
        for _ in range(batch):
            data, coef, interval = self.pool[int(torch.randint(len(self.pool), (1,), generator=generator))]
            i = int(torch.randint(data.shape[0], (1,), generator=generator))
            stride = int(strides[int(torch.randint(len(strides), (1,), generator=generator))])
            span = stride * (window - 1) + 1
            if span > self.frames:
                raise ValueError(f"SystemWindows: {window} frames at stride {stride} need {span} frames, trajectories have {self.frames}")
            t0 = int(torch.randint(self.frames - span + 1, (1,), generator=generator))
            xs.append(data[i, :, t0 : t0 + span : stride])
            cs.append(coef[i])
            dts.append(stride * interval)
        self.reads += batch
        if self.refresh_every and self.reads >= self.refresh_every:
            self.reads = 0
            self.pool = self.pool[1:] + [self._chunk(self.next_chunk)]
            self.next_chunk += 1
        return torch.stack(xs), torch.stack(cs), torch.tensor(dts, dtype=torch.float32, device=xs[0].device)

    def trajectories(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Every trajectory in the pool: ``(data: (n, F, frames, *space), coefficients: (n, k), interval)``."""
        return (torch.cat([d for d, _, _ in self.pool]), torch.cat([c for _, c, _ in self.pool]), self.pool[0][2])


# ----------------------------------------------------------------------------------------------
# The experiments
# ----------------------------------------------------------------------------------------------


def configurations(cfg: Mapping[str, Any]) -> list[str]:
    """``full``, ``no_spectral_token``, ``transformer`` and ``without_<system>`` per held-out system."""
    return ["full", "no_spectral_token", "transformer", *[f"without_{s}" for s in cfg["held_out"]]]


def _trained_on(config: str, systems: Sequence[str]) -> list[str]:
    return [s for s in systems if config != f"without_{s}"]


def build_model(cfg: Mapping[str, Any], systems: Mapping[str, int], *, backbone: str = "mamba",
                spectral_token: bool = True) -> PDEFM:
    """The chapter's :class:`~physfm.nn.pdefm.PDEFM`; a transformer backbone gets the MLP width that
    matches the Mamba backbone's parameter count."""
    args = dict(width=cfg["width"], dim=cfg["dim"], patch=cfg["patch"], spectral_modes=cfg["spectral_modes"],
                n_coefficients=cfg["n_coefficients"], layers=cfg["layers"], d_state=cfg["d_state"],
                decoder_width=cfg["decoder_width"], decoder_modes=cfg["decoder_modes"],
                decoder_blocks=cfg["decoder_blocks"], heads=cfg["heads"], embed=cfg["embed"])
    hidden = 64
    if backbone == "transformer":
        mamba = PDEFM(systems, **args).backbone
        hidden = matched_transformer_hidden(cfg["dim"], cfg["layers"], count_parameters(mamba))
    return PDEFM(systems, backbone=backbone, spectral_token=spectral_token, transformer_hidden=hidden, **args)


def persistence(x: torch.Tensor) -> torch.Tensor:
    """VRMSE of predicting "nothing changes" for every frame after the first of ``x: (n, F, T, *S)``:
    ``(T - 1,)``, one value per context length."""
    return metrics.vrmse(x[:, :, :-1], x[:, :, 1:]).mean(dim=(0, 1))


def _batches(cfg, names: list[str], pools: dict[str, SystemWindows], sampler: TemperatureSampler, seed: int, counts: dict):
    """The training stream: a system by temperature, its windows, the generic path now and then."""
    g = torch.Generator().manual_seed(10_000 + seed)
    while True:
        name = names[sampler.draw()]
        generic = bool(torch.rand((), generator=g) < cfg["generic_fraction"])
        counts[name] += 1
        yield (None if generic else name), *pools[name].sample(cfg["batch"], cfg["window"], cfg["strides"], g)


def _timing(cfg, lengths: Sequence[int], device) -> np.ndarray:
    """Seconds per forward and backward pass of each backbone (equal parameters) on
    ``(timing_batch, length, dim)`` tokens: ``(2, len(lengths))``. After a warm-up, each pass is
    repeated at least three times and until 0.2 s have been spent (at most 50 times), and the
    fastest is kept: on a machine shared with other work, the least disturbed measurement. On a
    CPU the timing runs on one thread, which other work on the machine disturbs far less than it
    disturbs threads that wait for each other."""
    out = np.zeros((2, len(lengths)))
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        _time_backbones(cfg, lengths, device, out)
    finally:
        torch.set_num_threads(threads)
    return out


def _time_backbones(cfg, lengths: Sequence[int], device, out: np.ndarray) -> None:
    for i, backbone in enumerate(("mamba", "transformer")):
        torch.manual_seed(0)
        net = build_model(cfg, {"a": 1}, backbone=backbone).backbone.to(device)
        for j, length in enumerate(lengths):
            u = torch.randn(cfg["timing_batch"], length, cfg["dim"], device=device)
            net(u).square().mean().backward()                       # warm-up
            times: list[float] = []
            while len(times) < 3 or (sum(times) < 0.2 and len(times) < 50):
                start = time.perf_counter()
                net(u).square().mean().backward()
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            out[i, j] = min(times)


def run(cfg: Mapping[str, Any], *, device: torch.device | str = "cpu", progress: bool = True,
        configs: Sequence[str] | None = None) -> xr.Dataset:
    """Train every configuration of :func:`configurations` for every seed and evaluate it per system.

    ``cfg`` is the ``pdefm`` preset of :mod:`physfm.profiles`. Returns a Dataset with dims
    ``config``, ``seed``, ``system``, ``position`` (context length of a teacher-forced
    prediction), ``lead`` (rollout), ``band``, ``eval_step`` (learning curves), ``backbone`` and
    ``length`` (timing). The main variables: ``vrmse`` (per system, through the system's own
    adapter when the configuration trained on it, else zero-shot through the generic one: see
    ``seen``), ``vrmse_generic`` (the generic path for every system), ``vrmse_by_position``,
    ``nmse`` (low/mid/high bands), ``rollout_vrmse``, the persistence baselines, ``curve``
    (validation VRMSE during training, mean over the trained systems), ``step_seconds``,
    ``parameters`` and ``backbone_seconds``.
    """
    all_configs = configurations(cfg)
    configs = list(configs or all_configs)
    unknown = [c for c in configs if c not in all_configs]
    if unknown:
        raise ValueError(f"run: unknown configurations {unknown}; choose from {all_configs}")
    systems = list(cfg["systems"])
    if len(cfg["sizes"]) != len(systems):
        raise ValueError(f"run: sizes {cfg['sizes']} must give one corpus size per system {systems}")
    missing = [s for s in cfg["held_out"] if s not in systems]
    if missing:
        raise ValueError(f"run: held_out {missing} are not among the systems {systems}")
    if cfg["context"] + cfg["rollout_steps"] > cfg["frames"]:
        raise ValueError(f"run: context + rollout_steps = {cfg['context'] + cfg['rollout_steps']} exceeds frames={cfg['frames']}")
    start = time.perf_counter()
    shape = (cfg["grid"],) * 2
    options = cfg["options"]
    sizes = dict(zip(systems, cfg["sizes"]))
    seeds = list(cfg["seeds"])

    # validation: separately seeded trajectories of every system
    val_store: dict = {}
    val = {s: SystemWindows(s, shape=shape, frames=cfg["frames"], size=cfg["val_trajectories"], chunk=cfg["val_trajectories"],
                            seed=90_000, options=options, store=val_store, device=device).trajectories() for s in systems}
    fields = {s: val[s][0].shape[1] for s in systems}
    val_windows = {s: v[0][:, :, : cfg["window"]] for s, v in val.items()}
    val_rollouts = {s: v[0][:, :, : cfg["context"] + cfg["rollout_steps"]] for s, v in val.items()}
    generation_seconds = time.perf_counter() - start

    W, L, B = cfg["window"] - 1, cfg["rollout_steps"], len(BANDS)
    shapes = {"vrmse": (), "vrmse_generic": (), "vrmse_by_position": (W,), "nmse": (B,), "rollout_vrmse": (L,)}
    out = {k: np.full((len(configs), len(seeds), len(systems), *s), np.nan) for k, s in shapes.items()}
    step_seconds = np.full((len(configs), len(seeds)), np.nan)
    draws = np.zeros((len(configs), len(seeds), len(systems)))
    probability = np.zeros((len(configs), len(systems)))
    n_params = np.zeros(len(configs), dtype=np.int64)
    n_backbone = np.zeros(len(configs), dtype=np.int64)
    curves: dict[tuple[int, int], xr.Dataset] = {}

    for j, seed in enumerate(seeds):
        store: dict = {}                      # chunks shared by every configuration of this seed
        for i, config in enumerate(configs):
            names = _trained_on(config, systems)
            pools = {s: SystemWindows(s, shape=shape, frames=cfg["frames"], size=cfg["pool"], chunk=cfg["chunk"], seed=seed,
                                      refresh_every=cfg["refresh_every"], options=options, store=store, device=device)
                     for s in names}
            sampler = TemperatureSampler([sizes[s] for s in names], cfg["temperature"], seed=seed)
            probability[i] = [sampler.probabilities[names.index(s)] if s in names else 0.0 for s in systems]
            torch.manual_seed(seed)
            model = build_model(cfg, {s: fields[s] for s in names}, backbone="transformer" if config == "transformer" else "mamba",
                                spectral_token=config != "no_spectral_token").to(device)
            n_params[i], n_backbone[i] = count_parameters(model), count_parameters(model.backbone)
            counts = dict.fromkeys(names, 0)
            eval_time = [0.0]

            def evaluate(m, names=names):
                t0 = time.perf_counter()
                v = {f"vrmse_{s}": metrics.vrmse(m(val_windows[s][:, :, :-1], s, val[s][1], val[s][2]), val_windows[s][:, :, 1:]).mean()
                     for s in names}
                v["vrmse"] = torch.stack(list(v.values())).mean()
                eval_time[0] += time.perf_counter() - t0
                return v

            gen_before = sum(p.seconds for p in pools.values())
            tc = TrainConfig(steps=cfg["steps"], lr=cfg["lr"], warmup=cfg["warmup"], eval_every=cfg["eval_every"], seed=seed)
            c = train(model, lambda m, b, rng: pdefm_loss(m(b[1][:, :, :-1], b[0], b[2], b[3]), b[1][:, :, 1:],
                                                          spectral_weight=cfg["spectral_weight"]),
                      _batches(cfg, names, pools, sampler, seed, counts), tc, evaluate=evaluate,
                      desc=f"{config} seed {seed}", progress=progress)
            gen = sum(p.seconds for p in pools.values()) - gen_before
            generation_seconds += gen
            step_seconds[i, j] = (c.attrs["seconds"] - eval_time[0] - gen) / max(1, cfg["steps"])
            curves[i, j] = c
            draws[i, j] = [counts.get(s, 0) for s in systems]
            model.eval()
            with torch.no_grad():
                for k, s in enumerate(systems):
                    x, coef, interval = val_windows[s], val[s][1], val[s][2]
                    target = x[:, :, 1:]
                    own = s if s in names else None
                    pred = model(x[:, :, :-1], own, coef, interval)
                    err = metrics.vrmse(pred, target)                                  # (n, F, W)
                    out["vrmse"][i, j, k] = float(err.mean())
                    out["vrmse_by_position"][i, j, k] = err.mean(dim=(0, 1)).cpu().numpy()
                    out["nmse"][i, j, k] = metrics.spectral_error(pred, target).nmse.mean(dim=(0, 1, 2)).cpu().numpy()
                    generic = pred if own is None else model(x[:, :, :-1], None, None, interval)
                    out["vrmse_generic"][i, j, k] = float(metrics.vrmse(generic, target).mean())
                    r = val_rollouts[s]
                    roll = model.rollout(r[:, :, : cfg["context"]], L, own, coef, interval, window=W)
                    out["rollout_vrmse"][i, j, k] = metrics.vrmse(roll, r[:, :, cfg["context"]:]).mean(dim=(0, 1)).cpu().numpy()

    eval_steps = curves[0, 0].eval_step.values
    curve = np.stack([[curves[i, j].vrmse.values for j in range(len(seeds))] for i in range(len(configs))])
    curve_system = np.full((len(configs), len(seeds), len(systems), len(eval_steps)), np.nan)
    for (i, j), c in curves.items():
        for k, s in enumerate(systems):
            if f"vrmse_{s}" in c:
                curve_system[i, j, k] = c[f"vrmse_{s}"].values
    pers = np.stack([persistence(val_windows[s]).cpu().numpy() for s in systems])
    pers_roll = np.stack([metrics.vrmse(val_rollouts[s][:, :, cfg["context"] - 1 : cfg["context"]].expand_as(val_rollouts[s][:, :, cfg["context"]:]),
                                        val_rollouts[s][:, :, cfg["context"]:]).mean(dim=(0, 1)).cpu().numpy() for s in systems])
    lengths = list(cfg["timing_lengths"])
    timing = _timing(cfg, lengths, device)
    dims = ("config", "seed", "system")
    return xr.Dataset(
        {
            "vrmse": (dims, out["vrmse"]),
            "vrmse_generic": (dims, out["vrmse_generic"]),
            "vrmse_by_position": ((*dims, "position"), out["vrmse_by_position"]),
            "nmse": ((*dims, "band"), out["nmse"]),
            "rollout_vrmse": ((*dims, "lead"), out["rollout_vrmse"]),
            "persistence": (("system",), pers.mean(axis=1)),
            "persistence_by_position": (("system", "position"), pers),
            "persistence_rollout": (("system", "lead"), pers_roll),
            "seen": (("config", "system"), np.array([[s in _trained_on(c, systems) for s in systems] for c in configs])),
            "curve": (("config", "seed", "eval_step"), curve),
            "curve_system": ((*dims, "eval_step"), curve_system),
            "step_seconds": (("config", "seed"), step_seconds),
            "draws": (dims, draws),
            "probability": (("config", "system"), probability),
            "parameters": (("config",), n_params),
            "backbone_parameters": (("config",), n_backbone),
            "backbone_seconds": (("backbone", "length"), timing),
            "fields": (("system",), np.array([fields[s] for s in systems])),
        },
        coords={"config": configs, "seed": seeds, "system": systems, "position": np.arange(1, W + 1),
                "lead": np.arange(1, L + 1), "band": list(BANDS), "eval_step": eval_steps,
                "backbone": ["mamba", "transformer"], "length": lengths},
        attrs={"seconds": time.perf_counter() - start, "generation_seconds": generation_seconds,
               "held_out": ", ".join(cfg["held_out"]), "temperature": float(cfg["temperature"])},
    )


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _spread(v: xr.DataArray) -> xr.DataArray:
    return v.std("seed", ddof=1) if v.sizes["seed"] > 1 else xr.zeros_like(v.mean("seed"))


def summary(ds: xr.Dataset, var: str = "vrmse") -> xr.Dataset:
    """Mean and standard deviation over seeds of ``var`` per configuration and system, and of its
    mean over systems (``mean_over_systems``, each seed averaged over the systems it trained on)."""
    v = ds[var]
    over = v.where(ds.seen).mean("system")
    return xr.Dataset({"mean": v.mean("seed"), "std": _spread(v),
                       "mean_over_systems": over.mean("seed"), "std_over_systems": _spread(over)})


def deltas(ds: xr.Dataset, *, against: str = "full") -> xr.Dataset:
    """Each configuration's VRMSE minus ``against``'s, seed by seed (the same data and starting
    weights per seed): mean and standard deviation over seeds, per system and over the systems
    both trained on, and the same in percent of ``against``."""
    base = ds.vrmse.sel(config=against)
    d = ds.vrmse - base
    both = ds.seen & ds.seen.sel(config=against)
    over = d.where(both).mean("system")
    rel = (100 * d / base).where(both).mean("system")
    return xr.Dataset({"mean": d.mean("seed"), "std": _spread(d), "mean_over_systems": over.mean("seed"),
                       "std_over_systems": _spread(over), "percent": rel.mean("seed"), "percent_std": _spread(rel)})
