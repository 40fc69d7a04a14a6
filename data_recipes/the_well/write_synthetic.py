"""Generated trajectories saved as a data set in The Well's layout (physfm.data.well.write_well).

No network needed: the trajectories come from physfm's own solvers, the files follow The Well's
layout (periodic boundaries, the coefficients as per-trajectory scalars), and stats.yaml comes
from the training split only. The_well's WellDataset and physfm's WellWindows read the result.

    python data_recipes/the_well/write_synthetic.py TARGET [--system burgers] [--trajectories 20]
        [--shape 64 64] [--frames 40] [--seed 0] [--walls AXIS ...] [--overwrite]

Example: 2D Burgers (a velocity vector field, channels velocity_x and velocity_y), 16 / 2 / 2
trajectories of 40 frames on 64 x 64, about 26 MB:

    python data_recipes/the_well/write_synthetic.py well_data/burgers_2D

With --walls, the fields are not periodic: no-flux walls at both ends of the axes named (0 is x),
open boundaries along the others (physfm.data.walls.walled: the method of images, for the
systems in physfm.data.walls.MIRROR_SYMMETRIC), and the files record them:

    python data_recipes/the_well/write_synthetic.py well_data/gray_scott_walls_2D --system gray_scott \
        --shape 32 32 --frames 17 --walls 0
"""

from __future__ import annotations

import argparse
import sys

import torch

from physfm.data.pde import SYSTEMS, generate
from physfm.data.walls import walled
from physfm.data.well import SPLITS, WellWindows, write_well


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", help="the data set's folder, <base>/<dataset>")
    parser.add_argument("--system", default="burgers", choices=sorted(SYSTEMS))
    parser.add_argument("--trajectories", type=int, default=20, help="in all, cut 80/10/10 into train/valid/test")
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--per-file", type=int, default=None, help="trajectories per file (default: one file per split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--walls", type=int, nargs="+", default=None, help="axes with no-flux walls (the others open)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    make = generate if args.walls is None else lambda *a, **k: walled(*a, walls=args.walls, **k)
    trajectories = make(args.system, batch=args.trajectories, shape=args.shape, frames=args.frames,
                        generator=torch.Generator().manual_seed(args.seed))
    target = write_well(trajectories, args.target, per_file=args.per_file, overwrite=args.overwrite)
    for split in SPLITS:
        print(f"{split}: {WellWindows(target, split)}")
    print(f"stats: {target / 'stats.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
