"""Generator throughput: physfm.data.pde against torchfsm and exponax, side by side in one run.

Each library integrates the same batch of trajectories (same equation, grid, box, step, and the
same scheme: ETDRK4 with contour-integral coefficients, 2/3 dealiasing, float32) on the CPU, and
we count trajectories per second. A "trajectory" is ``STEPS`` steps of one sample; a batch of
``BATCH`` is advanced together (exponax through ``jax.vmap`` of its jitted stepper, compiled
before timing). Every library keeps only the final state (no frames recorded), the common
denominator of the three APIs.

Targets: physfm >= 1.0x torchfsm everywhere and >= 0.67x exponax.

Also measured: the throughput of :func:`physfm.data.pde.generate` itself per system, at the
tokeniser's cpu recipe (64^2, 17 frames, batches of 8), this checkout against the generator of
another commit (``--ref``, default ``main``, read with ``git show``), on the same draws: the step
rule (ETDRK4 steps per frame from a CFL bound) against whatever that commit does. Reported as
trajectories per second (best of the interleaved repeats) and steps per trajectory.

Also measured: crops supplied per second by the streaming buffer (steady state, with the
refreshed trajectories generated inline) against crops consumed per second by tokeniser
training at the tokeniser chapter's cpu recipe (target: supply >= 5x consumption, so training is
never data-bound). Timings are interleaved and the median of several repeats is reported.

    python benchmarks/bench_generator.py [--quick] [--generate-only] [--ref main]
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: threads that wait at the end of a parallel region sleep instead of
# spinning. On a 2-core machine shared with other work, spinning threads take the time slices of
# the threads they wait for, and torch (OpenMP) runs these small FFT problems 20-60x slower
# (measured here under a load of 4: 1 vs 52 trajectories/s), while jax (its own thread pool) does not.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import statistics
import sys
import time

import torch

from physfm.data import pde

BATCH = 8
STEPS = 50


def _time(fns, repeats: int) -> list[float]:
    """Median seconds of each function, interleaved (one run of each in turn, ``repeats`` rounds)
    so that load from other users of the machine hits all of them alike."""
    for fn in fns:
        fn()  # warm-up (and compile for jax)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _cases(shapes):
    # name, our system (fixed coefficients), torchfsm operator factory, exponax stepper factory, box, dt
    import exponax as ex
    from torchfsm.pde import Burgers, KuramotoSivashinskyHighDim, NavierStokesVorticity

    for n in shapes:
        yield (
            f"KS {n}x{n}",
            pde.KuramotoSivashinsky(ranges={"nu": 1.0}),
            KuramotoSivashinskyHighDim,
            lambda L, N, dt: ex.stepper.KuramotoSivashinsky(2, L, N, dt, order=4),
            12 * math.pi,
            0.05,
            1,
            n,
        )
        yield (
            f"Burgers {n}x{n}",
            pde.Burgers(ranges={"nu": 0.03}),
            lambda: Burgers(0.03),
            lambda L, N, dt: ex.stepper.Burgers(2, L, N, dt, diffusivity=0.03, order=4),
            2 * math.pi,
            0.01,
            2,
            n,
        )
        yield (
            f"NS {n}x{n}",
            pde.NavierStokes2D(ranges={"nu": 0.01, "drag": 0.0, "forcing": 0.0}),
            lambda: NavierStokesVorticity(100.0),
            lambda L, N, dt: ex.stepper.NavierStokesVorticity(2, L, N, dt, diffusivity=0.01, order=4),
            2 * math.pi,
            0.01,
            1,
            n,
        )


def bench_solvers(shapes, repeats: int) -> list[tuple]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", False)
    rows = []
    for name, system, fsm_factory, ex_factory, length, dt, _fields, n in _cases(shapes):
        g = torch.Generator().manual_seed(0)
        u0 = system.initial(BATCH, (n, n), g).float()
        coeffs = system.sample(BATCH, g)

        ours = lambda: pde.simulate(system, u0, coeffs, dt=dt, steps=STEPS, save_every=STEPS, length=length)
        op = fsm_factory()
        mesh = [(0, length, n), (0, length, n)]
        fsm = lambda: op.integrate(u_0=u0, dt=dt, step=STEPS, mesh=mesh)
        stepper = ex_factory(length, n, dt)
        # exponax puts the box at [0, L) with the same point count; channels-first per sample
        run = jax.jit(jax.vmap(lambda u: jax.lax.fori_loop(0, STEPS, lambda i, v: stepper(v), u)))
        u0_jax = jnp.asarray(u0.numpy())
        exp = lambda: run(u0_jax).block_until_ready()

        t_ours, t_fsm, t_exp = _time([ours, fsm, exp], repeats)
        rows.append((name, BATCH / t_ours, BATCH / t_fsm, BATCH / t_exp))
    return rows


def _generator_of(ref: str):
    """``physfm.data.pde`` as it is at commit ``ref`` (``git show``), as a fresh module."""
    import importlib.util
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{ref}:src/physfm/data/pde.py"], capture_output=True, text=True, check=True
    ).stdout
    name = f"physfm.data._pde_{re.sub(r'[^0-9A-Za-z]', '_', ref)}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{ref}:src/physfm/data/pde.py", "exec"), module.__dict__)
    return module


def bench_generate(ref: str, repeats: int, shape=(64, 64), frames: int = 17, batch: int = 8) -> list[tuple]:
    """Trajectories/s of ``generate`` per system, this checkout and ``ref``, same seeds, interleaved;
    the best of ``repeats`` (the least disturbed by other work on the machine)."""
    old = _generator_of(ref)
    rows = []
    for name in pde.SYSTEMS:
        runs = {}
        fns = []
        for label, module in (("after", pde), ("before", old)):

            def fn(module=module, label=label):
                runs[label] = module.generate(
                    name, batch=batch, shape=shape, frames=frames, generator=torch.Generator().manual_seed(0)
                )

            fns.append(fn)
        best = [min(t) for t in _times(fns, repeats)]
        old_steps = (
            (
                round(old.SYSTEMS[name].warmup / old.SYSTEMS[name].dt)
                + (frames - 1) * max(1, round(old.SYSTEMS[name].interval / old.SYSTEMS[name].dt))
            )
            if hasattr(old.SYSTEMS[name], "dt")
            else None
        )
        rows.append((name, batch / best[1], batch / best[0], old_steps, runs["after"].steps))
    return rows


def _times(fns, repeats: int) -> list[list[float]]:
    """Seconds of every run of each function, interleaved (one run of each in turn), no warm-up
    beyond the first round."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return times


def bench_stream_vs_training(cycles: int) -> tuple[float, float]:
    """Crops/s the stream supplies and crops/s tokeniser training consumes, at the tokeniser
    chapter's cpu recipe (``profiles.resolve("tokeniser", "cpu")``: six systems, 64x64 grid,
    17 frames, crops 5x32x32, buffer 48 of which 6 are replaced every 384 crops, batch 16).

    Supply is measured end to end in the steady state: crops read from the stream, including
    the regeneration of the refreshed trajectories that happens inline while it is read (the
    initial filling of the buffer, a one-off, is not counted). Consumption: optimiser steps of
    the real :class:`~physfm.nn.tokeniser.Tokeniser` with a random compression ratio per step, as
    in :func:`physfm.training.pretrain_tokeniser`. The two are interleaved, one refresh period
    (``refresh_every`` crops) of each in turn, for ``cycles`` rounds of every system being refreshed,
    so that load from other users of the machine hits both alike.
    """
    from physfm import profiles, training
    from physfm.data import streams
    from physfm.nn.tokeniser import Tokeniser

    r = training.tokeniser_config(profiles.resolve("tokeniser", "cpu"))
    crop = (r["crop_t"], r["crop"], r["crop"])
    shape = (r["grid"],) * 2
    stream = streams.CropStream(
        r["systems"],
        shape=shape,
        frames=r["frames"],
        crop=crop,
        size=r["buffer"],
        refresh=r["refresh"],
        refresh_every=r.get("refresh_every"),
        seed=0,
    )
    sampling = streams.CropStream(
        r["systems"], shape=shape, frames=r["frames"], crop=crop, size=len(r["systems"]), refresh=0.0, seed=0
    )  # cutting crops only
    stream._ensure_buffer()  # fill once, not timed
    sampling._ensure_buffer()
    torch.manual_seed(0)
    model = Tokeniser(
        spatial_dims=2,
        channels=tuple(r["channels"]),
        latent=r["latent"],
        blocks=r["blocks"],
        patch=r["patch"],
        time_patch=r["time_patch"],
        stride=max(r["strides"]),
        time_stride=max(r["time_strides"]),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"])
    x = streams.take(sampling, r["batch"])
    rng = torch.Generator().manual_seed(0)

    def step():
        s = r["strides"][int(torch.randint(len(r["strides"]), (1,), generator=rng))]
        st = r["time_strides"][int(torch.randint(len(r["time_strides"]), (1,), generator=rng))]
        loss = (model(x, s, st) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def read(it, n):
        for _ in range(n):
            next(it)

    step()  # warm-up
    period = r.get("refresh_every") or r["buffer"]  # crops between two refreshes
    steps = max(1, round(period / r["batch"]))
    seconds = {"stream": 0.0, "cut": 0.0, "train": 0.0}
    its = {"stream": iter(stream), "cut": iter(sampling)}
    for _ in range(cycles * len(r["systems"])):
        for key, fn in (
            ("stream", lambda: read(its["stream"], period)),
            ("cut", lambda: read(its["cut"], period)),
            ("train", lambda: [step() for _ in range(steps)]),
        ):
            start = time.perf_counter()
            fn()
            seconds[key] += time.perf_counter() - start
    rounds = cycles * len(r["systems"])
    supplied = rounds * period / seconds["stream"]
    consumed = rounds * steps * r["batch"] / seconds["train"]
    per_crop = seconds["cut"] / (rounds * period)  # cutting a crop out of the buffer
    reads = period / round(r["refresh"] * r["buffer"])  # crops read per generated trajectory
    per_traj = (1 / supplied - per_crop) * reads  # generating one trajectory (systems mixed)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"\ntokeniser (cpu recipe): {params / 1e3:.0f}k parameters, crops {crop}, batch {r['batch']}; stream: "
        f"{1 / per_traj:.1f} trajectories/s ({r['grid']}^2, {r['frames']} frames, systems mixed), "
        f"{per_crop * 1e6:.0f} us to cut a crop, each trajectory read {reads:.0f} times"
    )
    target = 1 / (5 * consumed)
    if target > per_crop:
        print(
            f"supply would reach 5x consumption with each trajectory read {per_traj / (target - per_crop):.0f} times "
            f"(the recipe reads each {reads:.0f} times)"
        )
    return supplied, consumed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64x64 only, fewer repeats")
    parser.add_argument("--generate-only", action="store_true", help="only the generate() table (no torchfsm/exponax)")
    parser.add_argument("--ref", default="main", help="the commit whose generate() the table compares with")
    args = parser.parse_args(argv)
    shapes = (64,) if args.quick else (64, 128)
    repeats = 2 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    rows = bench_generate(args.ref, 3 if args.quick else 5)
    print(
        f"\ngenerate(): 64x64, 17 frames, batches of 8, float32; this checkout ('after') against {args.ref} ('before'), "
        "best of interleaved repeats"
    )
    print(f"{'system':<22}{'before':>10}{'after':>10}{'after/before':>14}{'steps before':>14}{'steps after':>13}")
    print(f"{'':<22}{'traj/s':>10}{'traj/s':>10}{'':>14}{'per traj.':>14}{'per traj.':>13}")
    for name, before, after, s_before, s_after in rows:
        print(
            f"{name:<22}{before:10.2f}{after:10.2f}{after / before:13.2f}x{s_before if s_before is not None else '?':>14}{s_after:>13}"
        )
    mixed = lambda col: len(rows) / sum(1 / r[col] for r in rows)  # equal shares of trajectories
    print(f"{'mixed (equal shares)':<22}{mixed(1):10.2f}{mixed(2):10.2f}{mixed(2) / mixed(1):13.2f}x")
    if args.generate_only:
        return 0
    print(f"\nsolvers: batch {BATCH}, {STEPS} ETDRK4 steps per trajectory, float32")
    rows = bench_solvers(shapes, repeats)
    print(
        f"\n{'case':<16}{'physfm':>10}{'torchfsm':>10}{'exponax':>10}{'vs torchfsm':>13}{'vs exponax':>12}   targets >= 1.0x, >= 0.67x"
    )
    print(f"{'':<16}{'traj/s':>10}{'traj/s':>10}{'traj/s':>10}")
    ok = True
    for name, ours, fsm, exp in rows:
        r1, r2 = ours / fsm, ours / exp
        met = r1 >= 1.0 and r2 >= 0.67
        ok &= met
        print(f"{name:<16}{ours:10.1f}{fsm:10.1f}{exp:10.1f}{r1:12.2f}x{r2:11.2f}x   {'met' if met else 'NOT met'}")
    gen, used = bench_stream_vs_training(1 if args.quick else 2)
    met = gen >= 5 * used
    ok &= met
    print(
        f"stream: {gen:.0f} crops/s supplied (fresh data generated inline), training consumes {used:.0f} crops/s: "
        f"ratio {gen / used:.1f}x   target >= 5x: {'met' if met else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
