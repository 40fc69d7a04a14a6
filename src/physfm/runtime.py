"""Where the book's computations run, and how they are made repeatable.

:func:`device` picks the best accelerator present (CUDA, then Apple's MPS, then the CPU) and
says which, so a reader always knows what the numbers on the page were computed on.
:func:`seed_everything` makes a run repeatable: the same seed gives the same numbers on a CPU.
"""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

__all__ = ["device", "describe_device", "seed_everything"]

_CHOICES = ("cuda", "mps", "cpu")


def device(prefer: str | None = None, *, verbose: bool = True) -> torch.device:
    """The device chapters run on: CUDA if present, then MPS, then the CPU.

    Args:
        prefer: force a device type (``"cuda"``, ``"mps"`` or ``"cpu"``). ``None`` reads the
            environment variable ``PHYSFM_DEVICE`` and, if that is unset, picks the best one
            available.
        verbose: print one line saying which device was chosen and why.

    Raises:
        ValueError: ``prefer`` names an unknown device type or one that is not available.
    """
    source = "argument"
    if prefer is None and os.environ.get("PHYSFM_DEVICE"):
        prefer, source = os.environ["PHYSFM_DEVICE"], "PHYSFM_DEVICE"
    if prefer is not None:
        kind = str(prefer).split(":")[0]
        if kind not in _CHOICES:
            raise ValueError(f"device: prefer={prefer!r} ({source}) is not one of {_CHOICES}")
        if not _available(kind):
            raise ValueError(f"device: prefer={prefer!r} ({source}) is not available on this machine")
        chosen, why = torch.device(prefer), f"requested by {source}"
    else:
        kind = next(k for k in _CHOICES if _available(k))
        chosen = torch.device(kind)
        why = "no CUDA or MPS device found" if kind == "cpu" else "best device available"
    if verbose:
        print(f"physfm: running on {describe_device(chosen)} ({why})")
    return chosen


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return True


def describe_device(dev: torch.device | str) -> str:
    """A short human-readable name, e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu (x86_64, 2 threads)"``."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh ``torch.Generator`` seeded with ``seed``.

    Library functions that draw random numbers take an explicit ``generator`` argument; the one
    returned here is the natural thing to pass them.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed_everything: seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
