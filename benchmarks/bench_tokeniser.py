"""Tokeniser speed at the cpu profile: training throughput, and time per compression ratio.

Three measurements, on the tokeniser of the ``tokeniser`` chapter's cpu preset (2D, one field):

1. training throughput in crops per second, with a random ratio per step as the chapter
   pre-trains it. Target: the preset's pre-training (``steps * batch`` crops) fits in 5 of the
   chapter's 8 minutes.
2. forward and forward+backward time of one batch for every (spatial stride, time stride), with
   the compression ratio, beside a *fixed-ratio* tokeniser built for that one ratio
   (``patch = stride``, ``time_patch = time_stride``): the same convolutions and FLOPs, but no
   kernel pooling per call. Their ratio is the price of flexibility. Target: <= 1.15x.
3. the same training throughput for the chapter's small 3D tokeniser (``--quick`` skips it).

The flexible and fixed models are timed interleaved (warm-up, then alternating repeats, median),
because the machines this runs on are shared and noisy.

    python benchmarks/bench_tokeniser.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from physfm import profiles
from physfm.nn.tokeniser import Tokeniser

FLEX_TARGET = 1.15
BUDGET_S = 300.0


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed in alternation after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _step_fn(model: Tokeniser, x: torch.Tensor, stride: int, time_stride: int):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = (model(x, stride, time_stride) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def throughput(model: Tokeniser, x: torch.Tensor, strides, time_strides, seconds: float) -> float:
    """Crops per second of AdamW training steps with a random ratio per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = torch.Generator().manual_seed(0)

    def step():
        s = strides[int(torch.randint(len(strides), (1,), generator=rng))]
        st = time_strides[int(torch.randint(len(time_strides), (1,), generator=rng))]
        loss = (model(x, s, st) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 3D")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = profiles.resolve("tokeniser", "cpu")
    arch = dict(channels=cfg.channels, latent=cfg.latent, blocks=cfg.blocks)
    torch.manual_seed(0)
    tok = Tokeniser(spatial_dims=2, patch=cfg.patch, time_patch=cfg.time_patch, **arch)
    x = torch.randn(cfg.batch, 1, cfg.crop_t, cfg.crop, cfg.crop)
    repeats = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"cpu-profile tokeniser: {tok.n_parameters():,} parameters, batch of {cfg.batch} crops {tuple(x.shape[1:])}\n")

    # 1. training throughput
    rate = throughput(tok, x, cfg.strides, cfg.time_strides, 8 if args.quick else 30)
    need = cfg.steps * cfg.batch / BUDGET_S
    print(f"1. training, random ratio from strides {cfg.strides} x time strides {cfg.time_strides}")
    print(
        f"   {rate:.1f} crops/s, {cfg.batch / rate * 1e3:.0f} ms/step; the preset's {cfg.steps} steps take "
        f"{cfg.steps * cfg.batch / rate:.0f} s; target >= {need:.1f} crops/s ({cfg.steps} x {cfg.batch} crops "
        f"in {BUDGET_S:.0f} s): {'met' if rate >= need else 'NOT met'}\n"
    )

    # 2. per ratio, flexible against fixed
    print("2. one batch per ratio: flexible tokeniser against a fixed-ratio one (same FLOPs), median ms")
    header = f"{'stride':>6}{'t-stride':>9}{'ratio':>7}{'fwd flex':>10}{'fwd fixed':>10}{'fwd x':>7}{'f+b flex':>10}{'f+b fixed':>10}{'f+b x':>7}"
    print(header)
    worst = 0.0
    for s in tok.strides:
        for st in tok.time_strides:
            torch.manual_seed(0)
            fixed = Tokeniser(spatial_dims=2, patch=s, time_patch=st, stride=s, time_stride=st, **arch)
            xs = x if (cfg.crop_t - 1) % st == 0 else None
            if xs is None:
                continue
            with torch.no_grad():
                fwd = _interleaved({"flex": lambda: tok(xs, s, st), "fixed": lambda: fixed(xs, s, st)}, repeats)
            both = _interleaved({"flex": _step_fn(tok, xs, s, st), "fixed": _step_fn(fixed, xs, s, st)}, repeats)
            rf, rb = fwd["flex"] / fwd["fixed"], both["flex"] / both["fixed"]
            worst = max(worst, rb)
            print(
                f"{s:>6}{st:>9}{tok.config.ratio(s, st):>7g}{1e3 * fwd['flex']:>10.1f}{1e3 * fwd['fixed']:>10.1f}{rf:>7.2f}"
                f"{1e3 * both['flex']:>10.1f}{1e3 * both['fixed']:>10.1f}{rb:>7.2f}"
            )
    print(
        f"   worst training-step overhead of flexibility {worst:.2f}x; target <= {FLEX_TARGET}x: "
        f"{'met' if worst <= FLEX_TARGET else 'NOT met'}\n"
    )

    # 3. the chapter's 3D tokeniser
    if not args.quick:
        torch.manual_seed(0)
        tok3 = Tokeniser(spatial_dims=3, channels=(8, 32), latent=4, blocks=1, patch=2, time_patch=1, stride=2, time_stride=1)
        x3 = torch.randn(4, 1, 5, cfg.volume, cfg.volume, cfg.volume)
        rate3 = throughput(tok3, x3, (2,), (1,), 20)
        print(
            f"3. 3D tokeniser of the chapter ({tok3.n_parameters():,} parameters, crops {tuple(x3.shape[1:])}): "
            f"{rate3:.1f} crops/s, {cfg.steps_3d} steps take {cfg.steps_3d * x3.shape[0] / rate3:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
