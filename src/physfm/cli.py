"""The command line for runs at scale: ``python -m physfm.training pretrain|run ...``.

Two commands, each the same on one process and under ``torchrun`` (one process per GPU)::

    python -m physfm.training pretrain data_recipes/params/tokeniser/gpu.yaml
    python -m physfm.training run pretraining -f data_recipes/params/pretraining/gpu.yaml
    torchrun --standalone --nproc_per_node=8 -m physfm.training run pdefm -f data_recipes/params/pdefm/paper.yaml

``pretrain`` trains the tokenisers a chapter needs into the model cache
(:func:`physfm.training.pretrain_tokeniser`; the ranks train each one together with
DistributedDataParallel), so that the chapter, run afterwards by papermill or by ``run``, loads
them. Its argument is a chapter's parameter file (``data_recipes/params/<chapter>/<profile>.yaml``,
the chapter read from the folder name or ``--chapter``) or a recipe file (a YAML mapping of the
keys of :data:`physfm.training.tokeniser.RECIPE_KEYS`).

``run`` runs an experiment chapter's grid of jobs (:mod:`physfm.experiments`), shared out across
the ranks, and writes its result where the chapter's notebook would
(:func:`physfm.results.path_for`). Its jobs are saved in a run folder,
``<runs>/<chapter>-<profile>-<digest>`` (``runs``: ``--runs``, ``$PHYSFM_RUNS`` or
``_build/runs``; the digest hashes the chapter's resolved parameters and the library's source, so
a changed parameter or changed code starts afresh), where each job checkpoints while it trains;
the same command, run again after an interruption, skips the finished jobs and resumes the
interrupted ones from their last checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main", "parser", "EXPERIMENTS", "TOKENISER_CHAPTERS", "run_folder", "chapter_parameters"]

#: chapters whose experiment ``run`` runs
EXPERIMENTS = ("pretraining", "finetuning", "pdefm")
#: chapters that use the tokeniser chapter's tokeniser (at their profile and seed)
TOKENISER_CHAPTERS = ("tokeniser", "compression", "fno", "generating")


class UsageError(ValueError):
    """A bad command line: reported in one line, with the usage."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m physfm.training",
        description="Pre-train tokenisers and run the experiment chapters, on one process or under torchrun "
        "(torchrun --standalone --nproc_per_node=N -m physfm.training ...): gloo on CPUs, nccl on GPUs, "
        "one GPU per process.",
        epilog="Runs resume: the same command after an interruption continues where it stopped. See book/running.md.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="{pretrain,run}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-p",
            "--parameter",
            nargs=2,
            action="append",
            default=[],
            metavar=("NAME", "VALUE"),
            help="override one parameter (VALUE read as YAML: 300, [0, 1, 2], navier_stokes), as papermill's -p",
        )
        p.add_argument(
            "--device",
            choices=("cuda", "mps", "cpu"),
            default=None,
            help="force a device (default: $PHYSFM_DEVICE, else CUDA, MPS, CPU)",
        )
        p.add_argument(
            "--timeout",
            type=float,
            default=86400.0,
            metavar="SECONDS",
            help="how long a rank waits for the others in one collective call (default: one day)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    pre = sub.add_parser(
        "pretrain",
        help="pre-train the tokenisers of a chapter (or of a recipe) into the model cache",
        description="Pre-train the tokenisers a chapter needs into the model cache ($PHYSFM_CACHE or .cache/), "
        "where the chapter finds them. Under torchrun the ranks train each tokeniser together "
        "(DistributedDataParallel); the recipe's batch is split between them.",
    )
    pre.add_argument(
        "params",
        type=Path,
        help="a chapter's parameter file, data_recipes/params/<chapter>/<profile>.yaml, "
        "or a recipe file (YAML with the keys of physfm.training.tokeniser.RECIPE_KEYS)",
    )
    pre.add_argument("--chapter", default=None, help="the chapter of the parameter file (default: the name of its folder)")
    pre.add_argument("--name", default="tokeniser", help="cache name of a recipe file's tokeniser (default: tokeniser)")
    common(pre)

    run = sub.add_parser(
        "run",
        help="run an experiment chapter's jobs and save its result",
        description="Run the jobs of an experiment chapter (arms x seeds x regimes), shared out across the ranks "
        "of torchrun, and save its result as the chapter's notebook would. Each job checkpoints in "
        "the run folder; running the same command again resumes.",
    )
    run.add_argument("chapter", choices=EXPERIMENTS, help="the experiment chapter")
    run.add_argument(
        "-f",
        "--file",
        type=Path,
        required=True,
        metavar="PARAMS",
        help="its parameter file, data_recipes/params/<chapter>/<profile>.yaml",
    )
    run.add_argument(
        "--runs", type=Path, default=None, help="where run folders go (default: $PHYSFM_RUNS, else _build/runs in the repository)"
    )
    run.add_argument(
        "--folder", type=Path, default=None, help="the run folder itself (default: <runs>/<chapter>-<profile>-<digest>)"
    )
    run.add_argument(
        "--results",
        type=Path,
        default=None,
        help="where to write the result (default: results/<chapter>/<profile>.nc, smoke runs under _build/smoke-results)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="one-thread worker processes per rank on a CPU (default: the profile's; 1 under torchrun)",
    )
    common(run)
    return top


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{what} {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} must hold a mapping of names to values, got {type(data).__name__}")
    return data


def _overrides(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    return {name: yaml.safe_load(value) for name, value in pairs}


def chapter_parameters(chapter: str, values: Mapping[str, Any]):
    """The resolved parameters (:func:`physfm.profiles.resolve`) of ``chapter`` from a parameter
    file's values: ``profile``, ``seed`` and the chapter's overrides, as papermill passes them."""
    from physfm import profiles

    if chapter not in profiles.PRESETS:
        raise UsageError(f"unknown chapter {chapter!r}; chapters with parameters: {profiles.chapters()}")
    values = dict(values)
    profile = values.pop("profile", "cpu")
    return profiles.resolve(chapter, profile, **values)


def run_folder(chapter: str, profile: str, parameters: Mapping[str, Any], runs: Path | None = None) -> Path:
    """``<runs>/<chapter>-<profile>-<digest>``: the digest hashes ``parameters`` (plain data) and
    the library's source (:func:`physfm.runtime.source_digest`), so that a changed parameter or
    changed code gets a folder of its own."""
    from physfm.results import repo_root
    from physfm.runtime import source_digest

    base = runs or Path(os.environ.get("PHYSFM_RUNS") or repo_root() / "_build" / "runs")
    text = json.dumps({"parameters": parameters, "code": source_digest()}, sort_keys=True, default=str)
    return base / f"{chapter}-{profile}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _tokeniser_recipes(chapter: str, cfg) -> list[tuple[str, dict[str, Any]]]:
    """``(cache name, recipe)`` of every tokeniser ``chapter`` pre-trains, as its notebook does."""
    from physfm.data.spec import specs
    from physfm.profiles import resolve
    from physfm.training import tokeniser_config

    if chapter in TOKENISER_CHAPTERS:
        tok = cfg if chapter == "tokeniser" else resolve("tokeniser", cfg.profile, seed=cfg.seed)
        return [("tokeniser", tokeniser_config(tok))]
    if chapter in ("pretraining", "finetuning"):
        from physfm.experiments import pretraining

        pre = cfg if chapter == "pretraining" else resolve("pretraining", cfg.profile, seed=cfg.seed)
        names = list(specs(pre["systems"]))
        domains = {"in_domain": [pre["target"]], "cross_domain": [s for s in names if s != pre["target"]]}
        points = pretraining.regimes(pre) if chapter == "pretraining" else {"base": pretraining.regimes(pre)["base"]}
        if chapter == "finetuning":
            domains = {"cross_domain": domains["cross_domain"]}
        out: list[tuple[str, dict[str, Any]]] = []
        for point in points.values():
            for systems in domains.values():
                recipe = pretraining.tokeniser_recipe(point, systems)
                if ("ablation", recipe) not in out:
                    out.append(("ablation", recipe))
        return out
    raise UsageError(
        f"chapter {chapter!r} pre-trains no tokeniser; choose one of {[*TOKENISER_CHAPTERS, 'pretraining', 'finetuning']}"
    )


def _pretrain(args, dev) -> None:
    from physfm.runtime import is_main_process
    from physfm.training import RECIPE_KEYS, pretrain_tokeniser

    values = {**_read_yaml(args.params, "parameter file"), **_overrides(args.parameter)}
    if "profile" not in values and all(k in values for k in ("systems", "steps", "batch")):  # a recipe file
        missing = [k for k in RECIPE_KEYS if k not in values]
        if missing:
            raise UsageError(f"recipe file {args.params} lacks {missing}; a recipe has the keys {list(RECIPE_KEYS)}")
        jobs = [(args.name, values)]
    else:
        chapter = args.chapter or args.params.resolve().parent.name
        jobs = _tokeniser_recipes(chapter, chapter_parameters(chapter, values))
    for i, (name, recipe) in enumerate(jobs):
        if is_main_process():
            print(
                f"physfm: pre-training {i + 1} of {len(jobs)}: {name}, systems {list(recipe['systems'])}, "
                f"{recipe['steps']} steps of {recipe['batch']} crops",
                flush=True,
            )
        _, curves = pretrain_tokeniser(recipe, device=dev, name=name, progress=not args.quiet)
        if is_main_process() and "vrmse" in curves:
            print(
                f"physfm: {name}: validation VRMSE {float(curves.vrmse[0]):.4g} -> {float(curves.vrmse[-1]):.4g} "
                f"({curves.attrs.get('ranks', 1)} processes)",
                flush=True,
            )


def _run(args, dev) -> None:
    from physfm import results
    from physfm.runtime import is_main_process, world_size

    values = {**_read_yaml(args.file, "parameter file"), **_overrides(args.parameter)}
    cfg = chapter_parameters(args.chapter, values)
    plain = {"chapter": cfg.as_dict()}
    pre = None
    if args.chapter == "finetuning":
        from physfm.profiles import resolve

        pre = resolve("pretraining", cfg.profile, seed=cfg.seed)
        plain["pretraining"] = pre.as_dict()
    folder = args.folder or run_folder(args.chapter, cfg.profile, plain, args.runs)
    workers = args.workers if args.workers is not None else (1 if world_size() > 1 else None)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if is_main_process():
        print(f"physfm: {args.chapter} at the {cfg.profile} profile; run folder {folder}", flush=True)
    kwargs = dict(device=dev, folder=str(folder), workers=workers, progress=not args.quiet)
    if args.chapter == "pretraining":
        from physfm.experiments import pretraining

        ds = pretraining.run(cfg, **kwargs)
    elif args.chapter == "finetuning":
        from physfm.experiments import finetuning

        ds = finetuning.run(cfg, pre, **kwargs)
    else:
        from physfm.experiments import pdefm

        ds = pdefm.run(cfg, **kwargs)
    if is_main_process():
        path = results.save(ds, args.results or results.path_for(args.chapter, cfg.profile), params=cfg.as_dict(), device=dev)
        print(f"physfm: saved {results.shown(path)}: {results.describe(results.load(path))}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a bad command line)."""
    from physfm.runtime import close_distributed, init_distributed

    p = parser()
    args = p.parse_args(argv)
    try:
        dev = init_distributed(args.device, timeout_s=args.timeout)
        try:
            (_pretrain if args.command == "pretrain" else _run)(args, dev)
        finally:
            close_distributed()
    except (UsageError, ValueError, TypeError) as e:
        if isinstance(e, UsageError) or os.environ.get("PHYSFM_TRACEBACK") is None:
            p.print_usage(sys.stderr)
            print(f"{p.prog} {args.command}: error: {e}", file=sys.stderr)
            if not isinstance(e, UsageError):
                print("(set PHYSFM_TRACEBACK=1 to see where it was raised)", file=sys.stderr)
            return 2
        raise
    return 0
