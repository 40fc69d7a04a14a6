"""physfm.runtime: device choice and seeding."""

from __future__ import annotations

import pytest
import torch

import physfm


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
        physfm.device("cuda", verbose=False)


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
