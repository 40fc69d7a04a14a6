"""physfm.data.well: round trips through The Well's layout, with its WellDataset as the oracle.

Every data set here is written by the tests into ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from einops import rearrange
from the_well.data import WellDataset
from the_well.data.normalization import RMSNormalization, ZScoreNormalization
from the_well.data.utils import flatten_field_names
from the_well.utils.dummy_data import write_dummy_data

from physfm.data import well
from physfm.data.pde import Trajectories, generate

WELL_NORMALISATION = {None: None, "zscore": ZScoreNormalization, "rms": RMSNormalization}


def _mixed(seed: int = 0) -> Trajectories:
    """A scalar field and a vector field together (random values: a layout test, not physics)."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(5, 3, 6, 12, 10, generator=g) * torch.tensor([2.0, 0.5, 1.5]).view(1, 3, 1, 1, 1) + 1.0
    return Trajectories(data=data, coefficients={"gamma": torch.rand(5, generator=g, dtype=torch.float64)},
                        system="euler_like", fields=("rho", "mx", "my"), dt=0.1, interval=0.2, length=1.0)


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
    return WellDataset(path=str(path), well_split_name=split, use_normalization=norm is not None,
                       normalization_type=WELL_NORMALISATION[norm], min_dt_stride=stride, max_dt_stride=stride, **kw)


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
        (lambda f: f["t1_fields/velocity"].attrs.__delitem__("time_varying"), r"/t1_fields/velocity has no attribute 'time_varying'"),
        (lambda f: f.attrs.__delitem__("n_trajectories"), r"/ has no attribute 'n_trajectories'"),
        (lambda f: f["boundary_conditions/x_periodic"].attrs.__setitem__("bc_type", "REFLECTIVE"), "bc_type 'REFLECTIVE'"),
        (lambda f: _replace(f["t1_fields"], "velocity", np.zeros((2, 8, 16, 16))),
         r"/t1_fields/velocity has shape \(2, 8, 16, 16\), expected \(2, 8, 16, 16, 2\) = \(n_trajectories, time, x, y, component\)"),
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


@pytest.mark.parametrize("key, field, value, message", [
    ("mean", "velocity", None, r"no 'mean' for field 'velocity'"),
    ("std", "velocity", 1.0, r"'std' of field 'velocity' has shape \(\), expected \(2,\)"),
    ("std", "velocity", [float("nan"), 1.0], r"'std' of field 'velocity' is not finite"),
])
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
        return ours.batch(range(len(ours))), ours.field_names, ours.boundary_conditions, [ours.scalars(i) for i in range(len(ours))]

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
