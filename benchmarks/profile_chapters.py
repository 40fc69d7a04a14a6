"""Where each chapter's time goes at the cpu profile, against what this machine allows.

Every chapter's experiment (the ``run``/``run_*`` functions of :mod:`physfm.experiments`, the
tokeniser pre-training of :func:`physfm.training.pretrain_tokeniser`) runs here as the book runs
it, at the ``cpu`` preset with ``workers=1``, but with every step count (``steps``, ``dyn_steps``,
``pre_steps``, ``hold_steps``, ``decoder_steps``, ``steps_3d``, ``fixed_steps`` and ``warmup``,
also inside the pre-training chapter's map points) scaled by ``--fraction``. Evaluation intervals
are kept, so evaluations per training step stay as in the full run; what does not scale with the
steps (held-out sets, final scores, tokeniser evaluation, timing benchmarks) weighs more here
than in a full run.

How time is attributed, without touching the library: the entry points of each category are
wrapped at run time (the wrappers are removed afterwards) and a stack of categories is kept; every
interval between two wrapper events is charged to the innermost category open (so nested time is
never counted twice):

- ``generation``: every function and method defined in :mod:`physfm.data.pde` (the PDE solver);
- ``batches``: drawing a training batch (``next`` on the iterator :func:`physfm.training.train`
  reads), less the generation inside it (crops, windows, normalisation, ring-buffer bookkeeping);
- ``forward``: the ``loss_fn`` that :func:`~physfm.training.train` calls (model forward + loss);
- ``backward``: ``torch.Tensor.backward``, ``torch.autograd.backward`` and ``torch.autograd.grad``;
- ``optimiser``: ``Optimizer.step`` (global step pre/post hooks of ``torch.optim``);
- ``evaluation``: the ``evaluate`` callback of :func:`~physfm.training.train`,
  ``EvalData.scores``/``rollout``/``baselines``, ``harness.eval_data``,
  ``training.crops_by_system``, ``training.evaluate_tokeniser``, and the generative chapter's
  sampler and statistics (``flow.sample``, ``statistics.statistics_distances``/``nearest_distance``),
  less generation inside them;
- ``flop count``: the first step of every training run, which runs under
  ``torch.utils.flop_counter.FlopCounterMode`` (slower than a plain step, so kept apart);
- ``loop``: the rest of the training loop (zero_grad, gradient clipping, learning rate, the loss's
  ``.item()``, progress bar, checkpoints);
- ``timing``: a chapter's own speed measurements (``scan.time_scans``, ``pdefm.backbone_timing``),
  with everything they call;
- ``other``: everything else in the chapter (model building, caches, summaries, timing benchmarks'
  own bookkeeping, Python overhead between the wrapped calls).

Achieved GFLOP/s of training: the flops of one forward+backward (FlopCounterMode: matrix
products, convolutions, attention; FFTs are not counted) times the steps after the first, over
the forward and backward time of those steps, against the GEMM ceiling. The ceilings (GEMM,
FFT GFLOP/s, copy bandwidth) come from ``benchmarks/bench_fno.py``'s ``ceilings()``, measured
before and after the chapters; the best of the two is kept.

The machine may be shared: the load average before and after is recorded, and the times are of
one run (not the best of several).

    python benchmarks/profile_chapters.py [--fraction 0.1] [--chapters tokeniser,scan,...]
        [--budget SECONDS] [--out benchmarks/profile_chapters.json]

Use a fresh ``PHYSFM_CACHE`` so that the tokeniser pre-training is measured, not read back.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import inspect
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fno import ceilings  # noqa: E402

CATEGORIES = (
    "generation",
    "batches",
    "forward",
    "backward",
    "optimiser",
    "evaluation",
    "flop count",
    "loop",
    "timing",
    "other",
)
STEP_KEYS = ("steps", "dyn_steps", "pre_steps", "hold_steps", "decoder_steps", "steps_3d", "fixed_steps", "warmup")
CHAPTERS = ("tokeniser", "compression", "scan", "fno", "generating", "pdefm", "pretraining", "finetuning")
LEFT_OUT = {
    "data": "no experiment function: the chapter's cells call the generator directly (bench_generator.py times it)",
    "metrics": "no experiment function: the chapter's cells evaluate metrics on random fields, no training",
}


class Attributor:
    """A stack of categories; the time between two events goes to the innermost one open.

    ``times`` maps the stack (outermost first, repeats of the same category merged) to seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.stack: list[str] = []
        self.times: dict[tuple[str, ...], float] = defaultdict(float)
        self.last = clock()

    def reset(self) -> None:
        """Forget every time so far; the next interval starts now."""
        self.times.clear()
        self.last = self.clock()

    def _charge(self) -> None:
        now = self.clock()
        self.times[tuple(self.stack)] += now - self.last
        self.last = now

    def push(self, category: str) -> None:
        self._charge()
        self.stack.append(category)

    def pop(self) -> None:
        self._charge()
        self.stack.pop()

    def wrap(self, category: str, fn: Callable) -> Callable:
        """``fn`` with ``category`` open while it runs."""

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            self.push(category)
            try:
                return fn(*args, **kwargs)
            finally:
                self.pop()

        wrapped.__profile_original__ = fn
        return wrapped

    def innermost(self, times: dict[tuple[str, ...], float] | None = None) -> dict[str, float]:
        """Seconds per innermost category (the empty stack, and stacks whose innermost is a
        marker such as ``chapter``, count as ``other``; ``training`` as ``loop``); everything
        inside ``timing`` counts as ``timing``."""
        out = dict.fromkeys(CATEGORIES, 0.0)
        for stack, t in (self.times if times is None else times).items():
            top = _merged(stack)[-1] if stack else "other"
            if "timing" in stack:  # a chapter's own speed measurement: all of it, whatever it calls
                top = "timing"
            top = {"training": "loop", "chapter": "other"}.get(top, top)
            out[top if top in out else "other"] += t
        return out

    def training_compute(self) -> float:
        """Forward and backward seconds inside a training loop and outside any evaluation."""
        return sum(
            t
            for s, t in self.times.items()
            if s and s[-1] in ("forward", "backward") and "training" in s and "evaluation" not in s
        )


def _merged(stack: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for c in stack:
        if not out or out[-1] != c:
            out.append(c)
    return tuple(out)


class _Patches:
    """``setattr`` that remembers what it replaced, and puts it all back."""

    def __init__(self):
        self.saved: list[tuple[Any, str, Any]] = []

    def set(self, obj: Any, name: str, value: Any) -> None:
        self.saved.append((obj, name, obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self) -> None:
        for obj, name, value in reversed(self.saved):
            setattr(obj, name, value)
        self.saved.clear()


class _Batches:
    """The batches a training loop reads, each ``next`` timed as ``batches``; every other
    attribute (``state_dict``, ``load_state_dict``, ...) is the wrapped object's."""

    def __init__(self, inner: Any, att: Attributor):
        self._inner, self._att = inner, att

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __iter__(self):
        it = iter(self._inner)
        att = self._att
        while True:
            att.push("batches")
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                att.pop()
            yield item


class Profiler:
    """Installs the wrappers on the library (and torch) and collects times and flops."""

    def __init__(self):
        self.att = Attributor()
        self.patches = _Patches()
        self.runs: list[dict[str, Any]] = []  # one per training loop: steps, flops per step, compute seconds
        self._pending: FlopCounterMode | None = None

    # --- training loop -------------------------------------------------------------------
    def _train(self, train: Callable) -> Callable:
        att = self.att

        @functools.wraps(train)
        def wrapped(model, loss_fn, batches, config, *args, evaluate=None, state=(), desc="training", **kwargs):
            record = {"desc": desc, "steps": 0, "flops_per_step": 0.0}
            first = [True]

            def loss(*a, **k):
                record["steps"] += 1
                if first[0] and self._pending is None:
                    first[0] = False
                    att.push("flop count")
                    mode = FlopCounterMode(display=False)
                    mode.__enter__()
                    self._pending = mode
                    self._pending_record = record
                    try:
                        return loss_fn(*a, **k)
                    except BaseException:
                        self._close_pending()
                        raise
                att.push("forward")
                try:
                    return loss_fn(*a, **k)
                finally:
                    att.pop()

            wrapped_batches = _Batches(batches, att)
            state = [wrapped_batches if o is batches else o for o in state]
            if evaluate is not None:
                evaluate = att.wrap("evaluation", evaluate)
            before = att.training_compute()
            att.push("training")
            try:
                return train(model, loss, wrapped_batches, config, *args, evaluate=evaluate, state=state, desc=desc, **kwargs)
            finally:
                self._close_pending()
                att.pop()
                record["compute_s"] = att.training_compute() - before
                self.runs.append(record)

        return wrapped

    def _close_pending(self) -> None:
        if self._pending is not None:
            mode, self._pending = self._pending, None
            mode.__exit__(None, None, None)
            self._pending_record["flops_per_step"] = float(mode.get_total_flops())
            self.att.pop()  # "flop count"

    def _backward(self, fn: Callable) -> Callable:
        att = self.att

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            if self._pending is not None and att.stack and att.stack[-1] == "flop count":
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._close_pending()
            att.push("backward")
            try:
                return fn(*args, **kwargs)
            finally:
                att.pop()

        return wrapped

    # --- install / remove --------------------------------------------------------------
    def install(self) -> None:
        import physfm.data.pde as pde
        from physfm.eval import statistics
        from physfm.experiments import harness
        from physfm.nn import flow
        from physfm.training import loop
        from physfm.training import tokeniser as training_tokeniser

        replaced: dict[int, Callable] = {}
        # generation: every function and method the solver module defines
        for name, obj in list(vars(pde).items()):
            if inspect.isfunction(obj) and obj.__module__ == pde.__name__:
                replaced[id(obj)] = self.att.wrap("generation", obj)
                self.patches.set(pde, name, replaced[id(obj)])
            elif inspect.isclass(obj) and obj.__module__ == pde.__name__:
                for attr, member in list(vars(obj).items()):
                    if inspect.isfunction(member) and not (attr.startswith("__") and attr not in ("__init__", "__call__")):
                        self.patches.set(obj, attr, self.att.wrap("generation", member))
        # evaluation entry points
        for owner, name in (
            (harness.EvalData, "scores"),
            (harness.EvalData, "rollout"),
            (harness.EvalData, "baselines"),
            (harness, "eval_data"),
            (training_tokeniser, "crops_by_system"),
            (training_tokeniser, "evaluate_tokeniser"),
            (flow, "sample"),
            (statistics, "statistics_distances"),
            (statistics, "nearest_distance"),
        ):
            fn = vars(owner)[name]
            replaced[id(fn)] = self.att.wrap("evaluation", fn)
            self.patches.set(owner, name, replaced[id(fn)])
        from physfm.experiments import pdefm, scan

        for owner, name in ((scan, "time_scans"), (pdefm, "backbone_timing")):
            fn = vars(owner)[name]
            replaced[id(fn)] = self.att.wrap("timing", fn)
            self.patches.set(owner, name, replaced[id(fn)])
        replaced[id(loop.train)] = self._train(loop.train)
        self.patches.set(loop, "train", replaced[id(loop.train)])
        # names imported elsewhere (from physfm.x import f) point at the wrappers too
        for mod in [m for n, m in list(sys.modules.items()) if n.startswith("physfm") and m is not None]:
            for name, obj in list(vars(mod).items()):
                if id(obj) in replaced and replaced[id(obj)] is not obj and callable(obj):
                    self.patches.set(mod, name, replaced[id(obj)])
        # torch: backward, optimiser steps
        self.patches.set(torch.Tensor, "backward", self._backward(torch.Tensor.backward))
        self.patches.set(torch.autograd, "backward", self._backward(torch.autograd.backward))
        self.patches.set(torch.autograd, "grad", self._backward(torch.autograd.grad))
        self._hooks = [
            register_optimizer_step_pre_hook(lambda *a: self.att.push("optimiser")),
            register_optimizer_step_post_hook(lambda *a: self.att.pop()),
        ]

    def remove(self) -> None:
        self.patches.undo()
        for h in self._hooks:
            h.remove()

    def chapter(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """Run ``fn`` with a fresh account; seconds per category, per nesting, and training flops."""
        self.att.reset()
        self.runs = []
        start = time.perf_counter()
        self.att.push("chapter")
        try:
            fn()
        finally:
            self.att.pop()
        wall = time.perf_counter() - start
        seconds = self.att.innermost()
        nested = defaultdict(float)
        for stack, t in self.att.times.items():
            key = " > ".join(c for c in _merged(stack) if c != "chapter") or "other"
            nested[key] += t
        flops = sum(r["flops_per_step"] * max(0, r["steps"] - 1) for r in self.runs)
        compute = sum(r["compute_s"] for r in self.runs)
        return {
            "wall_s": wall,
            "seconds": seconds,
            "nested_seconds": dict(sorted(nested.items(), key=lambda kv: -kv[1])),
            "training_runs": len(self.runs),
            "training_steps": sum(r["steps"] for r in self.runs),
            "training_flops": flops,
            "training_compute_s": compute,
            "training_gflops": flops / compute / 1e9 if compute > 0 else float("nan"),
        }


# --- the chapters ------------------------------------------------------------------------------
SCALED: dict[str, dict[str, tuple[Any, Any]]] = {}  # chapter -> {parameter: (preset, used)}


def scaled(chapter: str, fraction: float, **extra: Any):
    """The chapter's cpu parameters with every step count (also inside nested mappings, as the
    pre-training map's points) scaled by ``fraction`` (at least 1; a warm-up of 0 stays 0)."""
    from physfm.profiles import PRESETS, resolve

    def scale(key, value):
        if key in STEP_KEYS and isinstance(value, int) and not isinstance(value, bool):
            return max(1 if value else 0, round(value * fraction))
        if isinstance(value, dict):
            return {k: scale(k, v) for k, v in value.items()}
        if isinstance(value, tuple) and value and all(isinstance(v, dict) for v in value):
            return tuple(scale(None, v) for v in value)
        return value

    preset = PRESETS[chapter]["cpu"]
    overrides = {k: scale(k, v) for k, v in preset.items()}
    overrides = {k: v for k, v in overrides.items() if v != preset[k]}
    if "workers" in preset:
        overrides["workers"] = 1
    SCALED[chapter] = {k: (preset[k], v) for k, v in overrides.items()}
    return resolve(chapter, "cpu", **overrides, **extra)


def chapter_functions(fraction: float) -> dict[str, Callable[[], Any]]:
    """``chapter -> callable`` running what the chapter's notebook runs (its experiment functions)."""
    from physfm import training
    from physfm.experiments import finetuning, fno, generating, pdefm, pretraining, scan

    shared: dict[str, Any] = {}

    def tokeniser_chapter():
        cfg = scaled("tokeniser", fraction)
        recipe = training.tokeniser_config(cfg)
        tok, _ = training.pretrain_tokeniser(recipe, progress=False)
        held_out = training.crops_by_system(recipe, cfg.eval_crops)
        training.evaluate_tokeniser(tok, held_out, [(s, t) for s in cfg.strides for t in cfg.time_strides])
        shared["tok"] = (tok, dict(cfg))

    def tokeniser():  # the tokeniser chapter's, read from the cache (as a later chapter does)
        if "tok" not in shared:
            tokeniser_chapter()
        cfg = scaled("tokeniser", fraction)
        tok, _ = training.pretrain_tokeniser(training.tokeniser_config(cfg), progress=False)
        return tok.eval().requires_grad_(False), dict(cfg)

    def compression():
        cfg = scaled("compression", fraction)
        tok_cfg = scaled("tokeniser", fraction)
        recipe = training.tokeniser_config(tok_cfg)
        tok, _ = training.pretrain_tokeniser(recipe, progress=False)
        held_out = training.crops_by_system(recipe, cfg.eval_crops)
        ratios = [(s, t) for s in tok.strides for t in tok.time_strides]
        training.evaluate_tokeniser(tok.eval(), held_out, ratios)
        fixed_recipe = training.tokeniser_config(tok_cfg, strides=[max(tok_cfg.strides)], time_strides=[1], steps=cfg.fixed_steps)
        fixed, _ = training.pretrain_tokeniser(fixed_recipe, name="tokeniser-fixed", progress=False)
        training.evaluate_tokeniser(fixed.eval(), held_out, ratios)

    def scan_chapter():
        cfg = scaled("scan", fraction)
        scan.run_hold(cfg, progress=False)
        scan.time_scans(cfg.lengths, repeats=cfg.repeats, seed=cfg.seed)
        scan.run_dynamics(cfg, progress=False)

    def fno_chapter():
        cfg = scaled("fno", fraction)
        fno.invariance((16, 32, 64, 128), modes=8, seed=cfg.seed)
        fno.run_operator(cfg, progress=False)
        tok, tok_cfg = tokeniser()
        fno.run_decoder(cfg, tok, tok_cfg, progress=False)

    def generating_chapter():
        tok, tok_cfg = tokeniser()
        generating.run(scaled("generating", fraction), tok=tok, tok_cfg=tok_cfg, progress=False)

    def pdefm_chapter():
        cfg = scaled("pdefm", fraction)
        pdefm.run(cfg, progress=False, workers=1)  # it times the backbones too

    def pretraining_chapter():
        pretraining.run(scaled("pretraining", fraction), progress=False, workers=1)

    def finetuning_chapter():
        cfg = scaled("finetuning", fraction)
        pre = scaled("pretraining", fraction)
        tok, _, _ = finetuning.pretrained_tokeniser(pre, progress=False)
        finetuning.run(cfg, pre, tokeniser=tok, progress=False, workers=1)

    return {
        "tokeniser": tokeniser_chapter,
        "compression": compression,
        "scan": scan_chapter,
        "fno": fno_chapter,
        "generating": generating_chapter,
        "pdefm": pdefm_chapter,
        "pretraining": pretraining_chapter,
        "finetuning": finetuning_chapter,
    }


# --- report ------------------------------------------------------------------------------------
def table(results: dict[str, dict[str, Any]], gemm: float) -> str:
    head = f"{'chapter':<12}{'wall s':>8}" + "".join(f"{c:>17}" for c in CATEGORIES) + f"{'train GF/s':>11}{'% GEMM':>8}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        row = f"{name:<12}{r['wall_s']:>8.1f}"
        for c in CATEGORIES:
            t = r["seconds"][c]
            row += f"{t:>9.1f} ({100 * t / r['wall_s']:>4.1f}%)"
        g = r["training_gflops"]
        row += f"{g:>11.2f}{100 * g / gemm:>7.1f}%"
        lines.append(row)
    return "\n".join(lines)


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "src"], capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty-src" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fraction", type=float, default=0.1, help="scale of every step count (default 0.1)")
    p.add_argument("--chapters", default=",".join(CHAPTERS), help="comma-separated, in order")
    p.add_argument("--budget", type=float, default=900.0, help="seconds: chapters not started by then are left out")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = p.parse_args(argv)
    if not 0 < args.fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")
    names = [c for c in args.chapters.split(",") if c]
    unknown = sorted(set(names) - set(CHAPTERS))
    if unknown:
        raise ValueError(f"--chapters: unknown {unknown}; known {list(CHAPTERS)}")
    if not os.environ.get("PHYSFM_CACHE"):
        print("warning: PHYSFM_CACHE is not set; a warm cache hides the tokeniser pre-training", flush=True)

    load_before = os.getloadavg()
    print(f"fraction {args.fraction}, threads {torch.get_num_threads()}, load {load_before}", flush=True)
    ceil_before = ceilings()
    print("ceilings:", {k: round(v, 1) for k, v in ceil_before.items()}, flush=True)

    fns = chapter_functions(args.fraction)
    prof = Profiler()
    prof.install()
    results: dict[str, dict[str, Any]] = {}
    left_out = dict(LEFT_OUT)
    start = time.perf_counter()
    try:
        for name in names:
            if time.perf_counter() - start > args.budget:
                left_out[name] = f"not started: the {args.budget:.0f} s budget was spent"
                continue
            print(f"-- {name}", flush=True)
            try:
                results[name] = prof.chapter(fns[name])
            except Exception as e:  # a chapter that fails is reported, the others still run
                left_out[name] = f"failed: {type(e).__name__}: {e}"
                print(f"   failed: {type(e).__name__}: {e}", flush=True)
                continue
            r = results[name]
            print(f"   {r['wall_s']:.1f} s, {r['training_steps']} training steps", flush=True)
    finally:
        prof.remove()
    for name in CHAPTERS:
        if name not in names and name not in left_out:
            left_out[name] = "not asked for (--chapters)"

    ceil_after = ceilings()
    best = {k: max(ceil_before[k], ceil_after[k]) for k in ceil_before}
    load_after = os.getloadavg()
    print()
    print(table(results, best["gemm"]))
    print()
    print("ceilings (best of before/after): " + ", ".join(f"{k} {v:.1f}" for k, v in best.items()) + " (GFLOP/s, GB/s)")
    print(f"load average before {load_before}, after {load_after}")
    for name, why in left_out.items():
        print(f"left out: {name}: {why}")

    record = {
        "what": "seconds per chapter and category at the cpu profile, step counts scaled by fraction; see the script's docstring",
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "fraction": args.fraction,
        "machine": {
            "cpus": os.cpu_count(),
            "shared": "yes: other people's jobs ran at the same time; times are of one run",
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "ceilings": {"before": ceil_before, "after": ceil_after, "best": best, "units": "GFLOP/s, GFLOP/s, GB/s"},
        "categories": list(CATEGORIES),
        "parameters_changed": {c: {k: {"preset": a, "used": b} for k, (a, b) in v.items()} for c, v in SCALED.items()},
        "chapters": results,
        "left_out": left_out,
    }
    from physfm.results import atomic_write

    atomic_write(Path(args.out), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
