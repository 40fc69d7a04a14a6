"""The FNO chapter's experiments: one function on every grid, an operator learnt across resolutions,
and an FNO decoder of tokeniser latents.

1. **Invariance** (:func:`invariance`): a spectral convolution with random weights applied to
   one band-limited field sampled on several grids gives the same function on each (compared on
   the coarsest grid).
2. **Operator learning across resolutions** (:func:`run_operator`, after Li et al. 2021): an
   :class:`~physfm.nn.fno.FNO` learns the map from a 2D viscous Burgers velocity field to its
   state :math:`T = 0.5` later (:data:`BURGERS`, :func:`burgers_pairs`) from pairs on the
   ``grid`` only, and is tested on new initial states, band-limited to what that grid holds,
   solved on it and on grids 2 and 4 times finer. Training pairs come from the stream
   ``seed_for("train", seed)``, test pairs from ``seed_for("test", seed)``; the scores are
   :func:`physfm.eval.forecast.next_frame_scores` on windows ``(state now, state at T)``, beside
   the persistence forecast "nothing changes" on the same windows.
3. **Decoding latents onto a finer grid** (:func:`run_decoder`): the tokeniser chapter's
   pre-trained tokeniser, frozen, encodes crops of ``crop`` cells; an
   :class:`~physfm.nn.fno.FNODecoder` learns to decode its latents back onto the ``crop`` grid,
   and is then asked for the same crops on a grid twice as fine. The truth on the fine grid are
   crops of trajectories generated at twice the tokeniser's grid (so the coarse crops, their
   spectral downsampling, are what the encoder was trained on); training crops come from the
   stream ``seed_for("train", seed)`` and held-out crops from a separate stream of other
   trajectories, ``seed_for("test", seed)``, both normalised with the statistics the tokeniser
   was trained with (:func:`physfm.data.normalise.system_stats` at its grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from physfm.data import pde, spectral, streams
from physfm.data.normalise import system_stats
from physfm.data.spec import SystemSpec, specs
from physfm.eval import forecast, metrics
from physfm.nn.fno import FNO, FNODecoder, SpectralConv, fourier_resize
from physfm.nn.tokeniser import Tokeniser
from physfm.profiles import resolve
from physfm.runtime import seed_for
from physfm.training import TrainConfig, pretrain_tokeniser, tokeniser_config, train

__all__ = [
    "BURGERS",
    "HORIZON",
    "invariance",
    "burgers_pairs",
    "operator_model",
    "run_operator",
    "tokeniser",
    "decoder_crops",
    "decoder_model",
    "run_decoder",
    "high_energy_fraction",
    "summary",
]

#: the operator-learning system: 2D viscous Burgers at a fixed viscosity
BURGERS = SystemSpec("burgers", ranges={"nu": 0.05})
#: time between an input and its target, as ``(dt, steps)`` of the solver
HORIZON = (0.01, 50)


# -- 1. the same function on every grid ----------------------------------------------------------


def invariance(
    sizes: Sequence[int] = (16, 32, 64, 128), *, modes: int = 8, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], float]:
    """A random :class:`~physfm.nn.fno.SpectralConv` (``modes`` per axis, weights from
    ``seed_for("init", seed)``) applied to one smooth field (``seed_for("field", seed)``) band-limited
    to the smallest grid and sampled on every grid of ``sizes``.

    Returns:
        ``(inputs, outputs, difference)``: grid -> ``(1, 1, n, n)`` input and output, and the
        largest difference between the outputs compared on the smallest grid.
    """
    sizes = sorted(int(n) for n in sizes)
    if sizes[0] < 2 * modes:
        raise ValueError(f"invariance: the smallest grid {sizes[0]} must hold {modes} modes (>= {2 * modes} points)")
    torch.manual_seed(seed_for("init", seed))
    conv = SpectralConv(1, 1, (modes, modes)).to(device)
    g = torch.Generator().manual_seed(seed_for("field", seed))
    base = spectral.gaussian_random_field((sizes[0],) * 2, batch=1, slope=4.0, generator=g).to(device)[:, None]
    inputs = {n: fourier_resize(base, (n, n)) for n in sizes}
    with torch.no_grad():
        outputs = {n: conv(f) for n, f in inputs.items()}
    difference = max(float((fourier_resize(outputs[n], (sizes[0],) * 2) - outputs[sizes[0]]).abs().max()) for n in sizes)
    return inputs, outputs, difference


# -- 2. an operator learnt on one grid, tested on others -----------------------------------------


def burgers_pairs(
    n: int, grid: int, sizes: Sequence[int], generator: torch.Generator, device: torch.device | str = "cpu"
) -> dict[int, torch.Tensor]:
    """``n`` pairs of :data:`BURGERS` on every grid of ``sizes``: initial states drawn on ``grid``
    (so band-limited to it), spectrally resampled to each size and solved there for
    :data:`HORIZON`. Returns size -> windows ``(n, 2 fields, 2 times, m, m)`` (float32)."""
    system = BURGERS.system()
    u0 = system.initial(n, (grid, grid), generator)
    c = system.sample(n, generator)
    dt, steps = HORIZON
    out = {}
    for m in sizes:
        x0 = fourier_resize(u0, (m, m)).to(device)
        run = pde.simulate(system, x0, {k: v.to(device) for k, v in c.items()}, dt=dt, steps=steps, save_every=steps)
        out[int(m)] = run.float()
    return out


def operator_model(cfg: Mapping[str, Any]) -> FNO:
    """The residual FNO of ``cfg`` (``u + FNO(u)``), its weights from ``seed_for("init", seed)``."""
    torch.manual_seed(seed_for("init", int(cfg["seed"])))
    return FNO(2, 2, (cfg["modes"], cfg["modes"]), width=cfg["width"], blocks=cfg["blocks"], residual=True)


def run_operator(cfg: Mapping[str, Any], *, device: torch.device | str = "cpu", progress: bool = True) -> xr.Dataset:
    """Train the FNO on ``n_train`` Burgers pairs at ``grid`` and test it at 1, 2 and 4 times the grid.

    Returns:
        ``vrmse(grid)`` and ``nmse(grid, band)`` of the FNO on the ``n_test`` test pairs,
        ``persistence_vrmse(grid)`` (predicting no change), the learning curve ``test_vrmse``
        on the training grid, ``loss``, and one test pair on the finest grid (``example_initial``,
        ``example_truth``, ``example_prediction`` of the first velocity component, dims ``y, x``).
    """
    seed = int(cfg["seed"])
    grids = [cfg["grid"], 2 * cfg["grid"], 4 * cfg["grid"]]
    train_w = burgers_pairs(
        cfg["n_train"], cfg["grid"], [cfg["grid"]], torch.Generator().manual_seed(seed_for("train", seed)), device
    )[cfg["grid"]]
    test_w = burgers_pairs(cfg["n_test"], cfg["grid"], grids, torch.Generator().manual_seed(seed_for("test", seed)), device)
    model = operator_model(cfg).to(device)

    def predict(m):
        return lambda w: m(w[:, :, 0])[:, :, None]

    def batches():
        g = torch.Generator().manual_seed(seed_for("order", seed))
        while True:
            yield train_w[torch.randint(len(train_w), (cfg["batch"],), generator=g).to(train_w.device)]

    loss = lambda m, w, rng: (m(w[:, :, 0]) - w[:, :, 1]).square().mean()  # noqa: E731
    steps = cfg["steps"]
    curves = train(
        model,
        loss,
        batches(),
        TrainConfig(steps=steps, lr=3e-3, warmup=min(20, steps // 5), eval_every=max(1, steps // 10), seed=seed),
        evaluate=lambda m: {"test_vrmse": forecast.next_frame_scores(predict(m), test_w[cfg["grid"]])["vrmse"]},
        desc="FNO on Burgers",
        progress=progress,
    )
    model.eval()
    scores = {m: forecast.next_frame_scores(predict(model), w) for m, w in test_w.items()}
    big = test_w[grids[-1]][:1]
    with torch.no_grad():
        pred = model(big[:, :, 0])
    return xr.Dataset(
        {
            "vrmse": ("grid", [float(s["vrmse"]) for s in scores.values()]),
            "nmse": (("grid", "band"), np.stack([s["nmse"].cpu().numpy() for s in scores.values()])),
            "persistence_vrmse": ("grid", [float(forecast.persistence_vrmse(w)) for w in test_w.values()]),
            "test_vrmse": curves.test_vrmse,
            "loss": curves.loss,
            "example_initial": (("y", "x"), big[0, 0, 0].cpu().numpy()),
            "example_truth": (("y", "x"), big[0, 0, 1].cpu().numpy()),
            "example_prediction": (("y", "x"), pred[0, 0].cpu().numpy()),
        },
        coords={"grid": grids, "band": list(spectral.BANDS)},
        attrs={"train_grid": int(cfg["grid"]), "seconds": float(curves.attrs["seconds"])},
    )


# -- 3. the FNO decoder of tokeniser latents -----------------------------------------------------


def tokeniser(profile: str, *, device: torch.device | str = "cpu", progress: bool = True) -> tuple[Tokeniser, dict[str, Any]]:
    """The tokeniser chapter's pre-trained tokeniser at ``profile`` (from the model cache when
    that chapter has run), frozen, and that chapter's parameters."""
    tok_cfg = resolve("tokeniser", profile)
    tok, _ = pretrain_tokeniser(tokeniser_config(tok_cfg), device=device, progress=progress)
    return tok.to(device).eval().requires_grad_(False), dict(tok_cfg)


def decoder_crops(
    tok_cfg: Mapping[str, Any], n: int, *, per_system: int, purpose: str, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``n`` single-channel crops ``(n, 1, crop_t, 2 crop, 2 crop)`` of the tokeniser's systems on a
    grid twice the tokeniser's, from ``per_system`` trajectories of each system drawn from the
    stream ``seed_for(purpose, seed)``, normalised with the statistics of each system at the
    tokeniser's grid (those its training data had)."""
    systems = specs(tok_cfg["systems"])
    grid, frames = tok_cfg["grid"], tok_cfg["frames"]
    stats = {name: system_stats(sp, (grid, grid), frames, device=device) for name, sp in systems.items()}
    fine = 2 * tok_cfg["crop"]
    stream = streams.CropStream(
        list(systems.values()),
        shape=(2 * grid,) * 2,
        frames=frames,
        crop=(tok_cfg["crop_t"], fine, fine),
        size=len(systems) * per_system,
        chunk=per_system,
        refresh=0.0,
        seed=seed_for(purpose, seed),
        device=device,
        stats=stats,
    )
    return streams.take(stream, n)


def decoder_model(cfg: Mapping[str, Any], latent_channels: int) -> FNODecoder:
    """The :class:`~physfm.nn.fno.FNODecoder` of ``cfg``, its weights from ``seed_for("init", seed)``."""
    torch.manual_seed(seed_for("init", int(cfg["seed"])))
    return FNODecoder(latent_channels, 1, (cfg["decoder_modes"],) * 2, width=cfg["decoder_width"], blocks=2)


def high_energy_fraction(x: torch.Tensor, cutoff: int) -> float:
    """The fraction of the energy of fields ``x (..., N, N)`` (mean removed) in shells of radius
    above ``cutoff`` (the largest wavenumber of a ``2 cutoff`` grid)."""
    x = x.detach().double().reshape(-1, *x.shape[-2:])
    m, energy = spectral.radial_spectrum(x - x.mean(dim=(-2, -1), keepdim=True), 2)
    energy = energy.mean(0)
    return float(energy[m > cutoff].sum() / energy.sum())


def run_decoder(
    cfg: Mapping[str, Any],
    tok: Tokeniser,
    tok_cfg: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> xr.Dataset:
    """Train an FNO decoder of ``tok``'s latents on the coarse grid and evaluate it on both grids.

    Returns:
        ``vrmse(decoder)`` on the held-out crops for the decoders ``conv_coarse`` (the
        tokeniser's own, on the coarse grid), ``fno_coarse``, ``fno_fine`` (the FNO decoder asked
        for the fine grid) and ``interpolated`` (its coarse output, spectrally interpolated to the
        fine grid); ``high_fraction(set)``: the fraction of the energy above the coarse grid's
        largest wavenumber, in the fine truth, the FNO decoder's fine output and the interpolation;
        the last frame of every held-out crop (``truth_fine``, ``fno_fine_fields``: dims ``crop, yf,
        xf``; ``truth_coarse``, ``fno_coarse_fields``: ``crop, yc, xc``) for figures; ``loss``.
    """
    seed = int(cfg["seed"])
    s = max(tok_cfg["strides"])
    coarse = tok_cfg["crop"]
    fine = 2 * coarse
    kw = dict(per_system=cfg["decoder_trajectories"], seed=seed, device=device)
    fine_train = decoder_crops(tok_cfg, cfg["decoder_crops"], purpose="train", **kw)
    fine_test = decoder_crops(tok_cfg, cfg["decoder_test"], purpose="test", **kw)
    crops_train, crops_test = (fourier_resize(c, (coarse, coarse)) for c in (fine_train, fine_test))
    with torch.no_grad():
        z_train, z_test = tok.encode(crops_train, s, 1), tok.encode(crops_test, s, 1)
    model = decoder_model(cfg, tok.config.latent).to(device)

    def batches():
        g = torch.Generator().manual_seed(seed_for("order", seed))
        while True:
            idx = torch.randint(len(z_train), (cfg["batch"],), generator=g).to(z_train.device)
            yield z_train[idx], crops_train[idx]

    loss = lambda m, b, rng: (m(b[0], (coarse, coarse)) - b[1]).square().mean()  # noqa: E731
    steps = cfg["decoder_steps"]
    curves = train(
        model,
        loss,
        batches(),
        TrainConfig(steps=steps, lr=3e-3, warmup=min(20, steps // 5), seed=seed),
        desc="FNO decoder",
        progress=progress,
    )
    model.eval()
    with torch.no_grad():
        dec_coarse = model(z_test, (coarse, coarse))
        dec_fine = model(z_test, (fine, fine))
        conv_coarse = tok.decode(z_test, s, 1, frames=crops_test.shape[2])
    interp = fourier_resize(dec_coarse, (fine, fine))
    vr = lambda a, b: float(metrics.vrmse(a, b).mean())  # noqa: E731
    cutoff = coarse // 2
    last = lambda x: x[:, 0, -1].cpu().numpy()  # noqa: E731
    return xr.Dataset(
        {
            "vrmse": (
                "decoder",
                [vr(conv_coarse, crops_test), vr(dec_coarse, crops_test), vr(dec_fine, fine_test), vr(interp, fine_test)],
            ),
            "high_fraction": ("set", [high_energy_fraction(x[:, 0], cutoff) for x in (fine_test, dec_fine, interp)]),
            "truth_fine": (("crop", "yf", "xf"), last(fine_test)),
            "fno_fine_fields": (("crop", "yf", "xf"), last(dec_fine)),
            "truth_coarse": (("crop", "yc", "xc"), last(crops_test)),
            "fno_coarse_fields": (("crop", "yc", "xc"), last(dec_coarse)),
            "loss": curves.loss,
        },
        coords={
            "decoder": ["conv_coarse", "fno_coarse", "fno_fine", "interpolated"],
            "set": ["truth", "fno_fine", "interpolated"],
        },
        attrs={
            "coarse": int(coarse),
            "fine": int(fine),
            "latent_shape": str(tuple(z_test.shape[1:])),
            "train_crops": int(len(z_train)),
            "test_crops": int(len(z_test)),
            "seconds": float(curves.attrs["seconds"]),
        },
    )


def summary(operator: xr.Dataset) -> xr.Dataset:
    """The operator-learning table: per test grid the FNO's VRMSE, persistence's, and the FNO's
    error relative to the one on the training grid."""
    v = operator.vrmse
    return xr.Dataset(
        {
            "fno_vrmse": v,
            "persistence_vrmse": operator.persistence_vrmse,
            "relative_to_training_grid": v / v.sel(grid=operator.attrs["train_grid"]),
        }
    )
