#!/usr/bin/env bash
# Download data sets of The Well with The Well's own tool (the-well-download, from the
# `the-well` package: pip install the-well==1.2.0 -c requirements.txt). Needs a network and disk.
#
#   bash data_recipes/the_well/download.sh BASE [turbulent|euler]
#
# Files land in BASE/datasets/<dataset>/{stats.yaml,data/{train,valid,test}/*.hdf5}; read them with
#   physfm.data.well.WellWindows("BASE/datasets/<dataset>", "train", ...)
set -euo pipefail
BASE=${1:?usage: download.sh BASE [turbulent|euler]}
WHAT=${2:-turbulent}

case "$WHAT" in
  turbulent)
    # turbulent_radiative_layer_2D, the smallest data set of The Well: 90 trajectories of 101
    # frames on 128 x 384, 6.9 GB in all (9 files per split, one per cooling time).
    the-well-download --base-path "$BASE" --dataset turbulent_radiative_layer_2D
    ;;
  euler)
    # euler_multi_quadrants_periodicBC, the target of Sotoudeh et al.: 100 frames on 512 x 512,
    # five channels, about 0.5 GB per trajectory, 2.6 TB in all (the README's 5.17 TB covers
    # both boundary variants). --first-only fetches the first file of a split only, one gas
    # (one gamma): estimated from those sizes, about 210 GB for train and 26 GB for valid or
    # test, 260 GB here. Subsample it where it lies (make_mini.py) and carry the copy.
    for split in train valid test; do
      the-well-download --base-path "$BASE" --dataset euler_multi_quadrants_periodicBC --split "$split" --first-only
    done
    ;;
  *)
    echo "unknown choice '$WHAT' (turbulent or euler)" >&2
    exit 2
    ;;
esac
