"""Scoring forecasts: next-frame error, autoregressive rollout error, and the persistence baseline.

Every dynamics chapter scores its models the same three ways, on held-out data:

- **next frame, teacher forced**: for a window of true frames :math:`x_0 \\dots x_{T-1}` the model
  predicts every frame from the true frames before it, :math:`\\hat x_{t+1} = f(x_{\\le t})`, and
  the error is VRMSE (The Well's definition, :func:`physfm.eval.metrics.vrmse`) and the NMSE in
  the low/mid/high wavenumber bands (:func:`physfm.eval.metrics.spectral_error`), averaged over
  fields and frames; :func:`next_frame_scores` also returns the VRMSE of every window, which the
  intervals of :mod:`physfm.eval.uncertainty` resample;
- **rollout**: from ``context`` true frames the model predicts ``steps`` frames, each prediction
  fed back as input; VRMSE per lead time, averaged over trajectories and fields
  (:func:`rollout_vrmse`);
- **persistence**, the forecast "nothing changes" (the last true frame, repeated), scored on the
  same data (:func:`persistence_vrmse`, :func:`persistence_rollout_vrmse`): a model that does not
  beat it has learnt to reconstruct frames, not to predict them.

Shapes are channels first: windows and trajectories ``(n, F, time, *space)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from physfm.eval import metrics

__all__ = ["next_frame_scores", "rollout_vrmse", "persistence_vrmse", "persistence_rollout_vrmse"]

Predict = Callable[[torch.Tensor], torch.Tensor]
Rollout = Callable[[torch.Tensor, int], torch.Tensor]


def _check(x: torch.Tensor, name: str, fn: str, frames: int = 2) -> None:
    if x.ndim < 4 or x.shape[2] < frames:
        raise ValueError(f"{fn}: {name} must be (n, fields, time >= {frames}, *space), got shape {tuple(x.shape)}")


@torch.no_grad()
def next_frame_scores(predict: Predict, windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Teacher-forced next-frame errors of ``predict`` on ``windows (n, F, T, *S)``.

    ``predict(windows[:, :, :-1])`` must return the predictions of frames ``1 .. T-1``. Returns
    ``{"vrmse": (), "nmse": (3,), "vrmse_window": (n,)}``: VRMSE averaged over fields, frames and
    windows; NMSE per band averaged the same way; VRMSE of each window.
    """
    _check(windows, "windows", "next_frame_scores")
    target = windows[:, :, 1:]
    pred = predict(windows[:, :, :-1])
    if pred.shape != target.shape:
        raise ValueError(f"next_frame_scores: predict returned shape {tuple(pred.shape)}, want {tuple(target.shape)}")
    v = metrics.vrmse(pred, target)  # (n, F, T-1)
    nmse = metrics.spectral_error(pred, target).nmse.mean(dim=(0, 1, 2))
    return {"vrmse": v.mean(), "nmse": nmse, "vrmse_window": v.mean(dim=(1, 2))}


@torch.no_grad()
def rollout_vrmse(rollout: Rollout, trajectories: torch.Tensor, context: int, steps: int) -> torch.Tensor:
    """VRMSE per lead time ``(steps,)`` of ``rollout(trajectories[:, :, :context], steps)``, which
    must return the ``steps`` frames after the context, against the true ones."""
    _check(trajectories, "trajectories", "rollout_vrmse", context + steps)
    if context < 1 or steps < 1:
        raise ValueError(f"rollout_vrmse: need context >= 1 and steps >= 1, got context={context}, steps={steps}")
    future = trajectories[:, :, context : context + steps]
    pred = rollout(trajectories[:, :, :context], steps)
    if pred.shape != future.shape:
        raise ValueError(f"rollout_vrmse: rollout returned shape {tuple(pred.shape)}, want {tuple(future.shape)}")
    return metrics.vrmse(pred, future).mean(dim=(0, 1))


def persistence_vrmse(windows: torch.Tensor) -> torch.Tensor:
    """VRMSE of predicting every frame of ``windows (n, F, T, *S)`` after the first by the frame
    before it, averaged over windows, fields and frames: the next-frame score of "nothing changes"."""
    _check(windows, "windows", "persistence_vrmse")
    return metrics.vrmse(windows[:, :, :-1], windows[:, :, 1:]).mean()


def persistence_rollout_vrmse(trajectories: torch.Tensor, context: int, steps: int) -> torch.Tensor:
    """VRMSE per lead time ``(steps,)`` of repeating the last of ``context`` true frames."""
    last = trajectories[:, :, context - 1 : context]
    return rollout_vrmse(lambda c, n: last.expand(-1, -1, n, *last.shape[3:]), trajectories, context, steps)
