"""Training data that never touches a disk: a refreshed pool of trajectories and what reads it.

Tadpole pre-trains its autoencoder on synthetic data generated during training by GPU spectral
solvers, which removes the ceiling that disk space puts on the size of a data set. The pattern
here is the same, at laptop scale:

1. a :class:`TrajectoryBuffer` holds ``size`` trajectories of one or several systems
   (:class:`~physfm.data.spec.SystemSpec`), generated in chunks of ``chunk`` by the solver and
   normalised with each system's own statistics (:mod:`physfm.data.normalise`, estimated once
   from a separate sample, never from the trajectory itself);
2. :meth:`TrajectoryBuffer.refresh` replaces the oldest trajectories by new ones (a ring
   buffer), so a long run sees an endless supply of fresh data while each trajectory is still
   read several times (generation costs more than a crop);
3. readers draw from it: :class:`CropStream` yields single-channel random space-time crops
   ``(1, t, *crop)`` for tokeniser pre-training (each field of a multi-field system is its own
   sample, so one tokeniser serves systems with any number of fields; crops wrap around the
   periodic box); :class:`WindowStream` yields windows of consecutive (or strided) frames
   ``(fields, window, *space)`` of one system for dynamics, with the trajectory's metadata when
   asked; :func:`epoch_batches` reads a fixed set of trajectories window by window, every
   window once per epoch (fine-tuning on finite data).

Held-out data comes from trajectories drawn from other seeds (:func:`held_out_trajectories`,
:func:`held_out_windows`: distinct windows of distinct trajectories, never from a training stream).

Reproducible: chunk ``j`` of system ``s`` is drawn from a generator seeded by
``seed_for("<s>/<j>", seed)`` alone, so every reader with the same ``seed`` sees the same
trajectories in the same order (and readers can share the work through ``store``, a dict of
generated chunks). Each DataLoader worker and each distributed rank reads its own stream
(:func:`stream_seed`: ``seed + 1009 * rank + worker``), so data is never duplicated across workers
or GPUs. Processes share generated chunks through a :class:`DiskStore` (a folder) in place of
the dict. For checkpoints that resume exactly, read a stream in the main process
(``num_workers=0``) and save its :meth:`state_dict`.

Every buffer counts what the generator dropped (trajectories that blew up or died out and were
drawn again): :meth:`TrajectoryBuffer.drops` gives the counts and rates per system, and the
experiments store them with their results.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from physfm.data.normalise import FieldStats, normalise_fields, system_stats
from physfm.data.spec import SystemSpec, specs
from physfm.results import atomic_write
from physfm.runtime import rank, seed_for

__all__ = [
    "TrajectoryBuffer",
    "DiskStore",
    "CropStream",
    "WindowStream",
    "epoch_batches",
    "take",
    "held_out_trajectories",
    "held_out_windows",
    "stream_seed",
    "drop_summary",
]

Systems = Sequence[str | Mapping | SystemSpec] | Mapping[str, Mapping | None] | str | SystemSpec


def stream_seed(seed: int) -> int:
    """``seed`` offset by the distributed rank (:func:`physfm.runtime.rank`: 0 inside
    :func:`~physfm.runtime.alone`) and the DataLoader worker id, so every rank and worker draws
    different data while the whole stays a function of ``seed``."""
    info = get_worker_info()
    worker = info.id if info is not None else 0
    return int(seed) + 1009 * rank() + worker


def _positive_int(value: Any, name: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{who}: {name} must be an int >= {low}, got {value!r}")
    return value


class DiskStore(MutableMapping):
    """A store of generated chunks (``store=`` of :class:`TrajectoryBuffer`) in a folder, so that
    processes share them: the first buffer that needs chunk ``j`` generates it and writes it
    (atomically, :func:`physfm.results.atomic_write`), every later one, in any process, reads it.
    Keys are the buffer's chunk keys (their ``repr`` hashed into a file name); values are read to
    the CPU. Two processes that generate the same chunk at once write the same bytes (a chunk is
    a function of its key alone), so the race is harmless."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: Any) -> Path:
        return self.folder / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.pt"

    def __contains__(self, key: object) -> bool:
        return self._path(key).is_file()

    def __getitem__(self, key: Any) -> Any:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return torch.load(path, map_location="cpu", weights_only=False)

    def __setitem__(self, key: Any, value: Any) -> None:
        atomic_write(self._path(key), lambda tmp: torch.save(value, tmp))

    def __delitem__(self, key: Any) -> None:
        self._path(key).unlink()

    def __iter__(self) -> Iterator[str]:  # file names: the keys themselves are not kept
        return (p.stem for p in self.folder.glob("*.pt"))

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.pt"))


class TrajectoryBuffer:
    """A ring buffer of normalised trajectories of several systems, generated on the fly.

    Args:
        systems: names, specs, or a mapping ``name -> options`` (:func:`physfm.data.spec.specs`),
            mixed in equal shares.
        shape: spatial grid of the generated trajectories.
        frames: frames per trajectory.
        size: trajectories held.
        chunk: trajectories generated per call of the solver (a batch: larger is faster per
            trajectory, but refreshes in coarser steps).
        seed: seed of the buffer's random stream (its chunks and its draws).
        stats: ``name -> FieldStats`` (default: :func:`~physfm.data.normalise.system_stats` of each
            system at this grid and number of frames).
        store: a dict shared between buffers with the same arguments and seed, to generate each
            chunk once (a :class:`DiskStore` to share them between processes).

    Attributes:
        data: the trajectories, each ``(fields, frames, *shape)``, normalised.
        labels: the index (into :attr:`specs`) of each trajectory's system.
        coefficients: each trajectory's coefficients, ``name -> float``.
    """

    def __init__(
        self,
        systems: Systems,
        *,
        shape: Sequence[int],
        frames: int,
        size: int = 64,
        chunk: int = 8,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        stats: Mapping[str, FieldStats] | None = None,
        store: MutableMapping | None = None,
    ):
        self.specs = list(specs(systems).values())
        self.shape = tuple(shape)
        if not self.shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 4 for s in self.shape):
            raise ValueError(f"TrajectoryBuffer: shape must be 1 to 3 ints >= 4, got {shape!r}")
        for s in self.specs:
            s.system().check_dim(len(self.shape))
        self.frames = _positive_int(frames, "frames", "TrajectoryBuffer")
        self.size = _positive_int(size, "size", "TrajectoryBuffer")
        self.chunk = _positive_int(chunk, "chunk", "TrajectoryBuffer")
        self.device, self.dtype = device, dtype
        self.seed = int(seed)
        stats = dict(stats or {})
        missing = [s for s in self.specs if s.name not in stats]
        for s in missing:
            stats[s.name] = system_stats(s, self.shape, self.frames, device=device)
        self.stats = {s.name: stats[s.name] for s in self.specs}
        self.store = store if store is not None else {}
        self.generator = torch.Generator().manual_seed(seed_for("draws", self.seed))
        self.data: list[torch.Tensor] = []
        self.labels: list[int] = []
        self.coefficients: list[dict[str, float]] = []
        self.next_chunk = [0] * len(self.specs)
        self.next_system = 0
        self.next_slot = 0
        self.kept = [0] * len(self.specs)
        self.dropped = [0] * len(self.specs)
        self.seconds = 0.0
        self.fill()

    @property
    def generated(self) -> int:
        """Usable trajectories generated (or taken from the store) so far."""
        return sum(self.kept)

    def interval(self, label: int) -> float:
        """Time between the frames of system ``label``'s trajectories."""
        return self._interval[label]

    def _chunk(self, k: int) -> list[tuple[torch.Tensor, int, dict[str, float]]]:
        """The next chunk of system ``k``: ``chunk`` normalised trajectories with their coefficients."""
        spec, j = self.specs[k], self.next_chunk[k]
        self.next_chunk[k] += 1
        key = (repr(spec.as_dict()), self.shape, self.frames, self.chunk, self.seed, j, str(self.dtype))
        if key in self.store:
            made, dropped, interval = self.store[key]
            # a DiskStore reads to the CPU; the label is this buffer's index of the system
            made = [(d.to(self.device), k, c) for d, _, c in made]
        else:
            start = time.perf_counter()
            g = torch.Generator().manual_seed(seed_for(f"{spec.name}/{j}", self.seed))
            tr = spec.generate(self.chunk, self.shape, self.frames, generator=g, device=self.device, dtype=self.dtype)
            data = normalise_fields(tr.data, self.stats[spec.name])
            coefs = [{c: float(v[i]) for c, v in tr.coefficients.items()} for i in range(self.chunk)]
            made, dropped, interval = [(data[i], k, coefs[i]) for i in range(self.chunk)], tr.dropped, tr.interval
            self.store[key] = (made, dropped, interval)
            self.seconds += time.perf_counter() - start
        self.kept[k] += len(made)
        self.dropped[k] += dropped
        self._interval[k] = interval
        return made

    def _make(self, n: int, *, balanced: bool) -> list[tuple[torch.Tensor, int, dict[str, float]]]:
        """At least ``n`` new trajectories: whole chunks, the systems taking turns; ``balanced``
        (filling) takes an equal share of each system."""
        out: list = []
        if balanced:
            per = math.ceil(n / len(self.specs))
            for k in range(len(self.specs)):
                mine: list = []
                while len(mine) < per:
                    mine.extend(self._chunk(k))
                out.extend(mine[:per])
            # interleave the systems so that the oldest slots hold every system
            out = [out[k * per + i] for i in range(per) for k in range(len(self.specs))][:n]
            return out
        while len(out) < n:
            out.extend(self._chunk(self.next_system))
            self.next_system = (self.next_system + 1) % len(self.specs)
        return out[:n]

    def fill(self) -> None:
        """Generate the whole buffer (called once at construction)."""
        self._interval = [0.0] * len(self.specs)
        made = self._make(self.size, balanced=True)
        self.data = [d for d, _, _ in made]
        self.labels = [k for _, k, _ in made]
        self.coefficients = [c for _, _, c in made]

    def refresh(self, n: int) -> None:
        """Replace the ``n`` oldest trajectories by new ones."""
        for data, k, coef in self._make(n, balanced=False) if n else []:
            self.data[self.next_slot] = data
            self.labels[self.next_slot] = k
            self.coefficients[self.next_slot] = coef
            self.next_slot = (self.next_slot + 1) % self.size

    def randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    @property
    def trajectories_per_second(self) -> float:
        """Generation throughput so far (chunks taken from the store do not count)."""
        return self.generated / self.seconds if self.seconds else math.inf

    def drops(self) -> dict[str, dict[str, float]]:
        """Per system: usable trajectories ``kept``, trajectories ``dropped`` by the generator
        (and drawn again), and the drop ``rate`` = dropped / (kept + dropped)."""
        return {
            s.name: {
                "kept": self.kept[k],
                "dropped": self.dropped[k],
                "rate": self.dropped[k] / max(1, self.kept[k] + self.dropped[k]),
            }
            for k, s in enumerate(self.specs)
        }

    def tensor(self) -> torch.Tensor:
        """Every trajectory stacked, ``(size, fields, frames, *shape)`` (one system only)."""
        if len(self.specs) != 1:
            raise ValueError(
                f"TrajectoryBuffer.tensor: the buffer mixes {len(self.specs)} systems with different fields; stack per system"
            )
        return torch.stack(self.data)

    def state_dict(self) -> dict:
        """Everything needed to continue the stream exactly: contents, pointers, random state."""
        return {
            "data": [d.cpu() for d in self.data],
            "labels": list(self.labels),
            "coefficients": list(self.coefficients),
            "next_chunk": list(self.next_chunk),
            "next_system": self.next_system,
            "next_slot": self.next_slot,
            "generator": self.generator.get_state(),
            "kept": list(self.kept),
            "dropped": list(self.dropped),
            "interval": list(self._interval),
            "seed": self.seed,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.data = [d.to(self.device) for d in state["data"]]
        self.labels, self.coefficients = list(state["labels"]), list(state["coefficients"])
        self.next_chunk, self.next_system, self.next_slot = list(state["next_chunk"]), state["next_system"], state["next_slot"]
        self.generator.set_state(state["generator"])
        self.kept, self.dropped, self._interval = list(state["kept"]), list(state["dropped"]), list(state["interval"])
        self.seed = state["seed"]


def drop_summary(buffers: Sequence[TrajectoryBuffer]) -> dict[str, dict[str, float]]:
    """:meth:`TrajectoryBuffer.drops` summed over several buffers, per system."""
    out: dict[str, dict[str, float]] = {}
    for buf in buffers:
        for name, d in buf.drops().items():
            o = out.setdefault(name, {"kept": 0, "dropped": 0})
            o["kept"] += d["kept"]
            o["dropped"] += d["dropped"]
    for o in out.values():
        o["rate"] = o["dropped"] / max(1, o["kept"] + o["dropped"])
    return out


class _Stream(IterableDataset):
    """What the crop and window streams share: a buffer per iterator, refreshed as it is read."""

    def __init__(
        self, systems: Systems, *, shape, frames, size, chunk, refresh, refresh_every, seed, device, dtype, stats=None, store=None
    ):
        if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not 0.0 <= refresh <= 1.0:
            raise ValueError(f"{type(self).__name__}: refresh must be a fraction in [0, 1], got {refresh!r}")
        self.specs = specs(systems)  # unknown names fail here, not in a worker
        for spec in self.specs.values():
            spec.system().check_dim(len(shape))
        self.buffer_args = dict(
            systems=list(self.specs.values()),
            shape=tuple(shape),
            frames=frames,
            size=size,
            chunk=chunk,
            device=device,
            dtype=dtype,
            stats=stats,
            store=store,
        )
        self.refresh = float(refresh)
        self.refresh_every = int(refresh_every or size)
        self.seed = int(seed)
        self.buffer: TrajectoryBuffer | None = None
        self.reads = 0

    def _ensure_buffer(self) -> TrajectoryBuffer:
        if self.buffer is None:
            self.buffer = TrajectoryBuffer(seed=stream_seed(self.seed), **self.buffer_args)
        return self.buffer

    def _after_read(self) -> None:
        self.reads += 1
        n = round(self.refresh * self.buffer.size)
        if n and self.reads % self.refresh_every == 0:
            self.buffer.refresh(n)

    def state_dict(self) -> dict:
        return {"buffer": self._ensure_buffer().state_dict(), "reads": self.reads}

    def load_state_dict(self, state: Mapping) -> None:
        self._ensure_buffer().load_state_dict(state["buffer"])
        self.reads = state["reads"]


class CropStream(_Stream):
    """Single-channel random space-time crops ``(1, t, *crop)`` from several systems, for ever.

    Args:
        systems: the systems to mix (equal shares of the buffer).
        shape: spatial grid of the generated trajectories, e.g. ``(64, 64)``.
        frames: frames per generated trajectory.
        crop: ``(t, *space)`` size of a crop; ``t <= frames`` and each spatial size ``<=`` the grid.
        size: trajectories in the buffer; ``refresh``: fraction of it replaced every
            ``refresh_every`` crops (default: every ``size`` crops).

    Each crop takes a random trajectory, a random field of it, a random start frame and a random
    spatial offset (crops wrap around the periodic box).
    """

    def __init__(
        self,
        systems: Systems,
        *,
        shape: Sequence[int],
        frames: int,
        crop: Sequence[int],
        size: int = 64,
        chunk: int = 8,
        refresh: float = 0.25,
        refresh_every: int | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        stats: Mapping[str, FieldStats] | None = None,
        store: MutableMapping | None = None,
    ):
        crop = tuple(int(c) for c in crop)
        shape = tuple(int(s) for s in shape)
        if len(crop) != len(shape) + 1:
            raise ValueError(
                f"CropStream: crop must be (t, *space) with {len(shape)} spatial sizes like shape={shape}, got {crop}"
            )
        if not 1 <= crop[0] <= frames:
            raise ValueError(f"CropStream: crop length t={crop[0]} must be between 1 and frames={frames}")
        if any(c < 1 or c > n for c, n in zip(crop[1:], shape)):
            raise ValueError(f"CropStream: spatial crop {crop[1:]} is larger than the grid {shape} (or empty)")
        super().__init__(
            systems,
            shape=shape,
            frames=frames,
            size=size,
            chunk=chunk,
            refresh=refresh,
            refresh_every=refresh_every,
            seed=seed,
            device=device,
            dtype=dtype,
            stats=stats,
            store=store,
        )
        self.crop = crop

    def sample(self) -> tuple[torch.Tensor, int]:
        """One crop ``(1, t, *crop)`` and the index of its system in ``systems``."""
        buf = self._ensure_buffer()
        i = buf.randint(buf.size)
        traj, label = buf.data[i], buf.labels[i]
        f = buf.randint(traj.shape[0])
        t0 = buf.randint(traj.shape[1] - self.crop[0] + 1)
        x = traj[f : f + 1, t0 : t0 + self.crop[0]]
        for axis, (c, n) in enumerate(zip(self.crop[1:], buf.shape)):
            offset = buf.randint(n)
            idx = (torch.arange(c, device=x.device) + offset) % n
            x = x.index_select(2 + axis, idx)
        self._after_read()
        return x, label

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.sample()[0]


class WindowStream(_Stream):
    """Windows of ``window`` frames ``(fields, window, *space)`` of one system, for ever.

    For next-frame prediction take ``window = context + 1``: the model sees frames
    ``[0, context)`` and is scored on frames ``[1, context]``. A window takes every
    ``stride``-th frame, the stride drawn from ``strides`` (default ``(1,)``: consecutive frames),
    so with several strides the time between the frames a model sees varies.

    With ``meta=True`` the stream yields ``(window, coefficients, dt)``: the trajectory's
    coefficients scaled to ``[-1, 1]`` (:meth:`~physfm.data.spec.SystemSpec.scaled`) and the time
    between the window's frames, what PDE-FM conditions on.
    """

    def __init__(
        self,
        system: str | Mapping | SystemSpec,
        *,
        shape: Sequence[int],
        frames: int,
        window: int,
        strides: Sequence[int] = (1,),
        size: int = 32,
        chunk: int = 8,
        refresh: float = 0.25,
        refresh_every: int | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        meta: bool = False,
        stats: Mapping[str, FieldStats] | None = None,
        store: MutableMapping | None = None,
    ):
        spec = SystemSpec.of(system)
        strides = tuple(strides)
        if not strides or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in strides):
            raise ValueError(f"WindowStream: strides must be positive ints, got {strides!r}")
        span = max(strides) * (window - 1) + 1
        if not window >= 1 or span > frames:
            raise ValueError(
                f"WindowStream: window={window} at stride {max(strides)} spans {span} frames; "
                f"it must be between 1 and frames={frames}"
            )
        super().__init__(
            [spec],
            shape=shape,
            frames=frames,
            size=size,
            chunk=chunk,
            refresh=refresh,
            refresh_every=refresh_every,
            seed=seed,
            device=device,
            dtype=dtype,
            stats=stats,
            store=store,
        )
        self.spec, self.window, self.strides, self.meta = spec, int(window), strides, bool(meta)

    def sample(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        buf = self._ensure_buffer()
        i = buf.randint(buf.size)
        traj = buf.data[i]
        stride = self.strides[buf.randint(len(self.strides))] if len(self.strides) > 1 else self.strides[0]
        span = stride * (self.window - 1) + 1
        t0 = buf.randint(traj.shape[1] - span + 1)
        self._after_read()
        x = traj[:, t0 : t0 + span : stride]
        if not self.meta:
            return x
        coef = self.spec.scaled({k: torch.tensor([v]) for k, v in buf.coefficients[i].items()}, len(buf.shape))[0]
        return x, coef.to(x.device), torch.tensor(stride * buf.interval(0), dtype=torch.float32, device=x.device)

    def __iter__(self) -> Iterator:
        while True:
            yield self.sample()


def take(stream: CropStream | WindowStream, n: int) -> torch.Tensor:
    """The next ``n`` samples of ``stream`` stacked into one batch."""
    _positive_int(n, "n", "take")
    it = iter(stream)
    return torch.stack([next(it) for _ in range(n)])


def epoch_batches(trajectories: torch.Tensor, window: int, steps: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` batches ``(batch, F, window, *S)`` of the windows of a fixed set of
    ``trajectories (n, F, frames, *S)``: every window once per epoch, in an order shuffled by
    ``seed`` (finite data, as when fine-tuning on a small data set)."""
    starts = trajectories.shape[2] - window + 1
    if starts < 1:
        raise ValueError(f"epoch_batches: window={window} is longer than the {trajectories.shape[2]} frames of the trajectories")
    n = len(trajectories) * starts
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-steps * batch // n))])[: steps * batch]
    for piece in order.split(batch):
        yield torch.stack([trajectories[i // starts, :, i % starts : i % starts + window] for i in piece.tolist()])


def held_out_trajectories(
    system: str | Mapping | SystemSpec,
    *,
    shape: Sequence[int],
    frames: int,
    n: int,
    seed: int = 0,
    purpose: str = "validation",
    device: torch.device | str | None = None,
    stats: FieldStats | None = None,
) -> tuple[torch.Tensor, TrajectoryBuffer]:
    """``n`` normalised trajectories ``(n, F, frames, *shape)`` of ``system`` drawn from the stream
    ``seed_for(purpose, seed)``, apart from every training stream (which use ``seed_for("train", ...)``),
    and the buffer that holds them (its coefficients and drop counts)."""
    _positive_int(n, "n", "held_out_trajectories")
    spec = SystemSpec.of(system)
    buf = TrajectoryBuffer(
        [spec],
        shape=shape,
        frames=frames,
        size=n,
        chunk=min(n, 16),
        seed=seed_for(purpose, seed),
        device=device,
        stats={spec.name: stats} if stats else None,
    )
    return buf.tensor(), buf


def held_out_windows(
    system: str | Mapping | SystemSpec,
    *,
    shape: Sequence[int],
    frames: int,
    window: int,
    n: int,
    seed: int = 0,
    purpose: str = "validation",
    device: torch.device | str | None = None,
    stats: FieldStats | None = None,
) -> torch.Tensor:
    """A fixed evaluation set: ``n`` distinct windows ``(n, F, window, *shape)`` of ``system``, one
    from each of ``n`` held-out trajectories (:func:`held_out_trajectories`), at a random start."""
    if not 1 <= window <= frames:
        raise ValueError(f"held_out_windows: window={window} must be between 1 and frames={frames}")
    traj, buf = held_out_trajectories(
        system, shape=shape, frames=frames, n=n, seed=seed, purpose=purpose, device=device, stats=stats
    )
    starts = torch.randint(frames - window + 1, (n,), generator=buf.generator).tolist()
    return torch.stack([traj[i, :, t0 : t0 + window] for i, t0 in enumerate(starts)])
