"""Generator throughput: physfm.pde against torchfsm and exponax, side by side in one run.

Each library integrates the same batch of trajectories (same equation, grid, box, step, and the
same scheme: ETDRK4 with contour-integral coefficients, 2/3 dealiasing, float32) on the CPU, and
we count trajectories per second. A "trajectory" is ``STEPS`` steps of one sample; a batch of
``BATCH`` is advanced together (exponax through ``jax.vmap`` of its jitted stepper, compiled
before timing). Every library keeps only the final state (no frames recorded), the common
denominator of the three APIs.

Targets: physfm >= 1.0x torchfsm everywhere and >= 0.67x exponax.

Also measured: crops generated per second by the streaming buffer against crops consumed per
second by tokeniser training at the cpu profile (target: generation >= 5x consumption, so
training is never data-bound).

    python benchmarks/bench_generator.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from physfm import pde

BATCH = 8
STEPS = 50


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (and compile for jax)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cases(shapes):
    # name, our system (fixed coefficients), torchfsm operator factory, exponax stepper factory, box, dt
    import exponax as ex
    from torchfsm.pde import Burgers, KuramotoSivashinskyHighDim, NavierStokesVorticity

    for n in shapes:
        yield (f"KS {n}x{n}", pde.KuramotoSivashinsky(ranges={"nu": 1.0}), KuramotoSivashinskyHighDim,
               lambda L, N, dt: ex.stepper.KuramotoSivashinsky(2, L, N, dt, order=4), 12 * math.pi, 0.05, 1, n)
        yield (f"Burgers {n}x{n}", pde.Burgers(ranges={"nu": 0.03}), lambda: Burgers(0.03),
               lambda L, N, dt: ex.stepper.Burgers(2, L, N, dt, diffusivity=0.03, order=4), 2 * math.pi, 0.01, 2, n)
        yield (f"NS {n}x{n}", pde.NavierStokes2D(ranges={"nu": 0.01, "drag": 0.0, "forcing": 0.0}), lambda: NavierStokesVorticity(100.0),
               lambda L, N, dt: ex.stepper.NavierStokesVorticity(2, L, N, dt, diffusivity=0.01, order=4), 2 * math.pi, 0.01, 1, n)


def bench_solvers(shapes, repeats: int) -> list[tuple]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", False)
    rows = []
    for name, system, fsm_factory, ex_factory, length, dt, fields, n in _cases(shapes):
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

        t_ours, t_fsm, t_exp = (_time(f, repeats) for f in (ours, fsm, exp))
        rows.append((name, BATCH / t_ours, BATCH / t_fsm, BATCH / t_exp))
    return rows


def bench_stream_vs_training(seconds: float) -> tuple[float, float]:
    """Crops/s the stream generates (fresh trajectories only) and crops/s training consumes."""
    from physfm import profiles, streams

    cfg = profiles.resolve("tokeniser", "cpu")
    stream = streams.CropStream(list(cfg.systems), shape=(cfg.grid,) * 2, frames=cfg.frames, crop=(cfg.crop_t, cfg.crop, cfg.crop),
                                size=cfg.buffer, refresh=cfg.refresh, seed=0)
    buf = stream._ensure_buffer()
    crops_per_traj = cfg.buffer_reads_per_trajectory
    generated = buf.trajectories_per_second * crops_per_traj

    from physfm.autoencoder import Tokeniser

    model = Tokeniser(**cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = streams.take(stream, cfg.batch)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loss = torch.nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += cfg.batch
    consumed = n / (time.perf_counter() - start)
    return generated, consumed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64x64 only, fewer repeats")
    args = parser.parse_args(argv)
    shapes = (64,) if args.quick else (64, 128)
    repeats = 2 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH}, {STEPS} ETDRK4 steps per trajectory, float32")
    rows = bench_solvers(shapes, repeats)
    print(f"\n{'case':<16}{'physfm':>10}{'torchfsm':>10}{'exponax':>10}{'vs torchfsm':>13}{'vs exponax':>12}   targets >= 1.0x, >= 0.67x")
    print(f"{'':<16}{'traj/s':>10}{'traj/s':>10}{'traj/s':>10}")
    ok = True
    for name, ours, fsm, exp in rows:
        r1, r2 = ours / fsm, ours / exp
        met = r1 >= 1.0 and r2 >= 0.67
        ok &= met
        print(f"{name:<16}{ours:10.1f}{fsm:10.1f}{exp:10.1f}{r1:12.2f}x{r2:11.2f}x   {'met' if met else 'NOT met'}")
    try:
        gen, used = bench_stream_vs_training(5.0 if args.quick else 20.0)
        print(f"\nstream: {gen:.0f} crops/s generated (fresh data), training consumes {used:.0f} crops/s: "
              f"ratio {gen / used:.1f}x (target >= 5x: {'met' if gen >= 5 * used else 'NOT met'})")
    except (ImportError, ValueError) as err:  # the tokeniser chapter's preset is not there yet
        print(f"\nstream vs training: skipped ({err})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
