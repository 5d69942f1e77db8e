"""Benchmark the step simulator on 16x8 GPUs (vpc-32gbit), all-reduce configurations.

For each model (default ResNet-50, the headline, and BERT-base) and each mix of
stream modes (``both``: split and round robin drawn at random, ``split``: split
only), prints configurations per second of the batch engine
(``Simulator.run_batch`` on ``--batch`` random configurations) and microseconds
per configuration of ``Simulator.run`` (500 of them), each the best of
``--repeats`` repeats, on one core (BLAS threads pinned to 1). Writes
``experiments/results/bench_simulator.{json,md}`` with the machine's load
average, which these figures depend on (2 shared cores). ``--json`` prints the
JSON.

Targets (issue 26): batch >= 200,000 configurations/s with both stream modes,
one configuration <= 50 us.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from commtune.cluster import preset  # noqa: E402
from commtune.errors import CommtuneError  # noqa: E402
from commtune.knobs import Knobs  # noqa: E402
from commtune.limits import RANGES  # noqa: E402
from commtune.models import load_model  # noqa: E402
from commtune.scenario import Scenario  # noqa: E402
from experiments._common import md_table, write_json, write_md  # noqa: E402
from simulators import KnobArrays  # noqa: E402

#: the stream-mode mixes measured: name -> stream modes drawn
MIXES = {"both": ("split", "round_robin"), "split": ("split",)}
TARGET_BATCH_PER_S = 200_000
TARGET_SINGLE_US = 50.0
SINGLES = 500


def random_configs(n: int, seed: int = 0, stream_modes: tuple[str, ...] = ("split", "round_robin")) -> list[Knobs]:
    """``n`` random all-reduce configurations (``sharding: none``) drawing the given stream modes."""
    rng = np.random.default_rng(seed)
    return [Knobs(
        fusion_policy=str(rng.choice(["dynamic", "static"])),
        fusion_threshold_bytes=int(2 ** rng.uniform(16, 28)),
        first_bucket_bytes=int(2 ** rng.uniform(16, 26)),
        cycle_time_ms=float(rng.uniform(0.5, 20)),
        num_streams=int(rng.integers(1, 9)),
        stream_mode=str(rng.choice(stream_modes)),
        negotiation=str(rng.choice(["central", "decentralized"])),
        hierarchical=bool(rng.integers(0, 2)),
        wire_precision=str(rng.choice(["fp32", "fp16"])),
    ) for _ in range(n)]


def measure(model: str, mix: str, batch: int, repeats: int) -> dict:
    """Batch throughput and single-configuration latency of one model and stream-mode mix."""
    sim = Scenario(load_model(model), preset("vpc-32gbit", nodes=16, gpus_per_node=8)).simulator
    configs = random_configs(batch, stream_modes=MIXES[mix])
    arrays = KnobArrays.from_knobs(configs)
    sim.run_batch(arrays)  # warm-up (and the compiled kernels' first load)
    batch_best = min(_timed(lambda: sim.run_batch(arrays)) for _ in range(repeats))
    singles = random_configs(SINGLES, seed=1, stream_modes=MIXES[mix])
    for k in singles[:50]:
        sim.run(k)
    single_best = min(_timed(lambda: [sim.run(k) for k in singles]) for _ in range(repeats)) / len(singles)
    return {"model": model, "stream_modes": mix, "batch_evals_per_s": round(batch / batch_best),
            "single_eval_us": round(single_best * 1e6, 1)}


def _mixes(text: str) -> tuple[str, ...]:
    mixes = tuple(m.strip() for m in text.split(","))
    bad = [m for m in mixes if m not in MIXES]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r}: give a comma list of {', '.join(MIXES)}")
    return mixes


def _models(text: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in text.split(","))
    for m in models:
        try:
            load_model(m)
        except CommtuneError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the JSON result")
    ap.add_argument("--batch", type=RANGES["grid_configs"].argtype("--batch"), default=8192,
                    help="configurations per batch call (default 8192)")
    ap.add_argument("--repeats", type=RANGES["iterations"].argtype("--repeats"), default=5)
    ap.add_argument("--models", type=_models, default=("resnet50", "bert-base"),
                    help="comma list of zoo models (default resnet50,bert-base; the first is the headline)")
    ap.add_argument("--stream-modes", type=_mixes, default=tuple(MIXES),
                    help="comma list of mixes: both (split and round robin drawn), split (split only)")
    ap.add_argument("--no-write", action="store_true", help="do not write experiments/results/bench_simulator.*")
    args = ap.parse_args(argv)

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        if affinity:
            os.sched_setaffinity(0, {min(affinity)})  # one core
        rows = [measure(m, mix, args.batch, args.repeats) for m in args.models for mix in args.stream_modes]
    finally:
        if affinity:
            os.sched_setaffinity(0, affinity)
    head = rows[0]
    out = {"batch_evals_per_s": head["batch_evals_per_s"], "single_eval_us": head["single_eval_us"],
           "model": head["model"], "stream_modes": list(MIXES[head["stream_modes"]]),
           "cluster": "vpc-32gbit 16x8", "batch_size": args.batch, "repeats": args.repeats, "rows": rows,
           "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()], "nice": os.nice(0),
           "cpus": os.cpu_count(), "targets": {"batch_evals_per_s": TARGET_BATCH_PER_S,
                                               "single_eval_us": TARGET_SINGLE_US}}
    if not args.no_write:
        write_json("bench_simulator.json", out)
        write_md("bench_simulator.md", _summary(out))
    if args.json:
        print(json.dumps(out))
    else:
        for r in rows:
            print(f"{r['model']:<10} {r['stream_modes']:<6} batch engine {r['batch_evals_per_s']:>10,} "
                  f"configurations/s ({args.batch} per call)   single {r['single_eval_us']:>6} us (Simulator.run)")
        print(f"load average {out['load_avg_1_5_15']} on {out['cpus']} cores, nice {out['nice']}")
    return 0


def _summary(out: dict) -> str:
    rows = [{**r, "batch": f"{r['batch_evals_per_s']:,}", "single": f"{r['single_eval_us']}",
             "met": _verdict(r)} for r in out["rows"]]
    return (f"# Simulator speed (`experiments/bench_simulator.py`)\n\n"
            f"{out['cluster']}, all-reduce configurations (`sharding: none`), {out['batch_size']:,} random "
            f"configurations per batch call, {SINGLES} single calls, best of {out['repeats']}, one core; "
            f"load average {out['load_avg_1_5_15']} on {out['cpus']} cores (nice {out['nice']}). "
            f"`both`: split and round robin drawn; `split`: split only. Targets (issue 26, for the headline "
            f"{out['model']} with both stream modes): batch >= {TARGET_BATCH_PER_S:,} configurations/s, one "
            f"configuration <= {TARGET_SINGLE_US:g} us; figures on a loaded machine are lower bounds.\n\n"
            + md_table(rows, [("model", "model"), ("stream_modes", "stream modes"),
                              ("batch", "batch engine (configurations/s)"), ("single", "one configuration (us)"),
                              ("met", "targets met here")]) + "\n")


def _verdict(r: dict) -> str:
    """Which targets this row meets: the batch one applies to both stream modes only."""
    single = f"single: {'yes' if r['single_eval_us'] <= TARGET_SINGLE_US else 'no'}"
    if r["stream_modes"] != "both":
        return single
    return f"batch: {'yes' if r['batch_evals_per_s'] >= TARGET_BATCH_PER_S else 'no'}, {single}"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
