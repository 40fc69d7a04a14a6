"""Training streams and held-out data from a data set in The Well's layout.

What :mod:`physfm.data.streams` and :func:`physfm.experiments.harness.eval_data` give for data
generated on the fly, this module gives for a data set on disk (:mod:`physfm.data.well`: The
Well's own files, or those :func:`~physfm.data.well.write_well` writes), with the same shapes,
so that an experiment swaps one for the other:

- :class:`WellWindowStream`: random windows ``(fields, window, *space)`` of a split, for ever,
  as :class:`~physfm.data.streams.WindowStream` yields them (with ``meta=True``:
  ``(window, coefficients, dt)``);
- :class:`WellCropStream`: single-channel random crops ``(1, t, *crop)``, every field its own
  sample, as :class:`~physfm.data.streams.CropStream` yields them, except that a crop wraps
  around only a periodic axis: along a wall or an open boundary it stays inside the box;
- :func:`fixed_windows`: a fixed set of distinct windows (scores on training or held-out data);
- :func:`well_eval_data`: :class:`~physfm.experiments.harness.EvalData` from the ``valid``
  split (validation windows) and the ``test`` split (rollout trajectories), so the harness
  scores models on real data as it does on generated data.

**Finite data.** A generated stream never runs out; a data set does. ``trajectories=n`` keeps a
stream to the first ``n`` trajectories of its split (or to the trajectories listed), so an
experiment can ask what a fixed, small data set does to a model.

**Normalisation.** Fields are z-scored with the data set's ``stats.yaml`` by default
(``normalization="zscore"``), the statistics of the training split, as The Well's own
``ZScoreNormalization`` does; never with statistics of the window being predicted.

**Coefficients** (``meta=True``, and in :class:`EvalData`): a trajectory's constant scalars
(The Well's simulation parameters: ``gamma`` for its Euler data sets, ``tcool`` for the
turbulent radiative layer; the coefficients for files written by ``write_well``), in the order
the files list them, each mapped to ``[-1, 1]`` by its range over the training split,
:math:`2 (c - lo) / (hi - lo) - 1` (0 where the range is a single value), as
:meth:`~physfm.data.spec.SystemSpec.scaled` maps generated coefficients from their ranges.
``dt`` is the time between the window's frames, from the files' time coordinate.

**Randomness.** A stream draws from a ``torch.Generator`` seeded with
:func:`~physfm.data.streams.stream_seed` (``seed`` offset by the distributed rank and the
DataLoader worker), made when the first sample is drawn, so every worker and rank reads its own
sequence and the whole is a function of ``seed``; :meth:`WellWindowStream.state_dict` saves it
for a checkpoint that resumes the same sequence. Held-out sets are drawn from
:func:`~physfm.runtime.seed_for` streams of their own.

For example, a next-frame target on The Well's Euler data::

    train = WellWindowStream(path, "train", window=5, trajectories=16, seed=seed_for("train", 0))
    loader = torch.utils.data.DataLoader(train, batch_size=8)      # (8, 5 fields, 5, 512, 512)
    data = well_eval_data(path, window=5, n_windows=32, context=4, steps=12, n_rollouts=8)
    harness.drop_counts(train)                                      # nothing generated, nothing dropped
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset

from physfm.data.streams import stream_seed
from physfm.data.well import SPLITS, WellWindows
from physfm.runtime import seed_for

__all__ = ["WellWindowStream", "WellCropStream", "fixed_windows", "well_eval_data", "coefficient_ranges", "scaled_coefficients"]

Trajectories = int | Sequence[int] | None


def _positive(value, name: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{who}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _chosen(windows: WellWindows, trajectories: Trajectories, who: str) -> list[tuple[int, int]]:
    """``(file, trajectory)`` of the split's trajectories kept: all, the first ``n``, or those listed."""
    every = windows.trajectories()
    if trajectories is None:
        return every
    if isinstance(trajectories, (int, np.integer)) and not isinstance(trajectories, bool):
        n = _positive(trajectories, "trajectories", who)
        if n > len(every):
            raise ValueError(f"{who}: trajectories={n}, but the {windows.split!r} split of {windows.root} has {len(every)}")
        return every[:n]
    picks = list(trajectories)
    if (
        not picks
        or len(set(picks)) != len(picks)
        or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 0 <= g < len(every) for g in picks)
    ):
        raise ValueError(
            f"{who}: trajectories must be None, a count, or distinct trajectory numbers in [0, {len(every)}) "
            f"of the {windows.split!r} split, got {trajectories!r}"
        )
    return [every[int(g)] for g in picks]


def _dataset_name(windows: WellWindows) -> str:
    return windows.files[0].dataset_name


# ---------------------------------------------------------------------------------------------
# Coefficients
# ---------------------------------------------------------------------------------------------


def _constant_scalars(windows: WellWindows) -> list[str]:
    return [name for name, (_, time) in windows.files[0].scalars.items() if not time]


def _trajectory_scalars(windows: WellWindows, file: int, trajectory: int) -> dict[str, float]:
    values = windows.scalars(windows.window_index(file, trajectory, 0))
    return {k: float(values[k]) for k in _constant_scalars(windows)}


def coefficient_ranges(path: str | os.PathLike, split: str = "train") -> dict[str, tuple[float, float]]:
    """``name -> (lo, hi)`` of every constant scalar over the trajectories of ``split`` (the
    training split by default: the ranges that :func:`scaled_coefficients` maps to ``[-1, 1]``)."""
    windows = WellWindows(path, split)
    values = [_trajectory_scalars(windows, k, b) for k, b in windows.trajectories()]
    windows.close()
    return {name: (min(v[name] for v in values), max(v[name] for v in values)) for name in _constant_scalars(windows)}


def scaled_coefficients(values: Mapping[str, float], ranges: Mapping[str, tuple[float, float]]) -> torch.Tensor:
    """``(k,)`` float32: each coefficient of ``ranges`` (in its order) mapped to ``[-1, 1]``,
    :math:`2 (c - lo) / (hi - lo) - 1`, and 0 where ``lo == hi``."""
    missing = [k for k in ranges if k not in values]
    if missing:
        raise ValueError(f"scaled_coefficients: values lack {missing}; they have {sorted(values)}")
    out = [2 * (values[k] - lo) / (hi - lo) - 1 if hi > lo else 0.0 for k, (lo, hi) in ranges.items()]
    return torch.tensor(out, dtype=torch.float32)


def _ranges_for(path: str | os.PathLike, fallback: str) -> dict[str, tuple[float, float]]:
    """The training split's ranges, or ``fallback``'s where the data set has no training split."""
    try:
        return coefficient_ranges(path, "train")
    except FileNotFoundError:
        return coefficient_ranges(path, fallback)


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class _WellStream(IterableDataset):
    """What both streams share: the random generator (made on first use, one per worker and
    rank), the device, the reads, their state and the drop counts of a harness."""

    def __init__(self, seed: int, device, dtype: torch.dtype):
        self.seed = _positive(seed, "seed", type(self).__name__, low=0)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.generator: torch.Generator | None = None
        self._pid = os.getpid()
        self.reads = 0

    def _rng(self) -> torch.Generator:
        if self.generator is None or self._pid != os.getpid():  # a forked DataLoader worker seeds its own
            self.generator = torch.Generator().manual_seed(stream_seed(self.seed))
            self._pid = os.getpid()
        return self.generator

    def randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self._rng()))

    def state_dict(self) -> dict:
        """The generator's state and the reads: enough to continue the same sequence."""
        return {"generator": self._rng().get_state(), "reads": self.reads}

    def load_state_dict(self, state: Mapping) -> None:
        self._rng().set_state(state["generator"])
        self.reads = int(state["reads"])

    def drops(self) -> dict[str, dict[str, float]]:
        """As :meth:`~physfm.data.streams.TrajectoryBuffer.drops`: the trajectories read (``kept``)
        and none dropped (nothing is generated), so :func:`physfm.experiments.harness.drop_counts`
        takes the stream as it takes a buffer."""
        return {self.name: {"kept": len(self.chosen), "dropped": 0, "rate": 0.0}}

    def __getstate__(self):  # a DataLoader worker draws from its own generator
        return {**self.__dict__, "generator": None}


class WellWindowStream(_WellStream):
    """Random windows ``(fields, window, *space)`` of one split of a data set, for ever.

    Each sample takes a random trajectory (of those kept by ``trajectories``), a random stride
    from ``strides`` and a random first frame, and reads frames ``t0, t0 + s, ...,
    t0 + (window - 1) s`` of every time-varying field (:class:`~physfm.data.well.WellWindows`'s
    channels), normalised. For next-frame prediction take ``window = context + 1``, as with
    :class:`~physfm.data.streams.WindowStream`.

    Args:
        path: the data set's folder, ``<base>/<dataset>``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        window: frames per window; ``strides``: time strides to draw from (default consecutive frames).
        trajectories: ``None`` (every trajectory of the split), ``n`` (the first ``n``: a fixed,
            small data set) or a list of the split's trajectory numbers.
        normalization: ``"zscore"`` (default), ``"rms"`` or ``None``, from ``stats.yaml``.
        meta: yield ``(window, coefficients (k,), dt ())`` (module docstring) instead of the window.

    Attributes:
        field_names, boundary_conditions, spatial_dims, shape: those of the data set.
        chosen: the ``(file, trajectory)`` pairs the stream reads.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        *,
        window: int,
        strides: Sequence[int] = (1,),
        trajectories: Trajectories = None,
        normalization: str | None = "zscore",
        seed: int = 0,
        meta: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        who = "WellWindowStream"
        super().__init__(seed, device, dtype)
        window = _positive(window, "window", who)
        strides = tuple(strides)
        if not strides or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in strides):
            raise ValueError(f"{who}: strides must be positive ints, got {strides!r}")
        self.window, self.strides, self.meta = window, strides, bool(meta)
        self.windows = {
            s: WellWindows(path, split, n_steps_input=window, n_steps_output=0, time_stride=s, normalization=normalization)
            for s in dict.fromkeys(strides)
        }
        first = self.windows[strides[0]]
        self.chosen = _chosen(first, trajectories, who)
        self.name = _dataset_name(first)
        self.field_names, self.boundary_conditions = first.field_names, first.boundary_conditions
        self.spatial_dims, self.shape = first.spatial_dims, first.shape
        self.ranges = _ranges_for(path, split) if self.meta else {}
        self._coefficients: dict[tuple[int, int], torch.Tensor] = {}

    def sample(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k, b = self.chosen[self.randint(len(self.chosen))]
        stride = self.strides[self.randint(len(self.strides))] if len(self.strides) > 1 else self.strides[0]
        windows = self.windows[stride]
        t0 = self.randint(windows.windows_per_trajectory(k))
        x = windows[windows.window_index(k, b, t0)].to(self.device, self.dtype)
        self.reads += 1
        if not self.meta:
            return x
        if (k, b) not in self._coefficients:
            self._coefficients[k, b] = scaled_coefficients(_trajectory_scalars(windows, k, b), self.ranges)
        dt = torch.tensor(windows.frame_interval(k, b), dtype=torch.float32, device=self.device)
        return x, self._coefficients[k, b].to(self.device), dt

    def __iter__(self) -> Iterator:
        while True:
            yield self.sample()


class WellCropStream(_WellStream):
    """Single-channel random space-time crops ``(1, t, *crop)`` of one split, for ever.

    Each crop takes a random trajectory, a random field (channel), a random first frame and a
    random spatial offset per axis. Along a periodic axis the crop may wrap around the box, as
    :class:`~physfm.data.streams.CropStream`'s crops do; along an axis with a wall or an open
    side it never does (the offset keeps it inside): the two sides of such a box are not
    neighbours.

    Args:
        crop: ``(t, *space)``: frames and spatial size, each at most the data set's.
        path, split, trajectories, normalization, seed, device, dtype: as for :class:`WellWindowStream`.

    Attributes:
        periodic: per spatial axis, whether crops may wrap around it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        *,
        crop: Sequence[int],
        trajectories: Trajectories = None,
        normalization: str | None = "zscore",
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        who = "WellCropStream"
        super().__init__(seed, device, dtype)
        crop = tuple(int(c) for c in crop)
        if not crop or crop[0] < 1:
            raise ValueError(f"{who}: crop must be (t, *space) with t >= 1, got {crop}")
        self.windows = WellWindows(path, split, n_steps_input=crop[0], n_steps_output=0, normalization=normalization)
        w = self.windows
        if len(crop) != len(w.shape) + 1 or any(not 1 <= c <= n for c, n in zip(crop[1:], w.shape)):
            raise ValueError(
                f"{who}: crop must be (t, *space) with {len(w.shape)} spatial sizes between 1 and the grid {w.shape}, got {crop}"
            )
        self.crop = crop
        self.chosen = _chosen(w, trajectories, who)
        self.name = _dataset_name(w)
        self.field_names, self.boundary_conditions, self.spatial_dims, self.shape = (
            w.field_names,
            w.boundary_conditions,
            w.spatial_dims,
            w.shape,
        )
        self.periodic = tuple(w.boundary_conditions[a] == ("periodic", "periodic") for a in w.spatial_dims)

    def sample(self) -> tuple[torch.Tensor, int]:
        """One crop ``(1, t, *crop)`` and the index of its field in :attr:`field_names`."""
        k, b = self.chosen[self.randint(len(self.chosen))]
        field = self.randint(len(self.field_names))
        t0 = self.randint(self.windows.windows_per_trajectory(k))
        x = self.windows[self.windows.window_index(k, b, t0)][field : field + 1]  # (1, t, *space)
        for axis, (c, n, wraps) in enumerate(zip(self.crop[1:], self.shape, self.periodic)):
            offset = self.randint(n if wraps else n - c + 1)
            index = (torch.arange(c) + offset) % n
            x = x.index_select(2 + axis, index)
        self.reads += 1
        return x.to(self.device, self.dtype), field

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.sample()[0]


# ---------------------------------------------------------------------------------------------
# Fixed and held-out sets
# ---------------------------------------------------------------------------------------------


def _spread(
    windows: WellWindows, chosen: list[tuple[int, int]], n: int, generator: torch.Generator, who: str
) -> list[tuple[int, int, int]]:
    """``n`` distinct windows ``(file, trajectory, t0)``: the trajectories in a random order,
    taking turns, each turn a random start of that trajectory not taken yet."""
    total = sum(windows.windows_per_trajectory(k) for k, _ in chosen)
    if n > total:
        raise ValueError(
            f"{who}: asked for {n} distinct windows, but {len(chosen)} trajectories of the "
            f"{windows.split!r} split hold only {total} windows of {windows.n_frames} frames"
        )
    order = torch.randperm(len(chosen), generator=generator).tolist()
    starts = {j: torch.randperm(windows.windows_per_trajectory(chosen[j][0]), generator=generator).tolist() for j in order}
    picks: list[tuple[int, int, int]] = []
    while len(picks) < n:
        for j in order:
            if starts[j] and len(picks) < n:
                picks.append((*chosen[j], starts[j].pop(0)))
    return picks


def fixed_windows(
    path: str | os.PathLike,
    split: str,
    *,
    window: int,
    n: int,
    trajectories: Trajectories = None,
    seed: int = 0,
    purpose: str = "windows",
    normalization: str | None = "zscore",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` distinct windows ``(n, fields, window, *space)`` of ``split`` (of the trajectories
    kept by ``trajectories``), spread over the trajectories: each trajectory in turn, in a random
    order, gives a window at a random start it has not given yet. Drawn from
    ``seed_for("well/<split>/<purpose>", seed)``: the same set for the same arguments."""
    who = "fixed_windows"
    n = _positive(n, "n", who)
    windows = WellWindows(
        path, split, n_steps_input=_positive(window, "window", who), n_steps_output=0, normalization=normalization
    )
    g = torch.Generator().manual_seed(seed_for(f"well/{split}/{purpose}", seed))
    picks = _spread(windows, _chosen(windows, trajectories, who), n, g, who)
    out = torch.stack([windows[windows.window_index(k, b, t0)] for k, b, t0 in picks])
    windows.close()
    return out.to(device) if device is not None else out


def well_eval_data(
    path: str | os.PathLike,
    *,
    window: int,
    n_windows: int,
    context: int,
    steps: int,
    n_rollouts: int,
    seed: int = 0,
    split: str = "valid",
    rollout_split: str = "test",
    normalization: str | None = "zscore",
    device: torch.device | str | None = None,
):
    """Held-out data of a data set, as :func:`physfm.experiments.harness.eval_data` gives it for a
    generated system: an :class:`~physfm.experiments.harness.EvalData` whose ``windows`` are
    ``n_windows`` distinct windows of ``window`` frames from ``split`` (:func:`fixed_windows`,
    purpose ``"validation"``) and whose ``trajectories`` are ``n_rollouts`` distinct trajectories
    of ``rollout_split``, drawn from ``seed_for("well/<rollout_split>/rollout", seed)``, each its
    first ``context + steps`` frames; with the coefficients of each (scaled by the training
    split's ranges, module docstring), the time between frames and the drop counts (none: nothing
    is generated).

    ``system`` is the files' ``dataset_name``. The validation and rollout splits are The Well's
    own held-out splits, never the training one (pass ``split="train"`` only to score on it).
    """
    from physfm.experiments.harness import EvalData  # here, so that physfm.data never imports the experiments on import

    who = "well_eval_data"
    for name, value in (("context", context), ("steps", steps), ("n_windows", n_windows), ("n_rollouts", n_rollouts)):
        _positive(value, name, who)
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"{who}: window must be an int >= 2 (a next-frame window), got {window!r}")
    for name, s in (("split", split), ("rollout_split", rollout_split)):
        if s not in SPLITS:
            raise ValueError(f"{who}: {name} must be one of {SPLITS}, got {s!r}")
    val = WellWindows(path, split, n_steps_input=window, n_steps_output=0, normalization=normalization)
    g = torch.Generator().manual_seed(seed_for(f"well/{split}/validation", seed))
    val_picks = _spread(val, val.trajectories(), n_windows, g, who)
    windows = torch.stack([val[val.window_index(k, b, t0)] for k, b, t0 in val_picks])
    roll = WellWindows(path, rollout_split, n_steps_input=context + steps, n_steps_output=0, normalization=normalization)
    every = roll.trajectories()
    if n_rollouts > len(every):
        raise ValueError(
            f"{who}: n_rollouts={n_rollouts}, but the {rollout_split!r} split of {roll.root} has {len(every)} trajectories"
        )
    g = torch.Generator().manual_seed(seed_for(f"well/{rollout_split}/rollout", seed))
    rolls = [every[j] for j in sorted(torch.randperm(len(every), generator=g)[:n_rollouts].tolist())]
    trajectories = torch.stack([roll[roll.window_index(k, b, 0)] for k, b in rolls])
    ranges = _ranges_for(path, split)

    def coefficients(windows: WellWindows, pairs) -> torch.Tensor:
        rows = [scaled_coefficients(_trajectory_scalars(windows, k, b), ranges) for k, b in pairs]
        return torch.stack(rows) if rows else torch.zeros(0, len(ranges))

    used = {(split, k, b) for k, b, _ in val_picks} | {(rollout_split, k, b) for k, b in rolls}
    data = EvalData(
        _dataset_name(val),
        windows,
        trajectories,
        context,
        steps,
        coefficients(val, [(k, b) for k, b, _ in val_picks]),
        coefficients(roll, rolls),
        val.frame_interval(*val_picks[0][:2]),
        {"kept": len(used), "dropped": 0, "rate": 0.0},
    )
    val.close()
    roll.close()
    return data.to(device) if device is not None else data
