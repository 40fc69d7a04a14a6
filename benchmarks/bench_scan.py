"""Selective scan speed: physfm.nn.scan.selective_scan against mamba.py's, side by side.

    python benchmarks/bench_scan.py [--repeats 7] [--lengths 256 1024 4096] [--threads N]

Both get the same inputs (batch 4, d_inner 64, d_state 16, float32; mamba.py's in its
``(batch, length, d_inner)`` layout, ours channels first), compute ``y = scan + D x``, and are
timed interleaved (one call of each in turn, after a warm-up), so that load from other
processes hits both alike; the table shows medians. "forward" runs under ``torch.no_grad()``;
"fwd+bwd" is a forward pass with autograd and ``y.sum().backward()`` into every input.

Target: forward+backward at least 2x faster than mamba.py at every length.

A second table times our forward+backward at each ``chunk`` size (``--chunks``; 1 is the plain
loop, the default on CPU), interleaved the same way, to show which is fastest here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from mambapy.mamba import MambaBlock

from physfm.nn.scan import selective_scan

TARGET = 2.0


def _inputs(L: int, batch: int, d_inner: int, d_state: int, generator: torch.Generator):
    """mamba.py's layout: x, delta (b, L, d); A (d, n); B, C (b, L, n); D (d,)."""
    x = torch.randn(batch, L, d_inner, generator=generator)
    delta = F.softplus(torch.randn(batch, L, d_inner, generator=generator) - 2.0)
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    B = torch.randn(batch, L, d_state, generator=generator)
    C = torch.randn(batch, L, d_state, generator=generator)
    D = torch.ones(d_inner)
    return x, delta, A, B, C, D


def _ours_layout(x, delta, A, B, C, D):
    cf = lambda t: rearrange(t, "b l c -> b c l").contiguous()  # noqa: E731
    return cf(x), cf(delta), A.clone(), cf(B), cf(C), D.clone()


def _mambapy(x, delta, A, B, C, D):
    return MambaBlock.selective_scan(None, x, delta, A, B, C, D)


def _ours(x, delta, A, B, C, D, chunk=None):
    return selective_scan(x, delta, A, B, C, D, chunk=chunk)


def _timer(fn, args, backward: bool):
    leaves = [a.detach().requires_grad_(backward) for a in args]

    def run() -> float:
        t = time.perf_counter()
        if backward:
            fn(*leaves).sum().backward()
        else:
            with torch.no_grad():
                fn(*leaves)
        elapsed = time.perf_counter() - t
        for a in leaves:
            a.grad = None
        return elapsed

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--d-inner", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument(
        "--chunks", type=int, nargs="*", default=[1, 8, 32, 64], help="chunk sizes of the second table (none: skip it)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
        f"d_inner {args.d_inner}, d_state {args.d_state}, float32; median of {args.repeats} "
        f"interleaved runs\n"
    )
    header = (
        f"{'L':>6} | {'forward ms':>10} {'mambapy':>9} {'ratio':>6} | "
        f"{'fwd+bwd ms':>10} {'mambapy':>9} {'ratio':>6} | target fwd+bwd >= {TARGET:g}x"
    )
    print(header)
    print("-" * len(header))
    met_all = True
    g = torch.Generator().manual_seed(0)
    for L in args.lengths:
        theirs = _inputs(L, args.batch, args.d_inner, args.d_state, g)
        ours = _ours_layout(*theirs)
        row = []
        for backward in (False, True):
            runs = {"ours": _timer(_ours, ours, backward), "mambapy": _timer(_mambapy, theirs, backward)}
            times = {k: [] for k in runs}
            for r in runs.values():  # warm-up
                r()
            for _ in range(args.repeats):
                for k, r in runs.items():
                    times[k].append(r())
            med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            row.append((med["ours"], med["mambapy"], med["mambapy"] / med["ours"]))
        met = row[1][2] >= TARGET
        met_all &= met
        (fo, fm, fr), (bo, bm, br) = row
        print(f"{L:>6} | {fo:>10.1f} {fm:>9.1f} {fr:>5.1f}x | {bo:>10.1f} {bm:>9.1f} {br:>5.1f}x | {'met' if met else 'NOT met'}")
    print(f"\ntarget (forward+backward >= {TARGET:g}x faster than mamba.py at every length): {'met' if met_all else 'NOT met'}")
    if args.chunks:
        _chunk_table(args, g)
    return 0


def _chunk_table(args, g: torch.Generator) -> None:
    print(f"\nours, forward+backward ms by chunk size (median of {args.repeats} interleaved runs)")
    print(f"{'L':>6} | " + " ".join(f"{f'chunk {c}':>10}" for c in args.chunks))
    for L in args.lengths:
        ours = _ours_layout(*_inputs(L, args.batch, args.d_inner, args.d_state, g))
        runs = {c: _timer(lambda *a, c=c: _ours(*a, chunk=c), ours, True) for c in args.chunks}
        times = {c: [] for c in runs}
        for r in runs.values():
            r()
        for _ in range(args.repeats):
            for c, r in runs.items():
                times[c].append(r())
        print(f"{L:>6} | " + " ".join(f"{1e3 * statistics.median(times[c]):>10.1f}" for c in args.chunks))


if __name__ == "__main__":
    sys.exit(main())
