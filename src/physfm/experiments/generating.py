"""The generating chapter's experiment: flow matching in the latent space of the pre-trained tokeniser.

One field of one system (Gray-Scott's activator :math:`v` at the default profiles) is generated:

1. **data** (:func:`true_fields`): three sets from three distinct named streams
   (:func:`physfm.data.streams.held_out_trajectories`), normalised with the system's statistics
   as the tokeniser's training data were (:func:`physfm.data.normalise.system_stats` at the
   tokeniser's number of frames): the *training set*, every frame of ``n_train`` trajectories of
   ``seed_for("train", seed)``; *truth A* and *truth B*, one random frame of each of ``n_eval``
   trajectories of ``seed_for("truth_a", seed)`` and ``seed_for("truth_b", seed)``. Truth A is
   the reference of every comparison; truth B against A is the *floor* (the distance two finite
   sets of true fields have by chance).
2. **the latent space** (:class:`LatentSpace`): the tokeniser chapter's tokeniser (through the
   model cache) encodes a field as a one-frame crop at spatial stride ``stride``; each latent
   channel is standardised with the mean and standard deviation of the training latents.
3. **the generator** (:func:`velocity_model`, :func:`train_velocity`): a
   :class:`~physfm.nn.flow.VelocityNet` trained on the flow-matching loss
   (:func:`physfm.nn.flow.flow_matching_loss`), held out on the latents of truth A with fixed
   noise; samples integrate the ODE from noise with ``sample_steps`` steps of ``method``.
4. **baselines**: decoded latent noise (the sampler after zero steps), and a Gaussian random
   field with the training set's mean spectrum
   (:func:`physfm.data.spectral.gaussian_random_field_like`); and the decoder's ceiling, truth B
   passed through the tokeniser.
5. **judging** (:func:`run`): the distances of every set's statistics to truth A's
   (:func:`physfm.eval.statistics.statistics_distances`: spectrum, values, correlation), the
   distance of every field to its nearest training field under any shift
   (:func:`physfm.eval.statistics.nearest_distance`), and the values distance of samples drawn
   with Euler and Heun at several numbers of steps from the same noise.

Named seeds: ``init`` (weights), ``order`` (training batches), ``noise`` (the loss's noise and
times), ``held_out`` (the held-out loss's fixed noise), ``sample`` (the samples' noise, the same
for every sampler setting), ``latent_noise``, ``gaussian``, and ``<purpose>/frame`` for the frame
picked from each truth trajectory.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr
from einops import rearrange

from physfm.data import spectral, streams
from physfm.data.normalise import system_stats
from physfm.data.spec import SystemSpec
from physfm.eval import metrics, statistics
from physfm.nn import flow
from physfm.nn.tokeniser import Tokeniser
from physfm.profiles import resolve
from physfm.runtime import seed_for
from physfm.training import TrainConfig, pretrain_tokeniser, tokeniser_config, train

__all__ = ["SETS", "STATISTICS", "tokeniser", "true_fields", "LatentSpace", "velocity_model", "train_velocity", "run", "summary"]

#: the sets judged against truth A, in the order of the table
SETS = (
    "truth B (the floor)",
    "flow matching",
    "truth B, through the tokeniser",
    "latent noise, decoded",
    "Gaussian, matched spectrum",
)
STATISTICS = ("spectrum", "values", "correlation")


def tokeniser(profile: str, *, device: torch.device | str = "cpu", progress: bool = True) -> tuple[Tokeniser, dict[str, Any]]:
    """The tokeniser chapter's pre-trained tokeniser at ``profile`` (from the model cache when that
    chapter has run), frozen, and that chapter's parameters."""
    tok_cfg = resolve("tokeniser", profile)
    tok, _ = pretrain_tokeniser(tokeniser_config(tok_cfg), device=device, progress=progress)
    return tok.to(device).eval().requires_grad_(False), dict(tok_cfg)


def _field_index(cfg: Mapping[str, Any]) -> int:
    names = SystemSpec(cfg["system"]).field_names(2)
    if cfg["field"] not in names:
        raise ValueError(f"field={cfg['field']!r} is not a field of {cfg['system']}; its fields are {names}")
    return names.index(cfg["field"])


def true_fields(
    cfg: Mapping[str, Any],
    n: int,
    purpose: str,
    *,
    every_frame: bool,
    stats_frames: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Fields ``cfg["field"]`` of ``n`` trajectories of ``cfg["system"]`` from the stream
    ``seed_for(purpose, seed)``, normalised with the system's statistics (estimated over
    ``stats_frames`` frames, default ``cfg["frames"]``): every frame ``(n * frames, grid, grid)``, or
    one random frame of each ``(n, grid, grid)``."""
    seed = int(cfg["seed"])
    spec, shape, frames = SystemSpec(cfg["system"]), (cfg["grid"],) * 2, cfg["frames"]
    stats = system_stats(spec, shape, stats_frames or frames, device=device)
    traj, _ = streams.held_out_trajectories(
        spec, shape=shape, frames=frames, n=n, seed=seed, purpose=purpose, device=device, stats=stats
    )
    x = traj[:, _field_index(cfg)]  # (n, frames, grid, grid)
    if every_frame:
        return rearrange(x, "n t h w -> (n t) h w")
    pick = torch.randint(frames, (n,), generator=torch.Generator().manual_seed(seed_for(f"{purpose}/frame", seed)))
    return x[torch.arange(n), pick.to(x.device)]


class LatentSpace:
    """Fields ``(n, H, W)`` <-> standardised latents ``(n, latent, H/s, W/s)`` of a tokeniser at
    spatial stride ``s`` and time stride 1; each latent channel standardised with the mean and
    standard deviation over the latents of ``fields`` (the training set)."""

    def __init__(self, tok: Tokeniser, stride: int, fields: torch.Tensor, *, chunk: int = 256):
        self.tok, self.stride, self.chunk = tok, int(stride), chunk
        z = self._encode(fields)
        self.mean = z.mean(dim=(0, 2, 3), keepdim=True)
        self.std = z.std(dim=(0, 2, 3), keepdim=True)

    @torch.no_grad()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"LatentSpace.encode: fields must be (n, H, W), got shape {tuple(x.shape)}")
        return torch.cat(
            [self.tok.encode(rearrange(c, "n h w -> n 1 1 h w"), self.stride, 1)[:, :, 0] for c in x.split(self.chunk)]
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Fields ``(n, H, W)`` -> standardised latents."""
        return (self._encode(x) - self.mean) / self.std

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised latents -> fields ``(n, H, W)``."""
        z = z.to(self.mean.device) * self.std + self.mean
        return torch.cat(
            [
                self.tok.decode(rearrange(c, "n c h w -> n c 1 h w"), self.stride, 1, frames=1)[:, 0, 0]
                for c in z.split(self.chunk)
            ]
        )


def velocity_model(cfg: Mapping[str, Any], channels: int) -> flow.VelocityNet:
    """The :class:`~physfm.nn.flow.VelocityNet` of ``cfg``, its weights from ``seed_for("init", seed)``."""
    torch.manual_seed(seed_for("init", int(cfg["seed"])))
    return flow.VelocityNet(channels, width=cfg["width"], blocks=cfg["blocks"], spatial_dims=2)


def train_velocity(
    cfg: Mapping[str, Any], net: flow.VelocityNet, data: torch.Tensor, held: torch.Tensor, *, progress: bool = True
) -> xr.Dataset:
    """Train ``net`` on the flow-matching loss over the latents ``data`` for ``cfg["steps"]``
    steps; the held-out loss is the same loss on ``held`` with fixed noise and times."""
    seed = int(cfg["seed"])

    def batches():
        g = torch.Generator().manual_seed(seed_for("order", seed))
        while True:
            yield data[torch.randint(len(data), (cfg["batch"],), generator=g).to(data.device)]

    def evaluate(m):
        return {
            "held_out_loss": flow.flow_matching_loss(m, held, generator=torch.Generator().manual_seed(seed_for("held_out", seed)))
        }

    tc = TrainConfig(
        steps=cfg["steps"],
        lr=cfg["lr"],
        warmup=cfg["warmup"],
        eval_every=max(1, cfg["steps"] // 10),
        seed=seed_for("noise", seed),
    )
    return train(
        net,
        lambda m, b, rng: flow.flow_matching_loss(m, b, generator=rng),
        batches(),
        tc,
        evaluate=evaluate,
        desc="flow matching",
        progress=progress,
    )


def run(
    cfg: Mapping[str, Any],
    *,
    tok: Tokeniser | None = None,
    tok_cfg: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    path_times: int = 5,
    path_samples: int = 2,
) -> xr.Dataset:
    """The whole experiment of ``cfg`` (the ``generating`` preset).

    Args:
        tok, tok_cfg: the tokeniser and its chapter's parameters (default: :func:`tokeniser` at
            ``cfg.profile``, or ``"cpu"`` for a plain mapping).
        path_times, path_samples: decoded states shown along the sampler's path.

    Returns:
        ``fields(set, sample, y, x)`` for truth A and every set of :data:`SETS`;
        ``distance(set, statistic)`` to truth A; ``nearest(nearest_set, sample)``: distance to
        the nearest training field (truth B, flow matching, the Gaussian); ``by_steps(sampler,
        steps)``: values distance of samples from the same noise; ``path(sample, time, y, x)``;
        the curves ``loss(step)`` and ``held_out_loss(eval_step)``; attributes: seconds per stage
        (``seconds_<stage>``), ``tokeniser_vrmse`` (of truth B through the tokeniser),
        ``parameters``, ``training_fields``, ``compression``.
    """
    seed = int(cfg["seed"])
    clock: dict[str, float] = {}
    t0 = time.perf_counter()
    if tok is None:
        tok, tok_cfg = tokeniser(getattr(cfg, "profile", "cpu"), device=device, progress=progress)
    clock["tokeniser"] = time.perf_counter() - t0
    stats_frames = tok_cfg["frames"] if tok_cfg is not None else None

    t0 = time.perf_counter()
    kw = dict(stats_frames=stats_frames, device=device)
    train_fields = true_fields(cfg, cfg["n_train"], "train", every_frame=True, **kw)
    truth_a = true_fields(cfg, cfg["n_eval"], "truth_a", every_frame=False, **kw)
    truth_b = true_fields(cfg, cfg["n_eval"], "truth_b", every_frame=False, **kw)
    clock["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    space = LatentSpace(tok, cfg["stride"], train_fields)
    data, held = space.encode(train_fields), space.encode(truth_a)
    through_tok = space.decode(space.encode(truth_b))
    net = velocity_model(cfg, data.shape[1]).to(device)
    curves = train_velocity(cfg, net, data, held, progress=progress)
    net.eval()
    clock["training"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    shape = (cfg["n_eval"], *data.shape[1:])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed_for("sample", seed)))
    z_gen, z_path = flow.sample(
        net, shape, steps=cfg["sample_steps"], method=cfg["method"], noise=noise, device=device, return_path=True
    )
    samples = space.decode(z_gen)
    show = np.unique(np.linspace(0, cfg["sample_steps"], path_times).round().astype(int))
    path = torch.stack([space.decode(z_path[k, :path_samples]) for k in show], dim=1)  # (sample, time, H, W)
    latent_noise = space.decode(torch.randn(shape, generator=torch.Generator().manual_seed(seed_for("latent_noise", seed))))
    gaussian = spectral.gaussian_random_field_like(
        train_fields.cpu(), 2, batch=cfg["n_eval"], generator=torch.Generator().manual_seed(seed_for("gaussian", seed))
    ).to(samples.device)
    clock["sampling"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sets = dict(zip(SETS, (truth_b, samples, through_tok, latent_noise, gaussian)))
    dist = np.array([[statistics.statistics_distances(x.cpu(), truth_a.cpu(), 2)[k] for k in STATISTICS] for x in sets.values()])
    nearest_sets = {"truth B": truth_b, "flow matching": samples, "Gaussian, matched spectrum": gaussian}
    nearest = np.stack([statistics.nearest_distance(x, train_fields, 2).cpu().numpy() for x in nearest_sets.values()])
    clock["judging"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step_counts = sorted({1, 2, 4, 8, cfg["sample_steps"]})
    by_steps = np.zeros((len(flow.METHODS), len(step_counts)))
    for i, method in enumerate(flow.METHODS):
        for j, n in enumerate(step_counts):
            x = space.decode(flow.sample(net, shape, steps=n, method=method, noise=noise, device=device))
            by_steps[i, j] = statistics.statistics_distances(x.cpu(), truth_a.cpu(), 2)["values"]
    clock["sampler steps"] = time.perf_counter() - t0

    everything = {"truth A": truth_a, **sets}
    return xr.Dataset(
        {
            "fields": (("set", "sample", "y", "x"), torch.stack([x.cpu() for x in everything.values()]).numpy()),
            "distance": (("judged", "statistic"), dist),
            "nearest": (("nearest_set", "sample"), nearest),
            "by_steps": (("sampler", "steps"), by_steps),
            "path": (("path_sample", "time", "y", "x"), path.cpu().numpy()),
            "loss": curves.loss,
            "held_out_loss": curves.held_out_loss,
        },
        coords={
            "set": list(everything),
            "judged": list(SETS),
            "statistic": list(STATISTICS),
            "nearest_set": list(nearest_sets),
            "sampler": list(flow.METHODS),
            "steps": step_counts,
            "time": show / cfg["sample_steps"],
        },
        attrs={
            **{f"seconds_{k.replace(' ', '_')}": float(v) for k, v in clock.items()},
            "tokeniser_vrmse": float(metrics.vrmse(through_tok, truth_b, n_spatial=2).mean()),
            "parameters": int(net.n_parameters()),
            "training_fields": int(len(train_fields)),
            "compression": float(train_fields[0].numel() / data[0].numel()),
            "latent_shape": str(tuple(data.shape[1:])),
        },
    )


def summary(ds: xr.Dataset) -> xr.Dataset:
    """The table of the chapter: every set's distance to truth A per statistic, and the same in
    multiples of the floor (truth B's distance)."""
    d = ds.distance
    return xr.Dataset({"distance": d, "times_floor": d / d.sel(judged=SETS[0])})
