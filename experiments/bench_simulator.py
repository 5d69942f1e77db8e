"""Benchmark the step simulator: all-reduce on 16x8 GPUs (vpc-32gbit), sharded on 4x8.

Claim: the simulator is fast enough to search exhaustively -- the batch engine
evaluates >= 200,000 configurations/s (all-reduce with both stream modes, and
sharded) and one configuration (``Simulator.run``) takes <= 50 us, on one core
(issue 26).
Runs: ~15 s. Root: no.
Writes: ``experiments/results/bench_simulator.{md,json,png}``.

For each model (default ResNet-50, the headline, and BERT-base) and each mix of
stream modes (``both``: split and round robin drawn at random, ``split``: split
only): configurations per second of the batch engine (``Simulator.run_batch``
on ``--batch`` random configurations) and microseconds per configuration of
``Simulator.run`` (500 of them), each the best of ``--repeats`` repeats, on one
core (BLAS threads pinned to 1). The sharded row (``sharded_*``) times the
per-unit timeline (:mod:`simulators.sharded`) on GPT-2 wrapped per transformer
block (13 units), 4x8 GPUs, random ``grad``/``full``/``hybrid`` configurations
over 5 ``unit_bytes`` values. The results record the machine's load average,
which these figures depend on (2 shared cores). ``--json`` prints the JSON.

    python experiments/bench_simulator.py [--models resnet50] [--stream-modes both] [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
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
from experiments._common import md_table, save, write_json, write_md  # noqa: E402
from simulators import KnobArrays  # noqa: E402

#: the stream-mode mixes measured: name -> stream modes drawn
MIXES = {"both": ("split", "round_robin"), "split": ("split",)}
#: the targets the simulator is held to (configurations/s of the batch engine, us per single run; issue 26)
TARGETS = {"batch_evals_per_s": 200_000, "single_eval_us": 50.0}
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


def random_sharded_configs(n: int, seed: int = 0) -> list[Knobs]:
    """``n`` random sharded configurations (``grad``/``full``/``hybrid``, 5 unit sizes)."""
    rng = np.random.default_rng(seed)
    return [Knobs(
        sharding=str(rng.choice(["grad", "full", "hybrid"])),
        unit_bytes=int(rng.choice([0, 2**20, 4 * 2**20, 16 * 2**20, 64 * 2**20])),
        forward_prefetch=int(rng.integers(0, 5)), backward_prefetch=int(rng.integers(0, 5)),
        reshard_after_forward=[True, False, 2][int(rng.integers(0, 3))],
        reduce_precision=str(rng.choice(["fp32", "bf16"])),
        num_streams=int(rng.integers(1, 5)),
    ) for _ in range(n)]


def sharded_simulator():
    """GPT-2 with one unit per transformer block (``h.N``) on vpc-32gbit 4x8."""
    model = load_model("gpt2")
    layers = tuple(dataclasses.replace(layer, block=".".join(layer.name.split(".")[:2]))
                   if layer.name.startswith("h.") else layer for layer in model.layers)
    return Scenario(dataclasses.replace(model, layers=layers), preset("vpc-32gbit", nodes=4, gpus_per_node=8),
                    batch_size=8).simulator


def _rates(sim, configs: list[Knobs], singles: list[Knobs], repeats: int) -> tuple[int, float]:
    """(configurations/s of run_batch on ``configs``, microseconds per Simulator.run over ``singles``),
    each the best of ``repeats``."""
    arrays = KnobArrays.from_knobs(configs)
    sim.run_batch(arrays)  # warm-up (and the compiled kernels' first load)
    batch_best = min(_timed(lambda: sim.run_batch(arrays)) for _ in range(repeats))
    for k in singles[:50]:
        sim.run(k)
    single_best = min(_timed(lambda: [sim.run(k) for k in singles]) for _ in range(repeats)) / len(singles)
    return round(len(configs) / batch_best), round(single_best * 1e6, 1)


def measure(model: str, mix: str, batch: int, repeats: int) -> dict:
    """Batch throughput and single-configuration latency of one model and stream-mode mix."""
    sim = Scenario(load_model(model), preset("vpc-32gbit", nodes=16, gpus_per_node=8)).simulator
    rate, us = _rates(sim, random_configs(batch, stream_modes=MIXES[mix]),
                      random_configs(SINGLES, seed=1, stream_modes=MIXES[mix]), repeats)
    return {"model": model, "stream_modes": mix, "batch_evals_per_s": rate, "single_eval_us": us}


def measure_sharded(batch: int, repeats: int) -> dict:
    """The sharded row: GPT-2 per block on 4x8 (:func:`sharded_simulator`)."""
    rate, us = _rates(sharded_simulator(), random_sharded_configs(batch), random_sharded_configs(SINGLES, seed=1),
                      repeats)
    return {"model": "gpt2 (13 units)", "stream_modes": "sharded", "batch_evals_per_s": rate, "single_eval_us": us}


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
    ap.add_argument("--no-sharded", action="store_true", help="leave out the sharded row")
    ap.add_argument("--no-write", action="store_true", help="do not write experiments/results/bench_simulator.*")
    args = ap.parse_args(argv)

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        if affinity:
            os.sched_setaffinity(0, {min(affinity)})  # one core
        rows = [measure(m, mix, args.batch, args.repeats) for m in args.models for mix in args.stream_modes]
        sharded = None if args.no_sharded else measure_sharded(args.batch, args.repeats)
    finally:
        if affinity:
            os.sched_setaffinity(0, affinity)
    head = rows[0]
    out = {"batch_evals_per_s": head["batch_evals_per_s"], "single_eval_us": head["single_eval_us"],
           "model": head["model"], "stream_modes": list(MIXES[head["stream_modes"]]),
           "cluster": "vpc-32gbit 16x8", "batch_size": args.batch, "repeats": args.repeats, "rows": rows}
    if sharded is not None:
        out.update({"sharded_batch_evals_per_s": sharded["batch_evals_per_s"],
                    "sharded_single_eval_us": sharded["single_eval_us"], "sharded_model": sharded["model"],
                    "sharded_cluster": "vpc-32gbit 4x8"})
    load = os.getloadavg()
    out.update({"targets": TARGETS, "loadavg_1min": round(load[0], 2), "load_avg_1_5_15": [round(x, 2) for x in load],
                "nice": os.nice(0), "cpus": os.cpu_count()})
    if not args.no_write:
        write_results(out, rows + ([sharded] if sharded else []))
    if args.json:
        print(json.dumps(out))
    else:
        for r in rows + ([sharded] if sharded else []):
            print(f"{r['model']:<15} {r['stream_modes']:<7} batch engine {r['batch_evals_per_s']:>10,} "
                  f"configurations/s ({args.batch} per call)   single {r['single_eval_us']:>6} us (Simulator.run)")
        print(f"load average {out['load_avg_1_5_15']} on {out['cpus']} cores, nice {out['nice']}")
    return 0


def write_results(out: dict, rows: list[dict]) -> None:
    """``bench_simulator.{json,md,png}``: every row's figures against the targets."""
    from commtune.plots import new_figure, styled

    write_json("bench_simulator.json", out)
    table = [{**r, "batch": f"{r['batch_evals_per_s']:,}", "single": f"{r['single_eval_us']}",
              "met": _verdict(r)} for r in rows]
    write_md("bench_simulator.md", (
        f"# Simulator speed (`experiments/bench_simulator.py`)\n\n"
        f"All-reduce rows: {out['cluster']} (`sharding: none`); sharded row: {out.get('sharded_cluster', '-')}. "
        f"{out['batch_size']:,} random configurations per batch call, {SINGLES} single calls, best of "
        f"{out['repeats']}, one core; load average {out['load_avg_1_5_15']} on {out['cpus']} cores (nice "
        f"{out['nice']}). `both`: split and round robin drawn; `split`: split only. Targets (issue 26): batch >= "
        f"{TARGETS['batch_evals_per_s']:,} configurations/s with both stream modes and sharded, one configuration "
        f"<= {TARGETS['single_eval_us']:g} us; figures on a loaded machine are lower bounds. Figure: "
        f"`bench_simulator.png`; data: `bench_simulator.json`.\n\n"
        + md_table(table, [("model", "model"), ("stream_modes", "configurations"),
                           ("batch", "batch engine (configurations/s)"), ("single", "one configuration (us)"),
                           ("met", "targets met here")]) + "\n"))
    labels = [f"{r['model']} {r['stream_modes']}" for r in rows]
    fig = new_figure(9.0, 0.5 + 0.45 * len(rows) + 1.5)
    with styled():
        ax1, ax2 = fig.subplots(1, 2, sharey=True)
        ax1.barh(labels, [r["batch_evals_per_s"] for r in rows], color="C0")
        ax1.axvline(TARGETS["batch_evals_per_s"], color="C3", ls="--", label="target (at least)")
        ax1.set_xlabel("batch engine, configurations/s")
        ax2.barh(labels, [r["single_eval_us"] for r in rows], color="C1")
        ax2.axvline(TARGETS["single_eval_us"], color="C3", ls="--", label="target (at most)")
        ax2.set_xlabel("Simulator.run, us per configuration")
        for ax in (ax1, ax2):
            ax.legend(fontsize=8)
        fig.suptitle(f"Simulator speed, one core (load {out['loadavg_1min']})")
    save(fig, "bench_simulator.png")


def _verdict(r: dict) -> str:
    """Which targets this row meets: the batch one applies to both stream modes and sharded."""
    single = f"single: {'yes' if r['single_eval_us'] <= TARGETS['single_eval_us'] else 'no'}"
    if r["stream_modes"] == "split":
        return single
    return f"batch: {'yes' if r['batch_evals_per_s'] >= TARGETS['batch_evals_per_s'] else 'no'}, {single}"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
