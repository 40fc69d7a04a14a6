"""Generator throughput: physfm.pde against torchfsm and exponax, side by side in one run.

Each library integrates the same batch of trajectories (same equation, grid, box, step, and the
same scheme: ETDRK4 with contour-integral coefficients, 2/3 dealiasing, float32) on the CPU, and
we count trajectories per second. A "trajectory" is ``STEPS`` steps of one sample; a batch of
``BATCH`` is advanced together (exponax through ``jax.vmap`` of its jitted stepper, compiled
before timing). Every library keeps only the final state (no frames recorded), the common
denominator of the three APIs.

Targets: physfm >= 1.0x torchfsm everywhere and >= 0.67x exponax.

Also measured: fresh crops per second the streaming buffer can supply against crops consumed per
second by tokeniser training at the cpu profile (target: supply >= 5x consumption, so training is
never data-bound); see ``bench_stream_vs_training`` for how a trajectory counts in crops.

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


def bench_stream_vs_training(seconds: float) -> tuple[float, float, float]:
    """Fresh crops per second the stream can supply, and crops per second training consumes.

    With the cpu-profile buffer (``refresh`` of it replaced every ``buffer`` crops read), every
    trajectory is read ``1 / refresh`` times on average before it leaves, so a generator making
    ``g`` trajectories per second keeps up with training that reads ``g / refresh`` crops per
    second. Training is timed on the tokeniser of the cpu profile with a random ratio per step,
    exactly as ``physfm.train.pretrain_tokeniser`` trains it.
    """
    from physfm import profiles, streams
    from physfm.autoencoder import Tokeniser

    cfg = profiles.resolve("tokeniser", "cpu")
    crop = (cfg.crop_t, cfg.crop, cfg.crop)
    stream = streams.CropStream(list(cfg.systems), shape=(cfg.grid,) * 2, frames=cfg.frames, crop=crop,
                                size=cfg.buffer, refresh=cfg.refresh, seed=0)
    buf = stream._ensure_buffer()
    buf.refresh(2 * buf.chunk)  # refreshes are whole solver batches of one system, as in training
    per_traj = buf.seconds / buf.generated
    supplied = 1 / per_traj / cfg.refresh

    torch.manual_seed(0)
    model = Tokeniser(spatial_dims=2, channels=cfg.channels, latent=cfg.latent, blocks=cfg.blocks,
                      patch=cfg.patch, time_patch=cfg.time_patch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = streams.take(stream, cfg.batch)
    rng = torch.Generator().manual_seed(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        s = cfg.strides[int(torch.randint(len(cfg.strides), (1,), generator=rng))]
        st = cfg.time_strides[int(torch.randint(len(cfg.time_strides), (1,), generator=rng))]
        loss = torch.nn.functional.mse_loss(model(x, s, st), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += cfg.batch
    consumed = n / (time.perf_counter() - start)
    return 1 / per_traj, supplied, consumed


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
    traj, supplied, used = bench_stream_vs_training(10.0 if args.quick else 40.0)
    met = supplied >= 5 * used
    print(f"\nstream (cpu profile, 6 systems, 64x64, 17 frames): {traj:.1f} trajectories/s = {supplied:.0f} fresh crops/s "
          f"at the buffer's refresh rate; tokeniser training consumes {used:.0f} crops/s: ratio {supplied / used:.1f}x "
          f"(target >= 5x: {'met' if met else 'NOT met'})")
    return 0 if ok and met else 1


if __name__ == "__main__":
    sys.exit(main())
