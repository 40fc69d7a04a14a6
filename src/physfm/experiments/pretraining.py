"""Does pre-training the tokeniser pay off? The ablation of Sotoudeh et al. (2026), as functions.

A dynamics model (:class:`~physfm.nn.dynamics.NextFrameModel`: tokeniser encoder -> latent
processor -> tokeniser decoder) is trained for next-frame prediction on one *target* system,
generated on the fly, in these configurations:

===============================  ============================================================
``scratch``                      tokeniser randomly initialised, trained jointly with the processor
``in_domain_finetuned``          tokeniser pre-trained as an autoencoder on the target, then
                                 trained at ``finetune_lr_scale`` times the processor's rate
``in_domain_frozen``             the same tokeniser, kept fixed: only the processor trains
``cross_domain_finetuned``       tokeniser pre-trained on the *other* systems only, then trained
                                 (at ``finetune_lr_scale``)
``cross_domain_frozen``          the same, kept fixed
``scratch_equal_compute``        scratch, given the pre-training steps too (total steps equal)
``in_domain_finetuned_full_lr``  in-domain, fine-tuned at the processor's own rate
===============================  ============================================================

Every configuration is trained for the same number of dynamics steps (the last one for
``dyn_steps + pre_steps``) with the same optimiser, schedule and data stream, for several seeds.
The seed sets the processor's (and the scratch tokeniser's) initialisation and the data order;
the pre-trained tokenisers are trained once per domain and shared by every seed, so the seed
spread measures the dynamics training, not the pre-training.

Logged, as in the paper: validation next-frame VRMSE and the low/mid/high spectral NMSE every
``eval_every`` steps (learning curves), and after training the VRMSE of autoregressive rollouts
per lead time. :func:`run` returns all of it as one :class:`xarray.Dataset`.
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
from physfm.nn.dynamics import NextFrameModel
from physfm.data.spectral import BANDS
from physfm.training import TrainConfig, pretrain_tokeniser, train

__all__ = ["CONFIGS", "PAPER_VRMSE", "tokeniser_recipe", "run", "reductions"]

CONFIGS = (
    "scratch",
    "in_domain_finetuned",
    "in_domain_frozen",
    "cross_domain_finetuned",
    "cross_domain_frozen",
    "scratch_equal_compute",
    "in_domain_finetuned_full_lr",
)

# Final validation VRMSE after 10,500 steps on The Well's Euler multi-quadrants, as transcribed
# from Sotoudeh et al. (2026) (third-party transcription; the cross-domain value is the paper's
# single "out-of-domain" configuration).
PAPER_VRMSE = {
    "scratch": 0.439,
    "in_domain_finetuned": 0.158,
    "in_domain_frozen": 0.162,
    "cross_domain_finetuned": 0.355,
}


def tokeniser_recipe(cfg: Mapping[str, Any], systems: Sequence[str]) -> dict[str, Any]:
    """The pre-training recipe (:func:`physfm.training.pretrain_tokeniser`) of the ablation's
    tokeniser on ``systems``: full fields of the target's grid, crops of one window's length."""
    return {
        "systems": list(systems), "grid": cfg["grid"], "frames": cfg["frames"], "crop": cfg["grid"], "crop_t": cfg["window"],
        "buffer": cfg["buffer"], "refresh": cfg["refresh"], "channels": list(cfg["channels"]), "latent": cfg["latent"],
        "blocks": cfg["blocks"], "patch": cfg["stride"], "time_patch": 1, "strides": [cfg["stride"]], "time_strides": [1],
        "steps": cfg["pre_steps"], "batch": cfg["pre_batch"], "lr": cfg["lr"], "warmup": cfg["warmup"],
        "eval_every": cfg["eval_every"], "val_crops": cfg["val_windows"], "seed": cfg["pretrain_seed"],
    }


def _options(cfg) -> dict:
    """generate() overrides for the target system (its frame interval and coefficient ranges)."""
    return {"interval": cfg["interval"]}


def _target(cfg) -> pde.System:
    system = pde.get_system(cfg["target"])
    if cfg.get("target_nu"):
        system = type(system)(ranges={"nu": tuple(cfg["target_nu"])})
    return system


def _windows(cfg, window: int, n: int, seed: int, device) -> torch.Tensor:
    return streams.held_out_windows(_target(cfg), shape=(cfg["grid"],) * 2, frames=cfg["frames"], window=window, n=n,
                                    seed=seed, device=device, system_options=_options(cfg))


def _data(cfg, seed: int, steps: int, device):
    """The batches of one seed's dynamics training: every configuration with this seed draws the
    same sequence, so it is generated once and replayed (a "tape") when it fits in memory
    (``tape_megabytes``); otherwise each run streams its own copy of it."""
    stream = streams.WindowStream(_target(cfg), shape=(cfg["grid"],) * 2, frames=cfg["frames"], window=cfg["window"],
                                  size=cfg["buffer"], refresh=cfg["refresh"], refresh_every=4 * cfg["buffer"],
                                  seed=1000 * seed + 7, device=device, system_options=_options(cfg))
    nbytes = steps * cfg["batch"] * cfg["window"] * cfg["grid"] ** 2 * 4
    if nbytes > cfg["tape_megabytes"] * 1e6:
        return lambda: torch.utils.data.DataLoader(copy.deepcopy(stream), batch_size=cfg["batch"])
    it = iter(torch.utils.data.DataLoader(stream, batch_size=cfg["batch"]))
    tape = [next(it) for _ in range(steps)]
    return lambda: iter(tape)


def _train_one(config: str, seed: int, cfg, tokenisers, val, batches, device, progress: bool):
    """Train one configuration with one seed; returns (curves, trained model)."""
    torch.manual_seed(seed)
    if config.startswith("in_domain"):
        tok = copy.deepcopy(tokenisers["in_domain"])
    elif config.startswith("cross_domain"):
        tok = copy.deepcopy(tokenisers["cross_domain"])
    else:
        tok = type(tokenisers["untrained"])(tokenisers["untrained"].config)  # a fresh one per seed
    fields = val.shape[1]
    model = NextFrameModel(tok, fields, stride=cfg["stride"], width=cfg["width"], blocks=cfg["processor_blocks"]).to(device)
    if config.endswith("frozen"):
        model.freeze_tokeniser()
    steps = cfg["dyn_steps"] + (cfg["pre_steps"] if config == "scratch_equal_compute" else 0)

    def evaluate(m):
        pred = m(val[:, :, :-1])
        target = val[:, :, 1:]
        err = metrics.spectral_error(pred, target)
        return {"vrmse": metrics.vrmse(pred, target).mean(), "nmse": err.nmse.mean(dim=(0, 1, 2))}

    tc = TrainConfig(steps=steps, lr=cfg["lr"], warmup=cfg["warmup"], eval_every=cfg["eval_every"], seed=seed)
    # a pre-trained tokeniser is fine-tuned at finetune_lr_scale times the processor's rate; a
    # scratch one, which has nothing to keep, learns at the full rate
    scale = cfg.get("finetune_lr_scale", 1.0) if config.endswith("finetuned") else 1.0
    groups = [{"params": list(model.processor.parameters())}, {"params": list(model.tokeniser.parameters()), "lr_scale": scale}]
    curves = train(model, lambda m, b, rng: m.loss(b), batches, tc, evaluate=evaluate, parameters=groups,
                   desc=f"{config} seed {seed}", progress=progress)
    return curves, model


# -- the jobs of one run, shared by this process and worker processes (physfm.runtime.map_jobs) --

_SHARED: dict[str, Any] = {}


def _share(cfg: Mapping[str, Any], tokenisers: Mapping[str, tuple[Any, dict | None]], longest: int, device) -> None:
    """What every dynamics job reads: the parameters, the tokenisers (``name -> (config, weights
    or None for an untrained one)``), the validation and rollout windows, and one seed's batches."""
    from physfm.nn.tokeniser import Tokeniser

    toks = {}
    for name, (config, state) in tokenisers.items():
        toks[name] = Tokeniser(config)
        if state is not None:
            toks[name].load_state_dict(state)
    _SHARED.clear()
    _SHARED.update(cfg=dict(cfg), tokenisers=toks, longest=longest, device=device, tape=(None, None),
                   val=_windows(cfg, cfg["window"], cfg["val_windows"], seed=50_000, device=device),
                   roll=_windows(cfg, cfg["context"] + cfg["rollout_steps"], cfg["val_rollouts"], seed=60_000, device=device))


def _dynamics_job(job: tuple[str, int]) -> tuple[xr.Dataset, np.ndarray]:
    """Train configuration ``job[0]`` with seed ``job[1]``; its curves and rollout VRMSE per lead."""
    config, seed = job
    sh, cfg = _SHARED, _SHARED["cfg"]
    if sh["tape"][0] != seed:  # jobs come seed after seed: keep one seed's batches at a time
        sh["tape"] = (seed, _data(cfg, seed, sh["longest"], sh["device"]))
    curves, model = _train_one(config, seed, cfg, sh["tokenisers"], sh["val"], sh["tape"][1](), sh["device"], progress=False)
    model.eval()
    roll, c = sh["roll"], cfg["context"]
    pred = model.rollout(roll[:, :, :c], cfg["rollout_steps"])
    return curves, metrics.vrmse(pred, roll[:, :, c:]).mean(dim=(0, 1)).cpu().numpy()


def _pretrain_job(job: tuple[str, dict, dict, dict]) -> None:
    """Pre-train one tokeniser on the CPU into the model cache (the caller loads it from there)."""
    domain, recipe, options, ranges = job
    pretrain_tokeniser(recipe, device="cpu", name=f"ablation-{domain}", progress=False, system_options=options, system_ranges=ranges)


def run(cfg: Mapping[str, Any], *, device: torch.device | str = "cpu", progress: bool = True,
        configs: Sequence[str] = CONFIGS, workers: int | None = None) -> xr.Dataset:
    """Run the whole ablation described by ``cfg`` (the ``pretraining`` preset of
    :mod:`physfm.profiles`) and return its learning curves and rollout errors.

    Dimensions of the result: ``config``, ``seed``, ``eval_step`` (validation curves; NaN past
    the end of shorter runs), ``band``, ``step`` (training loss), ``lead`` (rollout), and
    ``pre_eval_step``/``domain`` for the two pre-training runs. ``persistence_vrmse`` and
    ``persistence_rollout_vrmse`` score the forecast "nothing changes" (the last true frame
    repeated) on the same validation data: a model that does not beat it has learnt no dynamics.

    ``workers`` (default ``cfg["workers"]``, else 1): on a CPU, the two pre-trainings and then the
    runs of every (configuration, seed) go to that many one-thread worker processes
    (:func:`physfm.runtime.map_jobs`); every run is seeded on its own, so the numbers do not
    depend on which worker ran it. On an accelerator everything runs here.
    """
    from physfm.nn.tokeniser import Tokeniser
    from physfm.runtime import map_jobs

    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"run: unknown configurations {unknown}; choose from {CONFIGS}")
    workers = int(cfg.get("workers", 1) if workers is None else workers)
    if torch.device(device).type != "cpu":
        workers = 1
    start = time.perf_counter()
    others = [s for s in cfg["systems"] if s != cfg["target"]]
    if not others:
        raise ValueError(f"run: systems {cfg['systems']} must include systems other than the target {cfg['target']!r}")
    recipes = {"in_domain": tokeniser_recipe(cfg, [cfg["target"]]), "cross_domain": tokeniser_recipe(cfg, others)}
    # the target's own options (frame interval, viscosity range) apply to its pre-training data too
    adjust = ({cfg["target"]: _options(cfg)}, _target_ranges(cfg))
    if workers > 1:  # train both at once into the cache; the loop below then loads them
        map_jobs(_pretrain_job, [(d, r, *adjust) for d, r in recipes.items()], workers=workers,
                 desc="pre-training the tokenisers", progress=progress)
    tokenisers, pre_curves = {}, {}
    for domain, recipe in recipes.items():
        tok, curves = pretrain_tokeniser(recipe, device=device, name=f"ablation-{domain}", progress=progress,
                                         system_options=adjust[0], system_ranges=adjust[1])
        tokenisers[domain] = (tok.config, {k: v.cpu() for k, v in tok.state_dict().items()})
        pre_curves[domain] = curves
    r = recipes["in_domain"]
    untrained = Tokeniser(spatial_dims=2, channels=tuple(r["channels"]), latent=r["latent"], blocks=r["blocks"],
                          patch=r["patch"], time_patch=1, stride=r["patch"], time_stride=1)
    tokenisers["untrained"] = (untrained.config, None)
    pre_seconds = time.perf_counter() - start

    seeds = list(cfg["seeds"])
    longest = cfg["dyn_steps"] + (cfg["pre_steps"] if "scratch_equal_compute" in configs else 0)
    # seed after seed, the longest run of each seed first (the workers then finish together)
    order = sorted(configs, key=lambda c: c != "scratch_equal_compute")
    jobs = [(c, seed) for seed in seeds for c in order]
    share = (dict(cfg), tokenisers, longest, device)
    if workers == 1:
        _share(*share)
    outputs = map_jobs(_dynamics_job, jobs, workers=workers, initializer=None if workers == 1 else _share, initargs=share,
                       desc=f"{len(jobs)} dynamics runs", progress=progress)
    if workers > 1:
        _share(*share)  # this process's own copy of the validation data, for the baselines below
    results = {job: curves for job, (curves, _) in zip(jobs, outputs)}
    rollouts = {job: r for job, (_, r) in zip(jobs, outputs)}
    rollout = np.stack([np.stack([rollouts[c, seed] for seed in seeds]) for c in configs])
    val, roll = _SHARED["val"], _SHARED["roll"]

    # the baseline every forecaster must beat: "nothing changes" (the last true frame, repeated)
    persistence = metrics.vrmse(val[:, :, :-1], val[:, :, 1:]).mean()
    last_seen = roll[:, :, cfg["context"] - 1 : cfg["context"]].expand(-1, -1, cfg["rollout_steps"], *[-1] * (roll.ndim - 3))
    persistence_rollout = metrics.vrmse(last_seen, roll[:, :, cfg["context"] :]).mean(dim=(0, 1))
    _SHARED.clear()

    eval_steps = sorted({int(s) for c in results.values() for s in c.eval_step.values})
    steps = np.arange(1, max(c.sizes["step"] for c in results.values()) + 1)
    vr = np.full((len(configs), len(seeds), len(eval_steps)), np.nan)
    nm = np.full((len(configs), len(seeds), len(eval_steps), len(BANDS)), np.nan)
    loss = np.full((len(configs), len(seeds), len(steps)), np.nan)
    for i, config in enumerate(configs):
        for j, seed in enumerate(seeds):
            c = results[config, seed]
            idx = [eval_steps.index(int(s)) for s in c.eval_step.values]
            vr[i, j, idx] = c.vrmse.values
            nm[i, j, idx] = c.nmse.values
            loss[i, j, : c.sizes["step"]] = c.loss.values
    pre_steps = pre_curves["in_domain"].eval_step.values
    ds = xr.Dataset(
        {
            "vrmse": (("config", "seed", "eval_step"), vr),
            "nmse": (("config", "seed", "eval_step", "band"), nm),
            "loss": (("config", "seed", "step"), loss),
            "rollout_vrmse": (("config", "seed", "lead"), rollout),
            "persistence_vrmse": ((), float(persistence)),
            "persistence_rollout_vrmse": (("lead",), persistence_rollout.cpu().numpy()),
            "pre_vrmse": (("domain", "pre_eval_step"), np.stack([pre_curves[d].vrmse.values for d in recipes])),
            "pre_nmse": (("domain", "pre_eval_step", "band"), np.stack([pre_curves[d].nmse.values for d in recipes])),
        },
        coords={
            "config": list(configs), "seed": seeds, "eval_step": eval_steps, "band": list(BANDS), "step": steps,
            "lead": np.arange(1, cfg["rollout_steps"] + 1), "domain": list(recipes), "pre_eval_step": pre_steps,
        },
        attrs={"target": cfg["target"], "cross_domain_systems": ", ".join(others), "pretraining_seconds": pre_seconds,
               "seconds": time.perf_counter() - start, "workers": workers},
    )
    return ds


def _target_ranges(cfg) -> dict:
    return {cfg["target"]: {"nu": tuple(cfg["target_nu"])}} if cfg.get("target_nu") else {}


def reductions(ds: xr.Dataset, *, at: int | None = None) -> xr.Dataset:
    """Final validation VRMSE per configuration (mean and standard deviation over seeds) and its
    reduction against ``scratch`` in percent.

    By default each configuration is read at its own last evaluation (``step``): the last step
    of the equal-step configurations, and for ``scratch_equal_compute`` the later step at which
    it has had the pre-training steps too, so that its row is the equal-compute comparison its
    name promises. ``at`` reads every configuration at that one step instead.
    """
    done = ~np.isnan(ds.vrmse).any("seed")
    common = int(ds.eval_step.where(done.sel(config="scratch"), drop=True).max())
    if at is None:
        step = xr.DataArray([int(ds.eval_step.where(done.sel(config=c), drop=True).max()) for c in ds.config.values],
                            coords={"config": ds.config}, dims="config")
    else:
        step = xr.full_like(ds.config, int(at), dtype=int)
    v = ds.vrmse.sel(eval_step=step).drop_vars("eval_step")
    mean, std = v.mean("seed"), v.std("seed", ddof=1) if v.sizes["seed"] > 1 else v.std("seed")
    base = float(mean.sel(config="scratch"))
    return xr.Dataset({"vrmse_mean": mean, "vrmse_std": std, "reduction_percent": 100 * (1 - mean / base), "step": step},
                      attrs={"eval_step": int(at) if at is not None else common})
