"""Per-system normalisation statistics, estimated once from a separate sample, as The Well does.

Fields of different systems live on different scales (vorticities of 20, concentrations of
0.3), so models see them normalised. How they are normalised matters for honesty: statistics of
the trajectory being predicted (its mean and standard deviation over all its frames) carry
information about the frames a model is asked to predict, and make errors incomparable with
those of a benchmark. The Well normalises every dataset with one set of statistics per field,
computed once over its training set and shipped as ``stats.yaml``; this module does the same for
systems generated on the fly:

.. math::  \\tilde u_f = \\frac{u_f - \\mu_f}{\\sigma_f},

with :math:`\\mu_f` and :math:`\\sigma_f` the mean and (unbiased) standard deviation of field
:math:`f` over every point, frame and trajectory of a *separate* sample of the system
(:func:`estimate_stats`, seeded by ``seed_for("statistics", 0)``, never by a run's seed). The
statistics depend on the system's spec (coefficient box, frame interval), the grid and the number
of frames, and on nothing a run draws; :func:`system_stats` computes them once per such key and
keeps them in the cache folder as a YAML file in The Well's ``stats.yaml`` layout
(``mean: {field: value}``, ``std: {field: value}``).

:func:`normalise_fields` is the one normalisation every stream, window set and chapter uses: it
acts on each frame alone, so changing a future frame never changes a normalised past one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from physfm.data import pde, spectral
from physfm.data import spec as spec_module
from physfm.data.spec import SystemSpec
from physfm.results import atomic_write
from physfm.runtime import cache_dir, code_digest, seed_for

__all__ = ["FieldStats", "estimate_stats", "system_stats", "normalise_fields"]

#: trajectories in the sample the statistics are estimated from
SAMPLE = 32


@dataclass(frozen=True)
class FieldStats:
    """Mean and standard deviation of every field of one system, and how many trajectories they
    were estimated from."""

    fields: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    trajectories: int = 0

    def __post_init__(self):
        if not (len(self.fields) == len(self.mean) == len(self.std)) or not self.fields:
            raise ValueError(
                f"FieldStats: fields {self.fields}, mean {self.mean} and std {self.std} must have one entry per field"
            )
        if any(not s > 0 for s in self.std):
            raise ValueError(f"FieldStats: every std must be > 0, got {self.std} for {self.fields}")

    def as_yaml(self) -> str:
        """The Well's ``stats.yaml`` layout, plus the sample size."""
        return yaml.safe_dump(
            {
                "mean": dict(zip(self.fields, self.mean)),
                "std": dict(zip(self.fields, self.std)),
                "trajectories": self.trajectories,
            },
            sort_keys=False,
        )

    @classmethod
    def from_yaml(cls, text: str) -> FieldStats:
        d = yaml.safe_load(text)
        if not isinstance(d, Mapping) or not {"mean", "std"} <= set(d):
            raise ValueError(f"FieldStats.from_yaml: want mean and std mappings field -> value, got {d!r}")
        fields = tuple(d["mean"])
        if tuple(d["std"]) != fields:
            raise ValueError(f"FieldStats.from_yaml: mean has fields {fields}, std {tuple(d['std'])}")
        return cls(
            fields,
            tuple(float(d["mean"][f]) for f in fields),
            tuple(float(d["std"][f]) for f in fields),
            int(d.get("trajectories", 0)),
        )


def normalise_fields(x: torch.Tensor, stats: FieldStats) -> torch.Tensor:
    """``(x - mean) / std`` per field, for ``x`` of shape ``(batch, fields, time, *space)``.

    Raises:
        ValueError: ``x`` does not have one entry per field of ``stats`` on axis 1.
    """
    if x.ndim < 3 or x.shape[1] != len(stats.fields):
        raise ValueError(
            f"normalise_fields: x must be (batch, {len(stats.fields)} fields {stats.fields}, time, *space), "
            f"got shape {tuple(x.shape)}"
        )
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = torch.tensor(stats.mean, device=x.device, dtype=x.dtype).reshape(shape)
    std = torch.tensor(stats.std, device=x.device, dtype=x.dtype).reshape(shape)
    return (x - mean) / std


def estimate_stats(
    spec: SystemSpec | str,
    shape: Sequence[int],
    frames: int,
    *,
    n: int = SAMPLE,
    seed: int = 0,
    chunk: int = SAMPLE,
    device: torch.device | str | None = None,
) -> FieldStats:
    """Statistics of ``n`` trajectories of ``spec`` drawn from the stream ``seed_for("statistics", seed)``:
    mean and unbiased standard deviation of every field over all points, frames and trajectories
    (accumulated in float64, ``chunk`` trajectories per solver call: one call for the default sample)."""
    spec = SystemSpec.of(spec)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"estimate_stats: n must be an int >= 2 trajectories, got {n!r}")
    g = torch.Generator().manual_seed(seed_for("statistics", seed))
    total = sq = None
    count = 0
    done = 0
    while done < n:
        m = min(chunk, n - done)
        x = spec.generate(m, shape, frames, generator=g, device=device).data.double()
        dims = (0, *range(2, x.ndim))
        s, s2 = x.sum(dim=dims), x.square().sum(dim=dims)
        total = s if total is None else total + s
        sq = s2 if sq is None else sq + s2
        count += x.numel() // x.shape[1]
        done += m
    mean = total / count
    var = (sq - count * mean.square()) / (count - 1)
    std = var.clamp_min(0).sqrt()
    return FieldStats(spec.field_names(len(shape)), tuple(mean.tolist()), tuple(std.tolist()), n)


def stats_path(spec: SystemSpec, shape: Sequence[int], frames: int, n: int = SAMPLE) -> Path:
    """The cache file of :func:`system_stats` for this key."""
    key = json.dumps(
        {
            "spec": spec.as_dict(),
            "shape": list(shape),
            "frames": int(frames),
            "n": n,
            "code": code_digest((pde, spectral, spec_module)),
        },
        sort_keys=True,
    )
    return cache_dir() / "stats" / f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.yaml"


def system_stats(
    spec: SystemSpec | str, shape: Sequence[int], frames: int, *, n: int = SAMPLE, device: torch.device | str | None = None
) -> FieldStats:
    """The normalisation statistics of ``spec`` on grid ``shape`` with ``frames`` frames: from the
    cache folder if they were estimated before, else :func:`estimate_stats` now (and stored)."""
    spec = SystemSpec.of(spec)
    shape = tuple(int(s) for s in shape)
    path = stats_path(spec, shape, frames, n)
    if path.exists():
        return FieldStats.from_yaml(path.read_text())
    stats = estimate_stats(spec, shape, frames, n=n, device=device)
    atomic_write(path, lambda tmp: Path(tmp).write_text(stats.as_yaml()))
    return stats
