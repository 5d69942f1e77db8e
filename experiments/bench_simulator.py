"""Benchmark the step simulator: ResNet-50 on 16x8 GPUs (vpc-32gbit).

Claim: the simulator is fast enough to search exhaustively -- the batch engine
evaluates >= 10,000 configurations/s and one configuration (``Simulator.run``)
takes <= 200 us, on one core; sharded configurations (issue 26): >= 200,000/s
batched and <= 50 us for one.
Runs: ~5 s. Root: no.
Writes: ``experiments/results/bench_simulator.{md,json,png}``.

Prints configurations per second for the batch engine and microseconds per
single evaluation (``Simulator.run``), each the best of several repeats, on
one core (BLAS threads pinned to 1). ``--json`` prints
``{"batch_evals_per_s": ..., "single_eval_us": ...}``. The sharded rows
(``sharded_*``) time the per-unit timeline (:mod:`simulators.sharded`) on
GPT-2 wrapped per transformer block (13 units), 4x8 GPUs, random
``grad``/``full``/``hybrid`` configurations over 5 ``unit_bytes`` values;
``sharded_cold_single_eval_us`` runs each of them once with a new ``unit_bytes``
(continuous, 1-256 MiB) on a fresh simulator: every unit plan is built, none is
cached (what a search over a continuous ``unit_bytes`` pays).

    python experiments/bench_simulator.py [--stream-modes split] [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import _common as C  # noqa: E402
from commtune.cluster import preset  # noqa: E402
from commtune.knobs import Knobs  # noqa: E402
from commtune.models import load_model  # noqa: E402
from commtune.scenario import Scenario  # noqa: E402
from simulators import KnobArrays  # noqa: E402

#: the targets the simulator is held to (configurations/s of the batch engine, us per single run)
TARGETS = {"batch_evals_per_s": 10_000, "single_eval_us": 200.0}
#: the same for sharded configurations (issue 26's targets)
SHARDED_TARGETS = {"batch_evals_per_s": 200_000, "single_eval_us": 50.0}


def random_configs(n: int, seed: int = 0, stream_modes: tuple[str, ...] = ("split", "round_robin")) -> list[Knobs]:
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


def _rates(sim, configs, repeats: int) -> tuple[float, float]:
    """(configurations/s of run_batch, microseconds per Simulator.run), best of ``repeats``."""
    arrays = KnobArrays.from_knobs(configs)
    sim.run_batch(arrays)  # warm-up (and numba compilation)
    batch_best = min(_timed(lambda: sim.run_batch(arrays)) for _ in range(repeats))
    singles = configs[:500]
    for k in singles[:50]:
        sim.run(k)
    single_best = min(_timed(lambda: [sim.run(k) for k in singles]) for _ in range(repeats)) / len(singles)
    return len(configs) / batch_best, single_best * 1e6


def _cold_single_us(configs: list[Knobs], repeats: int, seed: int = 1) -> float:
    """Microseconds per ``Simulator.run`` of sharded ``configs``, each with its own new
    ``unit_bytes``, on a fresh simulator per repeat (no unit plan cached), best of ``repeats``."""
    rng = np.random.default_rng(seed)
    configs = [dataclasses.replace(k, unit_bytes=int(2 ** rng.uniform(20, 28))) for k in configs]
    best = float("inf")
    for _ in range(repeats):
        sim = sharded_simulator()
        sim.run(configs[0])  # the network's coefficient tables, the compiled kernels
        best = min(best, _timed(lambda: [sim.run(k) for k in configs[1:]]) / (len(configs) - 1))
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--batch", type=int, default=8192, help="configurations per batch call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stream-modes", default="split,round_robin",
                    help="stream modes drawn for the configurations (default both; 'split' = the mix before "
                         "round robin was modelled, which needs no ring of buffer ends)")
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    except (AttributeError, OSError):
        pass

    sim = Scenario(load_model("resnet50"), preset("vpc-32gbit", nodes=16, gpus_per_node=8)).simulator
    modes = tuple(args.stream_modes.split(","))
    batch_rate, single_us = _rates(sim, random_configs(args.batch, stream_modes=modes), args.repeats)
    sharded_configs = random_sharded_configs(args.batch)
    sharded_rate, sharded_us = _rates(sharded_simulator(), sharded_configs, args.repeats)
    cold_us = _cold_single_us(sharded_configs[:500], args.repeats)

    out = {"batch_evals_per_s": round(batch_rate), "single_eval_us": round(single_us, 1),
           "model": "resnet50", "cluster": "vpc-32gbit 16x8", "batch_size": args.batch,
           "stream_modes": list(modes),
           "sharded_batch_evals_per_s": round(sharded_rate), "sharded_single_eval_us": round(sharded_us, 1),
           "sharded_cold_single_eval_us": round(cold_us, 1),
           "sharded_model": "gpt2 (13 units)", "sharded_cluster": "vpc-32gbit 4x8"}
    out["targets"] = TARGETS
    out["sharded_targets"] = SHARDED_TARGETS
    out["loadavg_1min"] = round(os.getloadavg()[0], 2)
    write_results(out)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"batch engine : {out['batch_evals_per_s']:,} configurations/s ({args.batch} per call)")
        print(f"single eval  : {out['single_eval_us']} us per configuration (Simulator.run)")
        print(f"sharded batch: {out['sharded_batch_evals_per_s']:,} configurations/s ({args.batch} per call)")
        print(f"sharded eval : {out['sharded_single_eval_us']} us per configuration (Simulator.run)")
        print(f"sharded cold : {out['sharded_cold_single_eval_us']} us per configuration (a new unit_bytes each)")


def write_results(out: dict) -> None:
    """``bench_simulator.{json,md,png}``: the figures against their targets."""
    from commtune.plots import new_figure, styled

    C.write_json("bench_simulator.json", out)
    batch_ok = out["batch_evals_per_s"] >= TARGETS["batch_evals_per_s"]
    single_ok = out["single_eval_us"] <= TARGETS["single_eval_us"]
    rows = [{"what": f"batch engine ({out['batch_size']} configurations per call)",
             "measured": f"{out['batch_evals_per_s']:,} configurations/s",
             "target": f">= {TARGETS['batch_evals_per_s']:,}", "met": "yes" if batch_ok else "no"},
            {"what": "one configuration (`Simulator.run`)", "measured": f"{out['single_eval_us']} us",
             "target": f"<= {TARGETS['single_eval_us']:g} us", "met": "yes" if single_ok else "no"},
            {"what": f"sharded batch ({out['sharded_model']}, {out['sharded_cluster']})",
             "measured": f"{out['sharded_batch_evals_per_s']:,} configurations/s",
             "target": f">= {SHARDED_TARGETS['batch_evals_per_s']:,}",
             "met": "yes" if out["sharded_batch_evals_per_s"] >= SHARDED_TARGETS["batch_evals_per_s"] else "no"}]
    for key, what in (("sharded_single_eval_us", "one sharded configuration (`Simulator.run`)"),
                      ("sharded_cold_single_eval_us", "one sharded configuration, a new `unit_bytes` each")):
        rows.append({"what": what, "measured": f"{out[key]} us",
                     "target": f"<= {SHARDED_TARGETS['single_eval_us']:g} us",
                     "met": "yes" if out[key] <= SHARDED_TARGETS["single_eval_us"] else "no"})
    C.write_md("bench_simulator.md", f"""# Simulator speed (ResNet-50, 16 x 8 GPUs, vpc-32gbit, one core)

`python experiments/bench_simulator.py`; stream modes drawn: {", ".join(out["stream_modes"])}; best of the
repeats; load average (1 min) at the end {out["loadavg_1min"]}. Figure: `bench_simulator.png`; data:
`bench_simulator.json`.

{C.md_table(rows, [("what", ""), ("measured", "measured"), ("target", "target"), ("met", "met")])}
""")
    fig = new_figure(8.0, 3.2)
    with styled():
        ax1, ax2 = fig.subplots(1, 2)
        ax1.barh(["measured"], [out["batch_evals_per_s"]], color="C0")
        ax1.axvline(TARGETS["batch_evals_per_s"], color="C3", ls="--", label="target (at least)")
        ax1.set_xlabel("batch engine, configurations/s")
        ax2.barh(["measured"], [out["single_eval_us"]], color="C1")
        ax2.axvline(TARGETS["single_eval_us"], color="C3", ls="--", label="target (at most)")
        ax2.set_xlabel("Simulator.run, us per configuration")
        for ax in (ax1, ax2):
            ax.legend(fontsize=8)
        fig.suptitle(f"Simulator speed, one core (stream modes: {', '.join(out['stream_modes'])})")
    C.save(fig, "bench_simulator.png")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
