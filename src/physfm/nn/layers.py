"""What every network module of the book shares: N-d convolutions by dimension, and parameter counts.

One implementation serves 1D, 2D and 3D space (the models are dimension-generic, as in
PolymathicAI's lola): :data:`CONV` and :data:`CONV_FN` map the number of spatial dimensions to
the convolution module and function, and :func:`count_parameters` counts what a model trains.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

__all__ = ["CONV", "CONV_FN", "CONV_T_FN", "conv", "count_parameters"]

#: spatial dimensions -> convolution module
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
#: spatial dimensions -> convolution function, and its transpose
CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv(spatial_dims: int, who: str) -> type[nn.Module]:
    """The convolution module for ``spatial_dims`` (1, 2 or 3); ``who`` names the caller in the error."""
    if spatial_dims not in CONV:
        raise ValueError(f"{who}: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return CONV[spatial_dims]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of parameters of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
