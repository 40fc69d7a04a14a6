"""LoRA overhead over the frozen base model: physfm.nn.lora against peft, side by side.

    python benchmarks/bench_lora.py [--quick] [--threads N]

Three stacks, every Linear/Conv layer adapted with rank r = 8 (alpha = 16, no dropout, zero
padding so that peft computes the right function too):

- Linear: 4 x (Linear(512, 512) + GELU) on (8, 512, 512), i.e. 4096 tokens of width 512;
- Conv2d: 4 x (Conv2d(64, 64, 3, padding=1) + GELU) on (8, 64, 64, 64);
- Conv3d: 3 x (Conv3d(32, 32, 3, padding=1) + GELU) on (2, 32, 32, 32, 32).

Each is timed as the base model, an identical copy of it (the noise floor), peft's LoRA and ours
unmerged, and both merged, in three modes: inference forward (``torch.no_grad``), forward with
autograd on, and a training step (forward + backward, input requiring grad so the frozen base
back-propagates too). Rounds interleave all models in a rotating order; the overhead is the
median over rounds of ``time(model) / time(base) - 1``.

Targets: unmerged forward overhead at most half of peft's; merged overhead zero (within the
+-3% a shared 2-core machine resolves). The training step is reported, with no target.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from physfm.nn.lora import inject_lora, merge_lora

RANK, ALPHA = 8, 16
NOISE = 0.03


def stack(kind: str) -> tuple[nn.Sequential, torch.Tensor, str]:
    if kind == "Linear":
        layers, x, desc = [nn.Linear(512, 512) for _ in range(4)], torch.randn(8, 512, 512), "4x Linear(512,512), x (8,512,512)"
    elif kind == "Conv2d":
        layers = [nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)]
        x, desc = torch.randn(8, 64, 64, 64), "4x Conv2d(64,64,3), x (8,64,64,64)"
    else:
        layers = [nn.Conv3d(32, 32, 3, padding=1) for _ in range(3)]
        x, desc = torch.randn(2, 32, 32, 32, 32), "3x Conv3d(32,32,3), x (2,32,32,32,32)"
    seq: list[nn.Module] = []
    for layer in layers:
        seq += [layer, nn.GELU()]
    return nn.Sequential(*seq), x, desc


def models_for(base: nn.Sequential) -> dict[str, nn.Module]:
    for p in base.parameters():
        p.requires_grad_(False)
    targets = [str(i) for i in range(0, len(base), 2)]
    gen = torch.Generator().manual_seed(1)

    peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets))
    ours = copy.deepcopy(base)
    inject_lora(ours, targets, r=RANK, alpha=ALPHA)
    with torch.no_grad():  # "trained" adapters: B != 0 (timing does not depend on it, merging does)
        for name in targets:
            layer = ours.get_submodule(name)
            layer.lora_B.normal_(generator=gen)
            peft_layer = peft.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A.reshape(peft_layer.lora_A["default"].weight.shape))
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B.reshape(peft_layer.lora_B["default"].weight.shape))
    peft_merged = copy.deepcopy(peft)
    peft_merged.merge_adapter()
    ours_merged = merge_lora(copy.deepcopy(ours))
    return {
        "base": base,
        "base copy": copy.deepcopy(base),
        "peft": peft,
        "ours": ours,
        "peft merged": peft_merged,
        "ours merged": ours_merged,
    }


def step_fn(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "forward, no_grad":

        def run():
            with torch.no_grad():
                model(x)
    elif mode == "forward, autograd on":

        def run():
            model(x)
    else:
        xg = x.clone().requires_grad_(True)

        def run():
            model(xg).square().mean().backward()

    return run


def overheads(models: dict[str, nn.Module], x: torch.Tensor, mode: str, rounds: int) -> tuple[dict[str, float], float]:
    runs = {k: step_fn(m, x, mode) for k, m in models.items()}
    for run in runs.values():  # warm-up
        run()
    names = list(runs)
    ratios: dict[str, list[float]] = {k: [] for k in names}
    base_times = []
    for i in range(rounds):
        times = {}
        for k in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order each round
            start = time.perf_counter()
            runs[k]()
            times[k] = time.perf_counter() - start
        base_times.append(times["base"])
        for k in names:
            ratios[k].append(times[k] / times["base"] - 1)
    for m in models.values():
        m.zero_grad(set_to_none=True)
    return {k: statistics.median(v) for k, v in ratios.items()}, statistics.median(base_times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stacks", nargs="+", default=["Linear", "Conv2d", "Conv3d"], choices=["Linear", "Conv2d", "Conv3d"])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 5 if args.quick else 15
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, LoRA r={RANK} alpha={ALPHA} on every "
        f"layer, {rounds} interleaved rounds, overhead = median of time/time(base) - 1\n"
    )
    head = (
        f"{'stack':<8}{'mode':<22}{'base ms':>9}{'noise':>7}{'peft':>7}{'ours':>7}{'ours/peft':>10}"
        f"{'peft mrg':>9}{'ours mrg':>9}  target"
    )
    print(head)
    print("-" * len(head))
    all_met = True
    for kind in args.stacks:
        base, x, desc = stack(kind)
        models = models_for(base)
        print(f"{kind}: {desc}")
        for mode in ("forward, no_grad", "forward, autograd on", "forward+backward"):
            ov, base_t = overheads(models, x, mode, rounds)
            rel = ov["ours"] / ov["peft"] if ov["peft"] > 0 else float("nan")
            if mode.startswith("forward,"):
                met = ov["ours"] <= 0.5 * ov["peft"] and abs(ov["ours merged"]) <= NOISE
                all_met &= met
                verdict = ("met" if met else "NOT met") + " (ours <= peft/2, merged ~ 0)"
            else:
                verdict = "no target"
            print(
                f"{'':<8}{mode:<22}{1e3 * base_t:>9.1f}{ov['base copy']:>+7.0%}{ov['peft']:>+7.0%}{ov['ours']:>+7.0%}"
                f"{rel:>10.2f}{ov['peft merged']:>+9.0%}{ov['ours merged']:>+9.0%}  {verdict}"
            )
        del models
    print("\nnoise: an identical copy of the base model, timed like the others.")
    print(f"all forward targets {'met' if all_met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
