"""Tokeniser speed at the cpu profile: training throughput and forward/backward time per ratio.

    python benchmarks/bench_tokeniser.py [--quick]

Prints crops per second for training with a random ratio per step (as the book pre-trains it),
then, for every (spatial stride, time stride) the kernels allow, the median forward and
forward+backward time of one batch and the compression ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from physfm import profiles
from physfm.autoencoder import Tokeniser


def _median(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    cfg = profiles.resolve("tokeniser", "cpu")
    torch.manual_seed(0)
    tok = Tokeniser(spatial_dims=2, channels=cfg.channels, latent=cfg.latent, blocks=cfg.blocks,
                    patch=cfg.patch, time_patch=cfg.time_patch)
    x = torch.randn(cfg.batch, 1, cfg.crop_t, cfg.crop, cfg.crop)
    opt = torch.optim.AdamW(tok.parameters(), lr=1e-3)
    repeats = 2 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tokeniser of the cpu profile: "
          f"{tok.n_parameters():,} parameters, batch {cfg.batch} crops of {tuple(x.shape[1:])}\n")

    def step(s, st):
        loss = (tok(x, s, st) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    rng = torch.Generator().manual_seed(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < (10 if args.quick else 30):
        s = cfg.strides[int(torch.randint(len(cfg.strides), (1,), generator=rng))]
        st = cfg.time_strides[int(torch.randint(len(cfg.time_strides), (1,), generator=rng))]
        step(s, st)
        n += cfg.batch
    print(f"training, random ratio from strides {cfg.strides} x time strides {cfg.time_strides}: "
          f"{n / (time.perf_counter() - start):.1f} crops/s\n")

    print(f"{'stride':>7}{'time stride':>12}{'ratio':>7}{'forward ms':>12}{'fwd+bwd ms':>12}")
    for s in tok.strides:
        for st in tok.time_strides:
            with torch.no_grad():
                fwd = _median(lambda: tok(x, s, st), repeats)
            both = _median(lambda: step(s, st), repeats)
            print(f"{s:>7}{st:>12}{tok.config.ratio(s, st):>7g}{1e3 * fwd:>12.1f}{1e3 * both:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
