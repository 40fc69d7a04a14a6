"""physfm.profiles: presets, overrides and their errors, the PHYSFM_PROFILE switch."""

from __future__ import annotations

import pytest

from physfm import profiles
from physfm.profiles import PRESETS, PROFILES, resolve


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
