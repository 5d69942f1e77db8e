"""Sampler comparison: how fast each search sampler finds a good configuration.

Claim: the ``auto`` sampler reaches the exhaustive grid's optimum within 1 % in a few trials; plain TPE is the most consistent plain sampler; a replica of Horovod's autotune never gets within 1 % (simulated).
Runs: minutes (5 samplers x 5 seeds x 60 trials, then bench_search.py; ``--reuse-bench``: seconds). Root: no.
Writes: ``experiments/results/sampler_comparison.{md,json,csv,png}``, ``bench_search.json``, ``sampler_comparison_bench.png``.

Two parts:

1. per-trial histories from a benchmark on the search API
   (:func:`commtune.tuning.search_scenario`, in-memory studies):
   ResNet-50 on 16 x 8 V100 over the 32 Gbit/s VPC, the ``default`` space,
   samplers random / qmc / tpe / cmaes / auto, 5 seeds x 60 trials each
   (``gp`` is left out: ~17 s per trial on this shared 2-core machine);
   then ``experiments/bench_search.py --json`` (2 seeds, 50 trials) over 3 models
   x 3 bandwidths for the summary table, when that script exists.

Reference lines: PyTorch DDP and Horovod defaults, the exhaustive grid's
optimum (``commtune.plots.gridsearch`` over the ``default`` space,
``C.GRID_POINTS`` per range) and the physical lower bound.
Writes results/sampler_comparison.{json,csv,md,png}, bench_search.json and
sampler_comparison_bench.png; the JSON has the shape ``commtune plot history``
reads. ``--reuse-bench`` re-plots the stored JSON files without re-running the
searches (only the grid optimum, a second, is recomputed).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

import _common as C

SAMPLERS = ("random", "qmc", "tpe", "cmaes", "auto")
SEEDS = (0, 1, 2, 3, 4)
TRIALS = 60


BENCH_ARGS = ["--seeds", "2", "--trials", "50", "--jobs", "2"]


def from_bench_search() -> dict | None:
    """The search engineer's benchmark over 3 models x 3 bandwidths (3 seeds, 50 trials; ~1-2 min)."""
    script = C.ROOT / "experiments" / "bench_search.py"
    if not script.exists():
        return None
    try:
        r = subprocess.run([sys.executable, str(script), "--json", *BENCH_ARGS], capture_output=True, text=True,
                           timeout=400, cwd=C.ROOT)
    except subprocess.TimeoutExpired:
        print("bench_search.py timed out; summary table skipped", file=sys.stderr)
        return None
    if r.returncode != 0:
        print(f"bench_search.py failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout)


def builtin_benchmark() -> dict:
    import optuna

    from commtune.cluster import preset
    from commtune.knobs import DDP_DEFAULT, HOROVOD_DEFAULT
    from commtune.models import load_model
    from commtune.scenario import Scenario
    from commtune.search.space import load_space
    from commtune.tuning import search_scenario
    from simulators.bounds import step_lower_bound_s

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    sc = Scenario(load_model("resnet50"), preset("vpc-32gbit", 16, 8))
    space = load_space("default")
    samplers: dict[str, dict] = {}
    for name in SAMPLERS:
        hist, secs = [], []
        for seed in SEEDS:
            t0 = time.perf_counter()
            res, _ = search_scenario(sc, space, sampler=name, trials=TRIALS, seed=seed, storage=None,
                                     study_name=f"bench-{name}-{seed}")
            secs.append(time.perf_counter() - t0)
            hist.append([float(v) for v in res.history])
        samplers[name] = {"histories": hist, "wall_s": secs}
        print(f"{name:7s} best {min(min(h) for h in hist) * 1e3:.2f} ms, {np.mean(secs):.2f} s per run", flush=True)
    return {
        "source": "experiments/sampler_comparison.py built-in benchmark (bench_search.py not present)",
        "scenario": sc.describe(), "space": "default", "trials": TRIALS, "seeds": list(SEEDS),
        "samplers": samplers,
        "baselines": {"ddp_default": sc.simulator.run(DDP_DEFAULT).step_time_s,
                      "horovod_default": sc.simulator.run(HOROVOD_DEFAULT).step_time_s},
        "grid_best_s": grid_reference(sc),
        "lower_bound_s": step_lower_bound_s(sc.workload, sc.simulator.network, max_streams=8),
    }


def grid_reference(sc=None) -> float:
    """Step time of the exhaustive grid's optimum (default space)."""
    from commtune.cluster import preset
    from commtune.models import load_model
    from commtune.plots.gridsearch import grid_best, knob_grid
    from commtune.scenario import Scenario

    sc = sc or Scenario(load_model("resnet50"), preset("vpc-32gbit", 16, 8))
    _, gm = grid_best(sc.simulator, knob_grid("default", points=C.GRID_POINTS))
    return gm["step_time_s"]


def main() -> None:
    from commtune.plots.history import best_so_far, histories_from_json, plot_history

    data = (json.loads(C.out("sampler_comparison.json").read_text()) if "--reuse-bench" in sys.argv
            and C.out("sampler_comparison.json").exists() else builtin_benchmark())
    if "--reuse-bench" in sys.argv:
        data["grid_best_s"] = grid_reference()
    origin = "this script's per-trial benchmark on the search API"
    path = C.write_json("sampler_comparison.json", data)
    reuse = "--reuse-bench" in sys.argv and C.out("bench_search.json").exists()
    bench = json.loads(C.out("bench_search.json").read_text()) if reuse else from_bench_search()
    if bench is not None:
        C.write_json("bench_search.json", bench)
    runs, refs = histories_from_json(str(path))
    C.save(plot_history(runs, refs, log_y=True,
                        title="Samplers on ResNet-50, 16x8 V100, 32 Gbit/s VPC (median; min-max shaded)"),
           "sampler_comparison.png")

    target = refs.get("grid optimum") or min(min(min(r) for r in rs) for rs in runs.values())
    rows = []
    for name, rs in sorted(runs.items()):
        finals = [float(np.nanmin(r)) for r in rs]

        def reach(tol):
            hits = []
            for r in rs:
                b = best_so_far(r)
                idx = np.flatnonzero(b <= target * (1 + tol))
                hits.append(int(idx[0]) + 1 if idx.size else None)
            return hits

        r1, r5 = reach(0.01), reach(0.05)
        fmt = lambda hs: f"{sum(h is not None for h in hs)}/{len(hs)}" + (  # noqa: E731
            f", median {int(np.median([h for h in hs if h is not None]))}" if any(h is not None for h in hs) else "")
        rows.append({"sampler": name, "median_best_ms": f"{np.median(finals) * 1e3:.2f}",
                     "worst_best_ms": f"{max(finals) * 1e3:.2f}", "within5": fmt(r5), "within1": fmt(r1),
                     "wall": f"{np.mean(data['samplers'][name].get('wall_s', [float('nan')])):.2f}"
                     if isinstance(data.get("samplers", {}).get(name), dict) else ""})
    C.write_csv("sampler_comparison.csv", rows)
    best = min(rows, key=lambda r: float(r["median_best_ms"]))
    n_trials = max(len(r) for rs in runs.values() for r in rs)
    md = f"""# Sampler comparison

Source: {origin}. {data.get('scenario', '')}; space `{data.get('space', 'default')}`; {n_trials} trials per run,
{len(next(iter(runs.values())))} seeds per sampler. Figure: `sampler_comparison.png` (median best-so-far, min-max over
seeds shaded); data: `sampler_comparison.json` (the format `commtune plot history` reads).

Reference: grid optimum {target * 1e3:.2f} ms (exhaustive, {'' if 'grid optimum' in refs else 'best seen; '}`commtune.plots.gridsearch`, `default` space, {C.GRID_POINTS} points per range),
lower bound {refs.get('lower bound', float('nan')) * 1e3:.2f} ms, DDP defaults {refs.get('ddp_default', float('nan')) * 1e3:.1f} ms,
Horovod defaults {refs.get('horovod_default', float('nan')) * 1e3:.1f} ms.

{C.md_table(rows, [("sampler", "sampler"), ("median_best_ms", "median final best (ms)"), ("worst_best_ms", "worst seed (ms)"),
                   ("within5", "runs within 5% of grid optimum, trials needed"),
                   ("within1", "runs within 1%, trials needed"), ("wall", "s per run")])}

**Conclusion:** on this scenario `{best['sampler']}` ends closest to the grid optimum (median {best['median_best_ms']} ms vs
{target * 1e3:.2f} ms); every sampler beats both framework defaults by far within {n_trials} trials, and the spread between
samplers is small because many configurations are near-optimal (fp16 wire + hierarchical all-reduce). `auto` gets there
in a few trials because it starts from a batch-simulator screening; among plain samplers TPE is the most consistent.
"""
    if bench is not None:
        md += bench_section(bench)
    C.write_md("sampler_comparison.md", md)
    print(md)


def _med_trials(mts: list, trials: int) -> str:
    """Median over scenarios; a scenario whose median run never got within 1% counts as 'more than the budget'."""
    m = float(np.median([np.inf if v is None else v for v in mts]))
    return f">{trials}" if np.isinf(m) else f"{m:.0f}"


def bench_section(bench: dict) -> str:
    """Markdown + figure from bench_search.py's summary JSON (no per-trial histories there)."""
    from commtune.plots import new_figure, styled

    cells = bench["cells"]
    samplers = list(cells[0]["samplers"])
    fig = new_figure(11.0, 4.4)
    with styled():
        a1, a2 = fig.subplots(1, 2)
        x = np.arange(len(cells))
        w = 0.8 / len(samplers)
        for i, s in enumerate(samplers):
            mt = [c["samplers"][s]["median_trials_to_1pct"] for c in cells]
            lim = bench["trials"] if s != "horovod-replica" else cells[0]["samplers"][s].get("evaluations", 24)
            vals = [m if m is not None else lim for m in mt]
            bars = a1.bar(x + (i - len(samplers) / 2 + 0.5) * w, vals, w, label=s, color=f"C{i}")
            for b, m in zip(bars, mt):
                if m is None:
                    b.set_hatch("//")
            a2.bar(x + (i - len(samplers) / 2 + 0.5) * w, [max(c["samplers"][s]["median_gap"], 1e-5) * 100 for c in cells],
                   w, color=f"C{i}")
        short = {"resnet50": "RN50", "bert-base": "BERT-b", "vgg16": "VGG16"}
        labels = [f"{short.get(c['model'], c['model'])}\n{c['bw'].replace('gbit', 'G')}" for c in cells]
        for ax in (a1, a2):
            ax.set_xticks(x, labels, fontsize=8)
            ax.grid(axis="x", visible=False)
        a1.set_ylabel("median trials to within 1% of grid optimum")
        a1.set_title(f"Speed (hatched: not reached within the budget: {bench['trials']} trials, replica 24)", fontsize=10)
        a2.set_yscale("log")
        a2.set_ylabel("median gap to grid optimum after the run (%)")
        a2.set_title("Final quality (floor 0.001% = at or below the grid optimum)", fontsize=10)
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=f"C{i}", label=s) for i, s in enumerate(samplers)]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(samplers), frameon=False)
        fig.suptitle(f"bench_search.py: {bench['seeds']} seeds, {bench['trials']} trials per run")
    C.save(fig, "sampler_comparison_bench.png")
    rows = []
    for s in samplers:
        mts = [c["samplers"][s]["median_trials_to_1pct"] for c in cells]
        reached = sum(c["samplers"][s]["reached_1pct"] for c in cells)
        runs = sum(c["samplers"][s]["runs"] for c in cells)
        gaps = [c["samplers"][s]["median_gap"] for c in cells]
        rows.append({"sampler": s, "reached": f"{reached}/{runs}",
                     "mt": _med_trials(mts, bench["trials"]),
                     "gap": f"{np.median(gaps):.2%}", "worst": f"{max(gaps):.2%}",
                     "secs": f"{np.mean([c['samplers'][s]['seconds_per_run'] for c in cells]):.2f}"})
    fastest = min((r for r in rows if not r["mt"].startswith(">")), key=lambda r: float(r["mt"]))
    return f"""
## Across models and bandwidths (`experiments/bench_search.py --json {' '.join(BENCH_ARGS)}`)

ResNet-50 / BERT-base / VGG-16 at 10 / 32 / 100 Gbit/s, each against its exhaustive-grid optimum
(`bench_search.json`, figure `sampler_comparison_bench.png`; "horovod-replica" is a replica of Horovod's autotune,
{cells[0]['samplers'].get('horovod-replica', {}).get('evaluations', 24)} evaluations).

{C.md_table(rows, [("sampler", "sampler"), ("reached", "runs within 1%"), ("mt", "median over scenarios of median trials to 1%"),
                   ("gap", "median final gap"), ("worst", "worst scenario gap"), ("secs", "s per run")])}

Across the nine scenarios `{fastest['sampler']}` reaches 1% of the optimum fastest (median {fastest['mt']} trials) and
TPE is the best plain sampler; the Horovod-autotune replica (Bayesian optimisation of fusion threshold and cycle time
plus the categorical hierarchical switch, as Horovod's parameter manager does) never gets within 1%: it cannot reach
streams, fp16 on the wire or static buckets, which is where the optimum lies.
"""


if __name__ == "__main__":
    main()
