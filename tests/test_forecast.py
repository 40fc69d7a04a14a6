"""physfm.eval.forecast: next-frame scores, rollout error and the persistence baseline."""

from __future__ import annotations

import pytest
import torch

from physfm.eval import forecast, metrics


def test_persistence_is_the_score_of_copying_the_last_frame():
    x = torch.randn(4, 2, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    scores = forecast.next_frame_scores(lambda w: w, x)  # predict frame t+1 by frame t
    torch.testing.assert_close(scores["vrmse"], forecast.persistence_vrmse(x))
    torch.testing.assert_close(scores["vrmse"], metrics.vrmse(x[:, :, :-1], x[:, :, 1:]).mean())
    assert scores["nmse"].shape == (3,) and scores["vrmse_window"].shape == (4,)
    torch.testing.assert_close(scores["vrmse_window"].mean(), scores["vrmse"])
    perfect = forecast.next_frame_scores(lambda w: x[:, :, 1:], x)
    assert float(perfect["vrmse"]) == 0.0


def test_rollout_scores_the_frames_after_the_context():
    x = torch.randn(3, 1, 7, 8, generator=torch.Generator().manual_seed(1))
    truth = forecast.rollout_vrmse(lambda c, n: x[:, :, 3 : 3 + n], x, 3, 4)
    assert truth.shape == (4,) and float(truth.abs().max()) == 0.0
    hold = forecast.persistence_rollout_vrmse(x, 3, 4)
    expected = metrics.vrmse(x[:, :, 2:3].expand(-1, -1, 4, -1), x[:, :, 3:7]).mean(dim=(0, 1))
    torch.testing.assert_close(hold, expected)


def test_bad_input_is_named():
    x = torch.randn(2, 1, 4, 8)
    with pytest.raises(ValueError, match="predict returned shape"):
        forecast.next_frame_scores(lambda w: w[:, :, :1], x)
    with pytest.raises(ValueError, match=r"trajectories must be \(n, fields, time >= 6"):
        forecast.rollout_vrmse(lambda c, n: c, x, 3, 3)
    with pytest.raises(ValueError, match=r"windows must be \(n, fields, time >= 2"):
        forecast.persistence_vrmse(torch.randn(2, 1, 1, 8))
