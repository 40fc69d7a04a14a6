"""Estimated minutes and peak memory of every chapter at each profile on one H100-class GPU.

There is no GPU where this is written, so the GPU time is a model, not a measurement:

1. **Per training step**, on the CPU, at batch 1 (everything but the kernel count is linear in the
   batch and is scaled up to the preset's batch), one forward and backward pass of the chapter's
   model is run under :class:`torch.utils.flop_counter.FlopCounterMode` (matmul/convolution FLOPs)
   and a dispatch mode that counts aten operations (one kernel each) and the bytes they write.
2. **GPU seconds per step** = ``kernels * LAUNCH + FLOPs / SUSTAINED_FLOPS + 3 * bytes / SUSTAINED_BW``
   with ``LAUNCH`` = 10 us per kernel (eager PyTorch, Python dispatch included), ``SUSTAINED_FLOPS``
   = 10 TFLOP/s (15 % of the H100 SXM's 67 TFLOP/s fp32: the library runs in float32, without TF32,
   autocast or torch.compile) and ``SUSTAINED_BW`` = 1.0 TB/s (30 % of 3.35 TB/s; each written byte
   counted as read twice more). The three terms are added, not maxed: conservative.
   ``OPTIMISER_KERNELS`` (= 40) kernels per step are added for AdamW (foreach) and gradient clipping.
3. **Data generation**: one call of :func:`physfm.data.pde.generate` per system, grid and
   options, run on the CPU at batch 1 for 2 and 3 frames under the same counter, gives kernels
   and bytes per frame and a fixed part; a chunk of ``CHUNK`` (= 8, the streams' chunk)
   trajectories launches the same kernels as one, with 8 times the bytes. The trajectories each
   chapter generates (buffers, their refreshes for the crops or windows read, held-out sets) are
   counted from its presets, and priced like a step.
4. **Per chapter**: the steps of every training run (arms x seeds x map points, as the experiment
   modules lay them out) times the seconds per step, plus data generation, all times
   ``OVERHEAD`` (= 1.5) for evaluation, rollouts and figures; the metrics chapter, which trains
   and generates nothing, by the bytes its metrics move.
5. **Peak memory** = 16 bytes per parameter (weights, gradient, two AdamW moments) + the bytes the
   forward pass writes at the preset's batch (everything kept for the backward pass: an upper
   bound) + the device-resident data (trajectory buffers, held-out sets) of the largest run.

    PYTHONPATH=src python benchmarks/gpu_budget.py [--profiles gpu paper] [--chapters pdefm ...]

prints a table and writes ``benchmarks/gpu_budget.json``; ``--markdown`` prints the table of
that file that ``README.md`` and ``book/running.md`` show (a test keeps them equal, and checks
that the file was made from the presets as they are).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from physfm.profiles import PRESETS, resolve

LAUNCH = 10e-6  # seconds per kernel
SUSTAINED_FLOPS = 10e12  # FLOP/s, float32
SUSTAINED_BW = 1.0e12  # bytes/s
OPTIMISER_KERNELS = 40
OVERHEAD = 1.5
CHUNK = 8  # trajectories per generator call in the streams
#: profiles whose data generation is priced (probing the generator on the CPU takes minutes per
#: profile; at ``paper`` training dominates, and its times are lower bounds)
GENERATION_PRICED = ("gpu",)
BUDGET_MIN = 8.0
GPU_MEMORY_GB = 80.0

_SKIP = {
    "aten.detach.default",
    "aten.view.default",
    "aten._unsafe_view.default",
    "aten.t.default",
    "aten.expand.default",
    "aten.permute.default",
    "aten.transpose.int",
    "aten.unsqueeze.default",
    "aten.squeeze.dim",
    "aten.alias.default",
    "aten.slice.Tensor",
    "aten.select.int",
    "aten.as_strided.default",
    "aten.reshape.default",
    "aten.split.Tensor",
    "aten.unbind.int",
    "aten.split_with_sizes.default",
}


class _Ops(TorchDispatchMode):
    """Counts aten operations that launch a kernel (views excluded) and the bytes they write."""

    def __init__(self):
        super().__init__()
        self.kernels = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if str(func) not in _SKIP:
            self.kernels += 1
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
        return out


def step_cost(
    model: torch.nn.Module, loss: Callable[[torch.nn.Module, int], torch.Tensor], batch: int, probe: int = 1
) -> dict[str, float]:
    """FLOPs, kernels, bytes written (forward and backward) and forward bytes of one step at
    ``batch``, measured at ``probe`` and scaled linearly in the batch."""
    ops_f, ops_b = _Ops(), _Ops()
    with FlopCounterMode(display=False) as fc:
        with ops_f:
            value = loss(model, probe)
        with ops_b:
            value.backward()
    scale = batch / probe
    params = sum(p.numel() for p in model.parameters())
    return {
        "flops": fc.get_total_flops() * scale,
        "kernels": ops_f.kernels + ops_b.kernels + OPTIMISER_KERNELS,
        "bytes": (ops_f.bytes + ops_b.bytes) * scale,
        "forward_bytes": ops_f.bytes * scale,
        "parameters": params,
    }


def step_seconds(c: dict[str, float]) -> float:
    return c["kernels"] * LAUNCH + c["flops"] / SUSTAINED_FLOPS + 3 * c["bytes"] / SUSTAINED_BW


def _memory(c: dict[str, float], data_bytes: float = 0.0) -> float:
    return 16 * c["parameters"] + c["forward_bytes"] + data_bytes


class Estimate:
    """Training runs of a chapter: ``add(name, steps, runs, cost)``; data-only parts with ``extra``."""

    def __init__(self, profile: str = "gpu"):
        self.priced = profile in GENERATION_PRICED
        self.parts: list[dict] = []
        self.peak = 0.0
        self.notes: dict[str, float] = {}

    def add(self, name: str, cost: dict[str, float], steps: int, runs: int = 1, data_bytes: float = 0.0) -> None:
        s = step_seconds(cost)
        self.parts.append(
            {
                "part": name,
                "runs": runs,
                "steps": steps,
                "ms_per_step": 1e3 * s,
                "gflop_per_step": cost["flops"] / 1e9,
                "kernels_per_step": cost["kernels"],
                "minutes": runs * steps * s * OVERHEAD / 60,
            }
        )
        self.peak = max(self.peak, _memory(cost, data_bytes))

    def generation(
        self,
        name: str,
        systems: dict[str, dict],
        grid: int,
        frames: int,
        trajectories: float,
        dims: int = 2,
        resident: float = 0.0,
    ) -> None:
        """``trajectories`` trajectories drawn evenly from ``systems``, generated ``CHUNK`` at a time."""
        self.peak = max(self.peak, resident)
        if not self.priced:
            return
        costs = [_generate_cost(s, o, grid, dims, frames) for s, o in systems.items()]
        chunks = math.ceil(trajectories / CHUNK)
        sec = chunks * sum(c["kernels"] * LAUNCH + 3 * c["bytes"] / SUSTAINED_BW for c in costs) / len(costs)
        self.parts.append(
            {
                "part": f"generate {name}",
                "runs": 1,
                "trajectories": int(trajectories),
                "chunks": chunks,
                "kernels_per_chunk": sum(c["kernels"] for c in costs) / len(costs),
                "minutes": sec * OVERHEAD / 60,
            }
        )

    def bandwidth(self, name: str, bytes_moved: float, kernels: int, resident: float) -> None:
        s = 3 * bytes_moved / SUSTAINED_BW + kernels * LAUNCH
        self.parts.append({"part": name, "runs": 1, "steps": kernels, "minutes": s * OVERHEAD / 60})
        self.peak = max(self.peak, resident)

    def result(self) -> dict:
        return {"minutes": sum(p["minutes"] for p in self.parts), "peak_gb": self.peak / 1e9, **self.notes, "parts": self.parts}


F32 = 4

_GEN: dict[str, dict[str, float]] = {}


def _generate_cost(system: str, options: dict, grid: int, dims: int, frames: int) -> dict[str, float]:
    """Kernels and bytes of one generator call of ``CHUNK`` trajectories of ``frames`` frames."""
    from physfm.data.spec import specs

    spec = specs({system: options})[system]
    key = json.dumps([spec.as_dict(), grid, dims], sort_keys=True, default=str)
    if key not in _GEN:
        probes = {}
        for fr in (2, 3):
            ops = _Ops()
            with ops:
                spec.generate(1, (grid,) * dims, fr, generator=torch.Generator().manual_seed(0))
            probes[fr] = (ops.kernels, ops.bytes)
        (k2, b2), (k3, b3) = probes[2], probes[3]
        _GEN[key] = {
            "fixed_kernels": k2 - 2 * (k3 - k2),
            "kernels_per_frame": k3 - k2,
            "fixed_bytes": b2 - 2 * (b3 - b2),
            "bytes_per_frame": b3 - b2,
        }
    g = _GEN[key]
    return {
        "kernels": max(g["fixed_kernels"] + g["kernels_per_frame"] * frames, 1),
        "bytes": CHUNK * max(g["fixed_bytes"] + g["bytes_per_frame"] * frames, 0),
        "flops": 0.0,
    }


def stream_trajectories(size: int, refresh: float, refresh_every: int, reads: int) -> int:
    """Trajectories a refreshed buffer generates: ``size``, and ``refresh * size`` every
    ``refresh_every`` items read (:class:`physfm.data.streams.TrajectoryBuffer`)."""
    return size + (round(refresh * size) * (reads // refresh_every) if refresh and refresh_every else 0)


def _systems_of(systems) -> dict[str, dict]:
    return {k: dict(v or {}) for k, v in systems.items()} if isinstance(systems, dict) else {k: {} for k in systems}


# -- one function per chapter -------------------------------------------------------------------


def _tokeniser(t):
    from physfm.nn.tokeniser import Tokeniser

    return Tokeniser(
        spatial_dims=2,
        channels=tuple(t["channels"]),
        latent=t["latent"],
        blocks=t["blocks"],
        patch=t["patch"],
        time_patch=t["time_patch"],
        stride=max(t["strides"]),
        time_stride=max(t["time_strides"]),
    )


def _tokeniser_cost(t, batch, *, spatial_dims=2, crop=None, crop_t=None, stride=None, time_stride=None):
    from physfm.nn.tokeniser import Tokeniser

    torch.manual_seed(0)
    tok = Tokeniser(
        spatial_dims=spatial_dims,
        channels=tuple(t["channels"]),
        latent=t["latent"],
        blocks=t["blocks"],
        patch=t["patch"],
        time_patch=t.get("time_patch", 1),
        stride=max(t["strides"]) if "strides" in t else t["stride"],
        time_stride=max(t.get("time_strides", (1,))),
    )
    crop = crop or t["crop"]
    crop_t = crop_t or t["crop_t"]
    s = stride or min(t.get("strides", (t.get("stride", 1),)))
    ts = time_stride or min(t.get("time_strides", (1,)))

    def loss(m, b):
        x = torch.randn(b, 1, crop_t, *(crop,) * spatial_dims)
        return (m(x, s, ts) - x).square().mean()

    return step_cost(tok, loss, batch)


def tokeniser(cfg) -> dict:
    e = Estimate(cfg.profile)
    systems = len(cfg["systems"])
    n = stream_trajectories(cfg["buffer"], cfg["refresh"], cfg["refresh_every"], cfg["steps"] * cfg["batch"])
    e.generation("crop stream", _systems_of(cfg["systems"]), cfg["grid"], cfg["frames"], n + cfg["val_crops"] // 2)
    n3 = stream_trajectories(6, 0.25, 6, cfg["steps_3d"] * 4)
    e.generation("3D crop stream", _systems_of(("diffusion", "advection_diffusion", "burgers")), cfg["volume"], 5, n3, dims=3)
    data = systems * cfg["buffer"] * cfg["frames"] * cfg["grid"] ** 2 * 2 * F32
    e.add("2D tokeniser (finest strides)", _tokeniser_cost(cfg, cfg["batch"]), cfg["steps"], data_bytes=data)
    v = cfg["volume"]
    t3 = {"channels": (8, 32), "latent": 4, "blocks": 1, "patch": 2, "time_patch": 1, "stride": 2}
    e.add("3D tokeniser", _tokeniser_cost(t3, 4, spatial_dims=3, crop=v, crop_t=5, stride=2, time_stride=1), cfg["steps_3d"])
    return e.result()


def compression(cfg) -> dict:
    tok = resolve("tokeniser", cfg.profile)
    e = Estimate(cfg.profile)
    n = stream_trajectories(tok["buffer"], tok["refresh"], tok["refresh_every"], cfg["fixed_steps"] * tok["batch"])
    e.generation("crop stream", _systems_of(tok["systems"]), tok["grid"], tok["frames"], n + cfg["eval_crops"])
    # the fixed-ratio tokeniser has the flexible one's widths at its coarsest ratio
    e.add(
        "fixed-ratio tokeniser",
        _tokeniser_cost(tok, tok["batch"], stride=max(tok["strides"]), time_stride=max(tok["time_strides"])),
        cfg["fixed_steps"],
    )
    return e.result()


def pretraining(cfg) -> dict:
    from physfm.experiments import pretraining as pre

    e = Estimate(cfg.profile)
    fields = 2  # Kolmogorov flow: vorticity and the passive field the stream carries at most
    regimes = pre.regimes(cfg)
    focus = pre.focus_regime(cfg)
    seen: set = set()
    for name, rc in regimes.items():
        if name == "base":
            arms, seeds = cfg["arms"], cfg["seeds"]
        elif name == focus:
            arms, seeds = cfg["focus_arms"], cfg["seeds"]
        else:
            arms, seeds = cfg["map_arms"], cfg["map_seeds"]
        tok = pre._fresh_tokeniser(rc, 0)
        model = pre.build(pre.ARMS["scratch"], tok, fields, rc, seed=0)
        g = rc["grid"]

        def dyn(m, b, rc=rc):
            return m.loss(torch.randn(b, fields, rc["window"], rc["grid"], rc["grid"]))

        cost = step_cost(model, dyn, rc["batch"])
        data = rc["buffer"] * rc["frames"] * g * g * fields * F32 + rc["val_windows"] * rc["window"] * g * g * fields * F32
        extra = pre.equal_compute_steps(rc, fields)
        n_eq = sum(a == "scratch_equal_compute" for a in arms)
        target = {rc["target"]: _systems_of(rc["systems"])[rc["target"]]}
        others = {k: v for k, v in _systems_of(rc["systems"]).items() if k != rc["target"]}
        if name == "base":  # the held-out data, and one stream per seed shared by every regime's jobs
            longest = (rc["dyn_steps"] + extra) * rc["batch"]
            n = stream_trajectories(rc["buffer"], rc["refresh"], 4 * rc["buffer"], longest)
            e.generation(
                "dynamics streams and held-out data",
                target,
                g,
                rc["frames"],
                len(cfg["seeds"]) * n + rc["val_windows"] + rc["val_rollouts"],
            )
        if rc["trajectories"]:
            e.generation(f"fixed trajectories [{name}]", target, g, rc["frames"], rc["trajectories"] * len(seeds))
        e.add(f"dynamics [{name}]", cost, rc["dyn_steps"], runs=len(arms) * len(seeds), data_bytes=data)
        if n_eq:
            e.add(f"equal-compute extra [{name}]", cost, extra, runs=n_eq * len(seeds))
        key = (rc["pre_steps"], tuple(rc["channels"]), rc["latent"], rc["patch"], rc["stride"], g, rc["window"])
        if key not in seen:  # one in-domain and one cross-domain tokeniser per distinct recipe
            seen.add(key)
            tokc = pre._fresh_tokeniser(rc, 0)

            def rec(m, b, rc=rc):
                x = torch.randn(b, 1, rc["window"], rc["grid"], rc["grid"])
                return (m(x, rc["stride"], 1) - x).square().mean()

            e.add(f"tokeniser pre-training [{name}]", step_cost(tokc, rec, rc["pre_batch"]), rc["pre_steps"], runs=2)
            n = stream_trajectories(rc["buffer"], rc["refresh"], rc["buffer"], rc["pre_steps"] * rc["pre_batch"])
            e.generation(f"in-domain crops [{name}]", target, g, rc["frames"], n + rc["val_windows"] // 2)
            e.generation(f"cross-domain crops [{name}]", others, g, rc["frames"], n + rc["val_windows"] // 2)
    return e.result()


def finetuning(cfg) -> dict:
    from physfm.experiments import finetuning as ft
    from physfm.experiments import pretraining as pre_mod

    p = resolve("pretraining", cfg.profile)
    e = Estimate(cfg.profile)
    tok = pre_mod._fresh_tokeniser(p, 0)
    g, fields = p["grid"], 1
    both = {k: v for k, v in _systems_of(p["systems"]).items() if k in (cfg["seen"], p["target"])}
    e.generation(
        "training and held-out sets",
        both,
        g,
        p["frames"],
        2 * (cfg["train_trajectories"] + cfg["val_windows"] + cfg["val_rollouts"]),
    )
    for arm in cfg["arms"]:
        model = ft.build(arm, tok, fields, cfg, stride=p["stride"], seed=0)

        def loss(m, b):
            return m.loss(torch.randn(b, fields, p["window"], g, g))

        data = 2 * (cfg["train_trajectories"] * p["frames"] + cfg["val_windows"] * p["window"]) * g * g * fields * F32
        # two systems (the seen one and the pre-training chapter's target), every seed
        e.add(
            f"fine-tuning [{arm}]",
            step_cost(model, loss, cfg["batch"]),
            cfg["dyn_steps"],
            runs=2 * len(cfg["seeds"]),
            data_bytes=data,
        )
    return e.result()


def pdefm(cfg) -> dict:
    from physfm.experiments import pdefm as pf
    from physfm.nn.pdefm import pdefm_loss

    e = Estimate(cfg.profile)
    g, W = cfg["grid"], cfg["window"]
    n_sys = len(cfg["systems"])
    # every system's pool, refreshed a chunk every refresh_every windows it serves (its share
    # p_i ~ n_i^(1/T) of the batches), once per seed; and the validation trajectories
    weights = [n ** (1 / cfg["temperature"]) for n in cfg["sizes"]]
    served = [cfg["steps"] * cfg["batch"] * w / sum(weights) for w in weights]
    per_seed = (
        sum(stream_trajectories(cfg["pool"], cfg["chunk"] / cfg["pool"], cfg["refresh_every"], int(r)) for r in served)
        if cfg["refresh_every"]
        else n_sys * cfg["pool"]
    )
    e.generation(
        "pools and held-out data",
        _systems_of(cfg["systems"]),
        g,
        cfg["frames"],
        len(cfg["seeds"]) * per_seed + n_sys * 2 * cfg["val_trajectories"],
    )
    arms = pf.arms_of(cfg)
    pool = n_sys * cfg["pool"] * cfg["frames"] * g * g * 2 * F32
    for name, arm in arms.items():
        if name.startswith("without_") and name != next(a for a in arms if a.startswith("without_")):
            continue
        model = pf.build_model(cfg, {"a": 2}, backbone=arm.backbone, spectral_token=arm.spectral_token)

        def loss(m, b):
            x = torch.randn(b, 2, W, g, g)
            coef = torch.zeros(b, cfg["n_coefficients"])
            dt = torch.ones(b)
            return pdefm_loss(m(x[:, :, :-1], "a", coef, dt), x[:, :, 1:], spectral_weight=cfg["spectral_weight"])

        runs = len(cfg["seeds"]) * (len(cfg["held_out"]) if name.startswith("without_") else 1)
        e.add(
            f"training [{'without_<system>' if name.startswith('without_') else name}]",
            step_cost(model, loss, cfg["batch"]),
            cfg["steps"],
            runs=runs,
            data_bytes=pool,
        )
    # backbone timing: forward+backward of each backbone at every length, ~10 repeats each
    # one (batch, length, 2 dim, d_state) float32 tensor of the scan's states at the longest length
    e.notes["scan_state_buffer_gb"] = (
        cfg["timing_batch"] * max(cfg["timing_lengths"]) * 2 * cfg["dim"] * cfg["d_state"] * F32 / 1e9
    )
    for backbone in ("mamba", "transformer"):
        net = pf.build_model(cfg, {"a": 1}, backbone=backbone).backbone
        for L in cfg["timing_lengths"]:
            probe = min(L, 256)

            def tl(m, b, L=L, probe=probe):
                return m(torch.randn(b, probe, cfg["dim"])).square().mean()

            c = step_cost(net, tl, cfg["timing_batch"])
            # linear in length for both (attention is quadratic: scale its FLOPs by L/probe again)
            k = L / probe
            c = {
                **c,
                "flops": c["flops"] * k * (k if backbone == "transformer" else 1),
                "bytes": c["bytes"] * k,
                "forward_bytes": c["forward_bytes"] * k,
            }
            e.add(f"timing {backbone} L={L}", c, 12)
    return e.result()


def scan(cfg) -> dict:
    from physfm.experiments import scan as sc

    e = Estimate(cfg.profile)
    e.generation(
        "1D trajectories", {"advection_diffusion": {}}, cfg["grid"], cfg["frames"], cfg["n_train"] + cfg["n_val"], dims=1
    )
    for name, (_, selective) in sc.HOLD_MODELS.items():
        model = sc.hold_model(cfg, selective=selective, seed=0)

        def hold(m, b):
            return m(torch.randn(b, cfg["hold_length"], 2)).square().mean()

        e.add(f"hold task [{name}]", step_cost(model, hold, cfg["hold_batch"]), cfg["hold_steps"])
    dyn = sc.LatentDynamics(2 * cfg["modes"], cfg["dyn_width"], cfg["dyn_layers"], d_state=cfg["dyn_state"])

    def dl(m, b):
        z = torch.randn(b, cfg["frames"], 2 * cfg["modes"])
        return (m(z[:, :-1]) - z[:, 1:]).square().mean()

    for selective in ("selective", "lti"):
        e.add(f"latent dynamics [{selective}]", step_cost(dyn, dl, cfg["dyn_batch"]), cfg["dyn_steps"])
    # the timing figure: every way at every length, one warm-up and `repeats` runs; the loop ways
    # launch kernels in proportion to the length, so kernels and bytes are measured at two short
    # lengths and extrapolated linearly
    g = torch.Generator().manual_seed(0)
    for way, (_, fn) in sc.WAYS.items():
        probes = {}
        for L in (64, 128):
            args = [a.detach().requires_grad_(a.is_floating_point()) for a in sc.scan_inputs(L, g)]
            probes[L] = step_cost(torch.nn.Linear(1, 1), lambda m, b, args=args, fn=fn: fn(*args).square().mean(), 1)
        for L in cfg["lengths"]:
            c = {k: probes[64][k] + (probes[128][k] - probes[64][k]) * (L - 64) / 64 for k in probes[64]}
            e.add(f"timing {way} L={L}", c, cfg["repeats"] + 1)
    return e.result()


def fno(cfg) -> dict:
    from physfm.experiments import fno as fe

    e = Estimate(cfg.profile)
    e.generation("Burgers pairs", {"burgers": {}}, cfg["grid"], 2, cfg["n_train"] + cfg["n_test"])
    model = fe.operator_model(cfg)
    g = cfg["grid"]

    def op(m, b):
        return m(torch.randn(b, 2, g, g)).square().mean()

    e.add(
        "Burgers operator",
        step_cost(model, op, cfg["batch"]),
        cfg["steps"],
        data_bytes=(cfg["n_train"] + cfg["n_test"]) * 4 * g * g * F32 * 2,
    )
    tok = resolve("tokeniser", cfg.profile)
    coarse, st = tok["crop"], max(tok["strides"])
    crops = torch.zeros(1, 1, tok["crop_t"], coarse, coarse)
    with torch.no_grad():
        z1 = _tokeniser(tok).encode(crops, st, 1)  # the latent layout the decoder reads
    dec = fe.decoder_model(cfg, tok["latent"])

    def dl(m, b):
        return m(torch.randn(b, *z1.shape[1:]), (coarse, coarse)).square().mean()

    c = step_cost(dec, dl, cfg["batch"])
    e.add(
        "FNO decoder",
        c,
        cfg["decoder_steps"],
        data_bytes=(cfg["decoder_crops"] + cfg["decoder_test"]) * 5 * (2 * coarse) ** 2 * F32,
    )
    return e.result()


def generating(cfg) -> dict:
    from physfm.experiments import generating as ge

    e = Estimate(cfg.profile)
    e.generation("training and truth sets", {cfg["system"]: {}}, cfg["grid"], cfg["frames"], cfg["n_train"] + 2 * cfg["n_eval"])
    tok = resolve("tokeniser", cfg.profile)
    with torch.no_grad():  # latents (n, latent, H/s, W/s), as physfm.experiments.generating.LatentSpace makes them
        z1 = _tokeniser(tok).encode(torch.zeros(1, 1, 1, cfg["grid"], cfg["grid"]), cfg["stride"], 1)[:, :, 0]
    net = ge.velocity_model(cfg, tok["latent"])
    from physfm.nn import flow

    def fm(m, b):
        return flow.flow_matching_loss(m, torch.randn(b, *z1.shape[1:]))

    c = step_cost(net, fm, cfg["batch"])
    e.add("flow matching", c, cfg["steps"], data_bytes=cfg["n_train"] * cfg["frames"] * cfg["grid"] ** 2 * 2 * F32)
    # sampling: n_eval fields, sample_steps Heun steps (2 forwards each, a forward ~1/3 of a step)
    e.add(
        "sampling",
        {**c, "flops": c["flops"] / 3, "bytes": c["bytes"] / 3},
        math.ceil(2 * cfg["sample_steps"] * cfg["n_eval"] / cfg["batch"]) * 3,
    )
    return e.result()


def data(cfg) -> dict:
    """No training: pseudo-spectral solvers. Each solver step reads and writes every field ~20
    times (FFTs, nonlinear terms, RK stages); ~200 solver steps per saved frame."""
    e = Estimate(cfg.profile)
    if e.priced:
        from physfm.data.pde import SYSTEMS

        e.generation(
            "2D galleries and throughput",
            {k: {} for k in SYSTEMS},
            cfg["grid"],
            cfg["frames"],
            len(SYSTEMS) * (cfg["batch"] + 1),
            resident=cfg["batch"] * cfg["frames"] * cfg["grid"] ** 2 * 3 * F32 * 4,
        )
        e.generation(
            "3D volume",
            {"gray_scott": {}, "burgers": {}},
            cfg["volume"],
            2,
            2,
            dims=3,
            resident=2 * 3 * cfg["volume"] ** 3 * F32 * 8,
        )
        return e.result()
    g, v, fr = cfg["grid"], cfg["volume"], cfg["frames"]
    per_step_2d = 20 * 2 * g * g * 8 * cfg["batch"]  # complex64 spectra of 2 fields
    per_step_3d = 20 * 3 * v**3 * 8
    steps = 200 * fr
    n_systems = 7
    e.bandwidth(
        "2D galleries and throughput", n_systems * steps * per_step_2d, n_systems * steps * 40, resident=per_step_2d / 20 * fr * 4
    )
    e.bandwidth("3D volume", steps * per_step_3d, steps * 40, resident=per_step_3d / 20 * fr * 4)
    return e.result()


def metrics(cfg) -> dict:
    """No training: spectra and metrics of ``n_samples`` random ``n_grid^2`` fields at each shift."""
    e = Estimate(cfg.profile)
    n = cfg["n_grid"] ** 2
    points = cfg["n_samples"] * (len(cfg["shifts"]) + 20)
    e.bandwidth("metrics of random fields", points * 40 * n * 8, points * 60, resident=cfg["n_samples"] * n * 8 * 4)
    return e.result()


def presets_digest(chapters, profiles=("gpu", "paper")) -> str:
    """A digest of the presets an estimate was made from (those of ``profiles`` of ``chapters``)."""
    text = json.dumps({c: {p: PRESETS[c][p] for p in profiles} for c in sorted(chapters)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def markdown_table(estimate: dict) -> str:
    """The per-chapter table of an estimate (``gpu_budget.json``): minutes and GB at gpu, hours and GB at paper."""
    rows = ["| chapter | `gpu`: minutes | `gpu`: peak GB | `paper`: hours | `paper`: peak GB |", "|---|---:|---:|---:|---:|"]
    for chapter, row in estimate["chapters"].items():
        g, p = row["gpu"], row["paper"]
        hours = f"{p['minutes'] / 60:.1f}" if p["minutes"] >= 6 else "< 0.1"
        rows.append(f"| {chapter} | {g['minutes']:.1f} | {g['peak_gb']:.1f} | {hours} | {p['peak_gb']:.1f} |")
    return "\n".join(rows)


def well(cfg) -> dict:
    """The Well chapter on the data set its gpu and paper parameter files name,
    ``turbulent_radiative_layer_2D``: 4 fields (density, pressure, two velocity components) on a
    128 x 384 grid, read from disk (no generation). The tokeniser is the tokeniser chapter's, trained
    there; the next-frame runs on finite data dominate."""
    from physfm.nn.dynamics import NextFrameModel

    e = Estimate(cfg.profile)
    torch.manual_seed(0)
    tok = _tokeniser(resolve("tokeniser", cfg.profile))
    fields, shape = 4, (128, 384)
    model = NextFrameModel(tok, fields, stride=cfg["stride"], width=cfg["width"], blocks=cfg["processor_blocks"])

    def loss(m, b):
        return m.loss(torch.randn(b, fields, cfg["window"], *shape))

    data = (cfg["val_windows"] + cfg["train_windows"]) * cfg["window"] * fields * math.prod(shape) * F32
    e.add(
        "next-frame models on finite data",
        step_cost(model, loss, cfg["batch"]),
        cfg["dyn_steps"],
        runs=len(cfg["train_trajectories"]) * len(cfg["seeds"]),
        data_bytes=data,
    )
    return e.result()


CHAPTERS = {
    "data": data,
    "metrics": metrics,
    "tokeniser": tokeniser,
    "compression": compression,
    "pretraining": pretraining,
    "finetuning": finetuning,
    "pdefm": pdefm,
    "scan": scan,
    "fno": fno,
    "generating": generating,
    "well": well,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["gpu", "paper"])
    ap.add_argument("--chapters", nargs="+", default=[c for c in CHAPTERS if c in PRESETS])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    ap.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if a chapter's gpu estimate exceeds {BUDGET_MIN:g} min or {GPU_MEMORY_GB:g} GB",
    )
    ap.add_argument("--markdown", action="store_true", help="print the table of --out (no estimate is made)")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(args.out.read_text())))
        return 0
    missing = sorted(set(PRESETS) - set(CHAPTERS))
    if missing:
        print(f"no estimate for the chapters {missing}: add a function to benchmarks/gpu_budget.py")
    torch.set_num_threads(1)
    out = {
        "assumptions": {
            "launch_us": LAUNCH * 1e6,
            "sustained_tflops_fp32": SUSTAINED_FLOPS / 1e12,
            "sustained_tb_per_s": SUSTAINED_BW / 1e12,
            "optimiser_kernels": OPTIMISER_KERNELS,
            "overhead": OVERHEAD,
            "budget_minutes": BUDGET_MIN,
            "chunk": CHUNK,
            "generation_priced": list(GENERATION_PRICED),
        },
        "chapters": {},
    }
    print(f"{'chapter':<12}" + "".join(f"{p + ' min':>12}{p + ' GB':>10}" for p in args.profiles))
    for chapter in args.chapters:
        row = {}
        for profile in args.profiles:
            row[profile] = CHAPTERS[chapter](resolve(chapter, profile))
        out["chapters"][chapter] = row
        print(
            f"{chapter:<12}" + "".join(f"{row[p]['minutes']:>12.1f}{row[p]['peak_gb']:>10.2f}" for p in args.profiles), flush=True
        )
    out["no_estimate"] = missing
    out["presets_digest"] = presets_digest(out["chapters"])
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    over = [
        c
        for c, row in out["chapters"].items()
        if "gpu" in row and (row["gpu"]["minutes"] > BUDGET_MIN or row["gpu"]["peak_gb"] > GPU_MEMORY_GB)
    ]
    if over:
        print(f"over the gpu budget ({BUDGET_MIN:g} min, {GPU_MEMORY_GB:g} GB): {over}")
    return 1 if args.check and (over or missing) else 0


if __name__ == "__main__":
    sys.exit(main())
