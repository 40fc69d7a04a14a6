"""physfm.runtime: device choice and seeding."""

from __future__ import annotations

import pytest
import torch

import physfm
from physfm import runtime


def test_device_picks_an_available_one_and_says_which(capsys, monkeypatch):
    monkeypatch.delenv("PHYSFM_DEVICE", raising=False)
    dev = physfm.device()
    assert isinstance(dev, torch.device)
    if not torch.cuda.is_available():
        assert dev.type in ("mps", "cpu")
    assert "physfm: running on" in capsys.readouterr().out


def test_device_can_be_forced(monkeypatch):
    monkeypatch.setenv("PHYSFM_DEVICE", "cpu")
    assert physfm.device(verbose=False) == torch.device("cpu")
    monkeypatch.setenv("PHYSFM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="'tpu' \\(PHYSFM_DEVICE\\) is not one of"):
        physfm.device(verbose=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_an_error():
    with pytest.raises(ValueError, match="not available"):
        physfm.device(prefer="cuda", verbose=False)


def test_the_cpu_profiles_run_on_the_cpu_even_with_an_accelerator(monkeypatch, capsys):
    monkeypatch.delenv("PHYSFM_DEVICE", raising=False)
    monkeypatch.setattr(physfm.runtime, "_available", lambda kind: True)  # a machine with CUDA and MPS
    for profile in ("smoke", "cpu"):
        assert physfm.device(profile) == torch.device("cpu")
    assert "numbers are the CPU's" in capsys.readouterr().out
    for profile in ("gpu", "paper"):
        assert physfm.device(profile, verbose=False) == torch.device("cuda")


def test_an_accelerator_profile_refuses_a_machine_without_one(monkeypatch):
    monkeypatch.delenv("PHYSFM_DEVICE", raising=False)
    monkeypatch.setattr(physfm.runtime, "_available", lambda kind: kind == "cpu")
    for profile in ("gpu", "paper"):
        with pytest.raises(RuntimeError, match=f"the '{profile}' profile is sized for a GPU"):
            physfm.device(profile, verbose=False)
    monkeypatch.setenv("PHYSFM_DEVICE", "cpu")  # forced: the reader means it
    assert physfm.device("gpu", verbose=False) == torch.device("cpu")


def test_seed_everything_repeats():
    g1 = physfm.seed_everything(3)
    a = torch.randn(4), torch.randn(4, generator=g1)
    g2 = physfm.seed_everything(3)
    b = torch.randn(4), torch.randn(4, generator=g2)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="non-negative int"):
        physfm.seed_everything(-2)


def _square(x):
    return x * x


def test_map_jobs_keeps_the_order_in_worker_processes_and_names_bad_workers():
    from physfm.runtime import map_jobs

    assert map_jobs(_square, range(5), workers=1, progress=False) == [0, 1, 4, 9, 16]
    assert map_jobs(_square, range(5), workers=2, progress=False) == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError, match="workers must be a positive int, got 0"):
        map_jobs(_square, [1], workers=0)


def test_a_progress_bar_in_a_built_page_prints_one_line_at_the_end(monkeypatch, capsys):
    monkeypatch.setenv("PHYSFM_PROGRESS", "summary")
    bar = runtime.progress_bar(5, "training", initial=1)
    for _ in range(4):
        bar.update(1)
    bar.set_postfix(loss="0.25")
    assert capsys.readouterr().out == ""  # nothing while it runs
    bar.close()
    bar.close()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("training: 5/5 in ") and out[0].endswith("s, loss=0.25")
    quiet = runtime.progress_bar(3, "quiet", disable=True)
    quiet.update(3)
    quiet.close()
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("PHYSFM_PROGRESS", "bar")
    assert type(runtime.progress_bar(3, "live", disable=True)).__name__ == "tqdm"
    monkeypatch.setenv("PHYSFM_PROGRESS", "sometimes")
    with pytest.raises(ValueError, match="PHYSFM_PROGRESS"):
        runtime.progress_bar(3, "x")
