"""Where the book's computations run, and how they are made repeatable.

:func:`device` picks the best accelerator present (CUDA, then Apple's MPS, then the CPU) and
says which, so a reader always knows what the numbers on the page were computed on.
:func:`seed_everything` makes a run repeatable: the same seed gives the same numbers on a CPU.
:func:`map_jobs` runs independent jobs (the seeds and configurations of an experiment) in
worker processes of one thread each.

Why one thread per job: the book's models are small, so each of their operations is short, and
splitting a short operation over two threads costs more in synchronisation than it saves. On
a 2-core machine one training step of the pre-training chapter's model takes 87 ms with two
threads and 65 ms with one, and two one-thread processes side by side each take 68 ms: 2.5
times the throughput of one two-thread process.

Beyond one machine: under ``torchrun`` (:func:`init_distributed` starts the process group, gloo on a
CPU and nccl on CUDA, one GPU per local rank) the same code runs on every rank. A run is either
*collective*, all ranks training one model together (tokeniser pre-training with
DistributedDataParallel, :func:`data_parallel`; only rank 0 writes), or *one job per rank*
(the experiments' independent runs): inside :func:`alone` a rank acts as if it were the only
process, so a job's numbers do not depend on the rank that ran it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = [
    "device",
    "describe_device",
    "seed_everything",
    "seed_for",
    "progress_bar",
    "map_jobs",
    "one_thread",
    "distributed",
    "is_main_process",
    "rank",
    "world_size",
    "alone",
    "launched",
    "init_distributed",
    "close_distributed",
    "barrier",
    "broadcast_object",
    "gather_objects",
    "data_parallel",
    "cache_dir",
    "code_digest",
    "source_digest",
]

_CHOICES = ("cuda", "mps", "cpu")


#: profiles whose numbers are the CPU's (the rendered book, the tests): they run on the CPU even
#: where a GPU is present, so that a build on a GPU machine never writes GPU numbers into them
CPU_PROFILES = ("smoke", "cpu")
#: profiles sized for an accelerator: on a machine without one they refuse to start
ACCELERATOR_PROFILES = ("gpu", "paper")


def device(profile: str | None = None, *, prefer: str | None = None, verbose: bool = True) -> torch.device:
    """The device a chapter runs on, for its ``profile``.

    - ``prefer`` (or the environment variable ``PHYSFM_DEVICE``) forces a device type
      (``"cuda"``, ``"mps"`` or ``"cpu"``), whatever the profile;
    - the ``smoke`` and ``cpu`` profiles run on the CPU, even where an accelerator is present:
      their results are the CPU's (``results/<chapter>/cpu.nc``) and must stay comparable;
    - the ``gpu`` and ``paper`` profiles take CUDA, then MPS; on a machine with neither they
      stop with an error (they would take hours or days on a CPU) unless the device is forced;
    - without a profile: CUDA if present, then MPS, then the CPU.

    Args:
        profile: the chapter's profile (``cfg.profile``), or ``None``.
        prefer: force a device type.
        verbose: print one line saying which device was chosen and why.

    Raises:
        ValueError: ``prefer`` names an unknown device type or one that is not available.
        RuntimeError: an accelerator profile on a machine without an accelerator.
    """
    source = "argument"
    if prefer is None and os.environ.get("PHYSFM_DEVICE"):
        prefer, source = os.environ["PHYSFM_DEVICE"], "PHYSFM_DEVICE"
    if prefer is not None:
        kind = str(prefer).split(":")[0]
        if kind not in _CHOICES:
            raise ValueError(f"device: prefer={prefer!r} ({source}) is not one of {_CHOICES}")
        if not _available(kind):
            raise ValueError(f"device: prefer={prefer!r} ({source}) is not available on this machine")
        chosen, why = torch.device(prefer), f"requested by {source}"
    elif profile in CPU_PROFILES:
        chosen, why = torch.device("cpu"), f"the {profile} profile's numbers are the CPU's"
    else:
        kind = next(k for k in _CHOICES if _available(k))
        if kind == "cpu" and profile in ACCELERATOR_PROFILES:
            raise RuntimeError(
                f"device: the {profile!r} profile is sized for a GPU and this machine has none (no CUDA, no MPS); "
                f"run the 'cpu' profile, or force the CPU with PHYSFM_DEVICE=cpu if you mean it"
            )
        chosen = torch.device(kind)
        why = "no CUDA or MPS device found" if kind == "cpu" else "best device available"
    if verbose:
        print(f"physfm: running on {describe_device(chosen)} ({why})")
    return chosen


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return True


def describe_device(dev: torch.device | str) -> str:
    """A short human-readable name, e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu (x86_64, 2 threads)"``."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


_ALONE = [0]  # depth of nested alone() blocks


def distributed() -> bool:
    """True when running under ``torch.distributed`` (``torchrun``) with a process group, outside
    :func:`alone`."""
    return not _ALONE[0] and torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    """True unless running under ``torch.distributed`` as a rank other than 0: only the main
    process shows progress and writes checkpoints, results and cached models."""
    return rank() == 0


def rank() -> int:
    """This process's rank among :func:`world_size` processes (0 outside ``torch.distributed`` and inside :func:`alone`)."""
    return torch.distributed.get_rank() if distributed() else 0


def world_size() -> int:
    """How many processes train together (1 outside ``torch.distributed`` and inside :func:`alone`)."""
    return torch.distributed.get_world_size() if distributed() else 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside this block the process acts as the only one, whatever ``torchrun`` started:
    :func:`distributed` is False, :func:`rank` is 0 (so streams draw what a single process draws,
    :func:`physfm.data.streams.stream_seed`), and it writes its own checkpoints and results. The
    experiments run each of their jobs so on the rank it was given."""
    _ALONE[0] += 1
    try:
        yield
    finally:
        _ALONE[0] -= 1


def launched() -> bool:
    """True in a process that ``torchrun`` started (it sets ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def init_distributed(prefer: str | None = None, *, timeout_s: float = 86400.0, verbose: bool = True) -> torch.device:
    """The device of this process; under ``torchrun``, also start its process group.

    Started by ``torchrun --nproc_per_node=N``, each process takes the GPU of its local rank
    (``torch.cuda.set_device(LOCAL_RANK)``) and joins the group with the nccl backend, or with gloo
    when the device is a CPU (``prefer``/``PHYSFM_DEVICE`` as in :func:`device`). Outside
    ``torchrun`` it is :func:`device`. ``timeout_s`` bounds how long a rank waits for the others in
    one collective call (ranks that run jobs of different lengths wait at the end for the slowest).

    Raises:
        ValueError: ``torchrun`` started more processes on this node than it has GPUs.
    """
    if not launched():
        return device(prefer, verbose=verbose)
    local = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    chosen = device(prefer, verbose=False)
    if chosen.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"init_distributed: local rank {local} but only {torch.cuda.device_count()} GPUs on this node; "
                f"start torchrun with --nproc_per_node <= {torch.cuda.device_count()}"
            )
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        kwargs = {"device_id": chosen} if backend == "nccl" else {}
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    if verbose and is_main_process():
        print(f"physfm: {world_size()} processes ({backend}); rank 0 runs on {describe_device(chosen)}")
    return chosen


def close_distributed() -> None:
    """End the process group started by :func:`init_distributed` (if any)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _device_ids() -> dict[str, Any]:
    if torch.distributed.get_backend() == "nccl":
        return {"device_ids": [torch.cuda.current_device()]}
    return {}


def barrier() -> None:
    """Wait until every rank is here (nothing to wait for outside :func:`distributed`)."""
    if distributed():
        torch.distributed.barrier(**_device_ids())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable; ``obj`` itself outside :func:`distributed`)."""
    if not distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` outside :func:`distributed`)."""
    if not distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` when the ranks train
    together (:func:`distributed`), else ``model`` itself. The model must already be on this rank's
    device; parameters a step leaves unused (a stride that skips a kernel) are allowed."""
    if not distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    ids = {"device_ids": [dev.index if dev.index is not None else torch.cuda.current_device()]} if dev.type == "cuda" else {}
    return DistributedDataParallel(model, find_unused_parameters=True, **ids)


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh ``torch.Generator`` seeded with ``seed``.

    Library functions that draw random numbers take an explicit ``generator`` argument; the one
    returned here is the natural thing to pass them. On the CPU the same seed gives the same
    numbers. On CUDA it does only with ``deterministic=True``, which also selects deterministic
    kernels (``torch.use_deterministic_algorithms``, cuDNN without benchmarking, and the cuBLAS
    workspace setting it needs); that is slower, so the GPU profiles leave it off and their
    numbers vary a little from run to run.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed_everything: seed must be a non-negative int, got {seed!r}")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def seed_for(purpose: str, seed: int = 0) -> int:
    """The seed of one named random stream of a run: ``seed_for("validation", 0)``.

    A run draws from several streams (training data, validation data, rollout trajectories,
    normalisation statistics, initial weights...). Deriving each from the run's ``seed`` and the
    stream's name (a hash, not an offset such as ``seed + 50_000``) keeps them apart for every
    seed: validation data never coincides with training data, and a new stream never has to
    find an offset that is not taken. Returns an int in ``[0, 2**31)``.
    """
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"seed_for: purpose must be a non-empty string, got {purpose!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_for: seed must be a non-negative int, got {seed!r}")
    digest = hashlib.sha256(f"physfm/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def code_digest(modules: Sequence[ModuleType]) -> str:
    """Hash of the source of ``modules``: what is cached from code (a trained model, data
    statistics) is stale as soon as that code changes, and only then (editing the plotting code
    retrains nothing)."""
    h = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        h.update(module.__name__.encode())
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:16]


#: modules that only present results: editing them changes no number (see :func:`source_digest`)
PRESENTATION = ("viz", "book", "student", "sphinxext", "cli", "training/__main__")


def source_digest(exclude: Sequence[str] = PRESENTATION) -> str:
    """Hash of the source of the whole library (every ``.py`` file of the package, read from
    disk) except the presentation modules ``exclude`` (paths relative to the package, without
    ``.py``): what keys saved runs, whose numbers may depend on any of it."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).with_suffix("").as_posix()
        if name in exclude:
            continue
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Where trained models and data statistics are kept: ``$PHYSFM_CACHE``, else ``.cache/`` in
    the repository (ignored by git). Deleting it is always safe."""
    from physfm.results import repo_root

    return Path(os.environ.get("PHYSFM_CACHE") or repo_root() / ".cache")


@contextlib.contextmanager
def one_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block on one CPU thread (torch's thread count restored after), when ``device`` is
    the CPU. A computation on one thread gives the numbers of a one-thread worker process
    (:func:`map_jobs`) bit for bit, whichever process runs it; on several threads its sums are
    split differently and the numbers move by rounding."""
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _start_worker(initializer: Callable[..., None] | None, initargs: Sequence[Any]) -> None:
    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def _live_bars() -> bool:
    """Whether progress bars redraw as they go: in a terminal and in a live Jupyter kernel, unless
    ``PHYSFM_PROGRESS=summary`` (set by ``make book`` and ``make test``, whose pages keep what a run
    prints); ``PHYSFM_PROGRESS=bar`` forces them."""
    mode = os.environ.get("PHYSFM_PROGRESS", "")
    if mode not in ("", "bar", "summary"):
        raise ValueError(f"PHYSFM_PROGRESS must be 'bar' or 'summary', got {mode!r}")
    if mode:
        return mode == "bar"
    return sys.stdout.isatty() or "ipykernel" in sys.modules


class _SummaryBar:
    """A progress bar that draws nothing while it runs and prints one line when it closes
    (``desc: n/total in T s, loss=...``): what a built page or a log file should keep."""

    def __init__(self, total: int, desc: str, disable: bool, initial: int):
        self.total, self.desc, self.disable, self.n = total, desc, disable, initial
        self.start, self.postfix = time.perf_counter(), ""

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.disable:
            tail = f", {self.postfix}" if self.postfix else ""
            print(f"{self.desc}: {self.n}/{self.total} in {time.perf_counter() - self.start:.0f} s{tail}", flush=True)
            self.disable = True


def progress_bar(total: int, desc: str, *, disable: bool = False, initial: int = 0):
    """A progress bar over ``total`` steps: a live tqdm bar in a terminal or a Jupyter kernel, one
    line at the end elsewhere (a built page, a log; see ``PHYSFM_PROGRESS``). It has tqdm's
    ``update``, ``set_postfix`` and ``close``."""
    if not _live_bars():
        return _SummaryBar(total, desc, disable, initial)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=disable, file=sys.stdout, mininterval=2.0, ncols=100)


def map_jobs(
    fn: Callable[[Any], Any],
    jobs: Iterable[Any],
    *,
    workers: int = 1,
    initializer: Callable[..., None] | None = None,
    initargs: Sequence[Any] = (),
    desc: str = "jobs",
    progress: bool = True,
) -> list[Any]:
    """``[fn(job) for job in jobs]``, in order, in ``workers`` processes of one thread each.

    With ``workers == 1`` everything runs here, in this process and its threads. Otherwise
    each worker is a fresh (spawned) Python process that runs ``initializer(*initargs)`` once
    (to receive shared inputs: data, pre-trained weights) and then jobs, one at a time.
    ``fn`` and ``initializer`` must be importable module-level functions, and jobs and results
    picklable. A job's result must not depend on which worker ran it: seed inside ``fn``. A
    progress bar counts finished jobs.

    Raises:
        ValueError: ``workers`` is not a positive int.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"map_jobs: workers must be a positive int, got {workers!r}")
    jobs = list(jobs)
    bar = progress_bar(len(jobs), desc, disable=not progress)
    out = []
    if workers == 1 or len(jobs) <= 1:
        if initializer is not None:
            initializer(*initargs)
        for job in jobs:
            out.append(fn(job))
            bar.update(1)
    else:
        import torch.multiprocessing as mp

        with mp.get_context("spawn").Pool(
            min(workers, len(jobs)), initializer=_start_worker, initargs=(initializer, tuple(initargs))
        ) as pool:
            for result in pool.imap(fn, jobs):
                out.append(result)
                bar.update(1)
    bar.close()
    return out
