"""Benchmark the search engines against the exhaustive grid optimum.

Claim: every search sampler against the exhaustive grid optimum over 3 models x 3 bandwidths: trials to within 1 % and the gap after a budget (simulated; the table behind sampler_comparison's).
Runs: minutes (``--quick``: seconds). Root: no.
Writes: stdout (``--json``); the stored full run is ``experiments/results/bench_search_full.{md,json}``, its figure ``sampler_comparison_bench.png`` (sampler_comparison.py).

For each model x bandwidth: the optimum of the exhaustive grid (batch
simulator, ``--grid-points`` per numeric knob), then for each sampler over
``--seeds`` seeds: the median number of trials until the best-so-far is within
1% of it, and the median gap after ``--trials`` trials. Baseline: a replica of
Horovod's autotune (the ``horovod`` backend, commtune.search.horovod_replica; 24 evaluations).

    python experiments/bench_search.py            # full: 3 models x 3 bw, 10 seeds
    python experiments/bench_search.py --quick    # what the tests run
    python experiments/bench_search.py --json

The GP sampler is not in the default list: Optuna's GPSampler needs ~20 s per
trial on this 2-core box for the 8-knob conditional space (add it with
``--samplers gp`` and few seeds).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("resnet50", "bert-base", "vgg16")
BWS = ("10gbit", "32gbit", "100gbit")
SAMPLERS = ("auto", "tpe", "cmaes", "random", "qmc")


def _scenario(model: str, bw: str):
    from commtune.cluster import make_cluster
    from commtune.models import load_model
    from commtune.scenario import Scenario

    return Scenario(load_model(model), make_cluster(bw=bw))


def _trials_to(history: list[float], target: float) -> float:
    best = np.minimum.accumulate(np.asarray(history))
    hit = np.nonzero(best <= target)[0]
    return float(hit[0] + 1) if len(hit) else math.inf


def run_cell(model: str, bw: str, samplers: tuple[str, ...], seeds: int, trials: int, grid_points: int,
             space_name: str = "default") -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    from commtune.search import SearchConfig, run_backend
    from commtune.evaluators.simulator import SimulatorEvaluator
    from commtune.search.horovod_replica import MAX_SAMPLES, START_POINTS
    from commtune.search.space import load_space

    sc = _scenario(model, bw)
    obj = SimulatorEvaluator(sc)
    space = load_space(space_name)
    t = time.monotonic()
    grid = run_backend("optuna", SearchConfig(space, obj, sampler="grid", grid_points=grid_points))
    opt = grid.best_metrics["step_time_s"]
    cell = {"model": model, "bw": bw, "grid_optimum_s": opt, "grid_size": grid.extra["grid_size"],
            "grid_s": round(time.monotonic() - t, 3), "lower_bound_s": obj.lower_bound_s(), "samplers": {}}
    for sampler in samplers:
        hits, gaps, bests, secs = [], [], [], []
        for seed in range(seeds):
            t = time.monotonic()
            r = run_backend("optuna", SearchConfig(space, obj, sampler=sampler, trials=trials, seed=seed, storage=None,
                                                   study_name=f"bench-{sampler}-{seed}"))
            secs.append(time.monotonic() - t)
            hits.append(_trials_to(r.history, 1.01 * opt))
            bests.append(min(r.history))
            gaps.append(min(r.history) / opt - 1.0)
        cell["samplers"][sampler] = _summary(hits, gaps, bests, secs)
    # Horovod's autotune replica (deterministic up to its random restarts: few seeds suffice).
    hits, gaps, bests, secs = [], [], [], []
    for seed in range(min(seeds, 2)):
        t = time.monotonic()
        r = run_backend("horovod", SearchConfig(space, obj, trials=len(START_POINTS) + MAX_SAMPLES, seed=seed))
        hist = r.history
        best = min(hist)
        secs.append(time.monotonic() - t)
        hits.append(_trials_to(hist, 1.01 * opt))
        bests.append(best)
        gaps.append(best / opt - 1.0)
    cell["samplers"]["horovod-replica"] = _summary(hits, gaps, bests, secs, evals=len(hist))
    return cell


def _summary(hits, gaps, bests, secs, evals=None) -> dict:
    med = float(np.median(hits))
    d = {"median_trials_to_1pct": None if math.isinf(med) else med, "reached_1pct": int(np.sum(np.isfinite(hits))),
         "runs": len(hits), "median_gap": float(np.median(gaps)), "best_step_s": float(np.median(bests)),
         "seconds_per_run": round(float(np.mean(secs)), 3)}
    if evals is not None:
        d["evaluations"] = evals
    return d


def markdown(cells: list[dict], trials: int) -> str:
    lines = [f"| model | bw | grid opt (ms) | sampler | median trials to 1% | reached | gap after {trials} |",
             "|---|---|---|---|---|---|---|"]
    for c in cells:
        for s, f in c["samplers"].items():
            mt = f["median_trials_to_1pct"]
            gap_label = f["median_gap"]
            lines.append(f"| {c['model']} | {c['bw']} | {c['grid_optimum_s'] * 1e3:.2f} | {s} | "
                         f"{'>' + str(f.get('evaluations', trials)) if mt is None else f'{mt:g}'} | "
                         f"{f['reached_1pct']}/{f['runs']} | {gap_label:+.2%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="resnet50 @ 32gbit, 2 seeds, 30 trials, coarse grid")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--bw", default=",".join(BWS))
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--grid-points", type=int, default=16)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    models, bws = a.models.split(","), a.bw.split(",")
    if a.quick:
        models, bws, a.seeds, a.trials, a.grid_points = ["resnet50"], ["32gbit"], 2, 30, 8
    samplers = tuple(a.samplers.split(","))
    t0 = time.monotonic()
    jobs = [(m, b, samplers, a.seeds, a.trials, a.grid_points) for m in models for b in bws]
    if a.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            cells = list(ex.map(run_cell, *zip(*jobs)))
    else:
        cells = [run_cell(*j) for j in jobs]
    out = {"trials": a.trials, "seeds": a.seeds, "grid_points": a.grid_points, "cells": cells,
           "figures": {f"{c['model']}@{c['bw']}": c["samplers"] for c in cells},
           "elapsed_s": round(time.monotonic() - t0, 1)}
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(markdown(cells, a.trials))
        print(f"\n{len(cells)} scenarios, {a.seeds} seeds, {a.trials} trials, {out['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
