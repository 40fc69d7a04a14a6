"""One specification of a PDE system as the book generates it: name, coefficient ranges, options.

Every chapter names the systems it uses, and some narrow a coefficient box or change the time
between frames (the pre-training chapter's Kolmogorov flow is slower to diffuse than the
default). :class:`SystemSpec` holds all of that in one place, as plain data::

    SystemSpec("navier_stokes", ranges={"nu": (0.005, 0.02)}, interval=0.5)

and everything downstream takes a spec: the streams (:mod:`physfm.data.streams`), the
normalisation statistics (:mod:`physfm.data.normalise`), the tokeniser recipes, the experiments.
In a chapter's parameters a set of systems is written as a mapping ``name -> options`` (options:
``ranges``, ``interval``, ``length``, ``warmup``), or as a list of names when no system needs options;
:func:`specs` turns either into specs.

The spec also puts a trajectory's coefficients on a common scale for models conditioned on
physics (PDE-FM's FiLM): :meth:`SystemSpec.scaled` maps each coefficient that varies from its
range to ``[-1, 1]`` (on a log scale for those drawn log-uniformly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from physfm.data import pde

__all__ = ["SystemSpec", "specs", "OPTIONS"]

#: generator options a spec may set (keywords of :func:`physfm.data.pde.generate`)
OPTIONS = ("interval", "length", "warmup")


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what a spec looks like in JSON or YAML."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class SystemSpec:
    """A system of :data:`physfm.data.pde.SYSTEMS` with its coefficient box and generator options.

    Args:
        name: the system's registry name (``"navier_stokes"``...).
        ranges: coefficient name -> ``(low, high)`` (or one number, fixing it), replacing the
            system's own box for those coefficients.
        interval, length, warmup: time between saved frames, box side, time simulated before the
            first frame; ``None`` keeps the system's default.

    Raises:
        ValueError: an unknown system, option or coefficient, or a bad range (checked here, so a
            typo in a parameter file fails when the chapter starts, not in a worker process).
    """

    name: str
    ranges: Mapping[str, Any] = field(default_factory=dict)
    interval: float | None = None
    length: float | None = None
    warmup: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in pde.SYSTEMS:
            raise ValueError(f"SystemSpec: unknown system {self.name!r}; known systems: {sorted(pde.SYSTEMS)}")
        ranges = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in dict(self.ranges).items()}
        object.__setattr__(self, "ranges", ranges)
        self.system()  # validates the ranges
        for key in OPTIONS:
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"SystemSpec({self.name!r}): {key} must be a number, got {type(value).__name__} {value!r}")
            if value < 0 or (value == 0 and key != "warmup"):
                want = ">= 0" if key == "warmup" else "> 0"
                raise ValueError(f"SystemSpec({self.name!r}): {key} must be {want}, got {value!r}")

    @classmethod
    def of(cls, value: str | Mapping[str, Any] | SystemSpec, name: str | None = None) -> SystemSpec:
        """A spec from a name, a mapping of options (with ``name`` given or as a key), or a spec."""
        if isinstance(value, SystemSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            options = dict(value)
            name = options.pop("name", name)
            unknown = set(options) - {"ranges", *OPTIONS}
            if unknown:
                raise ValueError(f"SystemSpec({name!r}): unknown options {sorted(unknown)}; a system takes ranges and {OPTIONS}")
            return cls(name, **options)
        raise TypeError(
            f"SystemSpec.of: want a system name, a mapping of options or a SystemSpec, got {type(value).__name__} {value!r}"
        )

    def system(self) -> pde.System:
        """The :class:`~physfm.data.pde.System` with this spec's coefficient box."""
        return pde.SYSTEMS[self.name](ranges=self.ranges)

    @property
    def options(self) -> dict[str, float]:
        """The keywords of :func:`physfm.data.pde.generate` this spec sets."""
        return {k: getattr(self, k) for k in OPTIONS if getattr(self, k) is not None}

    def n_fields(self, spatial_dims: int) -> int:
        return self.system().n_fields(spatial_dims)

    def field_names(self, spatial_dims: int) -> tuple[str, ...]:
        return self.system().field_names(spatial_dims)

    def generate(
        self,
        batch: int,
        shape: Sequence[int],
        frames: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> pde.Trajectories:
        """``batch`` trajectories of ``frames`` frames on grid ``shape`` (:func:`physfm.data.pde.generate`)."""
        return pde.generate(
            self.system(),
            batch=batch,
            shape=shape,
            frames=frames,
            generator=generator,
            device=device,
            dtype=dtype,
            **self.options,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for parameter files, cache keys and provenance): name and what is set."""
        out: dict[str, Any] = {"name": self.name}
        if self.ranges:
            out["ranges"] = _plain(self.ranges)
        out.update(self.options)
        return out

    # -- coefficients on a common scale ------------------------------------------------------

    def coefficient_names(self, spatial_dims: int) -> list[str]:
        """The coefficients that vary (``low < high``) and act in ``spatial_dims`` dimensions (the
        advection velocity has one component per axis), in the order of the system's ranges."""
        system = self.system()
        names = []
        for name, (lo, hi) in system.ranges.items():
            if lo == hi:
                continue
            if isinstance(system, pde.AdvectionDiffusion) and name.startswith("c") and int(name[1:]) >= spatial_dims:
                continue
            names.append(name)
        return names

    def scaled(self, coefficients: Mapping[str, torch.Tensor], spatial_dims: int) -> torch.Tensor:
        """``(n, k)``: each coefficient of :meth:`coefficient_names` mapped from its range to
        ``[-1, 1]``, :math:`2 (c - lo) / (hi - lo) - 1` (of :math:`\\log c` for log-uniform ones)."""
        system = self.system()
        cols = []
        for name in self.coefficient_names(spatial_dims):
            if name not in coefficients:
                raise ValueError(f"SystemSpec.scaled: {self.name} needs coefficient {name!r}, got {sorted(coefficients)}")
            lo, hi = system.ranges[name]
            v = coefficients[name].to(torch.float64)
            if name in system.log_uniform and lo > 0:
                v, lo, hi = torch.log(v), math.log(lo), math.log(hi)
            cols.append(2 * (v - lo) / (hi - lo) - 1)
        n = len(next(iter(coefficients.values()))) if coefficients else 0
        return torch.stack(cols, dim=1).float() if cols else torch.zeros(n, 0)


def specs(
    systems: Sequence[str | Mapping | SystemSpec] | Mapping[str, Mapping | None] | str | SystemSpec,
) -> dict[str, SystemSpec]:
    """``name -> SystemSpec`` from a chapter's ``systems`` parameter: a list of names (or specs),
    or a mapping ``name -> options`` (``None`` or ``{}`` for none), or one name or spec."""
    if isinstance(systems, (str, SystemSpec)):
        systems = [systems]
    if isinstance(systems, Mapping):
        out = [SystemSpec.of(opts or {}, name=name) for name, opts in systems.items()]
    elif isinstance(systems, Sequence):
        out = [SystemSpec.of(s) for s in systems]
    else:
        raise TypeError(f"specs: systems must be names or a mapping name -> options, got {type(systems).__name__} {systems!r}")
    if not out:
        raise ValueError("specs: systems must name at least one system")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"specs: systems {names} name a system twice")
    return {s.name: s for s in out}
