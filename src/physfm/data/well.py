"""Real data in The Well's own HDF5 layout: a reader of windows, a writer, and a subsampler.

The Well (Ohana et al. 2024, *The Well: a large-scale collection of diverse physics simulations
for machine learning*, NeurIPS 37, arXiv 2412.00568) stores every data set in one layout,
specified in its ``docs/data_format.md`` and read by its ``the_well.data.WellDataset``::

    <base>/<dataset>/stats.yaml                 mean, std, rms (and of frame-to-frame deltas) per field,
                                                over the training split
    <base>/<dataset>/data/{train,valid,test}/*.hdf5

    each file (HDF5 groups -, attributes @):
      @dataset_name, @grid_type ("cartesian"), @n_spatial_dims = d, @n_trajectories = B,
      @simulation_parameters (names; each also a root attribute and a dataset in scalars/)
      -dimensions     @spatial_dims = ["x", "y"];  time (T,) or (B, T);  x (N_x,), y (N_y,) ...
      -boundary_conditions/<name>   @bc_type (PERIODIC | WALL | OPEN), @associated_dims,
                      @associated_fields;  mask: bool over the associated axes, True on the boundary
      -scalars        @field_names;  <name>: ([B], [T]) as flagged by @sample_varying, @time_varying
      -t0_fields      @field_names;  <name>: ([B], [T], *space, ...)        scalar fields
      -t1_fields      same, with one trailing axis of size d                 vector fields
      -t2_fields      same, with two trailing axes d x d                     tensor fields
                      each field dataset has @sample_varying, @time_varying and @dim_varying
                      (one flag per spatial axis; a False axis is stored with size 1 omitted)

Reading (:class:`WellWindows`) mirrors ``WellDataset`` sample for sample: the same files
(``*.h5`` and ``*.hdf5``, sorted), the same window index (file, then trajectory, then first
frame ``t0``; window frames ``t0, t0 + s, ..., t0 + (n_in + n_out - 1) s`` for a time stride
``s``), the same channel order and names (t0 fields, then t1 components ``velocity_x,
velocity_y``, then t2 components ``stress_xx, stress_xy, ...``, flattened row-major), but
channels first: a window is ``(field, n_steps_input + n_steps_output, *space)`` and a batch
``(batch, field, time, *space)``. Normalisation mirrors two of The Well's options, applied per
field from ``stats.yaml`` with the denominator clipped at ``1e-4`` as its classes do:
``"zscore"`` (``ZScoreNormalization.normalize``), :math:`(x - \\mu) / \\max(\\sigma, 10^{-4})`,
and ``"rms"`` (``RMSNormalization.normalize``), :math:`x / \\max(\\mathrm{rms}, 10^{-4})`;
the delta variants of ``DeltaWellDataset`` are not mirrored. Boundary conditions are reported
per spatial axis and side, ``{"x": ("periodic", "periodic"), ...}``, derived from the masks
exactly as ``WellDataset``'s ``padding`` mode derives its codes (open unless a mask says
otherwise; :data:`BC_CODES` gives its numbers).

Writing (:func:`write_well`) stores :func:`physfm.data.pde.generate` trajectories in this
layout (the coefficients as per-trajectory scalars; boundaries periodic, or as given: walls and
open sides, such as those of :func:`physfm.data.walls.walled`, each side a mask) and computes
``stats.yaml`` from the training split only, as The Well's ``scripts/compute_statistics.py``
does (population moments per field and component, pooled over files). :func:`subsample`
makes a laptop-sized copy of a downloaded data set: a few trajectories, spatial and temporal
strides, the same layout, statistics recomputed.

Integrity: every error names the file, the HDF5 object and what was expected
(:class:`WellFormatError`). A truncated file fails when opened (HDF5 checks the end of file
against its superblock). Files written here are checksummed throughout: HDF5's latest format
checksums its object headers, every data chunk carries a Fletcher-32 checksum, and a SHA-256
digest of all names and attributes (root attribute ``physfm_metadata_sha256``) covers the
variable-length strings HDF5 leaves unchecked; so a flipped byte raises instead of yielding a
wrong window. The Well's own files carry no checksums; for them the reader still rejects
non-finite values, but no reader can see a flipped bit that leaves a finite number.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml
from einops import rearrange

from physfm.data.pde import Trajectories
from physfm.results import atomic_write

__all__ = ["WellWindows", "WellFile", "WellFormatError", "write_well", "compute_stats", "subsample", "SPLITS", "BC_CODES"]

SPLITS = ("train", "valid", "test")
BC_CODES = {"wall": 0, "open": 1, "periodic": 2}  # the_well.data.datasets.BoundaryCondition
AXES = ("x", "y", "z")
MIN_DENOMINATOR = 1e-4  # min_denom of The Well's ZScoreNormalization and RMSNormalization
NORMALISATIONS = {"zscore": ("mean", "std"), "rms": (None, "rms")}
DIGEST = "physfm_metadata_sha256"  # root attribute of the files written here


class WellFormatError(ValueError):
    """A file or ``stats.yaml`` that does not follow The Well's layout, or a corrupt file."""


# ---------------------------------------------------------------------------------------------
# One file's layout, checked
# ---------------------------------------------------------------------------------------------


def _hdf5_files(folder: Path) -> list[Path]:
    """``*.h5`` and ``*.hdf5`` in ``folder``, sorted, as ``WellDataset`` lists them."""
    return sorted([*folder.glob("*.h5"), *folder.glob("*.hdf5")], key=str)


def _names(value) -> list[str]:
    """A list of names from an HDF5 attribute (a string, or an array of str or bytes)."""
    if isinstance(value, (str, bytes)):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value]


def _get(path: Path, obj: h5py.Group | h5py.Dataset, key: str, wants: str, kind: type | None = None):
    """``obj.attrs[key]`` (``key = "@name"``) or ``obj[key]``, a ``kind`` if given, with an error
    naming what is missing."""
    try:
        if key.startswith("@"):
            return obj.attrs[key[1:]]
        out = obj[key]
        if kind is not None and not isinstance(out, kind):
            raise WellFormatError(
                f"{path}: {obj.name}/{key} is a {type(out).__name__}, expected {wants} (an HDF5 {kind.__name__})"
            )
        return out
    except KeyError:
        what = "attribute" if key.startswith("@") else "member"
        raise WellFormatError(f"{path}: {obj.name} has no {what} {key.lstrip('@')!r} (expected {wants})") from None
    except (OSError, RuntimeError) as e:  # HDF5 failed to parse: a corrupt file
        raise WellFormatError(f"{path}: HDF5 could not read {obj.name}/{key} ({e}); the file is corrupt") from e


def _digest(f: h5py.File) -> str:
    """SHA-256 of every object's name, shape, type and attributes (this digest's own aside).

    HDF5 checksums object headers and chunks but not the heap holding variable-length strings
    (field names, axis names, boundary types); the digest covers those too."""
    h = hashlib.sha256()

    def visit(name: str, obj) -> None:
        h.update(f"<{name}|{type(obj).__name__}".encode())
        if isinstance(obj, h5py.Dataset):
            h.update(f"{obj.shape}{obj.dtype.str}".encode())
        for key, v in sorted(obj.attrs.items()):
            if key == DIGEST:
                continue
            v = np.asarray(v)
            flat = [x.decode() if isinstance(x, bytes) else x for x in v.ravel()] if v.dtype.kind in "OSU" else None
            h.update(
                f"@{key}:{v.dtype.str}{v.shape}".encode() + ("\x00".join(flat).encode() if flat is not None else v.tobytes())
            )

    visit("/", f)
    f.visititems(visit)
    return h.hexdigest()


@dataclass(frozen=True)
class Field:
    """One dataset of ``t{order}_fields``: flags as stored, and its flattened channel names."""

    name: str
    order: int
    sample_varying: bool
    time_varying: bool
    dim_varying: tuple[bool, ...]
    channels: tuple[str, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class WellFile:
    """The checked layout of one file: what :class:`WellWindows` needs to cut windows from it.

    ``boundary`` maps each spatial axis to its ``(low, high)`` condition; ``scalars`` maps each
    scalar to its ``(sample_varying, time_varying)`` flags.
    """

    path: Path
    dataset_name: str
    n_trajectories: int
    n_steps: int
    spatial_dims: tuple[str, ...]
    shape: tuple[int, ...]
    fields: tuple[Field, ...]
    scalars: dict[str, tuple[bool, bool]]
    boundary: dict[str, tuple[str, str]]

    @classmethod
    def read(cls, path: str | os.PathLike) -> WellFile:
        """Open ``path`` and check every group, attribute and shape ``WellDataset`` relies on."""
        path = Path(path)
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise WellFormatError(f"{path}: HDF5 could not open the file ({e}); it is truncated or corrupt") from e
        with f:
            try:
                if DIGEST in f.attrs and str(f.attrs[DIGEST]) != _digest(f):
                    raise WellFormatError(
                        f"{path}: its metadata does not match the digest written with it ({DIGEST}); the file is corrupt"
                    )
                return cls._read(path, f)
            except WellFormatError:
                raise
            except Exception as e:  # a corrupt header can surface as almost any error inside h5py
                raise WellFormatError(f"{path}: unreadable layout ({type(e).__name__}: {e}); the file is corrupt") from e

    @classmethod
    def _read(cls, path: Path, f: h5py.File) -> WellFile:
        name = str(_get(path, f, "@dataset_name", "the data set's name"))
        _get(path, f, "@grid_type", '"cartesian" or "spherical"')
        n_traj = int(_get(path, f, "@n_trajectories", "the number of trajectories B"))
        d = int(_get(path, f, "@n_spatial_dims", "the number of spatial dimensions"))
        dims = _get(path, f, "dimensions", "a group of coordinates", h5py.Group)
        spatial = tuple(_names(_get(path, dims, "@spatial_dims", "the names of the spatial axes")))
        if len(spatial) != d or len(set(spatial)) != d or n_traj < 1:
            raise WellFormatError(
                f"{path}: /dimensions@spatial_dims is {list(spatial)}, expected {d} distinct "
                f"names (n_spatial_dims = {d}), and n_trajectories = {n_traj} must be >= 1"
            )
        time = _get(path, dims, "time", "the time coordinate, shape (T,) or (B, T)", h5py.Dataset)
        n_steps = int(time.shape[-1]) if time.ndim else 0
        shape = tuple(int(_get(path, dims, a, f"the coordinate along {a}", h5py.Dataset).shape[-1]) for a in spatial)
        sizes = {"n_trajectories": n_traj, "time": n_steps, **dict(zip(spatial, shape))}

        def check(ds: h5py.Dataset, labels: list[str]) -> None:
            expected = tuple(sizes.get(label, d) for label in labels)
            if ds.shape != expected:
                raise WellFormatError(f"{path}: {ds.name} has shape {ds.shape}, expected {expected} = ({', '.join(labels)})")

        def flags(ds: h5py.Dataset) -> tuple[bool, bool]:
            return bool(_get(path, ds, "@sample_varying", "True or False")), bool(
                _get(path, ds, "@time_varying", "True or False")
            )

        def leading(sample: bool, varying_time: bool) -> list[str]:
            return ["n_trajectories"] * sample + ["time"] * varying_time

        fields = []
        for order in range(3):
            group = _get(path, f, f"t{order}_fields", f"a group of {('scalar', 'vector', 'tensor')[order]} fields", h5py.Group)
            for fname in _names(_get(path, group, "@field_names", "a list of field names")):
                ds = _get(path, group, fname, f"the dataset of field {fname!r}", h5py.Dataset)
                sample, varying_time = flags(ds)
                dv = tuple(bool(v) for v in np.atleast_1d(_get(path, ds, "@dim_varying", f"{d} flags, one per spatial axis")))
                if len(dv) != d:
                    raise WellFormatError(
                        f"{path}: {ds.name}@dim_varying has {len(dv)} flags, expected {d} (one per spatial axis)"
                    )
                check(ds, leading(sample, varying_time) + [a for a, v in zip(spatial, dv) if v] + ["component"] * order)
                combos = itertools.product(spatial, repeat=order)  # row-major, as WellDataset names them
                channels = tuple(f"{fname}_{''.join(c)}" if c else fname for c in combos)
                fields.append(Field(fname, order, sample, varying_time, dv, channels, ds.dtype))
        if not any(fd.time_varying for fd in fields):
            raise WellFormatError(f"{path}: no field is time varying (expected at least one in t0/t1/t2_fields)")

        group = _get(path, f, "scalars", "a group of scalars", h5py.Group)
        scalars = {}
        for sname in _names(_get(path, group, "@field_names", "a list of scalar names")):
            ds = _get(path, group, sname, f"the dataset of scalar {sname!r}", h5py.Dataset)
            scalars[sname] = flags(ds)
            check(ds, leading(*scalars[sname]))

        boundary = {a: ["open", "open"] for a in spatial}  # WellDataset's default: open unless a mask says otherwise
        bcs = _get(path, f, "boundary_conditions", "a group of boundary conditions", h5py.Group)
        for bname in bcs:
            bc = _get(path, bcs, bname, "a boundary condition group", h5py.Group)
            kind = str(_get(path, bc, "@bc_type", "PERIODIC, WALL or OPEN")).lower()
            axes = _names(_get(path, bc, "@associated_dims", "the spatial axes it lies on"))
            if kind not in BC_CODES or not set(axes) <= set(spatial):
                raise WellFormatError(
                    f"{path}: {bc.name} has bc_type {kind.upper()!r} on axes {axes}, expected one of "
                    f"{[k.upper() for k in BC_CODES]} on axes among {list(spatial)}"
                )
            mask = _get(path, bc, "mask", "a boolean mask over its axes", h5py.Dataset)
            check(mask, axes)
            mask = mask[()]
            agg = np.min if kind == "wall" else np.max  # a wall must cover the whole side; open/periodic any part
            for i, a in enumerate(axes):
                for side, at in enumerate((0, -1)):
                    if agg(np.take(mask, at, axis=i)):
                        boundary[a][side] = kind
        return cls(
            path, name, n_traj, n_steps, spatial, shape, tuple(fields), scalars, {a: tuple(v) for a, v in boundary.items()}
        )


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


class WellWindows(torch.utils.data.Dataset):
    """Windows of consecutive frames from one split of a data set in The Well's layout.

    ``windows[i]`` is ``(field, n_steps_input + n_steps_output, *space)``: the model's input is
    ``[:, :n_steps_input]``, its target ``[:, n_steps_input:]`` (:meth:`split_window`). Index ``i``
    is the same window as ``the_well.data.WellDataset(...)[i]`` with the same arguments.

    Args:
        path: the data set's folder, ``<base>/<dataset>`` (holding ``stats.yaml`` and ``data/``).
        split: ``"train"``, ``"valid"`` or ``"test"``.
        n_steps_input, n_steps_output: frames of input and of target per window.
        time_stride: frames between consecutive window frames (``WellDataset``'s fixed dt stride).
        normalization: ``None``, ``"zscore"`` or ``"rms"`` (module docstring), from ``stats.yaml``.

    Attributes:
        field_names: channel names of the windows; ``constant_field_names``: of :meth:`constants`.
        boundary_conditions: spatial axis -> ``(low, high)``, each ``"periodic"``, ``"wall"`` or ``"open"``.
        spatial_dims, shape: axis names and grid size; ``files``: each file's :class:`WellFile`.

    Raises:
        ValueError: a bad argument; :class:`WellFormatError` (a ``ValueError``): a file or
            ``stats.yaml`` not in the layout, or corrupt. FileNotFoundError: no such split.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        *,
        n_steps_input: int = 1,
        n_steps_output: int = 1,
        time_stride: int = 1,
        normalization: str | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"WellWindows: split must be one of {SPLITS}, got {split!r}")
        if normalization is not None and normalization not in NORMALISATIONS:
            raise ValueError(f"WellWindows: normalization must be None or one of {sorted(NORMALISATIONS)}, got {normalization!r}")
        for arg, v, low in (
            ("n_steps_input", n_steps_input, 1),
            ("n_steps_output", n_steps_output, 0),
            ("time_stride", time_stride, 1),
        ):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise ValueError(f"WellWindows: {arg} must be an integer >= {low}, got {v!r}")
        self.root, self.split = Path(path), split
        folder = self.root / "data" / split
        paths = _hdf5_files(folder)
        if not paths:
            raise FileNotFoundError(f"WellWindows: no *.hdf5 or *.h5 files in {folder} (expected <dataset>/data/{split}/*.hdf5)")
        self.files = [WellFile.read(p) for p in paths]
        first = self.files[0]
        for wf in self.files[1:]:
            for what in ("dataset_name", "spatial_dims", "shape", "fields", "boundary"):
                if getattr(wf, what) != getattr(first, what):
                    raise WellFormatError(
                        f"{wf.path}: its {what} {getattr(wf, what)!r} differs from that of {first.path} "
                        f"({getattr(first, what)!r}); a split must hold one data set"
                    )
        self.n_steps_input, self.n_steps_output, self.time_stride = int(n_steps_input), int(n_steps_output), int(time_stride)
        self.n_frames = n_steps_input + n_steps_output
        span = 1 + time_stride * (self.n_frames - 1)
        per_trajectory = []
        for wf in self.files:
            if wf.n_steps < span:
                raise ValueError(
                    f"WellWindows: {wf.path} has trajectories of {wf.n_steps} frames, too short for windows of "
                    f"n_steps_input={n_steps_input} + n_steps_output={n_steps_output} frames at time_stride="
                    f"{time_stride} (each spans {span} frames)"
                )
            per_trajectory.append(wf.n_steps - span + 1)
        self._per_trajectory = per_trajectory
        self._offsets = np.cumsum([0] + [wf.n_trajectories * w for wf, w in zip(self.files, per_trajectory)])
        self.spatial_dims, self.shape, self.boundary_conditions = first.spatial_dims, first.shape, first.boundary
        self._variable = [fd for fd in first.fields if fd.time_varying]
        self._constant = [fd for fd in first.fields if not fd.time_varying]
        self.field_names = tuple(c for fd in self._variable for c in fd.channels)
        self.constant_field_names = tuple(c for fd in self._constant for c in fd.channels)
        self.normalization = normalization
        self._scale = self._stats(normalization) if normalization else {}
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    # -- normalisation ---------------------------------------------------------------------

    def _stats(self, kind: str) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
        """field -> (shift, scale) of shape (components,), float32 as The Well's classes make them."""
        path = self.root / "stats.yaml"
        try:
            stats = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"WellWindows: normalization={kind!r} needs {path}, which does not exist") from None
        except yaml.YAMLError as e:
            raise WellFormatError(f"{path}: not valid YAML ({e})") from e
        shift_key, scale_key = NORMALISATIONS[kind]
        out = {}
        d = len(self.spatial_dims)
        for fd in self._variable + self._constant:
            pair = []
            for key in (shift_key, scale_key):
                if key is None:
                    pair.append(None)
                    continue
                try:
                    value = torch.as_tensor(stats[key][fd.name])
                except (KeyError, TypeError):
                    raise WellFormatError(
                        f"{path}: no {key!r} for field {fd.name!r} (expected {key}: {{{fd.name}: ...}} "
                        f"for normalization={kind!r})"
                    ) from None
                except ValueError as e:
                    raise WellFormatError(f"{path}: {key!r} of field {fd.name!r} is not numeric ({e})") from e
                if not torch.isfinite(value).all():
                    raise WellFormatError(f"{path}: {key!r} of field {fd.name!r} is not finite ({value.tolist()})")
                if tuple(value.shape) != (d,) * fd.order:
                    raise WellFormatError(
                        f"{path}: {key!r} of field {fd.name!r} has shape {tuple(value.shape)}, expected "
                        f"{(d,) * fd.order} (a rank-{fd.order} field in {d} dimensions)"
                    )
                pair.append(value.flatten())
            out[fd.name] = (pair[0], torch.clip(pair[1], min=MIN_DENOMINATOR))
        return out

    # -- reading ---------------------------------------------------------------------------

    def _file(self, k: int) -> h5py.File:
        if os.getpid() != self._pid:  # a DataLoader worker: handles do not survive a fork
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            try:
                self._handles[k] = h5py.File(self.files[k].path, "r")
            except OSError as e:
                raise WellFormatError(
                    f"{self.files[k].path}: HDF5 could not open the file ({e}); it is truncated or corrupt"
                ) from e
        return self._handles[k]

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int, int]:
        """``(file, trajectory, first frame)`` of window ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"WellWindows: index {index} out of range for {len(self)} windows")
        index %= len(self)
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        trajectory, t0 = divmod(index - int(self._offsets[k]), self._per_trajectory[k])
        return k, trajectory, t0

    def trajectories(self) -> list[tuple[int, int]]:
        """Every trajectory of the split as ``(file, trajectory)``, in window order (file, then
        trajectory): entry ``g`` is the split's trajectory number ``g``."""
        return [(k, b) for k, wf in enumerate(self.files) for b in range(wf.n_trajectories)]

    def windows_per_trajectory(self, file: int) -> int:
        """Windows in each trajectory of file ``file`` (first frames ``0 ... n - 1``)."""
        return self._per_trajectory[file]

    def window_index(self, file: int, trajectory: int, t0: int) -> int:
        """The index of the window of ``trajectory`` in ``file`` that starts at frame ``t0``: the
        inverse of :meth:`locate`."""
        if (
            not 0 <= file < len(self.files)
            or not 0 <= trajectory < self.files[file].n_trajectories
            or not 0 <= t0 < self._per_trajectory[file]
        ):
            raise IndexError(
                f"WellWindows.window_index: no window (file {file}, trajectory {trajectory}, first frame {t0}) "
                f"in {len(self.files)} files; file {min(max(file, 0), len(self.files) - 1)} has "
                f"{self.files[min(max(file, 0), len(self.files) - 1)].n_trajectories} trajectories of "
                f"{self._per_trajectory[min(max(file, 0), len(self.files) - 1)]} windows"
            )
        return int(self._offsets[file]) + trajectory * self._per_trajectory[file] + t0

    def frame_interval(self, file: int = 0, trajectory: int = 0) -> float:
        """Time between two consecutive frames of a window (``time_stride`` stored frames), from
        the file's time coordinate (``dimensions/time``, shape ``(T,)`` or ``(B, T)``)."""
        wf = self.files[file]
        try:
            time = self._file(file)["dimensions"]["time"]
            row = time[trajectory] if time.ndim == 2 else time[()]
        except (OSError, RuntimeError, KeyError) as e:
            raise WellFormatError(f"{wf.path}: could not read /dimensions/time ({e})") from e
        if len(row) < 2:
            raise WellFormatError(f"{wf.path}: /dimensions/time has {len(row)} frames; a frame interval needs two")
        return float(row[1] - row[0]) * self.time_stride

    def _frames(self, t0: int) -> slice:
        return slice(t0, t0 + (self.n_frames - 1) * self.time_stride + 1, self.time_stride)

    def _slice(self, k: int, ds: h5py.Dataset, trajectory: int, frames: slice, sample: bool, time: bool) -> np.ndarray:
        try:
            return ds[(trajectory,) * sample + (frames,) * time]
        except (OSError, RuntimeError) as e:
            raise WellFormatError(
                f"{self.files[k].path}: HDF5 could not read {ds.name} at trajectory {trajectory}, frames "
                f"{frames.start}:{frames.stop}:{frames.step} ({e}); the file is corrupt or truncated"
            ) from e

    def _read(self, k: int, fd: Field, trajectory: int, t0: int, out: np.ndarray) -> None:
        """One field's channels into ``out`` ``(component, [time], *space)``, broadcast over the
        axes the field does not vary on."""
        f, wf = self._file(k), self.files[k]
        ds = f[f"t{fd.order}_fields/{fd.name}"]
        frames = self._frames(t0)
        a = self._slice(k, ds, trajectory, frames, fd.sample_varying, fd.time_varying)
        lead = int(fd.time_varying)
        a = a.reshape(a.shape[: a.ndim - fd.order] + (-1,))  # tensor components flattened row-major
        for axis, varying in enumerate(fd.dim_varying):
            if not varying:
                a = np.expand_dims(a, lead + axis)
        out[...] = rearrange(a, "... c -> c ...")  # broadcasts the axes of size 1
        if not math.isfinite(out.sum(dtype=np.float64)):  # NaN and inf propagate; finite float32 cannot overflow it
            raise WellFormatError(
                f"{wf.path}: {ds.name} holds non-finite values at trajectory {trajectory}, frames "
                f"{frames.start}:{frames.stop}:{frames.step}; the file is corrupt"
            )

    def _gather(self, index: int, fields: list[Field]) -> torch.Tensor:
        k, trajectory, t0 = self.locate(index)
        time = (self.n_frames,) * fields[0].time_varying
        out = np.empty((sum(len(fd.channels) for fd in fields), *time, *self.shape), np.result_type(*(fd.dtype for fd in fields)))
        c = 0
        for fd in fields:
            self._read(k, fd, trajectory, t0, out[c : c + len(fd.channels)])
            c += len(fd.channels)
        x = torch.from_numpy(out)
        if self._scale:
            c = 0
            for fd in fields:  # in place: the same float operations as The Well's (x - mean) / std
                shift, scale = self._scale[fd.name]
                view = (-1,) + (1,) * (x.ndim - 1)
                part = x[c : c + len(fd.channels)]
                if shift is not None:
                    part.sub_(shift.view(view))
                part.div_(scale.view(view))
                c += len(fd.channels)
        return x

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._gather(index, self._variable)

    def constants(self, index: int) -> torch.Tensor:
        """The fields that do not vary in time, for window ``index``: ``(constant_field, *space)``."""
        self.locate(index)
        return self._gather(index, self._constant) if self._constant else torch.empty(0, *self.shape)

    def scalars(self, index: int) -> dict[str, torch.Tensor]:
        """The scalars of window ``index``'s trajectory: constants as 0-d tensors, time-varying ones
        over the window's frames."""
        k, trajectory, t0 = self.locate(index)
        f, out = self._file(k), {}
        for name, (sample, varying_time) in self.files[k].scalars.items():
            out[name] = torch.as_tensor(self._slice(k, f["scalars"][name], trajectory, self._frames(t0), sample, varying_time))
        return out

    def boundary_codes(self) -> torch.Tensor:
        """``(n_spatial_dims, 2)`` codes of :data:`BC_CODES`, as ``WellDataset``'s ``boundary_conditions``."""
        return torch.tensor([[float(BC_CODES[s]) for s in self.boundary_conditions[a]] for a in self.spatial_dims])

    def split_window(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, target)`` of a window ``(F, T, *space)`` or a batch ``(B, F, T, *space)``."""
        t = window.ndim - len(self.shape) - 1
        return window.narrow(t, 0, self.n_steps_input), window.narrow(t, self.n_steps_input, self.n_steps_output)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Windows ``indices`` stacked: ``(len(indices), field, time, *space)``."""
        if len(indices) == 0:
            raise ValueError("WellWindows.batch: indices is empty; give at least one window index")
        return torch.stack([self[int(i)] for i in indices])

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[torch.Tensor]:
        """Every window once, in batches of ``batch_size`` (shuffled by ``seed`` if asked)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"WellWindows.batches: batch_size must be an integer >= 1, got {batch_size!r}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(len(self))
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size].tolist())

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles = {}

    def __repr__(self) -> str:
        return (
            f"WellWindows({self.root.name}/{self.split}: {len(self)} windows of {self.n_frames} frames, "
            f"fields {list(self.field_names)}, grid {self.shape}, boundaries {self.boundary_conditions})"
        )


# ---------------------------------------------------------------------------------------------
# Statistics, as scripts/compute_statistics.py of The Well
# ---------------------------------------------------------------------------------------------


def compute_stats(folder: str | os.PathLike) -> dict[str, dict[str, float | list]]:
    """``stats.yaml`` content of the files in ``folder`` (a training split).

    Per field and tensor component, over trajectories, time and space: ``mean``, ``std``
    (population) and ``rms``, and the same of the frame-to-frame differences
    ``x[t+1] - x[t]`` (``*_delta``, time-varying fields only), pooled over trajectories and files
    as a mixture: :math:`\\mu = \\sum_i w_i \\mu_i`, :math:`\\sigma^2 = \\sum_i w_i(\\sigma_i^2 +
    \\mu_i^2) - \\mu^2`, :math:`\\mathrm{rms}^2 = \\sigma^2 + \\mu^2`, :math:`w_i` the share of
    values. In float64, one trajectory in memory at a time.
    """
    folder = Path(folder)
    paths = _hdf5_files(folder)
    if not paths:
        raise FileNotFoundError(f"compute_stats: no *.hdf5 or *.h5 files in {folder}")
    parts: dict[str, dict[str, list]] = {"": {}, "_delta": {}}  # field -> [(count, mean, second moment)]

    def add(kind: str, name: str, a: np.ndarray, order: int) -> None:
        axes = tuple(range(a.ndim - order))  # all but the tensor components
        parts[kind].setdefault(name, []).append(
            (int(np.prod(a.shape[: a.ndim - order])), a.mean(axis=axes), (a * a).mean(axis=axes))
        )

    for p in paths:
        wf = WellFile.read(p)
        with h5py.File(p, "r") as f:
            for fd in wf.fields:
                ds = f[f"t{fd.order}_fields/{fd.name}"]
                for b in range(wf.n_trajectories) if fd.sample_varying else [None]:
                    try:
                        a = np.asarray(ds[b] if b is not None else ds[()], dtype=np.float64)
                    except (OSError, RuntimeError) as e:
                        raise WellFormatError(f"{p}: HDF5 could not read {ds.name} ({e}); the file is corrupt") from e
                    add("", fd.name, a, fd.order)
                    if fd.time_varying:
                        add("_delta", fd.name, np.diff(a, axis=0), fd.order)
    stats: dict[str, dict] = {}
    for kind, fields in parts.items():
        for key in ("mean", "std", "rms"):
            stats[key + kind] = {}
        for name, items in fields.items():
            w = np.array([c for c, _, _ in items], dtype=np.float64)
            w /= w.sum()
            mean = np.einsum("i...,i", np.stack([m for _, m, _ in items]), w)
            second = np.einsum("i...,i", np.stack([s for _, _, s in items]), w)
            for key, value in (("mean", mean), ("std", np.sqrt(np.maximum(second - mean**2, 0.0))), ("rms", np.sqrt(second))):
                stats[key + kind][name] = np.asarray(value).tolist()
    return stats


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _put(group: h5py.Group, name: str, data: np.ndarray, chunks: tuple[int, ...] | None = None, **attrs) -> None:
    """A dataset with its attributes, in Fletcher-32 checksummed chunks (a 0-d one cannot be chunked)."""
    data = np.asarray(data)
    checked = {"chunks": chunks or True, "fletcher32": True} if data.ndim and data.size else {}
    ds = group.create_dataset(name, data=data, **checked)
    for k, v in attrs.items():
        ds.attrs[k] = v


def _flags(sample: bool, time: bool) -> dict[str, np.bool_]:
    return {"sample_varying": np.bool_(sample), "time_varying": np.bool_(time)}


def _strings(names: Sequence[str]) -> np.ndarray:
    return np.array(list(names), dtype=h5py.string_dtype())


def _field_chunks(shape: tuple[int, ...], sample: bool, time: bool) -> tuple[int, ...]:
    """One trajectory, one frame per chunk: a window reads only its own frames."""
    lead = int(sample) + int(time)
    return (1,) * lead + tuple(shape[lead:])


def _default_vectors(t: Trajectories) -> dict[str, tuple[str, ...]]:
    """Burgers' fields are the components of one velocity vector; other systems' fields are scalars."""
    d = t.data.ndim - 3
    return {"velocity": tuple(t.fields)} if t.system == "burgers" and len(t.fields) == d else {}


def _boundaries(spec: Mapping[str, str | Sequence[str]] | None, d: int) -> dict[str, tuple[str, str]]:
    """``axis -> (low, high)`` for every axis from ``spec`` (default periodic), checked."""
    axes = AXES[:d]
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping) or not set(spec) <= set(axes):
        raise ValueError(
            f"write_well: boundaries must map spatial axes among {list(axes)} to a condition or a (low, high) "
            f"pair of conditions among {sorted(BC_CODES)}, got {spec!r}"
        )
    out = {}
    for a in axes:
        entry = spec.get(a, "periodic")
        pair = (entry, entry) if isinstance(entry, str) else tuple(entry)
        pair = tuple(str(b).lower() for b in pair)
        if len(pair) != 2 or not set(pair) <= set(BC_CODES) or (("periodic" in pair) and pair != ("periodic", "periodic")):
            raise ValueError(
                f"write_well: boundaries[{a!r}] must be a condition or a (low, high) pair among {sorted(BC_CODES)} "
                f"(periodic on both sides or neither), got {entry!r}"
            )
        out[a] = pair
    return out


def _write_file(
    tmp: Path,
    t: Trajectories,
    rows: slice,
    name: str,
    vectors: Mapping[str, Sequence[str]],
    boundaries: Mapping[str, tuple[str, str]],
) -> None:
    data = t.data[rows].detach().to("cpu", torch.float32).numpy()  # (B, F, T, *space)
    n, _, n_steps, *shape = data.shape
    d = len(shape)
    axes = AXES[:d]
    in_vector = {c for comps in vectors.values() for c in comps}
    scalar_fields = [fname for fname in t.fields if fname not in in_vector]
    coefficients = {k: v[rows].detach().cpu().double().numpy() for k, v in sorted(t.coefficients.items())}
    with h5py.File(tmp, "w", libver="latest") as f:  # the latest format checksums all metadata
        f.attrs.update(
            {
                "dataset_name": name,
                "grid_type": "cartesian",
                "n_spatial_dims": d,
                "n_trajectories": n,
                "simulation_parameters": _strings(coefficients),
                "physfm_system": t.system,
                "physfm_solver_dt": float(t.dt),
                "physfm_box_length": float(t.length),
            }
        )
        for k, v in coefficients.items():  # per trajectory: the values vary within a file
            f.attrs[k] = v
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = _strings(axes)
        _put(dims, "time", t.interval * np.arange(n_steps), **_flags(False, True))
        for a, size in zip(axes, shape):
            _put(dims, a, t.length * np.arange(size) / size, **_flags(False, False))
        bcs = f.create_group("boundary_conditions")
        for a, size in zip(axes, shape):  # one group per axis and kind, its mask True on the sides of that kind
            for kind in dict.fromkeys(boundaries[a]):
                group = bcs.create_group(f"{a}_{kind}")
                group.attrs.update(
                    {
                        "associated_dims": _strings([a]),
                        "associated_fields": _strings([]),
                        "bc_type": kind.upper(),
                        **_flags(False, False),
                    }
                )
                _put(
                    group, "mask", np.isin(np.arange(size), [[0, size - 1][i] for i, k in enumerate(boundaries[a]) if k == kind])
                )
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = _strings(coefficients)
        for k, v in coefficients.items():
            _put(scalars, k, v, **_flags(True, False))
        groups = [f.create_group(f"t{i}_fields") for i in range(3)]
        groups[0].attrs["field_names"] = _strings(scalar_fields)
        groups[1].attrs["field_names"] = _strings(vectors)
        groups[2].attrs["field_names"] = _strings([])
        dv = np.ones(d, dtype=bool)
        for fname in scalar_fields:
            a = data[:, t.fields.index(fname)]
            _put(groups[0], fname, a, _field_chunks(a.shape, True, True), dim_varying=dv, **_flags(True, True))
        for vname, comps in vectors.items():
            a = np.ascontiguousarray(rearrange(data[:, [t.fields.index(c) for c in comps]], "b c t ... -> b t ... c"))
            _put(groups[1], vname, a, _field_chunks(a.shape, True, True), dim_varying=dv, **_flags(True, True))
        f.attrs[DIGEST] = _digest(f)


def write_well(
    data: Trajectories | Mapping[str, Trajectories],
    path: str | os.PathLike,
    *,
    name: str | None = None,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    vectors: Mapping[str, Sequence[str]] | None = None,
    per_file: int | None = None,
    boundaries: Mapping[str, str | Sequence[str]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save trajectories as a data set in The Well's layout at ``path`` (``<base>/<dataset>``).

    Args:
        data: one :class:`~physfm.data.pde.Trajectories`, cut into train/valid/test by the
            fractions ``splits`` (in batch order; valid and test get at least one trajectory
            each), or a mapping ``split -> Trajectories`` that includes ``"train"``.
        name: the files' ``dataset_name`` (default: the folder's name).
        vectors: vector field name -> its component fields in axis order (x, y, z), stored in
            ``t1_fields``; default ``{"velocity": ("u", "v"[, "w"])}`` for Burgers, none otherwise.
            Other fields are stored as scalar fields in ``t0_fields``.
        per_file: trajectories per file (default: one file per split).
        boundaries: spatial axis (``"x"``, ``"y"``, ``"z"``) -> its condition, ``"periodic"``,
            ``"wall"`` or ``"open"``, or a ``(low, high)`` pair of them; an axis not named is
            periodic. Default: the trajectories' own (``meta["boundaries"]``, as
            :func:`physfm.data.walls.walled` sets it), else periodic on every axis. Stored as
            The Well stores them: a group ``boundary_conditions/<axis>_<kind>`` per axis and kind,
            with ``bc_type`` and a mask that is True at the sides of that kind.
        overwrite: replace the ``*.hdf5`` files and ``stats.yaml`` of an existing data set.

    Fields are stored in float32, as The Well's are. Every file is written atomically and
    checksummed; ``stats.yaml`` is computed from the
    training files only (:func:`compute_stats`). The coefficients are per-trajectory scalars
    (``scalars/<name>``, shape ``(B,)``). Returns ``path``.
    """
    if isinstance(data, Trajectories):
        if len(splits) != 3 or any(s < 0 for s in splits) or not np.isclose(sum(splits), 1.0):
            raise ValueError(f"write_well: splits must be three fractions (train, valid, test) adding up to 1, got {splits!r}")
        b = data.data.shape[0]
        n_valid, n_test = (max(1, round(b * f)) if f > 0 else 0 for f in splits[1:])
        counts = (b - n_valid - n_test, n_valid, n_test)
        if min(counts) < 1:
            raise ValueError(
                f"write_well: splits={tuple(splits)} of {b} trajectories gives {dict(zip(SPLITS, counts))}; "
                f"every split needs at least one trajectory (generate more, or pass a mapping split -> Trajectories)"
            )
        edges = np.cumsum((0,) + counts)
        parts = {s: (data, slice(int(lo), int(hi))) for s, lo, hi in zip(SPLITS, edges[:-1], edges[1:])}
    elif isinstance(data, Mapping) and "train" in data and set(data) <= set(SPLITS):
        for s, t in data.items():
            if not isinstance(t, Trajectories):
                raise TypeError(f"write_well: data[{s!r}] must be Trajectories, got {type(t).__name__}")
        parts = {s: (t, slice(0, t.data.shape[0])) for s, t in data.items()}
    else:
        raise TypeError(
            f"write_well: data must be Trajectories or a mapping from splits {SPLITS} (with 'train') to "
            f"Trajectories, got {type(data).__name__}{'' if not isinstance(data, Mapping) else ' with keys ' + str(list(data))}"
        )
    first = parts["train"][0]
    for s, (t, _) in parts.items():
        if (t.system, tuple(t.fields), tuple(t.data.shape[3:]), t.interval, t.length) != (
            first.system,
            tuple(first.fields),
            tuple(first.data.shape[3:]),
            first.interval,
            first.length,
        ):
            raise ValueError(
                f"write_well: the {s!r} trajectories differ from the training ones in system, fields, grid, "
                f"interval or box length; a data set holds one kind of trajectory"
            )
    d = first.data.ndim - 3
    if not 1 <= d <= 3 or first.data.shape[1] != len(first.fields):
        raise ValueError(
            f"write_well: data must be (batch, {len(first.fields)} fields, time, *space) with 1-3 spatial axes, "
            f"got {tuple(first.data.shape)}"
        )
    for s, (t, rows) in parts.items():
        if not torch.isfinite(t.data[rows]).all():
            raise ValueError(
                f"write_well: the {s!r} trajectories hold non-finite values; The Well's files hold finite fields only"
            )
    vectors = {k: tuple(v) for k, v in (_default_vectors(first) if vectors is None else vectors).items()}
    used = [c for comps in vectors.values() for c in comps]
    if any(len(c) != d for c in vectors.values()) or not set(used) <= set(first.fields) or len(used) != len(set(used)):
        raise ValueError(
            f"write_well: vectors must map names to {d} distinct components among the fields {first.fields}, got {vectors}"
        )
    channels = [fname for fname in first.fields if fname not in used] + [f"{v}_{a}" for v in vectors for a in AXES[:d]]
    if len(set(channels)) != len(channels) or set(vectors) & set(first.fields):
        raise ValueError(f"write_well: field and vector names collide ({channels}, vectors {list(vectors)})")
    if per_file is not None and (not isinstance(per_file, int) or per_file < 1):
        raise ValueError(f"write_well: per_file must be None or an integer >= 1, got {per_file!r}")
    bcs = _boundaries(first.meta.get("boundaries") if boundaries is None else boundaries, d)

    root = Path(path)
    name = name or root.name
    existing = [p for s in SPLITS for p in _hdf5_files(root / "data" / s)] + [p for p in [root / "stats.yaml"] if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"write_well: {root} already holds a data set ({existing[0]}, ...); pass overwrite=True to replace it"
        )
    for p in existing:
        p.unlink()
    for s, (t, rows) in parts.items():
        step = per_file or (rows.stop - rows.start)
        for k, lo in enumerate(range(rows.start, rows.stop, step)):
            chunk = slice(lo, min(lo + step, rows.stop))
            atomic_write(
                root / "data" / s / f"{name}_{k:03d}.hdf5",
                lambda tmp, t=t, chunk=chunk: _write_file(tmp, t, chunk, name, vectors, bcs),
            )
    _write_stats(root)
    return root


def _write_stats(root: Path) -> None:
    stats = compute_stats(root / "data" / "train")
    atomic_write(root / "stats.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(stats, sort_keys=True)))


# ---------------------------------------------------------------------------------------------
# A laptop-sized copy
# ---------------------------------------------------------------------------------------------


def subsample(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    per_file: int = 1,
    max_files: int | None = None,
    space_stride: int = 1,
    time_stride: int = 1,
    splits: Sequence[str] = SPLITS,
    overwrite: bool = False,
) -> Path:
    """Copy a data set in The Well's layout keeping the first ``per_file`` trajectories of each
    file (of the first ``max_files`` files of each split, default all: The Well keeps one file
    per parameter value, so this keeps every value), every ``space_stride``-th grid point and
    every ``time_stride``-th frame.

    The values kept are the original ones (plain strides, no filtering: fine modes alias; The
    Well's ``miniwell`` smooths before striding instead). Boundary masks keep a boundary point
    wherever a block of ``space_stride`` points held one. ``stats.yaml`` is recomputed from the
    new training split. Files are written atomically and checksummed. Returns ``target``.

    Raises:
        ValueError: bad strides or counts; :class:`WellFormatError`: a source file not in the
            layout, or holding groups this function does not know how to subsample.
    """
    for arg, v in (
        ("per_file", per_file),
        ("space_stride", space_stride),
        ("time_stride", time_stride),
        ("max_files", 1 if max_files is None else max_files),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"subsample: {arg} must be an integer >= 1, got {v!r}")
    if "train" not in splits or not set(splits) <= set(SPLITS):
        raise ValueError(f"subsample: splits must be among {SPLITS} and include 'train' (for stats.yaml), got {list(splits)}")
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise ValueError(f"subsample: target must differ from source, got {target}")
    if (target / "data").exists() and not overwrite:
        raise FileExistsError(f"subsample: {target} already holds a data set; pass overwrite=True to replace it")
    for s in splits:
        folder = source / "data" / s
        paths = _hdf5_files(folder)[:max_files]
        if not paths:
            raise FileNotFoundError(f"subsample: no *.hdf5 or *.h5 files in {folder}")
        for p in _hdf5_files(target / "data" / s):
            p.unlink()
        for p in paths:
            wf = WellFile.read(p)
            n = min(per_file, wf.n_trajectories)
            atomic_write(
                target / "data" / s / p.name,
                lambda tmp, p=p, wf=wf, n=n: _subsample_file(p, tmp, wf, n, space_stride, time_stride),
            )
    _write_stats(target)
    return target


def _subsample_file(src: Path, tmp: Path, wf: WellFile, n: int, ss: int, ts: int) -> None:
    def cut(ds: h5py.Dataset, sample: bool, time: bool, n_space: int) -> np.ndarray:
        index = (slice(0, n),) * sample + (slice(None, None, ts),) * time + (slice(None, None, ss),) * n_space
        try:
            return ds[index]
        except (OSError, RuntimeError) as e:
            raise WellFormatError(f"{src}: HDF5 could not read {ds.name} ({e}); the file is corrupt") from e

    def copy(name: str, data: np.ndarray, source: h5py.Dataset | h5py.Group, chunks=None) -> None:
        _put(g.require_group(os.path.dirname(name)), os.path.basename(name), data, chunks, **dict(source.attrs))

    known = {"dimensions", "boundary_conditions", "scalars", "t0_fields", "t1_fields", "t2_fields"}
    with h5py.File(src, "r") as f, h5py.File(tmp, "w", libver="latest") as g:
        if set(f) - known:
            raise WellFormatError(
                f"{src}: subsample does not know how to cut the groups {sorted(set(f) - known)} (it handles {sorted(known)})"
            )
        for a, b in [(f, g)] + [(f[k], g.create_group(k)) for k in known]:
            b.attrs.update(dict(a.attrs))
        g.attrs["n_trajectories"] = n
        for k in _names(f.attrs.get("simulation_parameters", [])):  # per-trajectory values, as write_well stores them
            if np.ndim(f.attrs[k]) == 1 and len(f.attrs[k]) == wf.n_trajectories:
                g.attrs[k] = f.attrs[k][:n]
        for a in ("time",) + wf.spatial_dims:
            ds = f["dimensions"][a]
            copy(ds.name, cut(ds, bool(ds.attrs.get("sample_varying", False)), a == "time", int(a != "time")), ds)
        for sname, (sample, time) in wf.scalars.items():
            ds = f["scalars"][sname]
            copy(ds.name, cut(ds, sample, time, 0), ds)
        for fd in wf.fields:
            ds = f[f"t{fd.order}_fields/{fd.name}"]
            a = cut(ds, fd.sample_varying, fd.time_varying, sum(fd.dim_varying))
            copy(ds.name, a, ds, _field_chunks(a.shape, fd.sample_varying, fd.time_varying) if a.ndim else None)
        for bc in f["boundary_conditions"].values():
            if set(bc) != {"mask"}:
                raise WellFormatError(f"{src}: {bc.name} holds {sorted(bc)}; subsample handles boundary groups with only a mask")
            mask = bc["mask"][()]
            for axis in range(mask.ndim):  # a kept point is a boundary point if any point of its block was
                mask = np.logical_or.reduceat(mask, np.arange(0, mask.shape[axis], ss), axis=axis)
            g["boundary_conditions"].create_group(bc.name.split("/")[-1]).attrs.update(dict(bc.attrs))
            copy(bc.name + "/mask", mask, bc["mask"])
        g.attrs[DIGEST] = _digest(g)
