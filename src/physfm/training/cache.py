"""A cache of trained models, keyed by their configuration.

Chapters share expensive artefacts (a pre-trained tokeniser) through a cache folder: a model is
stored as ``<cache_dir>/<name>-<digest>.pt``, where the digest hashes the model's plain-data
configuration and the source of the library it was trained with, so any change to either trains
a new model and deleting the folder is always safe. Every chapter also runs from an empty cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import xarray as xr
from torch import nn

from physfm.results import atomic_write, repo_root
from physfm.runtime import is_main_process

__all__ = ["cached", "cache_dir", "config_digest"]


@functools.lru_cache(maxsize=1)
def _library_digest() -> str:
    """Hash of the library's source: a cached model is stale as soon as any of it changes.
    Read once per process, so that a run keys all its models alike."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parents[1].rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """``$PHYSFM_CACHE``, else ``.cache/`` in the repository (ignored by git)."""
    return Path(os.environ.get("PHYSFM_CACHE") or repo_root() / ".cache")


def config_digest(config: Mapping[str, Any]) -> str:
    """A short stable hash of plain-data configuration and of the library's source code."""
    text = json.dumps({"library": _library_digest(), **config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(
    name: str,
    config: Mapping[str, Any],
    make: Callable[[], nn.Module],
    fit: Callable[[nn.Module], xr.Dataset],
    *,
    verbose: bool = True,
) -> tuple[nn.Module, xr.Dataset]:
    """A model trained with ``config``: from the cache if it is there, else ``fit`` now and store it.

    ``make()`` builds the untrained model; ``fit(model)`` trains it in place and returns its
    curves. The cache file is ``<cache_dir>/<name>-<hash of config and library source>.pt``, so
    any change to the configuration or to the library trains a new model, and deleting the
    folder is always safe.
    """
    path = cache_dir() / f"{name}-{config_digest(config)}.pt"
    model = make()
    if path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(blob["model"])
        if verbose:
            print(f"physfm: loaded {name} from the cache ({path.name})")
        return model, xr.Dataset.from_dict(blob["curves"])
    curves = fit(model)
    blob = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "curves": curves.to_dict(), "config": dict(config)}
    if is_main_process():
        atomic_write(path, lambda tmp: torch.save(blob, tmp))
    return model, curves


