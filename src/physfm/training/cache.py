"""A cache of trained models, keyed by their configuration.

Chapters share expensive artefacts (a pre-trained tokeniser) through a cache folder: a model is
stored as ``<cache_dir>/<name>-<digest>.pt``, where the digest hashes the model's plain-data
configuration and the source of the code that shapes it (its layers, data and training loop), so
any change to either trains a new model and deleting the folder is always safe. Every chapter also runs from an empty cache.

Under ``torchrun`` (outside :func:`physfm.runtime.alone`) every rank calls :func:`cached` together:
rank 0 decides whether the model is in the cache; if not, the ranks train it together, rank 0
alone writes it, and the others wait at a barrier and then read what rank 0 wrote, so every
rank returns the same model and curves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
import xarray as xr
from torch import nn

from physfm.results import atomic_write
from physfm.runtime import barrier, broadcast_object, cache_dir, code_digest, distributed, is_main_process

__all__ = ["cached", "cache_dir", "config_digest", "code_digest"]


def config_digest(config: Mapping[str, Any], code: Sequence[ModuleType] = ()) -> str:
    """A short stable hash of plain-data configuration and of the source of ``code``."""
    text = json.dumps({"code": code_digest(code), **config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(
    name: str,
    config: Mapping[str, Any],
    make: Callable[[], nn.Module],
    fit: Callable[[nn.Module], xr.Dataset],
    *,
    code: Sequence[ModuleType] = (),
    verbose: bool = True,
) -> tuple[nn.Module, xr.Dataset]:
    """A model trained with ``config``: from the cache if it is there, else ``fit`` now and store it.

    ``make()`` builds the untrained model; ``fit(model)`` trains it in place and returns its
    curves. The cache file is ``<cache_dir>/<name>-<hash of config and of code>.pt``, with
    ``code`` the modules whose source shapes the model (its layers, its data, its training loop),
    so any change to the configuration or to that code trains a new model, and deleting the
    folder is always safe.
    """
    path = cache_dir() / f"{name}-{config_digest(config, code)}.pt"
    model = make()
    if broadcast_object(path.exists()):  # rank 0's view, so that every rank takes the same branch
        return _load(path, model, name, verbose)
    curves = fit(model)
    blob = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "curves": curves.to_dict(),
        "config": dict(config),
    }
    if is_main_process():
        atomic_write(path, lambda tmp: torch.save(blob, tmp))
    if distributed():
        barrier()
        if not is_main_process():
            return _load(path, model, name, verbose=False)
    return model, curves


def _load(path, model: nn.Module, name: str, verbose: bool) -> tuple[nn.Module, xr.Dataset]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(blob["model"])
    if verbose and is_main_process():
        print(f"physfm: loaded {name} from the cache ({path.name})")
    return model, xr.Dataset.from_dict(blob["curves"])
