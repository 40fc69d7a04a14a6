"""The selective-scan chapter's three experiments: selectivity, speed, and latent dynamics.

1. **The selective hold** (:func:`run_hold`). A sequence of random values :math:`v_t` comes
   with markers :math:`m_t \\in \\{0, 1\\}` (each step marked with probability ``hold_marks``,
   the first always); the target at every step is the value at the most recent marker. Two
   models that differ only in their scan, ``Linear(2, w) -> Mamba(w) -> Linear(w, 1)`` with a
   selective block and with the LTI ablation of Gu & Dao (2023, sect. 3:
   ``Mamba(..., selective=False)``), start from the same projections and train on the same
   batches. An LTI scan is a fixed causal convolution :math:`\\sum_k K_k u_{t-k}` of its input,
   with one kernel for every gap between markers, so it cannot both hold a value and drop it
   when the next marker comes; a selective one can, by raising :math:`\\Delta_t` at marked steps.
2. **The scan's speed** (:func:`time_scans`): forward and backward of the reference loop with
   autograd, the plain loop with the hand-written backward, and chunks of 32, interleaved.
3. **Latent dynamics with a Mamba stack** (:func:`run_dynamics`). 1D advection-diffusion
   trajectories :math:`\\partial_t u + c\\,\\partial_x u = \\nu\\,\\partial_x^2 u`, each with its own
   :math:`c` and :math:`\\nu`, normalised with the system's statistics
   (:func:`physfm.data.normalise.normalise_fields`); the latent of a frame is its first ``modes``
   Fourier modes (:class:`FourierLatent`), in which the dynamics are exactly
   :math:`\\hat u_m(t+\\delta t) = e^{(-i c k_m - \\nu k_m^2)\\delta t}\\hat u_m(t)`. One frame
   does not tell :math:`c`; a causal sequence model can infer it from the frames it has seen.
   :class:`LatentDynamics` predicts the change of the latent at every position (teacher forced),
   and is scored per position and in autoregressive rollouts against persistence
   (:mod:`physfm.eval.forecast`), in VRMSE on the resolved modes.

Seeds are named streams (:func:`physfm.runtime.seed_for`): ``hold/train``, ``hold/test`` and
``hold/init`` for the first experiment, ``train`` and ``validation`` trajectories
(:func:`physfm.data.streams.held_out_trajectories`), ``init`` and ``order`` for the third.
"""

from __future__ import annotations

import statistics as _statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from physfm.data import streams
from physfm.data.spec import SystemSpec
from physfm.eval import forecast, metrics
from physfm.nn.scan import Mamba, MambaStack, selective_scan, selective_scan_ref
from physfm.runtime import seed_for
from physfm.training import TrainConfig, train

__all__ = [
    "HOLD_MODELS",
    "WAYS",
    "hold_batch",
    "hold_stream",
    "hold_model",
    "run_hold",
    "scan_inputs",
    "forward_backward",
    "time_scans",
    "FourierLatent",
    "LatentDynamics",
    "dynamics_data",
    "dynamics_model",
    "run_dynamics",
]

#: the two models of the hold task: name -> (label, selective)
HOLD_MODELS = {"selective": ("selective (Mamba)", True), "lti": ("LTI (S4-style)", False)}

#: the system of the latent-dynamics experiment
SYSTEM = "advection_diffusion"


# -- 1. the selective hold ------------------------------------------------------------------------


def hold_batch(batch: int, length: int, generator: torch.Generator, marks: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the selective-hold task: inputs ``(batch, length, 2)`` (value, marker) and
    targets ``(batch, length)``, the value at the most recent marker (step 0 is always marked).

    Raises:
        ValueError: ``marks`` is not a probability in ``(0, 1]`` or a size is not positive.
    """
    if (
        isinstance(batch, bool)
        or not isinstance(batch, int)
        or batch < 1
        or isinstance(length, bool)
        or not isinstance(length, int)
        or length < 1
    ):
        raise ValueError(f"hold_batch: batch and length must be positive ints, got batch={batch!r}, length={length!r}")
    if not 0 < marks <= 1:
        raise ValueError(f"hold_batch: marks must be a probability in (0, 1], got {marks!r}")
    v = torch.randn(batch, length, generator=generator)
    m = torch.rand(batch, length, generator=generator) < marks
    m[:, 0] = True
    last = torch.cummax(torch.where(m, torch.arange(length), 0), dim=1).values
    return torch.stack([v, m.float()], dim=-1), torch.gather(v, 1, last)


def hold_stream(
    cfg: Mapping[str, Any], seed: int, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless training batches of ``cfg["hold_batch"]`` sequences, from ``seed_for("hold/train", seed)``."""
    g = torch.Generator().manual_seed(seed_for("hold/train", seed))
    while True:
        u, y = hold_batch(cfg["hold_batch"], cfg["hold_length"], g, cfg["hold_marks"])
        yield u.to(device), y.to(device)


def hold_model(cfg: Mapping[str, Any], selective: bool, seed: int) -> nn.Sequential:
    """``Linear(2, w) -> Mamba(w) -> Linear(w, 1)``, ``w = cfg["hold_width"]``; for one ``seed`` the
    selective and the LTI model start with the same projections (``seed_for("hold/init", seed)``)."""
    torch.manual_seed(seed_for("hold/init", seed))
    linear_in, linear_out = nn.Linear(2, cfg["hold_width"]), nn.Linear(cfg["hold_width"], 1)
    g = torch.Generator().manual_seed(seed_for("hold/init", seed))
    return nn.Sequential(
        linear_in, Mamba(cfg["hold_width"], d_state=cfg["hold_state"], selective=selective, generator=g), linear_out
    )


def _hold_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], rng=None) -> torch.Tensor:
    return (model(batch[0]).squeeze(-1) - batch[1]).square().mean()


def run_hold(
    cfg: Mapping[str, Any], *, device: torch.device | str = "cpu", n_test: int = 256, progress: bool = True
) -> xr.Dataset:
    """Train the selective and the LTI model on the hold task for ``cfg["hold_steps"]`` steps each.

    Returns:
        dims ``model`` (``selective``, ``lti``; coordinate ``label``), ``eval_step``, ``step``, ``t``
        and ``channel``: ``test_mse`` (learning curve on ``n_test`` sequences of the stream
        ``seed_for("hold/test", seed)``), ``loss``, ``final_mse``; and the first test sequence:
        ``value``, ``marked``, ``target``, each model's ``prediction`` and the step
        ``delta(t, channel)`` the trained selective block uses.
    """
    seed = int(cfg["seed"])
    test = tuple(
        t.to(device)
        for t in hold_batch(
            n_test, cfg["hold_length"], torch.Generator().manual_seed(seed_for("hold/test", seed)), cfg["hold_marks"]
        )
    )
    steps = cfg["hold_steps"]
    tc = TrainConfig(steps=steps, lr=cfg["hold_lr"], warmup=min(20, steps // 5), eval_every=max(1, steps // 20), seed=seed)
    curves, models = {}, {}
    for name, (label, selective) in HOLD_MODELS.items():
        models[name] = hold_model(cfg, selective, seed).to(device)
        curves[name] = train(
            models[name],
            _hold_loss,
            hold_stream(cfg, seed, device),
            tc,
            evaluate=lambda m: {"test_mse": _hold_loss(m, test)},
            desc=label,
            progress=progress,
        )
    u = test[0][:1]
    with torch.no_grad():
        predictions = np.stack([models[n](u)[0, :, 0].cpu().numpy() for n in HOLD_MODELS])
        sel = models["selective"]
        delta = sel[1].steps(sel[0](u))[0].cpu().numpy()  # (length, d_inner)
    ds = xr.concat([c[["test_mse", "loss"]] for c in curves.values()], dim="model", join="outer")
    ds = ds.assign_coords(model=list(HOLD_MODELS), label=("model", [lab for lab, _ in HOLD_MODELS.values()]))
    ds["final_mse"] = ds.test_mse.isel(eval_step=-1, drop=True)
    ds["value"] = ("t", u[0, :, 0].cpu().numpy())
    ds["marked"] = ("t", u[0, :, 1].cpu().numpy().astype(bool))
    ds["target"] = ("t", test[1][0].cpu().numpy())
    ds["prediction"] = (("model", "t"), predictions)
    ds["delta"] = (("t", "channel"), delta)
    ds.attrs = {"seconds": float(sum(c.attrs["seconds"] for c in curves.values())), "marks": float(cfg["hold_marks"])}
    return ds.assign_coords(t=np.arange(cfg["hold_length"]))


# -- 2. how fast ---------------------------------------------------------------------------------

#: the implementations timed: short name -> (label, function)
WAYS: dict[str, tuple[str, Callable[..., torch.Tensor]]] = {
    "reference": ("selective_scan_ref (loop + autograd)", selective_scan_ref),
    "loop": ("selective_scan (loop, own backward)", lambda *a: selective_scan(*a, chunk=1)),
    "chunks": ("selective_scan, chunks of 32", lambda *a: selective_scan(*a, chunk=32)),
}


def scan_inputs(
    length: int,
    generator: torch.Generator,
    *,
    batch: int = 4,
    d_inner: int = 64,
    d_state: int = 16,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """Inputs ``x, delta, A, B, C, D`` of one scan (shapes as :func:`physfm.nn.scan.selective_scan`),
    requiring gradients: ``delta = softplus(N(-2, 1))``, ``A[d, n] = -(n + 1)``."""
    x = torch.randn(batch, d_inner, length, generator=generator)
    delta = F.softplus(torch.randn(batch, d_inner, length, generator=generator) - 2.0)
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    B, C = torch.randn(batch, d_state, length, generator=generator), torch.randn(batch, d_state, length, generator=generator)
    return [t.to(device).requires_grad_() for t in (x, delta, A, B, C, torch.ones(d_inner))]


def forward_backward(fn: Callable[..., torch.Tensor], args: Sequence[torch.Tensor]) -> float:
    """Seconds of one forward and backward pass of ``fn(*args).sum()``."""
    for a in args:
        a.grad = None
    t0 = time.perf_counter()
    fn(*args).sum().backward()
    if args[0].device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def time_scans(
    lengths: Sequence[int],
    *,
    repeats: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    ways: Sequence[str] = tuple(WAYS),
    progress: bool = True,
) -> xr.Dataset:
    """Forward + backward wall time of each of ``ways`` at every length: the median of ``repeats``
    runs after one warm-up, the ways interleaved so that load from elsewhere hits all alike.

    Returns:
        ``seconds(way, length)`` (coordinate ``label``) and the attribute ``speedup``: reference
        over loop at the longest length (when both were timed).
    """
    unknown = [w for w in ways if w not in WAYS]
    if unknown or not ways:
        raise ValueError(f"time_scans: unknown ways {unknown or ways}; choose from {list(WAYS)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"time_scans: repeats must be a positive int, got {repeats!r}")
    g = torch.Generator().manual_seed(seed_for("timing", seed))
    out = np.zeros((len(ways), len(lengths)))
    for j, L in enumerate(lengths):
        args = scan_inputs(int(L), g, device=device)
        runs: dict[str, list[float]] = {w: [] for w in ways}
        for w in ways:
            forward_backward(WAYS[w][1], args)  # warm-up
        for _ in range(repeats):
            for w in ways:
                runs[w].append(forward_backward(WAYS[w][1], args))
        out[:, j] = [_statistics.median(runs[w]) for w in ways]
        if progress:
            print(f"L = {L:5d}: " + "   ".join(f"{w} {1e3 * out[i, j]:7.1f} ms" for i, w in enumerate(ways)))
    ds = xr.Dataset(
        {"seconds": (("way", "length"), out)},
        coords={"way": list(ways), "length": list(lengths), "label": ("way", [WAYS[w][0] for w in ways])},
    )
    if "reference" in ways and "loop" in ways:
        ds.attrs["speedup"] = float(ds.seconds.sel(way="reference")[-1] / ds.seconds.sel(way="loop")[-1])
    return ds


# -- 3. latent dynamics --------------------------------------------------------------------------


class FourierLatent:
    """A fixed linear tokeniser of 1D fields: the first ``modes`` Fourier modes of a frame,
    real and imaginary parts, ``(n, 1, T, N) -> (n, T, 2 modes)``; :meth:`decode` puts them back
    (the other modes zero), so ``decode(encode(u))`` is ``u`` projected on the resolved modes."""

    def __init__(self, modes: int, grid: int):
        if isinstance(modes, bool) or not isinstance(modes, int) or not 1 <= modes <= grid // 2:
            raise ValueError(f"FourierLatent: modes must be an int in [1, grid // 2 = {grid // 2}], got {modes!r}")
        self.modes, self.grid = modes, grid

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        if u.ndim != 4 or u.shape[1] != 1 or u.shape[-1] != self.grid:
            raise ValueError(f"FourierLatent.encode: u must be (n, 1, T, {self.grid}), got shape {tuple(u.shape)}")
        z = torch.fft.rfft(u[:, 0], dim=-1)[..., : self.modes] / self.grid
        return torch.cat([z.real, z.imag], dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 3 or z.shape[-1] != 2 * self.modes:
            raise ValueError(f"FourierLatent.decode: z must be (n, T, {2 * self.modes}), got shape {tuple(z.shape)}")
        spec = torch.zeros(*z.shape[:-1], self.grid // 2 + 1, dtype=torch.complex64, device=z.device)
        spec[..., : self.modes] = torch.complex(z[..., : self.modes], z[..., self.modes :]) * self.grid
        return torch.fft.irfft(spec, n=self.grid, dim=-1)[:, None]

    def project(self, u: torch.Tensor) -> torch.Tensor:
        """``u`` with only the resolved modes, ``decode(encode(u))``."""
        return self.decode(self.encode(u))


class LatentDynamics(nn.Module):
    """Next-latent model ``z_{t+1} = z_t + f(z_{\\le t})`` with ``f`` = input projection,
    :class:`~physfm.nn.scan.MambaStack`, RMSNorm, output projection, on latents divided by a fixed
    ``scale`` (the training set's standard deviation). Causal: the prediction at ``t`` sees ``z_{\\le t}``.

    ``forward(z (n, T, k)) -> (n, T, k)``: the prediction of the next latent at every position.
    """

    def __init__(
        self,
        latent: int,
        width: int,
        layers: int,
        *,
        d_state: int = 16,
        scale: float = 1.0,
        selective: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent, width),
            MambaStack(width, layers, d_state=d_state, selective=selective, generator=generator),
            nn.RMSNorm(width),
            nn.Linear(width, latent),
        )
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = z / self.scale
        return (s + self.net(s)) * self.scale

    @torch.no_grad()
    def rollout(self, z: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` latents after the context ``z (n, T, k)``, each prediction fed back in."""
        out = z
        for _ in range(steps):
            out = torch.cat([out, self(out)[:, -1:]], dim=1)
        return out[:, z.shape[1] :]


def dynamics_data(cfg: Mapping[str, Any], *, device: torch.device | str = "cpu"):
    """Training and validation trajectories ``(n, 1, frames, grid)`` of 1D advection-diffusion,
    normalised with the system's statistics, from the streams ``seed_for("train", seed)`` and
    ``seed_for("validation", seed)``; and the validation buffer (its coefficients)."""
    spec = SystemSpec(SYSTEM)
    kw = dict(shape=(cfg["grid"],), frames=cfg["frames"], seed=int(cfg["seed"]), device=device)
    u_train, _ = streams.held_out_trajectories(spec, n=cfg["n_train"], purpose="train", **kw)
    u_val, vbuf = streams.held_out_trajectories(spec, n=cfg["n_val"], purpose="validation", **kw)
    return u_train, u_val, vbuf


def dynamics_model(cfg: Mapping[str, Any], *, scale: float = 1.0, selective: bool = True) -> LatentDynamics:
    """The :class:`LatentDynamics` of ``cfg``, its weights drawn from ``seed_for("init", seed)``."""
    seed = seed_for("init", int(cfg["seed"]))
    torch.manual_seed(seed)
    return LatentDynamics(
        2 * cfg["modes"],
        cfg["dyn_width"],
        cfg["dyn_layers"],
        d_state=cfg["dyn_state"],
        scale=scale,
        selective=selective,
        generator=torch.Generator().manual_seed(seed),
    )


def _position_vrmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """VRMSE per frame, averaged over trajectories and fields: ``(T,)``."""
    return metrics.vrmse(pred, target).mean(dim=(0, 1))


def run_dynamics(
    cfg: Mapping[str, Any], *, device: torch.device | str = "cpu", selective: bool = True, progress: bool = True
) -> xr.Dataset:
    """Train :class:`LatentDynamics` on Fourier latents of advection-diffusion and score it.

    Errors are VRMSE on the resolved modes (truth projected with :meth:`FourierLatent.project`,
    so the truncation error is the same for every model) on the validation trajectories.

    Returns:
        ``vrmse_position`` and ``persistence_position`` (dim ``position``: the frame predicted,
        teacher forced from every frame before it), ``rollout_vrmse`` and
        ``persistence_rollout_vrmse`` (dim ``lead``: frames after ``context`` true ones, through
        :mod:`physfm.eval.forecast`), the learning curve ``val_vrmse(eval_step)`` and
        ``loss(step)``, the first validation trajectory and its rollout (``example_truth``,
        ``example_rollout``, dims ``frame``, ``x``), its coefficients (attributes ``c``, ``nu``),
        ``truncation_vrmse`` (what keeping only the modes costs) and ``causal_leak``: the largest
        change of a prediction at a frame before 5 when every later latent is changed by 1 (0 for
        a causal model).
    """
    seed = int(cfg["seed"])
    context, frames = cfg["context"], cfg["frames"]
    if not 1 <= context < frames:
        raise ValueError(f"run_dynamics: need 1 <= context < frames={frames}, got context={context}")
    latent = FourierLatent(cfg["modes"], cfg["grid"])
    u_train, u_val, vbuf = dynamics_data(cfg, device=device)
    z_train, z_val = latent.encode(u_train), latent.encode(u_val)
    truth = latent.project(u_val)
    model = dynamics_model(cfg, scale=float(z_train.std()), selective=selective).to(device)

    def batches():
        g = torch.Generator().manual_seed(seed_for("order", seed))
        while True:
            yield z_train[torch.randint(len(z_train), (cfg["dyn_batch"],), generator=g).to(z_train.device)]

    def loss(m, z, rng):
        return ((m(z[:, :-1]) - z[:, 1:]) / m.scale).square().mean()

    def predict(w):  # (n, 1, T, N) -> predictions of frames 1..T
        return latent.decode(model(latent.encode(w)))

    steps = cfg["dyn_steps"]
    curves = train(
        model,
        loss,
        batches(),
        TrainConfig(steps=steps, lr=cfg["dyn_lr"], warmup=min(20, steps // 5), eval_every=max(1, steps // 20), seed=seed),
        evaluate=lambda m: {"val_vrmse": forecast.next_frame_scores(predict, truth)["vrmse"]},
        desc="latent dynamics",
        progress=progress,
    )
    model.eval()
    with torch.no_grad():
        model_pos = _position_vrmse(predict(truth[:, :, :-1]), truth[:, :, 1:])
        persist_pos = _position_vrmse(truth[:, :, :-1], truth[:, :, 1:])
        horizon = frames - context
        rollout = lambda c, n: latent.decode(model.rollout(latent.encode(c), n))
        roll = forecast.rollout_vrmse(rollout, truth, context, horizon)
        roll_persist = forecast.persistence_rollout_vrmse(truth, context, horizon)
        example = torch.cat([truth[:1, :, :context], rollout(truth[:1, :, :context], horizon)], dim=2)
        cut = min(5, frames - 2)
        z = z_val[:2]
        changed = z.clone()
        changed[:, cut:] += 1.0
        leak = float((model(changed)[:, :cut] - model(z)[:, :cut]).abs().max())
        truncation = float(metrics.vrmse(truth, u_val).mean())
    position = np.arange(1, frames)
    ds = xr.Dataset(
        {
            "vrmse_position": ("position", model_pos.cpu().numpy()),
            "persistence_position": ("position", persist_pos.cpu().numpy()),
            "rollout_vrmse": ("lead", roll.cpu().numpy()),
            "persistence_rollout_vrmse": ("lead", roll_persist.cpu().numpy()),
            "val_vrmse": curves.val_vrmse,
            "loss": curves.loss,
            "example_truth": (("frame", "x"), truth[0, 0].cpu().numpy()),
            "example_rollout": (("frame", "x"), example[0, 0].cpu().numpy()),
            "truncation_vrmse": ((), truncation),
            "causal_leak": ((), leak),
        },
        coords={"position": position, "lead": np.arange(1, horizon + 1), "frame": np.arange(frames)},
        attrs={
            "c": float(vbuf.coefficients[0]["c0"]),
            "nu": float(vbuf.coefficients[0]["nu"]),
            "context": int(context),
            "seconds": float(curves.attrs["seconds"]),
            "selective": int(selective),
        },
    )
    return ds
