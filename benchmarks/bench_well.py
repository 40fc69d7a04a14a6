"""Window throughput from local HDF5: physfm.data.well.WellWindows against The Well's WellDataset.

Both readers get the same files, written by :func:`physfm.data.well.write_well` into a temporary
folder from generated trajectories (2D Burgers, a vector field, and 2D Kuramoto-Sivashinsky, a
scalar field, 128^2, float32), and read the same windows in the same shuffled order, one at a
time in this process, unnormalised and z-scored. WellDataset returns its usual dictionary
(fields channels-last, grids, boundary codes); WellWindows returns the channels-first window.
The files are freshly written, so both read from the page cache: this measures the readers,
not the disk. Timed interleaved (warm-up, then alternating repeats, best of them, because other
work on the machine only ever slows a run down).

Target: WellWindows no slower than WellDataset (ratio >= 1.0) in every case.

    python benchmarks/bench_well.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from the_well.data import WellDataset
from the_well.data.normalization import ZScoreNormalization

from physfm.data import well
from physfm.data.pde import generate

CASES = [("burgers", 16, 41), ("kuramoto_sivashinsky", 16, 41)]  # system, trajectories, frames
SHAPE = (128, 128)
N_IN, N_OUT = 4, 1


def _rate(read, order) -> float:
    t = time.perf_counter()
    for i in order:
        read(i)
    return len(order) / (time.perf_counter() - t)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and repeats")
    args = parser.parse_args(argv)
    repeats, n_windows = (2, 100) if args.quick else (5, 400)
    torch.set_num_threads(1)  # one window at a time: no parallel regions worth their start-up
    print(
        f"torch {torch.__version__}, grid {SHAPE}, windows of {N_IN}+{N_OUT} frames, {n_windows} windows per repeat, "
        f"best of {repeats}\n"
    )
    print(f"{'data set':<30}{'MB':>6}{'normalisation':>15}{'ours win/s':>12}{'WellDataset':>13}{'ratio':>8}  target")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for system, batch, frames in CASES:
            trajectories = generate(system, batch=batch, shape=SHAPE, frames=frames, generator=torch.Generator().manual_seed(0))
            path = well.write_well(trajectories, Path(tmp) / system)
            mb = sum(p.stat().st_size for p in path.rglob("*.hdf5")) / 2**20
            for norm in (None, "zscore"):
                ours = well.WellWindows(path, "train", n_steps_input=N_IN, n_steps_output=N_OUT, normalization=norm)
                theirs = WellDataset(
                    path=str(path),
                    well_split_name="train",
                    n_steps_input=N_IN,
                    n_steps_output=N_OUT,
                    use_normalization=norm is not None,
                    normalization_type=ZScoreNormalization if norm else None,
                )
                order = torch.randperm(len(ours), generator=torch.Generator().manual_seed(1))[:n_windows].tolist()
                readers = {"ours": ours.__getitem__, "theirs": theirs.__getitem__}
                for read in readers.values():
                    _rate(read, order[:10])  # warm-up: open files, fill caches
                best = {k: 0.0 for k in readers}
                for _ in range(repeats):
                    for k, read in readers.items():
                        best[k] = max(best[k], _rate(read, order))
                ratio = best["ours"] / best["theirs"]
                ok &= ratio >= 1.0
                print(
                    f"{system + ' ' + 'x'.join(map(str, SHAPE)):<30}{mb:>6.0f}{str(norm):>15}{best['ours']:>12.0f}"
                    f"{best['theirs']:>13.0f}{ratio:>7.2f}x  >= 1x: {'met' if ratio >= 1.0 else 'NOT met'}"
                )
                ours.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
