"""Named presets for every chapter: ``smoke``, ``cpu``, ``gpu`` and ``paper``.

Every chapter notebook starts with one cell tagged ``parameters`` holding plain literals::

    profile = "cpu"   # smoke | cpu | gpu | paper
    seed = 0
    n_grid = None     # None: take the profile's value

and resolves them in the next cell::

    cfg = physfm.profiles.resolve("metrics", profile, seed=seed, n_grid=n_grid)

========  ==========================================  =============================
profile   what it is for                              budget
========  ==========================================  =============================
smoke     tests and CI                                < 60 s per chapter, 2 CPU cores
cpu       the rendered book, a student's laptop       < 8 min per chapter, 2 CPU cores
gpu       the same experiments, larger, on one GPU    < 8 min per chapter, one H100
paper     the papers' budgets, on one GPU             hours to days
========  ==========================================  =============================

``gpu`` keeps ``paper``'s scientific shape (the same arms, map axes and systems) with fewer
steps, seeds and map points and smaller grids; its budget is an estimate, not a measurement
(``benchmarks/gpu_budget.py``: FLOPs, kernels and bytes of a step, counted on the CPU, priced at
a conservative sustained throughput of an H100). ``paper`` holds the papers' step counts, e.g.
10,500 dynamics steps in the pre-training chapter (Sotoudeh et al.).

Setting the environment variable ``PHYSFM_PROFILE`` forces a profile whatever the notebook
says; the test suite uses it to run every chapter at ``smoke`` without editing a notebook.

Overrides are checked against the preset: an unknown name or a value of the wrong type is a
``ValueError``/``TypeError`` that names the chapter, the parameter and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["PROFILES", "PRESETS", "Config", "resolve", "chapters", "ENV_VAR"]

PROFILES = ("smoke", "cpu", "gpu", "paper")
ENV_VAR = "PHYSFM_PROFILE"

# Every chapter takes a seed; it is added to every preset below.
_COMMON: dict[str, Any] = {"seed": 0}

# One entry per chapter, named after its notebook (book/<chapter>.ipynb). Each profile lists
# every parameter: a test checks that the profiles of a chapter have the same names and
# types, so an override that is valid for one profile is valid for all.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "data": {
        # grid: side of the 2D gallery and throughput grids; frames: frames per trajectory;
        # volume: side of the 3D grid; batch: trajectories per solver call in the throughput test;
        # crop: side of the tokeniser crops shown from the stream.
        "smoke": {"grid": 32, "frames": 5, "volume": 16, "batch": 2, "crop": 16},
        "cpu": {"grid": 64, "frames": 9, "volume": 32, "batch": 8, "crop": 32},
        "gpu": {"grid": 128, "frames": 17, "volume": 64, "batch": 32, "crop": 64},
        "paper": {"grid": 256, "frames": 17, "volume": 96, "batch": 64, "crop": 64},
    },
    "tokeniser": {
        # the pre-training recipe (physfm.training.pretrain_tokeniser) and what the chapter evaluates
        "smoke": {
            "systems": ("diffusion", "burgers", "gray_scott"), "grid": 32, "frames": 5, "crop": 16, "crop_t": 5,
            "buffer": 6, "refresh": 0.25, "refresh_every": 6, "channels": (4, 16), "latent": 4, "blocks": 1, "patch": 4,
            "time_patch": 4, "strides": (2, 4), "time_strides": (1, 2, 4), "steps": 6, "batch": 4, "lr": 2e-3, "warmup": 2,
            "eval_every": 3, "val_crops": 8, "eval_crops": 4, "volume": 16, "steps_3d": 3,
        },
        "cpu": {
            "systems": ("diffusion", "advection_diffusion", "burgers", "kuramoto_sivashinsky", "gray_scott", "navier_stokes"),
            # 6 of the 48 trajectories replaced every 384 crops: each is read 64 times, so that the
            # generator supplies crops several times faster than training consumes them on a CPU
            "grid": 64, "frames": 17, "crop": 32, "crop_t": 5, "buffer": 48, "refresh": 0.125, "refresh_every": 384,
            "channels": (16, 64), "latent": 4, "blocks": 2, "patch": 4, "time_patch": 4,
            "strides": (2, 4), "time_strides": (1, 2, 4), "steps": 600, "batch": 16, "lr": 2e-3, "warmup": 20,
            "eval_every": 50, "val_crops": 48, "eval_crops": 24, "volume": 16, "steps_3d": 150,
        },
        "gpu": {
            "systems": ("diffusion", "advection_diffusion", "burgers", "kuramoto_sivashinsky", "gray_scott", "navier_stokes"),
            "grid": 128, "frames": 17, "crop": 64, "crop_t": 5, "buffer": 128, "refresh": 0.125, "refresh_every": 512,
            "channels": (16, 64), "latent": 8, "blocks": 2, "patch": 4, "time_patch": 4,
            "strides": (1, 2, 4), "time_strides": (1, 2, 4), "steps": 1800, "batch": 16, "lr": 2e-3, "warmup": 50,
            "eval_every": 250, "val_crops": 128, "eval_crops": 64, "volume": 32, "steps_3d": 1000,
        },
        "paper": {
            "systems": ("diffusion", "advection_diffusion", "burgers", "kuramoto_sivashinsky", "gray_scott", "navier_stokes"),
            "grid": 128, "frames": 33, "crop": 64, "crop_t": 9, "buffer": 512, "refresh": 0.125, "refresh_every": 512,
            "channels": (32, 128), "latent": 8, "blocks": 4, "patch": 4, "time_patch": 4,
            "strides": (1, 2, 4), "time_strides": (1, 2, 4), "steps": 20000, "batch": 64, "lr": 1e-3, "warmup": 500,
            "eval_every": 500, "val_crops": 512, "eval_crops": 128, "volume": 48, "steps_3d": 5000,
        },
    },
    "compression": {
        # eval_crops: held-out crops per system; fixed_steps: steps of the fixed-ratio tokeniser.
        # The flexible tokeniser itself is the "tokeniser" chapter's, at the same profile.
        "smoke": {"eval_crops": 4, "fixed_steps": 4},
        "cpu": {"eval_crops": 24, "fixed_steps": 300},
        "gpu": {"eval_crops": 64, "fixed_steps": 2000},
        "paper": {"eval_crops": 128, "fixed_steps": 5000},
    },
    "pretraining": {
        # target: the system the dynamics model learns; systems: every system (name -> generator
        # options: coefficient ranges, frame interval), the target's tokeniser pre-trains on the
        # target, the cross-domain one on the others. grid/frames/window/buffer/refresh: the data;
        # channels/latent/blocks/patch/stride: the tokeniser; width/processor_blocks: the processor;
        # pre_steps/pre_batch: pre-training; dyn_steps/batch/lr/warmup: dynamics training;
        # finetune_lr_scale: the gentle rate of a pre-trained tokeniser (fraction of the processor's);
        # trajectories: distinct target trajectories for dynamics (0: the unlimited stream);
        # val_windows/context/rollout_steps/val_rollouts: held-out data; arms and seeds of the base
        # point; map: axis -> points (overrides of the base), each run for map_arms x map_seeds;
        # focus: a point that moves several axes at once, run for focus_arms x seeds; workers: one-thread processes the runs are shared out to on a CPU.
        "smoke": {
            "target": "navier_stokes",
            "systems": {"navier_stokes": {"ranges": {"nu": (0.005, 0.02)}, "interval": 0.25}, "diffusion": {}, "burgers": {}},
            "grid": 16, "frames": 9, "window": 5, "buffer": 4, "refresh": 0.25, "channels": (4, 8), "latent": 4, "blocks": 1,
            "patch": 4, "stride": 4, "width": 8, "processor_blocks": 1, "pre_steps": 4, "pre_batch": 4, "dyn_steps": 4,
            "batch": 2, "lr": 2e-3, "warmup": 1, "finetune_lr_scale": 0.1, "eval_every": 2, "val_windows": 4,
            "seeds": (0, 1), "pretrain_seed": 0, "context": 4, "rollout_steps": 4, "val_rollouts": 2, "trajectories": 0,
            "arms": ("scratch", "scratch_slow", "in_domain_finetuned", "in_domain_full_lr", "in_domain_frozen",
                     "cross_domain_finetuned", "cross_domain_frozen", "scratch_equal_compute"),
            "map": {"compression": ({"latent": 1},), "data": ({"trajectories": 2},)}, "focus": {"latent": 2},
            "map_arms": ("scratch", "in_domain_finetuned", "cross_domain_finetuned"), "map_seeds": (0,),
            "focus_arms": ("scratch", "in_domain_finetuned", "cross_domain_finetuned", "scratch_equal_compute"), "workers": 1,
        },
        "cpu": {
            "target": "navier_stokes",
            "systems": {"navier_stokes": {"ranges": {"nu": (0.005, 0.02)}, "interval": 0.5}, "diffusion": {},
                        "advection_diffusion": {}, "burgers": {}, "gray_scott": {},
                        # on a 32^2 grid the default 12 pi box under-resolves Kuramoto-Sivashinsky
                        "kuramoto_sivashinsky": {"length": 8 * 3.141592653589793}},
            "grid": 32, "frames": 17, "window": 5, "buffer": 32, "refresh": 0.0625, "channels": (8, 32), "latent": 8,
            "blocks": 1, "patch": 4, "stride": 4, "width": 64, "processor_blocks": 3, "pre_steps": 300, "pre_batch": 8,
            "dyn_steps": 120, "batch": 8, "lr": 2e-3, "warmup": 20, "finetune_lr_scale": 0.1, "eval_every": 20,
            "val_windows": 32, "seeds": (0, 1, 2), "pretrain_seed": 0, "context": 4, "rollout_steps": 12, "val_rollouts": 16,
            "trajectories": 0,
            "arms": ("scratch", "scratch_slow", "in_domain_finetuned", "in_domain_full_lr", "in_domain_frozen",
                     "cross_domain_finetuned", "cross_domain_frozen", "scratch_equal_compute"),
            "map": {"compression": ({"latent": 2}, {"latent": 1}, {"latent": 1, "patch": 8, "stride": 8}),
                    "capacity": ({"width": 32},),
                    "data": ({"trajectories": 4},),
                    "pre-training": ({"pre_steps": 100}, {"pre_steps": 1000})},
            "focus": {"latent": 2, "pre_steps": 600},
            "map_arms": ("scratch", "in_domain_finetuned", "cross_domain_finetuned"), "map_seeds": (0, 1),
            "focus_arms": ("scratch", "in_domain_finetuned", "cross_domain_finetuned", "scratch_equal_compute"),
            "workers": 2,
        },
        "gpu": {
            "target": "navier_stokes",
            "systems": {"navier_stokes": {"ranges": {"nu": (0.003, 0.015)}, "interval": 0.5}, "diffusion": {},
                        "advection_diffusion": {}, "burgers": {}, "kuramoto_sivashinsky": {}, "gray_scott": {}},
            "grid": 64, "frames": 17, "window": 5, "buffer": 32, "refresh": 0.03125, "channels": (16, 64), "latent": 8,
            "blocks": 2, "patch": 4, "stride": 4, "width": 64, "processor_blocks": 3, "pre_steps": 300, "pre_batch": 8,
            "dyn_steps": 160, "batch": 8, "lr": 2e-3, "warmup": 20, "finetune_lr_scale": 0.1, "eval_every": 25,
            "val_windows": 32, "seeds": (0, 1), "pretrain_seed": 0, "context": 4, "rollout_steps": 12, "val_rollouts": 32,
            "trajectories": 0,
            "arms": ("scratch", "scratch_slow", "in_domain_finetuned", "in_domain_full_lr", "in_domain_frozen",
                     "cross_domain_finetuned", "cross_domain_frozen", "scratch_equal_compute"),
            "map": {"compression": ({"latent": 2}, {"latent": 1, "patch": 8, "stride": 8}),
                    "capacity": ({"width": 32}, {"channels": (8, 32)}),
                    "data": ({"trajectories": 8},),
                    "pre-training": ({"pre_steps": 100}, {"pre_steps": 600})},
            "focus": {"latent": 2, "pre_steps": 600},
            "map_arms": ("scratch", "in_domain_finetuned", "cross_domain_finetuned"), "map_seeds": (0,),
            "focus_arms": ("scratch", "in_domain_finetuned", "in_domain_frozen", "cross_domain_finetuned", "scratch_equal_compute"),
            "workers": 1,
        },
        "paper": {
            "target": "navier_stokes",
            "systems": {"navier_stokes": {"ranges": {"nu": (0.002, 0.01)}, "interval": 0.5}, "diffusion": {},
                        "advection_diffusion": {}, "burgers": {}, "kuramoto_sivashinsky": {}, "gray_scott": {}},
            "grid": 128, "frames": 33, "window": 9, "buffer": 512, "refresh": 0.125, "channels": (32, 128), "latent": 8,
            "blocks": 3, "patch": 4, "stride": 4, "width": 128, "processor_blocks": 4, "pre_steps": 10500, "pre_batch": 64,
            "dyn_steps": 10500, "batch": 32, "lr": 1e-3, "warmup": 200, "finetune_lr_scale": 0.1, "eval_every": 500,
            "val_windows": 256, "seeds": (0, 1, 2), "pretrain_seed": 0, "context": 8, "rollout_steps": 24, "val_rollouts": 64,
            "trajectories": 0,
            "arms": ("scratch", "scratch_slow", "in_domain_finetuned", "in_domain_full_lr", "in_domain_frozen",
                     "cross_domain_finetuned", "cross_domain_frozen", "scratch_equal_compute"),
            "map": {"compression": ({"latent": 4}, {"latent": 2}, {"latent": 1}, {"latent": 1, "patch": 8, "stride": 8}),
                    "capacity": ({"channels": (16, 64)}, {"channels": (64, 256)}),
                    "data": ({"trajectories": 16}, {"trajectories": 128}),
                    "pre-training": ({"pre_steps": 2500}, {"pre_steps": 21000})},
            "focus": {"latent": 2, "pre_steps": 21000},
            "map_arms": ("scratch", "in_domain_finetuned", "cross_domain_finetuned"), "map_seeds": (0, 1, 2),
            "focus_arms": ("scratch", "in_domain_finetuned", "in_domain_frozen", "cross_domain_finetuned", "scratch_equal_compute"),
            "workers": 1,
        },
    },
    "finetuning": {
        # The tokeniser and the data grid are the pre-training chapter's at the same profile (its
        # cross-domain tokeniser; its target is the unseen system). seen: a system the tokeniser
        # was pre-trained on; arms: names of physfm.experiments.finetuning.ARMS; rank: LoRA rank;
        # width/transform_blocks: the latent transform's f; train_trajectories: the fine-tuning
        # set of each system; dyn_steps/batch/lr/warmup/eval_every/seeds: the training of every
        # configuration; val_windows: validation windows; context/rollout_steps/val_rollouts:
        # the rollout (true frames, frames predicted, trajectories).
        "smoke": {
            "seen": "burgers", "arms": ("frozen", "lora_transform_skips", "full", "lora", "transform", "skips"),
            "rank": 2, "width": 8, "transform_blocks": 1, "train_trajectories": 2, "dyn_steps": 4, "batch": 2,
            "lr": 1e-2, "warmup": 1, "eval_every": 2, "seeds": (0, 1), "val_windows": 4, "context": 4,
            "rollout_steps": 4, "val_rollouts": 2, "workers": 1,
        },
        "cpu": {
            "seen": "kuramoto_sivashinsky", "arms": ("frozen", "lora_transform_skips", "full", "lora", "transform", "skips"),
            "rank": 4, "width": 16, "transform_blocks": 1, "train_trajectories": 16, "dyn_steps": 150, "batch": 8,
            "lr": 1e-2, "warmup": 10, "eval_every": 25, "seeds": (0, 1, 2), "val_windows": 32, "context": 4,
            "rollout_steps": 12, "val_rollouts": 8, "workers": 2,
        },
        "gpu": {
            "seen": "kuramoto_sivashinsky",
            "arms": ("frozen", "lora_transform_skips", "full", "lora", "transform", "skips", "lora_transform", "lora_skips"),
            "rank": 8, "width": 32, "transform_blocks": 2, "train_trajectories": 64, "dyn_steps": 300, "batch": 16,
            "lr": 5e-3, "warmup": 30, "eval_every": 50, "seeds": (0, 1, 2), "val_windows": 64, "context": 4,
            "rollout_steps": 12, "val_rollouts": 32, "workers": 1,
        },
        "paper": {
            "seen": "kuramoto_sivashinsky",
            "arms": ("frozen", "lora_transform_skips", "full", "lora", "transform", "skips", "lora_transform", "lora_skips"),
            "rank": 16, "width": 64, "transform_blocks": 2, "train_trajectories": 256, "dyn_steps": 5000, "batch": 32,
            "lr": 2e-3, "warmup": 200, "eval_every": 250, "seeds": (0, 1, 2), "val_windows": 256, "context": 8,
            "rollout_steps": 24, "val_rollouts": 64, "workers": 1,
        },
    },
    "pdefm": {
        # one PDE-FM-style model across systems (physfm.experiments.pdefm.run): the systems (name ->
        # generator options: coefficient ranges, frame interval, box), their corpus sizes n_i and the
        # sampling temperature T (p_i ~ n_i^(1/T)); trajectories of `frames` frames in
        # pools of `pool` (chunks of `chunk`, one refreshed every `refresh_every` windows read);
        # training windows of `window` frames at a stride from `strides`; the model (width of the
        # adapters, token dim, patch, spectral modes, backbone layers and state, FNO decoder); the
        # training (steps, batch, generic_fraction of batches through the generic adapter, weight
        # of the spectral loss); seeds; held_out systems for zero-shot transfer; validation and
        # rollout; timing of the two backbones at timing_lengths.
        "smoke": {
            "systems": {"diffusion": {}, "advection_diffusion": {}, "burgers": {}}, "sizes": (400, 200, 100),
            "temperature": 3.0, "grid": 16, "frames": 6, "pool": 2, "chunk": 2, "refresh_every": 0,
            "window": 4, "strides": (1,), "width": 4, "dim": 8, "patch": 4, "spectral_modes": 2, "n_coefficients": 3,
            "layers": 1, "d_state": 4, "decoder_width": 4, "decoder_modes": 4, "decoder_blocks": 1, "heads": 2, "embed": 4,
            "steps": 4, "batch": 2, "lr": 2e-3, "warmup": 1, "eval_every": 2, "generic_fraction": 0.25,
            "spectral_weight": 0.1, "seeds": (0, 1), "held_out": ("advection_diffusion",), "val_trajectories": 2,
            "context": 3, "rollout_steps": 2, "timing_lengths": (8, 16), "timing_batch": 8, "workers": 1,
        },
        "cpu": {
            "systems": {"diffusion": {}, "advection_diffusion": {}, "burgers": {},
                        "kuramoto_sivashinsky": {"length": 8 * 3.141592653589793}, "gray_scott": {},
                        "navier_stokes": {"interval": 0.25, "ranges": {"nu": (0.005, 0.02)}}},
            "sizes": (800, 400, 400, 100, 200, 100), "temperature": 3.0,
            "grid": 32, "frames": 13, "pool": 16, "chunk": 4, "refresh_every": 64,
            "window": 6, "strides": (1, 2), "width": 8, "dim": 32, "patch": 4, "spectral_modes": 4, "n_coefficients": 3,
            "layers": 2, "d_state": 8, "decoder_width": 8, "decoder_modes": 8, "decoder_blocks": 1, "heads": 2, "embed": 8,
            "steps": 220, "batch": 4, "lr": 4e-3, "warmup": 20, "eval_every": 55, "generic_fraction": 0.2,
            "spectral_weight": 0.1, "seeds": (0, 1), "held_out": ("navier_stokes",), "val_trajectories": 8,
            "context": 5, "rollout_steps": 8, "timing_lengths": (8, 32, 128, 512, 2048), "timing_batch": 16,
            "workers": 2,
        },
        "gpu": {
            "systems": {"diffusion": {}, "advection_diffusion": {}, "burgers": {}, "kuramoto_sivashinsky": {},
                        "gray_scott": {}, "navier_stokes": {"interval": 0.25, "ranges": {"nu": (0.003, 0.015)}}},
            "sizes": (800, 400, 400, 100, 200, 100), "temperature": 3.0,
            "grid": 64, "frames": 17, "pool": 64, "chunk": 8, "refresh_every": 256,
            "window": 9, "strides": (1, 2), "width": 16, "dim": 64, "patch": 4, "spectral_modes": 8, "n_coefficients": 3,
            "layers": 2, "d_state": 16, "decoder_width": 32, "decoder_modes": 12, "decoder_blocks": 1, "heads": 4, "embed": 16,
            "steps": 300, "batch": 16, "lr": 2e-3, "warmup": 30, "eval_every": 50, "generic_fraction": 0.2,
            "spectral_weight": 0.1, "seeds": (0, 1),
            "held_out": ("diffusion", "advection_diffusion", "burgers", "kuramoto_sivashinsky", "gray_scott", "navier_stokes"),
            "val_trajectories": 16, "context": 4, "rollout_steps": 8, "timing_lengths": (16, 64, 256, 1024, 4096),
            "timing_batch": 16, "workers": 1,
        },
        "paper": {
            "systems": {"diffusion": {}, "advection_diffusion": {}, "burgers": {}, "kuramoto_sivashinsky": {},
                        "gray_scott": {}, "navier_stokes": {"interval": 0.25, "ranges": {"nu": (0.003, 0.015)}}},
            "sizes": (800, 400, 400, 100, 200, 100), "temperature": 3.0,
            "grid": 64, "frames": 33, "pool": 256, "chunk": 16, "refresh_every": 512,
            "window": 17, "strides": (1, 2), "width": 32, "dim": 128, "patch": 4, "spectral_modes": 8, "n_coefficients": 3,
            "layers": 4, "d_state": 16, "decoder_width": 64, "decoder_modes": 16, "decoder_blocks": 2, "heads": 4, "embed": 16,
            "steps": 20000, "batch": 32, "lr": 1e-3, "warmup": 500, "eval_every": 1000, "generic_fraction": 0.2,
            "spectral_weight": 0.1, "seeds": (0, 1, 2),
            "held_out": ("diffusion", "advection_diffusion", "burgers", "kuramoto_sivashinsky", "gray_scott", "navier_stokes"),
            "val_trajectories": 64, "context": 8, "rollout_steps": 24, "timing_lengths": (16, 64, 256, 1024, 4096),
            "timing_batch": 256, "workers": 1,
        },
    },
    "scan": {
        # lengths/repeats: the timing figure; hold_*: the selective-hold task (sequence length,
        # training steps, batch, width and state of the Mamba block of each of the two models,
        # selective and LTI, learning rate, probability that a step is marked); grid/frames/modes:
        # the 1D advection-diffusion trajectories and the Fourier modes kept as latent;
        # n_train/n_val: trajectories; dyn_*: the latent-dynamics model (width, Mamba layers and
        # state) and its training; context: frames seen before the autoregressive rollout.
        "smoke": {
            "lengths": (32, 64), "repeats": 1,
            "hold_length": 32, "hold_steps": 8, "hold_batch": 8, "hold_width": 16, "hold_state": 8, "hold_lr": 3e-3,
            "hold_marks": 0.1,
            "grid": 32, "frames": 9, "modes": 4, "n_train": 16, "n_val": 8,
            "dyn_steps": 8, "dyn_batch": 8, "dyn_width": 16, "dyn_layers": 1, "dyn_state": 16, "dyn_lr": 2e-3, "context": 4,
        },
        "cpu": {
            "lengths": (128, 256, 512, 1024, 2048, 4096), "repeats": 3,
            "hold_length": 64, "hold_steps": 600, "hold_batch": 32, "hold_width": 16, "hold_state": 8, "hold_lr": 3e-3,
            "hold_marks": 0.1,
            "grid": 64, "frames": 33, "modes": 8, "n_train": 256, "n_val": 64,
            "dyn_steps": 600, "dyn_batch": 32, "dyn_width": 64, "dyn_layers": 2, "dyn_state": 16, "dyn_lr": 2e-3, "context": 16,
        },
        "gpu": {
            "lengths": (256, 1024, 4096, 16384), "repeats": 5,
            "hold_length": 256, "hold_steps": 2000, "hold_batch": 64, "hold_width": 32, "hold_state": 16, "hold_lr": 3e-3,
            "hold_marks": 0.1,
            "grid": 128, "frames": 65, "modes": 16, "n_train": 1024, "n_val": 128,
            "dyn_steps": 2000, "dyn_batch": 32, "dyn_width": 128, "dyn_layers": 3, "dyn_state": 16, "dyn_lr": 2e-3, "context": 32,
        },
        "paper": {
            "lengths": (256, 1024, 4096, 16384), "repeats": 5,
            "hold_length": 512, "hold_steps": 5000, "hold_batch": 128, "hold_width": 32, "hold_state": 16, "hold_lr": 3e-3,
            "hold_marks": 0.1,
            "grid": 256, "frames": 129, "modes": 32, "n_train": 4096, "n_val": 256,
            "dyn_steps": 20000, "dyn_batch": 64, "dyn_width": 256, "dyn_layers": 4, "dyn_state": 16, "dyn_lr": 2e-3, "context": 64,
        },
    },
    "fno": {
        # grid: training grid of the Burgers operator (tested at 1x, 2x, 4x); n_train/n_test pairs;
        # width/modes/blocks/batch/steps of that FNO; decoder_*: the FNO decoder of tokeniser
        # latents (training crops, held-out crops, trajectories per system in each of the two
        # streams, modes, width, steps).
        "smoke": {"grid": 16, "n_train": 8, "n_test": 2, "width": 8, "modes": 6, "blocks": 2, "batch": 4, "steps": 4,
                  "decoder_crops": 8, "decoder_test": 4, "decoder_trajectories": 1, "decoder_modes": 4, "decoder_width": 8,
                  "decoder_steps": 4},
        "cpu": {"grid": 32, "n_train": 256, "n_test": 16, "width": 24, "modes": 10, "blocks": 3, "batch": 16, "steps": 400,
                "decoder_crops": 96, "decoder_test": 24, "decoder_trajectories": 2, "decoder_modes": 8, "decoder_width": 24,
                "decoder_steps": 300},
        "gpu": {"grid": 64, "n_train": 1024, "n_test": 64, "width": 32, "modes": 16, "blocks": 4, "batch": 32, "steps": 3000,
                "decoder_crops": 512, "decoder_test": 128, "decoder_trajectories": 8, "decoder_modes": 16, "decoder_width": 32,
                "decoder_steps": 2000},
        "paper": {"grid": 64, "n_train": 4096, "n_test": 64, "width": 64, "modes": 16, "blocks": 4, "batch": 64, "steps": 10000,
                "decoder_crops": 2048, "decoder_test": 512, "decoder_trajectories": 16, "decoder_modes": 16, "decoder_width": 64,
                "decoder_steps": 5000},
    },
    "generating": {
        # system/field: the fields to generate (one field of one system, normalised with the
        # system's statistics as the tokeniser's data were), on a `grid` box; n_train trajectories
        # of `frames` frames to learn from, n_eval fields (one per fresh trajectory) in each of the
        # two truth sets (three distinct streams); the tokeniser is the "tokeniser" chapter's at
        # the same profile, used at spatial `stride`;
        # width/blocks of the velocity network, its training, and the sampler's steps and method.
        "smoke": {"system": "gray_scott", "field": "v", "grid": 32, "frames": 3, "n_train": 4, "n_eval": 4, "stride": 4,
                  "width": 8, "blocks": 1, "steps": 4, "batch": 4, "lr": 2e-3, "warmup": 1, "sample_steps": 2, "method": "heun"},
        "cpu": {"system": "gray_scott", "field": "v", "grid": 64, "frames": 9, "n_train": 96, "n_eval": 96, "stride": 4,
                "width": 32, "blocks": 4, "steps": 1200, "batch": 32, "lr": 2e-3, "warmup": 50, "sample_steps": 24, "method": "heun"},
        "gpu": {"system": "gray_scott", "field": "v", "grid": 128, "frames": 17, "n_train": 512, "n_eval": 256, "stride": 4,
                "width": 64, "blocks": 4, "steps": 4000, "batch": 64, "lr": 2e-3, "warmup": 200, "sample_steps": 32, "method": "heun"},
        "paper": {"system": "gray_scott", "field": "v", "grid": 128, "frames": 17, "n_train": 2048, "n_eval": 512, "stride": 4,
                "width": 128, "blocks": 8, "steps": 50000, "batch": 128, "lr": 1e-3, "warmup": 1000, "sample_steps": 64, "method": "heun"},
    },
    "well": {
        # data: a data set in The Well's layout (relative to book/, or absolute); "": the chapter
        # writes its own, synthetic: `trajectories` trajectories of `system` on a `grid` square,
        # `frames` frames each, with walls along x and open sides along y (physfm.data.walls).
        # The tokeniser is the "tokeniser" chapter's at the same profile. n_windows: validation
        # windows (every field a sample) of the boundary section; readers_windows: windows compared
        # between physfm's reader and The Well's (0: all). Finite data: next-frame models on
        # windows of `window` frames, trained on the first n training trajectories for each n of
        # train_trajectories (0: every one), for `seeds` (width/processor_blocks of the processor,
        # stride of the tokeniser, dyn_steps/batch/lr/warmup/eval_every/tokeniser_lr_scale);
        # scored on val_windows windows of the valid split and train_windows of their own
        # training set; rollouts of rollout_steps frames after `context` on val_rollouts
        # trajectories of the test split.
        "smoke": {
            "data": "", "system": "gray_scott", "grid": 32, "frames": 9, "trajectories": 10, "n_windows": 2,
            "readers_windows": 0, "window": 3, "train_trajectories": (1, 0), "seeds": (0,), "width": 8,
            "processor_blocks": 1, "stride": 4, "dyn_steps": 4, "batch": 2, "lr": 2e-3, "warmup": 1, "eval_every": 2,
            "tokeniser_lr_scale": 0.1, "val_windows": 4, "train_windows": 4, "context": 2, "rollout_steps": 2,
            "val_rollouts": 1,
        },
        "cpu": {
            "data": "", "system": "gray_scott", "grid": 32, "frames": 17, "trajectories": 20, "n_windows": 8,
            "readers_windows": 0, "window": 5, "train_trajectories": (1, 0), "seeds": (0,), "width": 64,
            "processor_blocks": 2, "stride": 4, "dyn_steps": 240, "batch": 8, "lr": 2e-3, "warmup": 10, "eval_every": 30,
            "tokeniser_lr_scale": 0.1, "val_windows": 16, "train_windows": 16, "context": 4, "rollout_steps": 8,
            "val_rollouts": 2,
        },
        "gpu": {
            "data": "../well_data/datasets/turbulent_radiative_layer_2D", "system": "gray_scott", "grid": 128,
            "frames": 33, "trajectories": 32, "n_windows": 16, "readers_windows": 64, "window": 5,
            "train_trajectories": (1, 0), "seeds": (0,), "width": 128, "processor_blocks": 3, "stride": 4,
            "dyn_steps": 250, "batch": 16, "lr": 1e-3, "warmup": 25, "eval_every": 50, "tokeniser_lr_scale": 0.1,
            "val_windows": 64, "train_windows": 32, "context": 4, "rollout_steps": 24, "val_rollouts": 9,
        },
        "paper": {
            "data": "../well_data/datasets/turbulent_radiative_layer_2D", "system": "gray_scott", "grid": 128,
            "frames": 33, "trajectories": 32, "n_windows": 32, "readers_windows": 256, "window": 5,
            "train_trajectories": (1, 8, 0), "seeds": (0, 1, 2), "width": 128, "processor_blocks": 3, "stride": 4,
            "dyn_steps": 4000, "batch": 16, "lr": 1e-3, "warmup": 100, "eval_every": 250, "tokeniser_lr_scale": 0.1,
            "val_windows": 128, "train_windows": 64, "context": 4, "rollout_steps": 24, "val_rollouts": 9,
        },
    },
    "metrics": {
        # n_grid: side of the square test fields; n_samples: random fields averaged per point
        # of the statistics figures; shifts: the shifts (in cells) of the shift experiment.
        "smoke": {"n_grid": 32, "n_samples": 2, "shifts": (0, 1, 2, 4)},
        "cpu": {"n_grid": 128, "n_samples": 32, "shifts": (0, 1, 2, 3, 4, 6, 8, 12, 16)},
        "gpu": {"n_grid": 512, "n_samples": 128, "shifts": (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)},
        "paper": {"n_grid": 512, "n_samples": 256, "shifts": (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)},
    },
}


class Config(Mapping[str, Any]):
    """The resolved parameters of one chapter run: a read-only mapping with attribute access.

    ``cfg.n_grid`` and ``cfg["n_grid"]`` are the same value; ``cfg.profile`` and
    ``cfg.chapter`` say where the values came from, and :meth:`as_dict` gives plain data for
    provenance records.
    """

    def __init__(self, chapter: str, profile: str, values: Mapping[str, Any]):
        object.__setattr__(self, "_chapter", chapter)
        object.__setattr__(self, "_profile", profile)
        object.__setattr__(self, "_values", dict(values))

    @property
    def chapter(self) -> str:
        return self._chapter

    @property
    def profile(self) -> str:
        return self._profile

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"{self._chapter!r} has no parameter {name!r}; it has {sorted(values)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is read-only: pass overrides to physfm.profiles.resolve instead")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, Any]:
        """Plain data: ``chapter``, ``profile`` and every parameter (tuples become lists)."""
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}
        return {"chapter": self._chapter, "profile": self._profile, **plain}

    def __repr__(self) -> str:
        width = max(len(k) for k in self._values) if self._values else 0
        lines = [f"{k:<{width}} = {v!r}" for k, v in self._values.items()]
        return f"Config({self._chapter!r}, profile={self._profile!r})\n  " + "\n  ".join(lines)


def chapters() -> list[str]:
    """The chapters that have presets."""
    return sorted(PRESETS)


def resolve(chapter: str, profile: str = "cpu", **overrides: Any) -> Config:
    """The parameters of ``chapter`` at ``profile``, with ``overrides`` applied.

    An override of ``None`` means "take the profile's value", so a notebook can pass every
    parameter of its ``parameters`` cell straight through.

    Args:
        chapter: the chapter's name, as in ``book/<chapter>.ipynb``.
        profile: one of :data:`PROFILES` (``"smoke"``, ``"cpu"``, ``"gpu"``, ``"paper"``); ignored
            when ``PHYSFM_PROFILE`` is set.
        **overrides: parameter values that replace the preset's.

    Raises:
        ValueError: unknown chapter, profile or parameter name, or a bad ``seed``.
        TypeError: an override whose type differs from the preset's.
    """
    if chapter not in PRESETS:
        raise ValueError(f"resolve: unknown chapter {chapter!r}; known chapters: {chapters()}")
    forced = os.environ.get(ENV_VAR)
    if forced:
        if forced not in PROFILES:
            raise ValueError(f"resolve: {ENV_VAR}={forced!r} is not a profile; choose one of {PROFILES}")
        if forced != profile:
            print(f"physfm: profile {profile!r} replaced by {forced!r} from {ENV_VAR}")
        profile = forced
    if profile not in PROFILES:
        raise ValueError(f"resolve: unknown profile {profile!r} for chapter {chapter!r}; choose one of {PROFILES}")

    values = {**_COMMON, **PRESETS[chapter][profile]}
    for name, value in overrides.items():
        if name not in values:
            raise ValueError(
                f"resolve: chapter {chapter!r} has no parameter {name!r}; its parameters are {sorted(values)}"
            )
        if value is not None:
            values[name] = _checked(chapter, name, value, values[name])
    if values["seed"] < 0:
        raise ValueError(f"resolve: seed must be a non-negative int, got {values['seed']!r}")
    return Config(chapter, profile, values)


def _checked(chapter: str, name: str, value: Any, preset: Any) -> Any:
    """``value`` converted to the preset's type, or a TypeError saying what was wanted."""
    want = type(preset)

    def fail(detail: str = "") -> TypeError:
        return TypeError(
            f"resolve: {chapter}.{name} must be {want.__name__} like the preset {preset!r}, "
            f"got {type(value).__name__} {value!r}{detail}"
        )

    if isinstance(preset, bool):
        if not isinstance(value, bool):
            raise fail()
        return value
    if isinstance(preset, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if isinstance(preset, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if isinstance(preset, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise fail()
        if preset:
            item = preset[0]
            for v in value:
                _checked(chapter, f"{name}[]", v, item)
            if isinstance(item, float):
                value = [float(v) for v in value]
        return tuple(value)
    if not isinstance(value, want):
        raise fail()
    return value
