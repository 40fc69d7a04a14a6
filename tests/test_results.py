"""physfm.results: NetCDF round trip with provenance, atomic writes, result locations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from physfm import results
from physfm.profiles import resolve


def _curves():
    steps = np.arange(0, 50, 10)
    return xr.Dataset(
        {"vrmse": (("step",), np.linspace(1, 0.2, 5)), "band_nmse": (("step", "band"), np.random.default_rng(0).random((5, 3)))},
        coords={"step": steps, "band": ["low", "mid", "high"]},
        attrs={"note": "test"},
    )


def test_round_trip_keeps_data_and_provenance(tmp_path, monkeypatch):
    monkeypatch.delenv("PHYSFM_PROFILE", raising=False)
    cfg = resolve("metrics", "cpu", seed=7)
    path = results.save(_curves(), tmp_path / "sub" / "run.nc", params=cfg.as_dict(), device=torch.device("cpu"))
    ds = results.load(path)
    xr.testing.assert_allclose(ds[["vrmse", "band_nmse"]], _curves()[["vrmse", "band_nmse"]])
    for key in results.PROVENANCE_KEYS:
        assert isinstance(ds.attrs[key], str) and ds.attrs[key]
    assert ds.attrs["note"] == "test"
    assert results.parameters(ds)["seed"] == 7 and results.parameters(ds)["profile"] == "cpu"
    assert ds.attrs["torch_version"] == str(torch.__version__)
    assert len(ds.attrs["git_commit"]) == 40 or ds.attrs["git_commit"] == "unknown"
    assert "cpu profile on cpu" in results.describe(ds)
    assert json.loads(ds.attrs["parameters"])["shifts"] == list(cfg.shifts)


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.nc"
    results.save(_curves(), path, params={"a": 1}, device="cpu")
    before = path.read_bytes()

    def broken(tmp):
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.nc"]  # no temporary file left behind


def test_load_rejects_files_without_provenance(tmp_path):
    path = tmp_path / "bare.nc"
    _curves().to_netcdf(path, engine="h5netcdf")
    with pytest.raises(ValueError, match="no provenance attributes"):
        results.load(path)
    with pytest.raises(FileNotFoundError, match="no result at"):
        results.load(tmp_path / "missing.nc")
    with pytest.raises(TypeError, match="must be an xarray.Dataset"):
        results.save({"a": 1}, path, params={}, device="cpu")


def test_where_results_go(monkeypatch, tmp_path):
    monkeypatch.delenv("PHYSFM_RESULTS", raising=False)
    root = results.repo_root()
    assert results.path_for("pretraining", "gpu") == root / "results" / "pretraining" / "gpu.nc"
    assert results.path_for("pretraining", "smoke").is_relative_to(root / "_build")
    monkeypatch.setenv("PHYSFM_RESULTS", str(tmp_path))
    assert results.path_for("pretraining", "cpu", "seeds") == tmp_path / "pretraining" / "seeds.nc"


def test_dirty_means_code_changed_not_results(tmp_path, monkeypatch):
    """A rewritten result under results/ leaves a run clean; an edited source file does not."""
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "cpu.nc").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(results, "repo_root", lambda: tmp_path)

    assert results.provenance({}, "cpu")["git_dirty"] == "false"
    (tmp_path / "results" / "cpu.nc").write_text("new\n")
    assert results.provenance({}, "cpu")["git_dirty"] == "false"
    (tmp_path / "code.py").write_text("a = 2\n")
    assert results.provenance({}, "cpu")["git_dirty"] == "true"


def test_shown_path_is_relative_inside_the_repository_only(tmp_path):
    assert results.shown(results.repo_root() / "results" / "x" / "cpu.nc") == str(Path("results") / "x" / "cpu.nc")
    assert results.shown(tmp_path / "cpu.nc") == str((tmp_path / "cpu.nc").resolve())
