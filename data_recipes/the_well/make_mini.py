"""A laptop-sized copy of a data set in The Well's layout (physfm.data.well.subsample).

Keeps the first trajectories of every file (The Well keeps one file per parameter value, so
every value stays), every n-th grid point and every m-th frame; writes the same layout and
recomputes stats.yaml from the new training split.

    python data_recipes/the_well/make_mini.py SOURCE TARGET [--per-file 1] [--space-stride 4]
        [--time-stride 2] [--max-files N] [--splits train valid test] [--overwrite]

Example (after download.sh BASE turbulent): one trajectory of each of the 9 cooling times per
split, 51 frames on 32 x 96 (x by y) instead of 101 on 128 x 384, about 23 MB per split:

    python data_recipes/the_well/make_mini.py BASE/datasets/turbulent_radiative_layer_2D \
        mini/turbulent_radiative_layer_2D --per-file 1 --space-stride 4 --time-stride 2
"""

from __future__ import annotations

import argparse
import sys

from physfm.data.well import SPLITS, WellWindows, subsample


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="the data set's folder, <base>/<dataset>")
    parser.add_argument("target", help="where the copy goes, <mini base>/<dataset>")
    parser.add_argument("--per-file", type=int, default=1, help="trajectories kept from each file")
    parser.add_argument("--max-files", type=int, default=None, help="files kept per split (default: all)")
    parser.add_argument("--space-stride", type=int, default=4)
    parser.add_argument("--time-stride", type=int, default=2)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    target = subsample(args.source, args.target, per_file=args.per_file, max_files=args.max_files,
                       space_stride=args.space_stride, time_stride=args.time_stride, splits=args.splits,
                       overwrite=args.overwrite)
    for split in args.splits:
        windows = WellWindows(target, split)
        size = sum(wf.path.stat().st_size for wf in windows.files) / 2**20
        print(f"{split}: {sum(wf.n_trajectories for wf in windows.files)} trajectories of {windows.files[0].n_steps} "
              f"frames, {size:.1f} MB; {windows}")
    print(f"stats: {target / 'stats.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
