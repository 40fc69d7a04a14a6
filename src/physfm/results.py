"""Results of runs as NetCDF files that say where they came from.

Every number the book shows comes from a run. A run's curves and tables are an
:class:`xarray.Dataset`; :func:`save` writes it as NetCDF with its provenance in the global
attributes (git commit, whether the tree had uncommitted changes, the run's parameters as JSON,
the device, torch and physfm versions, the date in UTC), and it writes atomically: to a
temporary file in the same folder, then renamed, so an interrupted run never leaves a
half-written result behind.

Where results go (:func:`path_for`): ``results/<chapter>/<profile>.nc`` in the repository for
the ``cpu``, ``gpu`` and ``paper`` profiles (small files, committed with their provenance), and
``_build/smoke-results/`` for ``smoke`` runs, which are never committed. The environment variable
``PHYSFM_RESULTS`` moves the whole tree elsewhere.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from physfm.runtime import describe_device

__all__ = ["save", "load", "provenance", "parameters", "describe", "path_for", "repo_root", "shown", "atomic_write"]

PROVENANCE_KEYS = (
    "git_commit",
    "git_dirty",
    "parameters",
    "device",
    "torch_version",
    "physfm_version",
    "python_version",
    "date",
)


def repo_root() -> Path:
    """The repository the library was installed from (editable install), else the working folder."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "_config.yml").exists() else Path.cwd()


def path_for(chapter: str, profile: str, name: str | None = None) -> Path:
    """Where a chapter's result at a profile lives: ``results/<chapter>/<name or profile>.nc``.

    Smoke runs go to ``_build/smoke-results/`` instead so tests never touch committed results.
    """
    base = os.environ.get("PHYSFM_RESULTS")
    if base:
        root = Path(base)
    elif profile == "smoke":
        root = repo_root() / "_build" / "smoke-results"
    else:
        root = repo_root() / "results"
    return root / chapter / f"{name or profile}.nc"


def shown(path: str | os.PathLike) -> str:
    """``path`` as a reader should see it: relative to the repository when it lies inside it
    (``results/tokeniser/cpu.nc``), absolute otherwise (``PHYSFM_RESULTS`` may point anywhere)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo_root()), *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance(params: Mapping[str, Any], device: torch.device | str) -> dict[str, str]:
    """The provenance attributes of a run, all plain ``str`` (NetCDF rejects str subclasses).

    ``git_dirty`` is ``"true"`` when tracked files differ from the commit, so a reader can tell
    a result of committed code from one of work in progress. Files under ``results/`` do not
    count: they are what runs write, not code, and ``make book`` rewrites them chapter after
    chapter, so counting them would mark every chapter after the first as work in progress.
    """
    from physfm import __version__

    commit = _git("rev-parse", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {
        "git_commit": str(commit),
        "git_dirty": dirty,
        "parameters": json.dumps(dict(params), sort_keys=True, default=str),
        "device": str(describe_device(device)),
        "torch_version": str(torch.__version__),
        "physfm_version": str(__version__),
        "python_version": platform.python_version(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _fsync(path: Path, *, folder: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if folder else os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic
        if not folder:
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` and rename the temporary file to ``path`` once it succeeded.

    The temporary file sits in the same folder, so the rename is atomic on POSIX file systems;
    if ``write`` raises (or the process is interrupted, even by ``kill -9``) ``path`` keeps its
    previous content. The file is flushed to disk (``fsync``) before the rename and the folder
    after it, so that once this returns the new content survives a crash of the machine too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, folder=True)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    params: Mapping[str, Any],
    device: torch.device | str,
) -> Path:
    """Write ``ds`` to ``path`` as NetCDF with provenance attributes, atomically.

    Args:
        ds: the results; its own attributes are kept (provenance keys are overwritten).
        path: the ``.nc`` file to write; folders are created.
        params: the run's parameters, e.g. ``cfg.as_dict()``; stored as JSON.
        device: the device the run used.
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"save: ds must be an xarray.Dataset, got {type(ds).__name__}")
    out = ds.copy()
    out.attrs = {k: v for k, v in ds.attrs.items()}
    out.attrs.update(provenance(params, device))
    return atomic_write(path, lambda tmp: out.to_netcdf(tmp, engine="h5netcdf"))


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a result written by :func:`save` into memory (the file is closed afterwards).

    Raises:
        FileNotFoundError: no result at ``path``.
        ValueError: the file lacks the provenance attributes, so it was not written by :func:`save`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load: no result at {path}")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    missing = [k for k in PROVENANCE_KEYS if k not in ds.attrs]
    if missing:
        raise ValueError(f"load: {path} has no provenance attributes {missing}; write results with physfm.results.save")
    return ds


def parameters(ds: xr.Dataset) -> dict[str, Any]:
    """The parameters a result was produced with."""
    return json.loads(ds.attrs["parameters"])


def describe(ds: xr.Dataset) -> str:
    """One line for a figure caption: profile, device, commit and date of the run."""
    params = parameters(ds)
    commit = ds.attrs["git_commit"][:10] + (" (uncommitted changes)" if ds.attrs["git_dirty"] == "true" else "")
    profile = params.get("profile", "?")
    return f"{profile} profile on {ds.attrs['device']}, commit {commit}, {ds.attrs['date'][:10]}"


if __name__ == "__main__":  # pragma: no cover - a quick way to read a result's provenance
    for p in sys.argv[1:]:
        print(p, "->", describe(load(p)))
