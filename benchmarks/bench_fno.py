"""Spectral convolution speed: physfm.nn.fno.SpectralConv against neuraloperator's, side by side.

Both layers get the same input and the same weights; timed interleaved (warm-up, then
alternating repeats, median), forward and forward+backward, float32 on the CPU. Cases: 2D 64^2
and 128^2 at widths 32 and 64 (16 modes per axis), 3D 32^3 at width 32 (8 modes per axis),
batch 8.

Targets: no slower than neuraloperator anywhere (ratio >= 1.0) and >= 2x faster at width 64.

    python benchmarks/bench_fno.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from neuralop.layers.spectral_convolution import SpectralConv as NOSpectralConv

from physfm.nn.fno import SpectralConv

BATCH = 8
CASES = [((64, 64), 32, (16, 16)), ((64, 64), 64, (16, 16)), ((128, 128), 32, (16, 16)), ((128, 128), 64, (16, 16)),
         ((32, 32, 32), 32, (8, 8, 8))]


def _interleaved(fns, repeats):
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    cases = CASES[:2] if args.quick else CASES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, float32\n")
    print(f"{'grid':<12}{'width':>6}{'modes':>12}{'ours fwd':>10}{'NO fwd':>9}{'ratio':>7}{'ours f+b':>10}{'NO f+b':>9}{'ratio':>7}  target")
    ok = True
    for shape, width, modes in cases:
        torch.manual_seed(0)
        theirs = NOSpectralConv(width, width, modes)
        ours = SpectralConv(width, width, modes)
        w = theirs.weight.to_tensor() if hasattr(theirs.weight, "to_tensor") else theirs.weight
        with torch.no_grad():
            ours.weight.copy_(torch.view_as_real(w.detach().resolve_conj()))
        x = torch.randn(BATCH, width, *shape, requires_grad=True)

        def fwd(layer):
            def f():
                with torch.no_grad():
                    layer(x)
            return f

        def both(layer):
            def f():
                layer(x).square().mean().backward()
            return f

        tf = _interleaved({"ours": fwd(ours), "theirs": fwd(theirs)}, repeats)
        tb = _interleaved({"ours": both(ours), "theirs": both(theirs)}, repeats)
        r1, r2 = tf["theirs"] / tf["ours"], tb["theirs"] / tb["ours"]
        need = 2.0 if width == 64 else 1.0
        met = r1 >= 1.0 and r2 >= need
        ok &= met
        print(f"{'x'.join(map(str, shape)):<12}{width:>6}{str(modes):>12}{1e3 * tf['ours']:>9.1f}m{1e3 * tf['theirs']:>8.1f}m{r1:>6.2f}x"
              f"{1e3 * tb['ours']:>9.1f}m{1e3 * tb['theirs']:>8.1f}m{r2:>6.2f}x  >= {need:g}x: {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
