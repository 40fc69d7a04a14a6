"""``python -m physfm.training pretrain|run ...``: the command line of :mod:`physfm.cli`.

Under ``torchrun``: ``torchrun --standalone --nproc_per_node=N -m physfm.training ...``.
"""

import sys

from physfm.cli import main

if __name__ == "__main__":
    sys.exit(main())
