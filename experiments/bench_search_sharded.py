"""Search quality on the sharded spaces, and the default space against its subspaces.

Claim: the auto sampler comes within 1 % of the exhaustive grid's optimum of the zero / fsdp / hsdp spaces in <= 30 trials (Llama-3.2-1B, Llama-3-8B with activation checkpointing, 10/32/100 Gbit/s), and the default space's answer is never worse than a search of a bundled subspace (ddp, horovod) at the same trials and seed (simulated).
Runs: minutes (``--quick``: under a minute). Root: no.
Writes: ``experiments/results/bench_search_sharded.{md,json}`` (``--quick``: stdout only).

Part 1, for each model x bandwidth x sharding (the spaces ``search --sharding``
searches: zero pinned to grad, fsdp, hsdp): the optimum of the exhaustive grid
(memory-infeasible configurations score inf), then the auto sampler at
``--trials`` trials over ``--seeds`` seeds: the gap of its best to the grid
optimum, the trials until within 1 %, and how many of its trials were
infeasible. Part 2, for each all-reduce model x bandwidth: the auto sampler's
best on the default space and on each subspace at ``--subspace-trials``
trials, same seed.

    python experiments/bench_search_sharded.py            # full; writes the results
    python experiments/bench_search_sharded.py --quick    # llama3.2-1b and resnet50 @ 32gbit, 1 seed
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARDED_MODELS = (("llama3.2-1b", False), ("llama3-8b", True))  # (model, activation checkpointing)
DENSE_MODELS = ("resnet50", "bert-base", "vgg16")
BWS = ("10gbit", "32gbit", "100gbit")
SHARDINGS = ("grad", "full", "hybrid")
SUBSPACES = ("ddp", "horovod")


def _scenario(model: str, bw: str, checkpointing: bool = False):
    from commtune.cluster import make_cluster
    from commtune.models import load_model
    from commtune.scenario import Scenario

    m = load_model(model)
    return Scenario(m, make_cluster(bw=bw), batch_size=m.meta.get("default_batch_size", 64),
                    activation_checkpointing=checkpointing)


def _auto(space, obj, trials: int, seed: int):
    from commtune.search import SearchConfig, run_backend

    return run_backend("optuna", SearchConfig(space, obj, sampler="auto", trials=trials, seed=seed,
                                              study_name=f"bench-{space.name}-{seed}"))


def sharded_cell(model: str, checkpointing: bool, bw: str, sharding: str, seeds: int, trials: int) -> dict:
    """Grid optimum of one sharding's space vs the auto sampler."""
    import warnings

    warnings.filterwarnings("ignore")
    from commtune.evaluators.simulator import SimulatorEvaluator
    from commtune.search import SearchConfig, run_backend
    from commtune.sharding_checks import sharding_spaces

    sc = _scenario(model, bw, checkpointing)
    (_, space), = sharding_spaces(sc, sharding)
    obj = SimulatorEvaluator(sc)
    t = time.monotonic()
    grid = run_backend("optuna", SearchConfig(space, obj, sampler="grid"))
    opt = float(grid.best_metrics["step_time_s"])
    cell = {"model": model, "activation_checkpointing": checkpointing, "bw": bw, "sharding": sharding,
            "space": space.name, "grid_size": grid.extra["grid_size"], "grid_infeasible": obj.infeasible,
            "grid_optimum_s": opt if math.isfinite(opt) else None, "grid_s": round(time.monotonic() - t, 2),
            "runs": []}
    for seed in range(seeds):
        t = time.monotonic()
        r = _auto(space, SimulatorEvaluator(sc), trials, seed)
        hist = np.asarray(r.history)
        best = float(hist.min())
        hit = np.nonzero(np.minimum.accumulate(hist) <= 1.01 * opt)[0] if math.isfinite(opt) else []
        cell["runs"].append({"seed": seed, "best_s": best if math.isfinite(best) else None,
                             "gap": best / opt - 1.0 if math.isfinite(opt) and math.isfinite(best) else None,
                             "trials_to_1pct": int(hit[0]) + 1 if len(hit) else None,
                             "infeasible_trials": int(np.isinf(hist).sum()), "screened": r.extra["screened"],
                             "seconds": round(time.monotonic() - t, 2)})
    return cell


def subspace_cell(model: str, bw: str, seeds: int, trials: int) -> dict:
    """The default space's auto best vs each subspace's, same trials and seed."""
    import warnings

    warnings.filterwarnings("ignore")
    from commtune.evaluators.simulator import SimulatorEvaluator
    from commtune.search.space import load_space

    sc = _scenario(model, bw)
    cell = {"model": model, "bw": bw, "trials": trials, "runs": []}
    for seed in range(seeds):
        row = {"seed": seed}
        for name in ("default", *SUBSPACES):
            row[name] = float(_auto(load_space(name), SimulatorEvaluator(sc), trials, seed).best_metrics["step_time_s"])
        row["default_not_worse"] = all(row["default"] <= row[s] for s in SUBSPACES)
        cell["runs"].append(row)
    return cell


def _ms(v: float | None) -> str:
    return "inf (none fits)" if v is None else f"{v * 1e3:.2f}"


def markdown(out: dict) -> str:
    lines = [f"### Sharded spaces: auto sampler at {out['trials']} trials vs the exhaustive grid", "",
             "| model | bw | sharding (space) | grid (infeasible) | grid opt (ms) | auto gap per seed | "
             "trials to 1 % | infeasible trials |", "|---|---|---|---|---|---|---|---|"]
    for c in out["sharded"]:
        gaps = " ".join("n/a" if r["gap"] is None else f"{r['gap']:+.2%}" for r in c["runs"])
        hits = " ".join(str(r["trials_to_1pct"] or "-") for r in c["runs"])
        inf = " ".join(str(r["infeasible_trials"]) for r in c["runs"])
        model = c["model"] + (" (ckpt)" if c["activation_checkpointing"] else "")
        lines.append(f"| {model} | {c['bw']} | {c['sharding']} ({c['space']}) | {c['grid_size']} "
                     f"({c['grid_infeasible']}) | {_ms(c['grid_optimum_s'])} | {gaps} | {hits} | {inf} |")
    lines += ["", f"### Default space vs its subspaces: auto sampler, best step (ms) at "
                  f"{out['subspace_trials']} trials, same seed", "",
              "| model | bw | seed | default | " + " | ".join(SUBSPACES) + " | default not worse |",
              "|---|---|---|---|" + "---|" * len(SUBSPACES) + "---|"]
    for c in out["subspaces"]:
        for r in c["runs"]:
            lines.append(f"| {c['model']} | {c['bw']} | {r['seed']} | {r['default'] * 1e3:.2f} | "
                         + " | ".join(f"{r[s] * 1e3:.2f}" for s in SUBSPACES)
                         + f" | {'yes' if r['default_not_worse'] else 'NO'} |")
    return "\n".join(lines)


def summary(out: dict) -> dict:
    runs = [r for c in out["sharded"] if c["grid_optimum_s"] is not None for r in c["runs"]]
    within = [r for r in runs if r["trials_to_1pct"] is not None and r["trials_to_1pct"] <= out["trials"]]
    sub = [r for c in out["subspaces"] for r in c["runs"]]
    return {"sharded_runs": len(runs), "sharded_within_1pct": len(within),
            "worst_gap": max((r["gap"] for r in runs if r["gap"] is not None), default=math.nan),
            "subspace_runs": len(sub), "default_not_worse": sum(r["default_not_worse"] for r in sub)}


def main(argv=None) -> int:
    from concurrent.futures import ProcessPoolExecutor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="llama3.2-1b and resnet50 @ 32gbit, 1 seed; prints only")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--subspace-trials", type=int, default=50)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    sharded, dense, bws = SHARDED_MODELS, DENSE_MODELS, BWS
    if a.quick:
        sharded, dense, bws, a.seeds = SHARDED_MODELS[:1], DENSE_MODELS[:1], ("32gbit",), 1
    t0 = time.monotonic()
    jobs = [(m, ck, bw, sh, a.seeds, a.trials) for m, ck in sharded for bw in bws for sh in SHARDINGS]
    sub_jobs = [(m, bw, a.seeds, a.subspace_trials) for m in dense for bw in bws]
    with ProcessPoolExecutor(max(1, a.jobs)) as ex:
        cells = list(ex.map(sharded_cell, *zip(*jobs)))
        subs = list(ex.map(subspace_cell, *zip(*sub_jobs)))
    out = {"trials": a.trials, "seeds": a.seeds, "subspace_trials": a.subspace_trials, "sharded": cells,
           "subspaces": subs}
    out["summary"] = summary(out)
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    md = markdown(out)
    s = out["summary"]
    tail = (f"\n\nSharded: {s['sharded_within_1pct']}/{s['sharded_runs']} runs within 1 % of the grid optimum in "
            f"<= {a.trials} trials (worst gap {s['worst_gap']:+.2%}); default space not worse than every subspace "
            f"in {s['default_not_worse']}/{s['subspace_runs']} runs; {out['elapsed_s']} s.")
    print(md + tail)
    if not a.quick:
        from experiments._common import write_json, write_md

        write_json("bench_search_sharded.json", out)
        write_md("bench_search_sharded.md",
                 "# Search benchmark: sharded spaces and subspaces\n\n"
                 "`PYTHONPATH=. python experiments/bench_search_sharded.py` (2-core machine, shared).\n\n"
                 + md + tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
