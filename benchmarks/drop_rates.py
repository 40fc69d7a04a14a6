"""Drop rates of the on-the-fly generator at every grid and coefficient box the presets use.

:func:`physfm.data.pde.generate` drops a trajectory that turns non-finite, blows up or loses
all structure, and draws a new one in its place; a high drop rate means the data a model trains
on is not drawn from the advertised coefficient box (the draws that survive are biased towards
its easy corner). This script measures, for every case the presets in :mod:`physfm.profiles`
ask for (chapter, profile, system, grid, frames, coefficient ranges, frame interval, box), the
number of trajectories dropped per reason out of ``n`` drawn, in batches of 8 (the buffers'
default chunk), each batch with its own seed and a single attempt (``max_attempts=1``, so every
drawn trajectory is counted once).

Cases that differ only in their number of frames are measured once, at the largest (a trajectory
is the prefix of a longer one with the same seed, and a longer one can only be dropped more
often, so the rate reported is an upper bound for the shorter cases). ``n`` is 64 trajectories
up to 64^2 points, 32 up to 32^3 (128^2 included), 8 up to 48^3 (256^2 included) and 4 beyond (96^3), to keep the whole run to a
couple of CPU hours; ``--scale`` multiplies them.

``--version before`` runs the generator of another commit (default ``main``), read with
``git show <ref>:src/physfm/data/pde.py``, on the same draws (same seeds, so the same
coefficients and initial states), for a before/after table.

    python benchmarks/drop_rates.py [--profiles smoke cpu gpu paper] [--version after|before] [--ref main]
                                    [--out runs/drop_rates.json] [--workers 2] [--scale 1.0]
    python benchmarks/drop_rates.py --table benchmarks/drop_rates.json   # print the table only

``benchmarks/drop_rates.json`` is the measurement committed beside this script (both versions, on
a 2-core CPU shared with other work; the ``seconds`` in it are wall-clock times under that load).

Results go to a JSON file (written atomically after every case, so an interrupted run resumes
where it stopped), keyed by version and case, each case with the commit it was measured at.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_generator.py

import argparse
import datetime as _dt
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from physfm.data.pde import SYSTEMS
from physfm.data.spec import specs
from physfm.profiles import PRESETS

ROOT = Path(__file__).resolve().parents[1]
REASONS = ("non-finite", "blew up", "lost all structure")
ALL_SYSTEMS = ("diffusion", "advection_diffusion", "burgers", "kuramoto_sivashinsky", "gray_scott", "navier_stokes")
BATCH = 8


# ---------------------------------------------------------------------------------------------
# The cases the presets use
# ---------------------------------------------------------------------------------------------


def _key(system: str, shape: tuple, ranges: dict, options: dict) -> str:
    r = ",".join(f"{k}={tuple(v) if isinstance(v, (list, tuple)) else v}" for k, v in sorted(ranges.items()))
    o = ",".join(f"{k}={v:g}" for k, v in sorted(options.items()))
    return f"{system} {'x'.join(map(str, shape))}" + (f" [{r}]" if r else "") + (f" ({o})" if o else "")


def preset_cases(profiles=("smoke", "cpu", "gpu", "paper")) -> dict[str, dict]:
    """Every generator call the presets make: key -> {system, shape, frames, ranges, options, used_by}.

    The chapters' notebooks decide how their presets turn into generator calls; this mirrors
    them: the data chapter (every system on ``grid``^2, Gray-Scott and Burgers on ``volume``^3 with
    2 frames), the tokeniser (its systems on ``grid``^2; diffusion, Burgers, Gray-Scott on
    ``volume``^3 with 5 frames), the FNO chapter (the tokeniser's systems on twice its grid), the
    pre-training chapter (its systems with their options: ranges, interval, box), the
    fine-tuning chapter (its seen system on the pre-training grid), PDE-FM (its systems with
    their options), the scan chapter (1D advection-diffusion) and the generating chapter.
    """
    cases: dict[str, dict] = {}

    def add(system, shape, frames, used_by, ranges=None, options=None):
        default = SYSTEMS[system]  # settings equal to the system's own are not options
        pair = lambda v: tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v), float(v))
        ranges = {k: v for k, v in (ranges or {}).items() if pair(v) != default.ranges[k]}
        options = {k: v for k, v in (options or {}).items() if v != getattr(default, k)}
        key = _key(system, tuple(shape), ranges, options)
        case = cases.setdefault(
            key, {"system": system, "shape": list(shape), "frames": 0, "ranges": ranges, "options": options, "used_by": []}
        )
        case["frames"] = max(case["frames"], int(frames))
        case["used_by"].append(f"{used_by} ({frames} frames)")

    for prof in profiles:
        d = PRESETS["data"][prof]
        for s in ALL_SYSTEMS:
            add(s, (d["grid"],) * 2, d["frames"], f"data/{prof}")
        for s in ("gray_scott", "burgers"):
            add(s, (d["volume"],) * 3, 2, f"data/{prof} 3D")
        t = PRESETS["tokeniser"][prof]
        for spec in specs(t["systems"]).values():
            add(spec.name, (t["grid"],) * 2, t["frames"], f"tokeniser/{prof}", spec.ranges, spec.options)
            add(spec.name, (2 * t["grid"],) * 2, t["frames"], f"fno/{prof}", spec.ranges, spec.options)
        for s in ("diffusion", "burgers", "gray_scott"):
            add(s, (t["volume"],) * 3, 5, f"tokeniser/{prof} 3D")
        p = PRESETS["pretraining"][prof]
        for spec in specs(p["systems"]).values():
            add(spec.name, (p["grid"],) * 2, p["frames"], f"pretraining/{prof}", spec.ranges, spec.options)
        f = PRESETS["finetuning"][prof]
        seen = specs(p["systems"]).get(f["seen"]) or specs(f["seen"])[f["seen"]]
        add(seen.name, (p["grid"],) * 2, p["frames"], f"finetuning/{prof}", seen.ranges, seen.options)
        m = PRESETS["pdefm"][prof]
        for spec in specs(m["systems"]).values():
            add(spec.name, (m["grid"],) * 2, m["frames"], f"pdefm/{prof}", spec.ranges, spec.options)
        sc = PRESETS["scan"][prof]
        add("advection_diffusion", (sc["grid"],), sc["frames"], f"scan/{prof}")
        g = PRESETS["generating"][prof]
        add(g["system"], (g["grid"],) * 2, g["frames"], f"generating/{prof}")
    return cases


def trajectories_for(shape, scale: float = 1.0) -> int:
    points = math.prod(shape)
    n = 64 if points <= 64**2 else 32 if points <= 32**3 else 8 if points <= 48**3 else 4
    return max(1, round(n * scale))


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def load_generator(version: str, ref: str = "main"):
    """``physfm.data.pde`` of this checkout (``after``) or of ``ref`` (``before``)."""
    if version == "after":
        from physfm.data import pde

        return pde
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:src/physfm/data/pde.py"], capture_output=True, text=True, check=True
    ).stdout
    name = f"physfm.data._pde_{re.sub(r'[^0-9A-Za-z]', '_', ref)}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{ref}:src/physfm/data/pde.py", "exec"), module.__dict__)
    return module


def _reasons_from(error: Exception) -> dict[str, int]:
    """Drop counts of a failed single-attempt batch: from the error's attribute, or (older
    generators) from its message, '... (dropped: 3 non-finite, 1 blew up) ...'."""
    if hasattr(error, "drop_reasons"):
        return {r: int(error.drop_reasons.get(r, 0)) for r in REASONS}
    found = re.search(r"\(dropped: ([^)]*)\)", str(error))
    if not found:
        raise error
    counts = dict.fromkeys(REASONS, 0)
    for part in found.group(1).split(", "):
        n, reason = part.split(" ", 1)
        counts[reason] = int(n)
    return counts


def measure(case: dict, n: int, version: str, ref: str = "main") -> dict:
    """Draw ``n`` trajectories of ``case`` in batches of 8 (one attempt each): drops per reason."""
    torch.set_num_threads(1)
    pde = load_generator(version, ref)
    system = pde.SYSTEMS[case["system"]](ranges={k: tuple(v) if isinstance(v, list) else v for k, v in case["ranges"].items()})
    counts = dict.fromkeys(REASONS, 0)
    steps, start, drawn = 0, time.perf_counter(), 0
    for i in range(math.ceil(n / BATCH)):
        b = min(BATCH, n - drawn)
        g = torch.Generator().manual_seed(1_000 + i)
        try:
            tr = pde.generate(
                system, batch=b, shape=tuple(case["shape"]), frames=case["frames"], generator=g, max_attempts=1, **case["options"]
            )
            steps += getattr(tr, "steps", 0)
        except RuntimeError as error:
            for r, c in _reasons_from(error).items():
                counts[r] += c
        drawn += b
    dropped = sum(counts.values())
    return {
        "drawn": drawn,
        "dropped": dropped,
        "rate": dropped / drawn,
        "reasons": counts,
        "seconds": round(time.perf_counter() - start, 1),
        "steps_per_batch": steps / max(1, math.ceil(n / BATCH)),
    }


def _job(job):
    key, case, n, version, ref = job
    return key, measure(case, n, version, ref)


def _git(*args):
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(profiles, version: str, ref: str, out: Path, workers: int, scale: float, only: str | None = None) -> dict:
    from physfm.results import atomic_write
    from physfm.runtime import map_jobs

    store = json.loads(out.read_text()) if out.exists() else {}
    section = store.setdefault(version, {})
    section["commit"] = _git("rev-parse", ref) if version == "before" else _git("rev-parse", "HEAD")
    section["source"] = f"git show {ref}:src/physfm/data/pde.py" if version == "before" else "this checkout"
    results = section.setdefault("cases", {})
    cases = preset_cases(profiles)
    todo = [
        (k, c, trajectories_for(c["shape"], scale), version, ref)
        for k, c in cases.items()
        if (only is None or re.search(only, k)) and k not in results
    ]
    todo.sort(key=lambda j: math.prod(j[1]["shape"]) * j[1]["frames"])  # cheap cases first
    print(f"{version}: {len(todo)} cases to measure ({len(cases) - len(todo)} done or skipped), {workers} worker(s)", flush=True)

    def save():
        section["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(store, indent=1, sort_keys=True)))

    # one job at a time per worker; results saved as they come (map_jobs returns them in order)
    for chunk in [todo[i : i + workers] for i in range(0, len(todo), workers)]:
        for key, result in map_jobs(_job, chunk, workers=workers, progress=False):
            results[key] = {**cases[key], **result, "commit": section["commit"]}
            r = results[key]
            print(f"  {key:<58} {r['dropped']:>3}/{r['drawn']:<3} dropped  {r['seconds']:7.1f} s", flush=True)
            save()
    save()
    return store


def table(store: dict) -> str:
    """Markdown: one row per case, before and after side by side."""
    before = store.get("before", {}).get("cases", {})
    after = store.get("after", {}).get("cases", {})
    keys = sorted(set(before) | set(after), key=lambda k: (k.split()[0], math.prod(map(int, k.split()[1].split("x")))))

    def cell(r):
        if r is None:
            return "—"
        why = ", ".join(f"{v} {k}" for k, v in r["reasons"].items() if v)
        return f"{r['dropped']}/{r['drawn']} ({100 * r['rate']:.0f}%)" + (f": {why}" if why else "")

    lines = ["| system, grid [ranges] (options) | frames | used by | before | after |", "|---|---|---|---|---|"]
    for k in keys:
        case = after.get(k) or before.get(k)
        used = "; ".join(sorted({u.split(" (")[0] for u in case["used_by"]}))
        lines.append(f"| {k} | {case['frames']} | {used} | {cell(before.get(k))} | {cell(after.get(k))} |")
    meta = [
        f"{v}: commit {store[v].get('commit', '?')[:10]} ({store[v].get('source')}), {store[v].get('date')}"
        + (f"; {store[v]['note']}" if store[v].get("note") else "")
        for v in ("before", "after")
        if v in store
    ]
    return "\n".join(lines + [""] + meta)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", nargs="+", default=["smoke", "cpu", "gpu", "paper"])
    parser.add_argument("--version", choices=("after", "before"), default="after")
    parser.add_argument("--ref", default="main", help="the commit whose generator 'before' runs")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "drop_rates.json")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the trajectories per case")
    parser.add_argument("--only", default=None, help="a regular expression: measure the matching cases only")
    parser.add_argument("--table", type=Path, default=None, help="print the table of a results file and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    store = run(args.profiles, args.version, args.ref, args.out, args.workers, args.scale, args.only)
    print(table(store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
