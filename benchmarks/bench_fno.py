"""Spectral convolution speed: physfm.nn.fno.SpectralConv against neuraloperator's, side by side.

Both layers get the same input and the same weights; float32 on the CPU, batch 8. Cases: 2D
64^2 and 128^2 at widths 32 and 64 (16 modes per axis), 3D 32^3 at width 32 (8 modes per axis),
and 64^2 at width 32 with every mode the grid holds (where a matrix DFT does the most work
relative to an FFT).

What is timed: the forward alone (no autograd), and forward + backward as a training step runs
it: gradients set to None, ``y = layer(x)``, ``y.backward(g)`` with a fixed upstream gradient
``g`` (the gradients of the input, the weights and the bias). A loss such as ``y.square().mean()``
would add the same elementwise passes over ``y`` to both sides and is left out.

How: every repeat runs ours and neuraloperator's back to back, in alternating order, so that the
load of a shared machine falls on both alike; the table shows medians, and the spread of the
per-repeat ratios (25th-75th percentile) says how noisy the run was.

Ceilings of this machine, measured in the same run (best of 9, before and after the cases, so a
change of load shows): single-precision matrix multiply (GEMM, 1024^3), real 2D FFT (``rfft2``, 64 x 128^2,
counted as 2.5 N log2 N flops per transform of N points) and memory bandwidth (a 64 MB copy,
read plus write). Each row then reads as a fraction of what the hardware allows: "ours % GEMM"
is the rate of our forward+backward's matrix products against the GEMM ceiling, "NO % FFT" the
rate of neuraloperator's transforms (its FFTs, forward and backward) against the FFT ceiling,
"floor" the least time our forward+backward could take, max(its flops / GEMM ceiling, the bytes
it must move / bandwidth), and "x floor" how far above it our time is.

Targets: no slower than neuraloperator anywhere (forward and forward+backward ratio >= 1.0),
and forward+backward >= 2x faster at width 64.

    python benchmarks/bench_fno.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from neuralop.layers.spectral_convolution import SpectralConv as NOSpectralConv

from physfm.nn.fno import SpectralConv

BATCH = 8
CASES = [
    ((64, 64), 32, (16, 16)),
    ((64, 64), 64, (16, 16)),
    ((128, 128), 32, (16, 16)),
    ((128, 128), 64, (16, 16)),
    ((32, 32, 32), 32, (8, 8, 8)),
    ((64, 64), 32, (64, 64)),
]


def _best_time(f, repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def ceilings(repeats: int = 9) -> dict[str, float]:
    """GEMM and FFT GFLOP/s and copy bandwidth (GB/s) of this machine, now: the best of
    ``repeats`` (a ceiling: on a shared machine the slower runs measure the other work), into
    preallocated outputs (no page faults)."""
    a, b, c = torch.randn(1024, 1024), torch.randn(1024, 1024), torch.empty(1024, 1024)
    gemm = 2 * 1024**3 / _best_time(lambda: torch.mm(a, b, out=c), repeats) / 1e9
    x = torch.randn(64, 128, 128)
    xh = torch.fft.rfft2(x)
    n = 128 * 128
    fft = 64 * 2.5 * n * math.log2(n) / _best_time(lambda: torch.fft.rfft2(x, out=xh), repeats) / 1e9
    src, dst = torch.randn(16 * 2**20), torch.empty(16 * 2**20)
    bandwidth = 2 * src.numel() * 4 / _best_time(lambda: dst.copy_(src), repeats) / 1e9
    return {"gemm": gemm, "fft": fft, "bandwidth": bandwidth}


def our_work(shape, width, modes, batch=BATCH) -> tuple[float, float]:
    """Flops of the matrix products and the bytes our forward+backward must move at least
    (input, output, their gradients, the weights and theirs), for ``SpectralConv(width, width, modes)``."""
    k = modes[-1] // 2 + 1
    rows = batch * width * math.prod(shape[:-1])
    # analysis: real (N, 2k) on every line, then complex (m_i, N_i) on what is left; synthesis alike
    transform = 2 * rows * shape[-1] * 2 * k
    rest = batch * width * k
    for i in reversed(range(len(shape) - 1)):
        transform += 8 * modes[i] * shape[i] * rest * math.prod(shape[:i])
        rest *= modes[i]
    contraction = 8 * math.prod(modes[:-1]) * k * batch * width * width
    # forward: analysis, contraction, synthesis; backward: both transforms again, two contractions
    flops = 2 * transform + contraction + 2 * transform + 2 * contraction
    field = 4 * batch * width * math.prod(shape)
    weights = 8 * width * width * math.prod(modes[:-1]) * k
    return flops, 4 * field + 2 * weights


def neuraloperator_fft_flops(shape, width, batch=BATCH) -> float:
    """Flops of neuraloperator's real FFTs in forward+backward: rfftn and irfftn forward, and
    their adjoints in the backward (torch's backward of rfftn is a full complex transform: counted
    as a real one, a lower bound)."""
    n = math.prod(shape)
    return 4 * batch * width * 2.5 * n * math.log2(n)


def _paired(fns: dict, repeats: int) -> tuple[dict[str, float], list[float]]:
    """Median time of each of two callables and the per-repeat ratios theirs / ours, the two run
    back to back in alternating order."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for i in range(repeats):
        for k in list(fns) if i % 2 == 0 else list(fns)[::-1]:
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    ratios = [t / o for o, t in zip(times["ours"], times["theirs"])]
    return {k: statistics.median(v) for k, v in times.items()}, ratios


def _quartiles(v: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[0], q[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two 64^2 cases, 5 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per case (default 15)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)
    cases = CASES[:2] if args.quick else CASES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, float32, {repeats} repeats")
    before = ceilings()
    print("machine before: GEMM {gemm:.0f} GFLOP/s, FFT {fft:.1f} GFLOP/s, copy {bandwidth:.1f} GB/s\n".format(**before))
    head = (
        f"{'grid':<9}{'width':>5}{'modes':>11} | {'ours':>7}{'NO':>8}{'ratio':>7} | {'ours':>7}{'NO':>8}{'ratio':>7}"
        f"{'spread':>12} | {'ours%GEMM':>9}{'NO%FFT':>7}{'floor':>7}{'x floor':>8} | target"
    )
    print(f"{'':<25} | {'forward (ms)':^22} | {'forward + backward (ms)':^34} |")
    print(head)
    ok = True
    for shape, width, modes in cases:
        torch.manual_seed(0)
        theirs = NOSpectralConv(width, width, modes)
        ours = SpectralConv(width, width, modes)
        w = theirs.weight.to_tensor() if hasattr(theirs.weight, "to_tensor") else theirs.weight
        with torch.no_grad():
            ours.weight.copy_(torch.view_as_real(w.detach().resolve_conj()))
            ours.bias.copy_(theirs.bias.detach().flatten())
        x = torch.randn(BATCH, width, *shape, requires_grad=True)
        g = torch.randn(BATCH, width, *shape)

        def fwd(layer):
            def f():
                with torch.no_grad():
                    layer(x)

            return f

        def both(layer):
            def f():
                x.grad = None
                layer.zero_grad(set_to_none=True)
                layer(x).backward(g)

            return f

        tf, _ = _paired({"ours": fwd(ours), "theirs": fwd(theirs)}, repeats)
        tb, ratios = _paired({"ours": both(ours), "theirs": both(theirs)}, repeats)
        r1, r2 = tf["theirs"] / tf["ours"], tb["theirs"] / tb["ours"]
        lo, hi = _quartiles(ratios)
        flops, nbytes = our_work(shape, width, modes)
        floor = max(flops / (before["gemm"] * 1e9), nbytes / (before["bandwidth"] * 1e9))
        ours_gemm = flops / tb["ours"] / 1e9 / before["gemm"]
        no_fft = neuraloperator_fft_flops(shape, width) / tb["theirs"] / 1e9 / before["fft"]
        need = 2.0 if width == 64 else 1.0
        met = r1 >= 1.0 and r2 >= need
        ok &= met
        print(
            f"{'x'.join(map(str, shape)):<9}{width:>5}{str(modes):>11} | {1e3 * tf['ours']:>7.1f}{1e3 * tf['theirs']:>8.1f}"
            f"{r1:>6.2f}x | {1e3 * tb['ours']:>7.1f}{1e3 * tb['theirs']:>8.1f}{r2:>6.2f}x{f'{lo:.2f}-{hi:.2f}':>12} | "
            f"{100 * ours_gemm:>8.0f}%{100 * no_fft:>6.0f}%{1e3 * floor:>7.1f}{tb['ours'] / floor:>7.1f}x | "
            f">= {need:g}x: {'met' if met else 'NOT met'}",
            flush=True,
        )
    after = ceilings()
    print("\nmachine after: GEMM {gemm:.0f} GFLOP/s, FFT {fft:.1f} GFLOP/s, copy {bandwidth:.1f} GB/s".format(**after))
    print(
        "ratio: neuraloperator's time / ours (median); spread: 25th-75th percentile of the per-repeat "
        "forward+backward ratios; floor: max(our flops / GEMM, bytes moved / bandwidth), measured before"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
