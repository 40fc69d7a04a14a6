"""physfm.profiles: presets, overrides and their errors, the PHYSFM_PROFILE switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from physfm import profiles
from physfm.profiles import PRESETS, PROFILES, resolve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_forced_profile(monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)


@pytest.mark.parametrize("chapter", sorted(PRESETS))
def test_every_profile_has_the_same_parameters_and_types(chapter):
    assert set(PRESETS[chapter]) == set(PROFILES)
    ref = PRESETS[chapter]["cpu"]
    for profile in PROFILES:
        preset = PRESETS[chapter][profile]
        assert set(preset) == set(ref), f"{chapter}/{profile} differs from cpu in its parameter names"
        for name, value in preset.items():
            assert type(value) is type(ref[name]), f"{chapter}/{profile}.{name} has another type than at cpu"
        resolve(chapter, profile)  # every preset passes its own validation


def test_resolve_fills_the_preset_and_applies_overrides():
    cfg = resolve("metrics", "smoke", n_grid=48, seed=3, n_samples=None)
    assert cfg.profile == "smoke" and cfg.chapter == "metrics"
    assert cfg.n_grid == 48 and cfg["seed"] == 3
    assert cfg.n_samples == PRESETS["metrics"]["smoke"]["n_samples"]
    assert cfg.as_dict()["shifts"] == list(PRESETS["metrics"]["smoke"]["shifts"])
    assert "n_grid" in repr(cfg)


def test_config_is_read_only():
    cfg = resolve("metrics", "cpu")
    with pytest.raises(AttributeError, match="read-only"):
        cfg.n_grid = 4
    with pytest.raises(AttributeError, match="no parameter 'grid'"):
        _ = cfg.grid


def test_lists_from_yaml_become_tuples():
    cfg = resolve("metrics", "cpu", shifts=[0, 2, 4])
    assert cfg.shifts == (0, 2, 4)


@pytest.mark.parametrize(
    "args, kwargs, err, match",
    [
        (("metrics", "laptop"), {}, ValueError, "unknown profile 'laptop'"),
        (("chapter99", "cpu"), {}, ValueError, "unknown chapter 'chapter99'"),
        (("metrics", "cpu"), {"n_gird": 64}, ValueError, "has no parameter 'n_gird'"),
        (("metrics", "cpu"), {"n_grid": 64.0}, TypeError, "metrics.n_grid must be int"),
        (("metrics", "cpu"), {"n_grid": "64"}, TypeError, "got str '64'"),
        (("metrics", "cpu"), {"n_grid": True}, TypeError, "must be int"),
        (("metrics", "cpu"), {"shifts": 3}, TypeError, "shifts must be tuple"),
        (("metrics", "cpu"), {"shifts": [1, 2.5]}, TypeError, r"shifts\[\] must be int"),
        (("metrics", "cpu"), {"seed": -1}, ValueError, "seed must be a non-negative int"),
    ],
)
def test_bad_input_is_named(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        resolve(*args, **kwargs)


def test_environment_forces_the_profile(monkeypatch, capsys):
    monkeypatch.setenv(profiles.ENV_VAR, "smoke")
    cfg = resolve("metrics", "gpu")
    assert cfg.profile == "smoke"
    assert cfg.n_grid == PRESETS["metrics"]["smoke"]["n_grid"]
    assert "replaced by 'smoke'" in capsys.readouterr().out
    monkeypatch.setenv(profiles.ENV_VAR, "tiny")
    with pytest.raises(ValueError, match="PHYSFM_PROFILE='tiny' is not a profile"):
        resolve("metrics", "cpu")


# the parameters that make up a chapter's scientific design: the gpu profile shrinks steps,
# grids, seeds and map points, never these
_SHAPE = ("arms", "map_arms", "focus_arms", "target", "seen", "held_out", "system", "field", "method")


def _names(value):
    return sorted(value) if isinstance(value, (dict, tuple, list)) else value


@pytest.mark.parametrize("chapter", sorted(PRESETS))
def test_gpu_keeps_the_paper_profiles_shape(chapter):
    gpu, paper = PRESETS[chapter]["gpu"], PRESETS[chapter]["paper"]
    for name in _SHAPE:
        if name in paper:
            assert gpu[name] == paper[name], f"{chapter}: gpu.{name} = {gpu[name]!r}, paper has {paper[name]!r}"
    if "systems" in paper:
        assert _names(gpu["systems"]) == _names(paper["systems"]), f"{chapter}: gpu and paper train on other systems"
    if "map" in paper:
        assert set(gpu["map"]) == set(paper["map"]), (
            f"{chapter}: gpu maps the axes {sorted(gpu['map'])}, paper {sorted(paper['map'])}"
        )
        assert all(gpu["map"].values()), f"{chapter}: a gpu map axis without points"
    if "focus" in paper:
        assert set(gpu["focus"]) == set(paper["focus"]), f"{chapter}: gpu and paper focus on other axes"


def test_the_paper_profile_holds_the_papers_step_counts():
    # Sotoudeh et al. (arXiv 2603.05598): in-domain pre-training cuts VRMSE by 64 % after 10,500 steps
    assert PRESETS["pretraining"]["paper"]["dyn_steps"] == 10500
    assert PRESETS["pretraining"]["paper"]["pre_steps"] == 10500


@pytest.mark.parametrize("chapter", sorted(PRESETS))
@pytest.mark.parametrize("profile", PROFILES)
def test_parameter_files_resolve_to_their_preset(chapter, profile):
    """``data_recipes/params/<chapter>/<profile>.yaml`` exists for every profile and, read as
    ``python -m physfm.training`` reads it, gives that profile's preset."""
    import yaml

    from physfm.cli import chapter_parameters

    path = ROOT / "data_recipes" / "params" / chapter / f"{profile}.yaml"
    assert path.is_file(), f"missing parameter file {path.relative_to(ROOT)}"
    values = yaml.safe_load(path.read_text())
    assert values.get("profile") == profile, f"{path.relative_to(ROOT)} must set profile: {profile}"
    cfg = chapter_parameters(chapter, values)
    assert cfg.profile == profile
    preset = {**PRESETS[chapter][profile], "seed": 0}
    assert {k: cfg[k] for k in preset} == preset, f"{path.relative_to(ROOT)} overrides its preset"


def _gpu_budget():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_budget", ROOT / "benchmarks" / "gpu_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_estimate_is_of_these_presets_within_budget_and_shown_in_the_docs():
    """``benchmarks/gpu_budget.json`` was made from the gpu and paper presets as they are now,
    puts every chapter's gpu profile within 8 minutes and 40 GB, and its table is the one
    ``README.md`` and ``book/running.md`` show."""
    import json

    budget = _gpu_budget()
    estimate = json.loads((ROOT / "benchmarks" / "gpu_budget.json").read_text())
    assert estimate["presets_digest"] == budget.presets_digest(estimate["chapters"]), (
        "the gpu or paper presets changed since benchmarks/gpu_budget.json was made: "
        "run PYTHONPATH=src python benchmarks/gpu_budget.py and update the tables in README.md and book/running.md"
    )
    for chapter, row in estimate["chapters"].items():
        assert row["gpu"]["minutes"] <= budget.BUDGET_MIN, f"{chapter}: {row['gpu']['minutes']:.1f} min at gpu"
        assert row["gpu"]["peak_gb"] <= 40, f"{chapter}: {row['gpu']['peak_gb']:.1f} GB at gpu"
    table = budget.markdown_table(estimate)
    for doc in ("README.md", "book/running.md"):
        assert table in (ROOT / doc).read_text(), f"{doc}: its GPU table is not that of benchmarks/gpu_budget.json"
