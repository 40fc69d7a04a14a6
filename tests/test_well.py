"""physfm.data.well: round trips through The Well's layout, with its WellDataset as the oracle.

Every data set here is written by the tests into ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import itertools
import runpy
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.fft
import torch
import yaml
from einops import rearrange
from the_well.data import WellDataset
from the_well.data.normalization import RMSNormalization, ZScoreNormalization
from the_well.data.utils import flatten_field_names
from the_well.utils.dummy_data import write_dummy_data

from physfm.data import walls, well
from physfm.data import well_streams as ws
from physfm.data.pde import Trajectories, generate
from physfm.experiments import harness

WELL_NORMALISATION = {None: None, "zscore": ZScoreNormalization, "rms": RMSNormalization}


def _mixed(seed: int = 0) -> Trajectories:
    """A scalar field and a vector field together (random values: a layout test, not physics)."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(5, 3, 6, 12, 10, generator=g) * torch.tensor([2.0, 0.5, 1.5]).view(1, 3, 1, 1, 1) + 1.0
    return Trajectories(
        data=data,
        coefficients={"gamma": torch.rand(5, generator=g, dtype=torch.float64)},
        system="euler_like",
        fields=("rho", "mx", "my"),
        dt=0.1,
        interval=0.2,
        length=1.0,
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """name -> (folder, trajectories): 1D scalar, 2D and 3D vector, and a mixed data set."""
    base = tmp_path_factory.mktemp("well")
    g = lambda s: torch.Generator().manual_seed(s)
    out = {
        "burgers2d": (generate("burgers", batch=6, shape=(16, 16), frames=8, generator=g(0)), {"per_file": 2}),
        "ks1d": (generate("kuramoto_sivashinsky", batch=4, shape=(32,), frames=7, generator=g(1)), {"splits": (0.5, 0.25, 0.25)}),
        "burgers3d": (generate("burgers", batch=3, shape=(8, 8, 6), frames=5, generator=g(2)), {"splits": (1 / 3, 1 / 3, 1 / 3)}),
        "mixed": (_mixed(), {"vectors": {"momentum": ("mx", "my")}, "splits": (0.6, 0.2, 0.2)}),
    }
    return {k: (well.write_well(t, base / k, **kw), t) for k, (t, kw) in out.items()}


def _theirs(path, split, **kw) -> WellDataset:
    norm = kw.pop("normalization", None)
    stride = kw.pop("time_stride", 1)
    return WellDataset(
        path=str(path),
        well_split_name=split,
        use_normalization=norm is not None,
        normalization_type=WELL_NORMALISATION[norm],
        min_dt_stride=stride,
        max_dt_stride=stride,
        **kw,
    )


def _assert_same_windows(ours: well.WellWindows, theirs: WellDataset) -> None:
    assert len(ours) == len(theirs) > 0
    assert list(ours.field_names) == flatten_field_names(theirs.metadata, include_constants=False)
    for i in range(len(ours)):
        s = theirs[i]
        window = rearrange(torch.cat([s["input_fields"], s["output_fields"]]), "t ... f -> f t ...")
        assert torch.equal(ours[i], window), f"window {i} differs"
        assert torch.equal(ours.boundary_codes(), s["boundary_conditions"])
        if "constant_fields" in s:
            assert torch.equal(ours.constants(i), rearrange(s["constant_fields"], "... f -> f ..."))
        scalars = ours.scalars(i)
        constant = [v for v in scalars.values() if v.ndim == 0]
        if constant:
            assert torch.equal(torch.stack(constant), s["constant_scalars"])


# ---------------------------------------------------------------------------------------------
# The oracle: The Well's own reader
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", [None, "zscore", "rms"])
@pytest.mark.parametrize("name", ["burgers2d", "ks1d", "burgers3d", "mixed"])
def test_windows_equal_the_wells(datasets, name, normalization):
    path, _ = datasets[name]
    kw = dict(n_steps_input=2, n_steps_output=1, normalization=normalization)
    _assert_same_windows(well.WellWindows(path, "train", **kw), _theirs(path, "train", **kw))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_windows_with_a_time_stride_equal_the_wells(datasets, split):
    path, _ = datasets["burgers2d"]
    kw = dict(n_steps_input=1, n_steps_output=2, time_stride=2, normalization="zscore")
    _assert_same_windows(well.WellWindows(path, split, **kw), _theirs(path, split, **kw))


def test_windows_are_the_trajectories(datasets):
    """Unnormalised windows are the generated frames, component by component, split by split."""
    path, t = datasets["burgers2d"]  # 6 trajectories: 4 train (2 files), 1 valid, 1 test
    ours = well.WellWindows(path, "train", n_steps_input=3, n_steps_output=1)
    assert ours.field_names == ("velocity_x", "velocity_y")
    per_trajectory = 8 - 4 + 1
    assert len(ours) == 4 * per_trajectory
    for i in range(len(ours)):
        b, t0 = divmod(i, per_trajectory)
        assert torch.equal(ours[i], t.data[b, :, t0 : t0 + 4])
        assert ours.scalars(i)["nu"].item() == t.coefficients["nu"][b].item()
    test = well.WellWindows(path, "test", n_steps_input=7, n_steps_output=1)
    assert len(test) == 1 and torch.equal(test[0], t.data[5])
    assert test.boundary_conditions == {"x": ("periodic", "periodic"), "y": ("periodic", "periodic")}


def test_channel_names_and_order(datasets):
    path, t = datasets["mixed"]
    ours = well.WellWindows(path, "train")
    assert ours.field_names == ("rho", "momentum_x", "momentum_y")
    assert torch.equal(ours[0], t.data[0, :, :2])
    assert well.WellWindows(datasets["burgers3d"][0], "train").field_names == ("velocity_x", "velocity_y", "velocity_z")
    assert well.WellWindows(datasets["ks1d"][0], "train").field_names == ("u",)


def test_reads_the_wells_own_dummy_files(tmp_path):
    """The Well's dummy files: a constant field, constant and time-varying scalars, a string
    ``associated_dims``, no ``time_varying`` on coordinates; statistics from compute_stats."""
    np.random.seed(0)
    for k in range(2):
        (tmp_path / "data" / "train").mkdir(parents=True, exist_ok=True)
        write_dummy_data(str(tmp_path / "data" / "train" / f"dummy_{k}.hdf5"))
    (tmp_path / "stats.yaml").write_text(yaml.safe_dump(well.compute_stats(tmp_path / "data" / "train")))
    for norm in (None, "zscore"):
        kw = dict(n_steps_input=3, n_steps_output=2, normalization=norm)
        ours = well.WellWindows(tmp_path, "train", **kw)
        theirs = _theirs(tmp_path, "train", **kw)
        _assert_same_windows(ours, theirs)
        assert ours.constant_field_names == ("constant_field",)
        s = theirs[7]
        varying = ours.scalars(7)["time_varying_scalar"]
        assert torch.equal(varying, torch.cat([s["input_scalars"], s["output_scalars"]])[:, 0])


def test_boundary_conditions_follow_the_masks(datasets, tmp_path):
    """Open, wall and periodic sides, read as WellDataset's padding mode reads them."""
    path = tmp_path / "bc"
    shutil.copytree(datasets["burgers2d"][0], path)
    for p in (path / "data" / "train").glob("*.hdf5"):
        with h5py.File(p, "r+") as f:
            del f.attrs[well.DIGEST]  # edited by hand, as a file from elsewhere would be
            bcs = f["boundary_conditions"]
            bcs["x_periodic"].attrs["bc_type"] = "OPEN"
            bcs.move("y_periodic", "y_wall")
            bcs["y_wall"].attrs["bc_type"] = "WALL"
            mask = np.zeros(16, dtype=bool)
            mask[:1] = True  # only the low side is a wall
            del bcs["y_wall/mask"]
            bcs["y_wall"].create_dataset("mask", data=mask)
    ours = well.WellWindows(path, "train")
    assert ours.boundary_conditions == {"x": ("open", "open"), "y": ("wall", "open")}
    assert torch.equal(ours.boundary_codes(), _theirs(path, "train")[0]["boundary_conditions"])


# ---------------------------------------------------------------------------------------------
# stats.yaml
# ---------------------------------------------------------------------------------------------


def _moments(x: np.ndarray, axes) -> dict[str, np.ndarray]:
    return {"mean": x.mean(axis=axes), "std": x.std(axis=axes), "rms": np.sqrt((x**2).mean(axis=axes))}


def test_stats_are_those_of_the_training_split_only(datasets):
    path, t = datasets["burgers2d"]
    stats = yaml.safe_load((path / "stats.yaml").read_text())
    x = t.data.double().numpy()
    train, everything = x[:4], x
    axes = (0, 2, 3, 4)  # all but the component
    for key, value in _moments(train, axes).items():
        np.testing.assert_allclose(stats[key]["velocity"], value, rtol=1e-10)
        np.testing.assert_allclose(stats[key + "_delta"]["velocity"], _moments(np.diff(train, axis=2), axes)[key], rtol=1e-10)
        assert not np.allclose(stats[key]["velocity"], _moments(everything, axes)[key], rtol=1e-6)
    path, t = datasets["mixed"]
    stats = yaml.safe_load((path / "stats.yaml").read_text())
    x = t.data.double().numpy()[:3]
    np.testing.assert_allclose(stats["std"]["rho"], x[:, 0].std(), rtol=1e-10)
    np.testing.assert_allclose(stats["mean"]["momentum"], x[:, 1:].mean(axis=(0, 2, 3, 4)), rtol=1e-10)


def test_zscore_windows_are_standardised_by_the_stats(datasets):
    path, t = datasets["burgers2d"]
    ours = well.WellWindows(path, "train", normalization="zscore", n_steps_input=7, n_steps_output=1)
    stats = yaml.safe_load((path / "stats.yaml").read_text())
    mean = torch.tensor(stats["mean"]["velocity"], dtype=torch.float32).view(2, 1, 1, 1)
    std = torch.tensor(stats["std"]["velocity"], dtype=torch.float32).view(2, 1, 1, 1)
    torch.testing.assert_close(ours[0], (t.data[0] - mean) / std)
    whole = ours.batch(range(len(ours)))
    torch.testing.assert_close(whole.mean(dim=(0, 2, 3, 4)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(whole.std(dim=(0, 2, 3, 4), unbiased=False), torch.ones(2), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def test_batches_cover_every_window_once(datasets):
    ours = well.WellWindows(datasets["burgers2d"][0], "train", n_steps_input=2, n_steps_output=2)
    batch = ours.batch([3, 0, 7])
    assert batch.shape == (3, 2, 4, 16, 16)
    assert torch.equal(batch[0], ours[3]) and torch.equal(batch[2], ours[7])
    x, y = ours.split_window(batch)
    assert x.shape == (3, 2, 2, 16, 16) and torch.equal(y, batch[:, :, 2:])
    assert [b.shape[0] for b in ours.batches(5)] == [5, 5, 5, 5]
    shuffled = torch.cat(list(ours.batches(3, shuffle=True, seed=1)))
    again = torch.cat(list(ours.batches(3, shuffle=True, seed=1)))
    assert torch.equal(shuffled, again)
    assert not torch.equal(shuffled, ours.batch(range(len(ours))))
    order = [next(j for j in range(len(ours)) if torch.equal(w, ours[j])) for w in shuffled]
    assert sorted(order) == list(range(len(ours)))
    assert sum(b.shape[0] for b in ours.batches(7, drop_last=True)) == 14


def test_dataloader_workers_read_the_same_windows(datasets):
    ours = well.WellWindows(datasets["burgers2d"][0], "train", normalization="rms")
    expected = ours.batch(range(len(ours)))  # opens the files in this process first
    loader = torch.utils.data.DataLoader(ours, batch_size=4, num_workers=1)
    assert torch.equal(torch.cat(list(loader)), expected)


# ---------------------------------------------------------------------------------------------
# The mini data set
# ---------------------------------------------------------------------------------------------


def test_subsample_keeps_strided_values_and_recomputes_stats(datasets, tmp_path):
    path, t = datasets["burgers2d"]  # train: trajectories 0, 1 in one file, 2, 3 in the other
    mini = well.subsample(path, tmp_path / "mini", per_file=1, space_stride=3, time_stride=2)
    ours = well.WellWindows(mini, "train", n_steps_input=3, n_steps_output=1)
    assert ours.shape == (6, 6) and len(ours) == 2  # 16 -> 6 points, 8 -> 4 frames, one trajectory of each file
    strided = t.data[:, :, ::2, ::3, ::3]
    for i, b in enumerate([0, 2]):
        assert torch.equal(ours[i], strided[b])
        assert ours.scalars(i)["nu"].item() == t.coefficients["nu"][b].item()
    assert ours.boundary_conditions == {"x": ("periodic", "periodic"), "y": ("periodic", "periodic")}
    stats = yaml.safe_load((mini / "stats.yaml").read_text())
    assert stats == well.compute_stats(mini / "data" / "train")
    np.testing.assert_allclose(stats["std"]["velocity"], strided[[0, 2]].double().numpy().std(axis=(0, 2, 3, 4)), rtol=1e-10)
    assert len(well.WellWindows(mini, "valid")) == 3
    for split in ("train", "test"):
        kw = dict(n_steps_input=1, n_steps_output=1, normalization="zscore")
        _assert_same_windows(well.WellWindows(mini, split, **kw), _theirs(mini, split, **kw))
    one = well.subsample(path, tmp_path / "one", per_file=2, max_files=1, splits=("train",))
    assert len(well.WellWindows(one, "train", n_steps_input=7)) == 2 and not (one / "data" / "valid").exists()


def test_subsample_reads_the_wells_dummy_files(tmp_path):
    """Constant fields, constant and time-varying scalars, masks without boundary points."""
    np.random.seed(1)
    (tmp_path / "src" / "data" / "train").mkdir(parents=True)
    write_dummy_data(str(tmp_path / "src" / "data" / "train" / "dummy.hdf5"))
    mini = well.subsample(tmp_path / "src", tmp_path / "mini", per_file=1, space_stride=2, time_stride=3, splits=("train",))
    ours = well.WellWindows(mini, "train", n_steps_input=2, n_steps_output=1)
    with h5py.File(tmp_path / "src" / "data" / "train" / "dummy.hdf5") as f:
        field = f["t1_fields/field"][0, ::3, ::2, ::2]
        constant = f["t0_fields/constant_field"][0, ::2, ::2]
        varying = f["scalars/time_varying_scalar"][::3]
    assert torch.equal(ours[1], torch.from_numpy(rearrange(field[1:4], "t x y c -> c t x y")))
    assert torch.equal(ours.constants(0)[0], torch.from_numpy(constant))
    assert torch.equal(ours.scalars(1)["time_varying_scalar"], torch.from_numpy(varying[1:4]))
    _assert_same_windows(ours, _theirs(mini, "train", n_steps_input=2, n_steps_output=1))


def test_subsample_bad_input(datasets, tmp_path):
    path, _ = datasets["burgers2d"]
    with pytest.raises(ValueError, match="space_stride"):
        well.subsample(path, tmp_path / "m", space_stride=0)
    with pytest.raises(ValueError, match="max_files"):
        well.subsample(path, tmp_path / "m", max_files=0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        well.subsample(path.parent / "nowhere", tmp_path / "m")
    with pytest.raises(ValueError, match="train"):
        well.subsample(path, tmp_path / "m", splits=("valid",))
    well.subsample(path, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite"):
        well.subsample(path, tmp_path / "m")


# ---------------------------------------------------------------------------------------------
# Bad input and damaged files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def copy(datasets, tmp_path):
    """A fresh copy of the 2D Burgers data set and the path of its first training file."""
    path = tmp_path / "copy"
    shutil.copytree(datasets["burgers2d"][0], path)
    return path, sorted((path / "data" / "train").glob("*.hdf5"))[0]


def test_bad_arguments(datasets):
    path, _ = datasets["burgers2d"]
    with pytest.raises(ValueError, match="split must be one of"):
        well.WellWindows(path, "training")
    with pytest.raises(ValueError, match="normalization"):
        well.WellWindows(path, normalization="minmax")
    with pytest.raises(ValueError, match="n_steps_input"):
        well.WellWindows(path, n_steps_input=0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        well.WellWindows(path.parent / "nowhere")
    with pytest.raises(ValueError, match=r"burgers2d_000.hdf5 has trajectories of 8 frames, too short.*n_steps_input=6"):
        well.WellWindows(path, n_steps_input=6, n_steps_output=3)
    with pytest.raises(ValueError, match="time_stride=3"):
        well.WellWindows(path, n_steps_input=2, n_steps_output=2, time_stride=3)
    with pytest.raises(IndexError, match="out of range"):
        well.WellWindows(path)[10_000]


def test_writer_bad_input(datasets, tmp_path):
    _, t = datasets["burgers2d"]
    with pytest.raises(TypeError, match="Trajectories"):
        well.write_well(t.data, tmp_path / "a")
    with pytest.raises(TypeError, match="data\\['valid'\\]"):
        well.write_well({"train": t, "valid": t.data}, tmp_path / "a")
    with pytest.raises(ValueError, match="at least one trajectory"):
        well.write_well(t, tmp_path / "a", splits=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="vectors"):
        well.write_well(t, tmp_path / "a", vectors={"velocity": ("u", "q")})
    bad = Trajectories(**{**t.__dict__, "data": t.data.clone()})
    bad.data[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        well.write_well(bad, tmp_path / "a")
    well.write_well({"train": t}, tmp_path / "b")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        well.write_well(t, tmp_path / "b")
    well.write_well(t, tmp_path / "b", overwrite=True, per_file=3)
    assert len(list((tmp_path / "b" / "data" / "train").glob("*.hdf5"))) == 2


def _replace(group, name, data):
    attrs = dict(group[name].attrs)
    del group[name]
    group.create_dataset(name, data=data).attrs.update(attrs)


def _edit(path, edit, *, keep_digest=False):
    with h5py.File(path, "r+") as f:
        if not keep_digest:
            del f.attrs[well.DIGEST]
        edit(f)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.__delitem__("t1_fields"), r"/ has no member 't1_fields' \(expected a group of vector fields\)"),
        (
            lambda f: f["t1_fields/velocity"].attrs.__delitem__("time_varying"),
            r"/t1_fields/velocity has no attribute 'time_varying'",
        ),
        (lambda f: f.attrs.__delitem__("n_trajectories"), r"/ has no attribute 'n_trajectories'"),
        (lambda f: f["boundary_conditions/x_periodic"].attrs.__setitem__("bc_type", "REFLECTIVE"), "bc_type 'REFLECTIVE'"),
        (
            lambda f: _replace(f["t1_fields"], "velocity", np.zeros((2, 8, 16, 16))),
            r"/t1_fields/velocity has shape \(2, 8, 16, 16\), expected \(2, 8, 16, 16, 2\) = \(n_trajectories, time, x, y, component\)",
        ),
        (lambda f: f["t1_fields/velocity"].attrs.__setitem__("dim_varying", [True]), "dim_varying has 1 flags, expected 2"),
    ],
    ids=["missing group", "missing attribute", "missing root attribute", "unknown boundary", "wrong rank", "bad dim_varying"],
)
def test_layout_errors_name_file_object_and_expectation(copy, edit, message):
    path, first = copy
    _edit(first, edit)
    with pytest.raises(well.WellFormatError, match=message) as info:
        well.WellWindows(path)
    assert str(first) in str(info.value)


def test_edited_metadata_breaks_the_digest(copy):
    path, first = copy
    _edit(first, lambda f: f["t1_fields/velocity"].attrs.__setitem__("time_varying", False), keep_digest=True)
    with pytest.raises(well.WellFormatError, match=f"{first}: its metadata does not match the digest"):
        well.WellWindows(path)


@pytest.mark.parametrize(
    "key, field, value, message",
    [
        ("mean", "velocity", None, r"no 'mean' for field 'velocity'"),
        ("std", "velocity", 1.0, r"'std' of field 'velocity' has shape \(\), expected \(2,\)"),
        ("std", "velocity", [float("nan"), 1.0], r"'std' of field 'velocity' is not finite"),
    ],
)
def test_stats_errors(copy, key, field, value, message):
    path, _ = copy
    stats = yaml.safe_load((path / "stats.yaml").read_text())
    if value is None:
        del stats[key][field]
    else:
        stats[key][field] = value
    (path / "stats.yaml").write_text(yaml.safe_dump(stats))
    with pytest.raises(well.WellFormatError, match=message) as info:
        well.WellWindows(path, normalization="zscore")
    assert "stats.yaml" in str(info.value)
    well.WellWindows(path, normalization=None)  # the stats are not read without normalisation


def test_truncated_file_fails_on_open(copy):
    path, first = copy
    size = first.stat().st_size
    with open(first, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(well.WellFormatError, match=f"{first}: HDF5 could not open the file .*truncated"):
        well.WellWindows(path)


def test_non_finite_values_are_refused(copy):
    """A file from elsewhere, without data checksums, holding a NaN (HDF5 rewrites the checksum)."""
    path, first = copy
    _edit(first, lambda f: f["t1_fields/velocity"].__setitem__((1, 5, 3, 3, 0), np.nan), keep_digest=True)
    ours = well.WellWindows(path, n_steps_input=1, n_steps_output=1)
    ours[0]
    with pytest.raises(well.WellFormatError, match=f"{first}: /t1_fields/velocity holds non-finite values at trajectory 1"):
        ours.batch(range(len(ours)))


@pytest.mark.slow
def test_flipped_bytes_never_yield_wrong_windows(copy):
    """Flip one byte at a time, all over a file: reading either fails naming the file, or
    gives the same windows, names, boundaries and scalars. Flips inside data chunks always fail."""
    path, first = copy
    for other in sorted((path / "data" / "train").glob("*.hdf5"))[1:]:
        other.unlink()  # one file in the split, so each read is of the damaged one alone
    original = first.read_bytes()

    def read():
        ours = well.WellWindows(path, n_steps_input=4, n_steps_output=4)  # 2 x 1 windows: every frame of the file
        return (
            ours.batch(range(len(ours))),
            ours.field_names,
            ours.boundary_conditions,
            [ours.scalars(i) for i in range(len(ours))],
        )

    expected = read()
    with h5py.File(first, "r") as f:
        ds = f["t1_fields/velocity"]
        chunks = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    in_data = [c.byte_offset + c.size // 2 for c in chunks[::5]]
    positions = sorted(set(range(0, len(original), 97)) | set(in_data))
    failed, same = [], 0
    for pos in positions:
        damaged = bytearray(original)
        damaged[pos] ^= 0x5A
        first.write_bytes(bytes(damaged))
        try:
            got = read()
        except well.WellFormatError as e:
            assert str(first) in str(e)
            failed.append(pos)
            continue
        assert torch.equal(got[0], expected[0]) and got[1:3] == expected[1:3], f"byte {pos}: wrong windows, no error"
        assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(got[3], expected[3]))
        same += 1
    assert set(in_data) <= set(failed)
    assert len(failed) > len(positions) // 2 and same > 0


def test_recipes_write_and_shrink_a_data_set(tmp_path, capsys):
    """data_recipes/the_well: the synthetic writer and the mini-data-set maker, end to end."""
    recipes = Path(__file__).resolve().parents[1] / "data_recipes" / "the_well"
    write = runpy.run_path(str(recipes / "write_synthetic.py"))["main"]
    shrink = runpy.run_path(str(recipes / "make_mini.py"))["main"]
    assert write([str(tmp_path / "full"), "--trajectories", "3", "--shape", "16", "16", "--frames", "5"]) == 0
    assert shrink([str(tmp_path / "full"), str(tmp_path / "mini"), "--space-stride", "2", "--time-stride", "2"]) == 0
    mini = well.WellWindows(tmp_path / "mini", "train")
    assert mini.shape == (8, 8) and mini.field_names == ("velocity_x", "velocity_y") and len(mini) == 2
    assert "train: 1 trajectories of 3 frames" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Walls and open boundaries: written, read back, and generated by the method of images
# ---------------------------------------------------------------------------------------------


def _ramp(n: int = 6, frames: int = 7, shape=(10, 12), seed: int = 0) -> Trajectories:
    """Values that say where they are: field f of trajectory b at (t, i, j) is
    ``1000 f + 100 b + 10 t + i + j / 100`` (a layout test, not physics)."""
    b, f, t, i, j = torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in (n, 2, frames, *shape)), indexing="ij")
    data = 1000 * f + 100 * b + 10 * t + i + j / 100
    g = torch.Generator().manual_seed(seed)
    return Trajectories(
        data=data.float(),
        coefficients={"a": torch.rand(n, generator=g, dtype=torch.float64), "b": torch.full((n,), 2.0, dtype=torch.float64)},
        system="ramp",
        fields=("p", "q"),
        dt=0.05,
        interval=0.25,
        length=1.0,
    )


@pytest.fixture(scope="module")
def walled_sets(tmp_path_factory):
    """A ramp with a wall along x and periodic y; a walled diffusion data set (method of images)."""
    base = tmp_path_factory.mktemp("walled")
    ramp = well.write_well(_ramp(), base / "ramp", boundaries={"x": "wall"}, splits=(4 / 6, 1 / 6, 1 / 6))
    g = torch.Generator().manual_seed(3)
    heat = walls.walled("diffusion", batch=6, shape=(16, 16), frames=6, generator=g)
    return {"ramp": ramp, "heat": well.write_well(heat, base / "heat", per_file=2, splits=(0.5, 1 / 6, 2 / 6))}


def test_write_well_records_walls_and_open_sides(walled_sets, tmp_path):
    assert well.WellWindows(walled_sets["ramp"], "train").boundary_conditions == {
        "x": ("wall", "wall"),
        "y": ("periodic", "periodic"),
    }
    heat = well.WellWindows(walled_sets["heat"], "train")  # from the trajectories' own meta["boundaries"]
    assert heat.boundary_conditions == {"x": ("wall", "wall"), "y": ("open", "open")}
    mixed = well.write_well(_ramp(), tmp_path / "mixed", boundaries={"x": ("wall", "open"), "y": ("open", "wall")})
    ours = well.WellWindows(mixed, "train")
    assert ours.boundary_conditions == {"x": ("wall", "open"), "y": ("open", "wall")}
    with h5py.File(ours.files[0].path) as f:
        assert sorted(f["boundary_conditions"]) == ["x_open", "x_wall", "y_open", "y_wall"]
        assert f["boundary_conditions/x_wall"].attrs["bc_type"] == "WALL"
        assert f["boundary_conditions/x_wall/mask"][()].tolist() == [True] + [False] * 9
    for path in (walled_sets["ramp"], walled_sets["heat"], mixed):  # The Well's reader sees the same conditions
        ours = well.WellWindows(path, "train")
        assert torch.equal(ours.boundary_codes(), _theirs(path, "train")[0]["boundary_conditions"])
        _assert_same_windows(ours, _theirs(path, "train"))


@pytest.mark.parametrize(
    "boundaries, message",
    [
        ({"w": "wall"}, "must map spatial axes among"),
        ({"x": "sticky"}, r"boundaries\['x'\] must be a condition"),
        ({"x": ("periodic", "wall")}, "periodic on both sides or neither"),
        ({"x": ("wall",)}, r"boundaries\['x'\]"),
    ],
)
def test_write_well_refuses_bad_boundaries(tmp_path, boundaries, message):
    with pytest.raises(ValueError, match=message):
        well.write_well(_ramp(), tmp_path / "bad", boundaries=boundaries)


def test_walls_by_images_are_no_flux_walls():
    """The heat equation in a box with no-flux walls on every side, against its exact solution:
    the cosine series (DCT-II of the cell-centred grid) decaying as exp(-nu |k|^2 t), k = pi m / L."""
    g = torch.Generator().manual_seed(0)
    tr = walls.walled("diffusion", batch=2, shape=(12, 10), frames=4, walls=(0, 1), generator=g, dtype=torch.float64)
    assert tr.meta["boundaries"] == {"x": ("wall", "wall"), "y": ("wall", "wall")} and tr.data.shape == (2, 1, 4, 12, 10)
    u = tr.data[:, 0].numpy()
    k = [np.pi * np.arange(n) / tr.length for n in (12, 10)]
    k2 = k[0][:, None] ** 2 + k[1][None, :] ** 2
    for b in range(2):
        c0 = scipy.fft.dctn(u[b, 0], type=2, norm="ortho")
        for t in range(1, 4):
            exact = scipy.fft.idctn(c0 * np.exp(-float(tr.coefficients["nu"][b]) * k2 * t * tr.interval), type=2, norm="ortho")
            np.testing.assert_allclose(u[b, t], exact, rtol=0, atol=1e-10 * np.abs(u[b, 0]).max())
    assert tr.meta["symmetry_error"] < 1e-12


def test_walled_fields_are_the_corner_of_a_mirror_symmetric_periodic_run():
    g = lambda: torch.Generator().manual_seed(5)
    tr = walls.walled("gray_scott", batch=2, shape=(16, 16), frames=3, generator=g(), interval=10.0, warmup=20.0)
    full = generate(
        walls.mirrored("gray_scott", (0,)),
        batch=2,
        shape=(32, 32),
        frames=3,
        generator=g(),
        length=1.0,
        interval=10.0,
        warmup=20.0,
    )
    assert torch.equal(tr.data, full.data[..., :16, :16]) and tr.length == 0.5 and tr.system == "gray_scott"
    torch.testing.assert_close(full.data, torch.flip(full.data, dims=[3]), rtol=0, atol=1e-4)  # mirror-symmetric in x
    assert 0 < tr.meta["symmetry_error"] < 1e-4
    assert tr.meta["boundaries"] == {"x": ("wall", "wall"), "y": ("open", "open")}
    with pytest.raises(ValueError, match="is not unchanged by a mirror"):
        walls.mirrored("burgers", (0,))
    with pytest.raises(ValueError, match=r"walls \(2,\) must be spatial axes"):
        walls.walled("diffusion", batch=1, shape=(8, 8), frames=2, walls=(2,))


# ---------------------------------------------------------------------------------------------
# Streams and held-out data over a data set (physfm.data.well_streams)
# ---------------------------------------------------------------------------------------------


def _all_windows(path, split, window, stride=1, trajectories=None) -> dict[tuple, torch.Tensor]:
    """(file, trajectory, t0) -> window, for every window of the chosen trajectories."""
    ws = well.WellWindows(path, split, n_steps_input=window, n_steps_output=0, time_stride=stride, normalization="zscore")
    pairs = ws.trajectories()[: trajectories or None]
    return {(k, b, t0): ws[ws.window_index(k, b, t0)] for k, b in pairs for t0 in range(ws.windows_per_trajectory(k))}


def test_window_index_inverts_locate_and_frame_interval_reads_the_time_axis(walled_sets):
    ws = well.WellWindows(walled_sets["heat"], "train", n_steps_input=2, time_stride=2)
    assert ws.trajectories() == [(0, 0), (0, 1), (1, 0)]
    assert [ws.window_index(*ws.locate(i)) for i in range(len(ws))] == list(range(len(ws)))
    assert ws.frame_interval() == pytest.approx(2 * 0.5)
    with pytest.raises(IndexError, match="no window"):
        ws.window_index(1, 1, 0)


def test_window_stream_yields_windows_of_the_kept_trajectories(walled_sets):
    path = walled_sets["ramp"]
    stream = ws.WellWindowStream(path, "train", window=3, strides=(1, 2), trajectories=2, seed=4)
    every = {
        **{("s1",) + k: v for k, v in _all_windows(path, "train", 3, 1, 2).items()},
        **{("s2",) + k: v for k, v in _all_windows(path, "train", 3, 2, 2).items()},
    }
    seen = set()
    for x in itertools.islice(iter(stream), 60):
        assert x.shape == (2, 3, 10, 12) and x.dtype == torch.float32
        match = [k for k, v in every.items() if torch.equal(v, x)]
        assert len(match) == 1, "a window that is not one of the kept trajectories'"
        seen.add(match[0][:3])
    assert {s for s, _, _ in seen} == {"s1", "s2"} and {b for _, _, b in seen} == {0, 1}
    assert stream.drops() == {"ramp": {"kept": 2, "dropped": 0, "rate": 0.0}}
    assert harness.drop_counts(stream) == {"kept": 2, "dropped": 0}


def test_window_stream_is_seeded_resumes_and_gives_metadata(walled_sets):
    path = walled_sets["ramp"]
    a = ws.WellWindowStream(path, window=2, seed=1, meta=True)
    first = [a.sample() for _ in range(5)]
    state = a.state_dict()
    rest = [a.sample()[0] for _ in range(5)]
    b = ws.WellWindowStream(path, window=2, seed=1, meta=True)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(first, [b.sample() for _ in range(5)]))
    c = ws.WellWindowStream(path, window=2, seed=1)
    c.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(rest, [c.sample() for _ in range(5)]))
    assert not all(
        torch.equal(x[0], y) for x, y in zip(first, [ws.WellWindowStream(path, window=2, seed=2).sample() for _ in range(5)])
    )
    x, coef, dt = first[0]
    assert coef.shape == (2,) and float(dt) == pytest.approx(0.25)
    ranges = ws.coefficient_ranges(path)
    assert list(ranges) == ["a", "b"] and ranges["b"] == (2.0, 2.0)
    t = _ramp()
    lo, hi = float(t.coefficients["a"][:4].min()), float(t.coefficients["a"][:4].max())  # the training split's range
    raw = ws.WellWindowStream(path, window=2, seed=3, meta=True, normalization=None)
    for _ in range(20):
        x, coef, _ = raw.sample()
        b = int(x[0, 0, 0, 0]) // 100  # the trajectory the window came from (field 0)
        assert coef[0].item() == pytest.approx(2 * (float(t.coefficients["a"][b]) - lo) / (hi - lo) - 1, abs=1e-6)
        assert coef[1].item() == 0.0  # a coefficient without a range
    assert torch.equal(ws.scaled_coefficients({"a": hi, "b": 2.0}, ranges), torch.tensor([1.0, 0.0]))


def test_crop_stream_wraps_only_periodic_axes(walled_sets):
    """x has walls: a crop's x index runs up by one without a jump; y is periodic: crops may wrap."""
    stream = ws.WellCropStream(walled_sets["ramp"], "train", crop=(2, 8, 10), normalization=None, seed=0)
    assert stream.periodic == (False, True)
    fields, wrapped = set(), 0
    for _ in range(200):
        x, f = stream.sample()
        assert x.shape == (1, 2, 8, 10)
        fields.add(f)
        assert int(x[0, 0, 0, 0]) // 1000 == f  # the field it says
        i = torch.floor(x[0, 0, :, 0] % 10)
        assert torch.equal(torch.diff(i), torch.ones(7)), "a crop wrapped around a walled axis"
        j = torch.round((x[0, 0, 0] % 1) * 100)
        steps = torch.diff(j)
        assert set(steps.tolist()) <= {1.0, -11.0}
        wrapped += bool((steps == -11).any())
    assert fields == {0, 1} and 0 < wrapped < 200
    assert next(iter(stream)).shape == (1, 2, 8, 10)
    with pytest.raises(ValueError, match="spatial sizes between 1 and the grid"):
        ws.WellCropStream(walled_sets["ramp"], crop=(2, 11, 4))


def test_fixed_windows_are_distinct_and_spread_over_trajectories(walled_sets):
    path = walled_sets["ramp"]
    every = _all_windows(path, "train", 3)
    got = ws.fixed_windows(path, "train", window=3, n=8, seed=0)
    keys = [next(k for k, v in every.items() if torch.equal(v, x)) for x in got]
    assert len(set(keys)) == 8 and {b for _, b, _ in keys} == {0, 1, 2, 3}
    assert torch.equal(got, ws.fixed_windows(path, "train", window=3, n=8, seed=0))
    assert not torch.equal(got, ws.fixed_windows(path, "train", window=3, n=8, seed=1))
    with pytest.raises(ValueError, match="hold only 20 windows"):
        ws.fixed_windows(path, "train", window=3, n=21)


def test_well_eval_data_is_the_harness_s_eval_data_from_the_held_out_splits(walled_sets):
    path = walled_sets["heat"]
    data = ws.well_eval_data(path, window=3, n_windows=4, context=2, steps=3, n_rollouts=2, seed=0)
    assert isinstance(data, harness.EvalData) and data.system == "heat"
    valid = _all_windows(path, "valid", 3)
    assert all(any(torch.equal(v, x) for v in valid.values()) for x in data.windows)
    assert len({tuple(x.flatten()[:8].tolist()) for x in data.windows}) == 4  # distinct
    test = well.WellWindows(path, "test", n_steps_input=5, n_steps_output=0, normalization="zscore")
    firsts = [test[test.window_index(k, b, 0)] for k, b in test.trajectories()]
    assert all(any(torch.equal(f, x) for f in firsts) for x in data.trajectories) and data.trajectories.shape == (2, 1, 5, 16, 16)
    assert data.window_coefficients.shape == (4, 1) and data.trajectory_coefficients.shape == (2, 1)
    assert data.interval == pytest.approx(0.5) and data.drops["dropped"] == 0
    base = data.baselines()
    assert base.persistence_rollout_vrmse.shape == (3,)
    scores = data.scores(lambda x: x)  # persistence, through the harness
    torch.testing.assert_close(scores["vrmse"], torch.as_tensor(float(base.persistence_vrmse), dtype=scores["vrmse"].dtype))
    with pytest.raises(ValueError, match="n_rollouts=3, but the 'test' split"):
        ws.well_eval_data(path, window=3, n_windows=2, context=2, steps=3, n_rollouts=3)
    with pytest.raises(ValueError, match="window must be an int >= 2"):
        ws.well_eval_data(path, window=1, n_windows=2, context=2, steps=3, n_rollouts=1)


def test_dataloader_workers_each_read_their_own_windows(walled_sets):
    stream = ws.WellWindowStream(walled_sets["ramp"], window=2, seed=0, normalization=None)
    stream.sample()  # a generator made in the main process is not inherited by the workers
    loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=2)
    batches = list(itertools.islice(iter(loader), 2))  # one from each worker
    assert batches[0].shape == (4, 2, 2, 10, 12) and not torch.equal(batches[0], batches[1])


def test_the_synthetic_recipe_writes_walls(tmp_path):
    recipes = Path(__file__).resolve().parents[1] / "data_recipes" / "the_well"
    write = runpy.run_path(str(recipes / "write_synthetic.py"))["main"]
    assert (
        write(
            [
                str(tmp_path / "w"),
                "--system",
                "diffusion",
                "--trajectories",
                "3",
                "--shape",
                "8",
                "8",
                "--frames",
                "3",
                "--walls",
                "1",
            ]
        )
        == 0
    )
    assert well.WellWindows(tmp_path / "w", "train").boundary_conditions == {"x": ("open", "open"), "y": ("wall", "wall")}
