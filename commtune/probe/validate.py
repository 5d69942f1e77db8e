"""``commtune validate``: run configurations live and in the calibrated simulator, compare.

Live: real DDP steps of the synthetic model (:class:`commtune.evaluators.live.LiveEvaluator`). Simulated:
the :class:`~simulators.Simulator` on the *same* timeline (the Workload built
from the per-layer times the synthetic model sleeps) and a ClusterSpec with
``nodes`` = hosts and ``gpus_per_node`` = ranks per host taken from the
calibration file (so its per-stream fits are used when the world size matches).

Reported: mean absolute percentage error, Spearman rank correlation, the
simulator's pick and its gap to the live best, and whether that gap is within
the run-to-run noise of the live measurements (the largest relative spread,
(max - min) / median, of the timed steps of the two configurations).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from commtune.cluster import ClusterSpec, load_cluster_file
from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, Knobs
from commtune.stats import mape, spearman
from commtune.units import MiB, format_size



def grid_configs(buckets_bytes: Sequence[int] = (1 * MiB, 5 * MiB, 25 * MiB, 100 * MiB),
                 streams: Sequence[int] = (1, 2, 4), wire: Sequence[str] = ("fp32",),
                 first_bucket_bytes: int = 1 * MiB) -> list[Knobs]:
    """DDP configurations: every bucket cap x stream count x wire precision."""
    return [dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=int(b), num_streams=int(k), wire_precision=w,
                                first_bucket_bytes=int(first_bucket_bytes))
            for w in wire for k in streams for b in buckets_bytes]


def sim_cluster(calib: ClusterSpec | str, hosts: int, world_size: int) -> ClusterSpec:
    spec = load_cluster_file(calib) if isinstance(calib, (str, os.PathLike)) else calib
    if world_size % hosts:
        raise CommtuneError(f"{world_size} ranks do not divide over {hosts} hosts")
    return dataclasses.replace(spec, nodes=hosts, gpus_per_node=world_size // hosts)


def compare(predicted: Sequence[float], measured: Sequence[float], spreads: Sequence[float] | None = None) -> dict:
    """MAPE, Spearman, pick gap (simulator's best measured vs the measured best)."""
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    rho = spearman(p, m)
    sim_best = int(np.argmin(p))
    live_best = int(np.argmin(m))
    gap = float(m[sim_best] / m[live_best] - 1.0)
    noise = float(max(spreads[sim_best], spreads[live_best])) if spreads is not None else 0.0
    return {"mape": mape(p, m), "spearman": rho, "sim_best": sim_best, "live_best": live_best, "pick_gap": gap,
            "noise": noise, "pick_within_noise": bool(gap <= noise)}


def describe_knobs(k: Knobs) -> str:
    s = f"bucket {format_size(k.fusion_threshold_bytes)}, {k.num_streams} stream{'s' if k.num_streams > 1 else ''}"
    if k.num_streams > 1:
        s += f" ({k.stream_mode})"
    if k.wire_precision != "fp32":
        s += f", {k.wire_precision} wire"
    return s


def run_validation(launch, calib, configs: Sequence[Knobs], model="resnet50", *, scale: float = 0.25,
                   forward_s: float = 0.1, backward_s: float = 0.2, share: str = "flops", steps: int = 5,
                   warmup: int = 2, mode: str | None = None, network=None, evaluator=None, passes: int = 1) -> dict:
    """Run ``configs`` live and simulated; returns rows and summary figures.
    ``mode`` (split/round_robin) overrides every configuration's stream_mode."""
    from commtune.evaluators.live import LiveEvaluator, LiveSettings
    from simulators import Simulator

    if mode is not None:
        configs = [dataclasses.replace(k, stream_mode=mode) for k in configs]
    ev = evaluator or LiveEvaluator(model, LiveSettings(launch, scale=scale, forward_s=forward_s, backward_s=backward_s,
                                                        share=share, steps=steps, warmup=warmup, passes=passes))
    cluster = sim_cluster(calib, launch.hosts, launch.world_size)
    sim = Simulator(ev.workload, cluster, network=network)
    live = ev.evaluate_many(configs)
    rows = []
    for k, r in zip(configs, live):
        st = r["step_times_s"]
        pred = sim.run(k)
        rows.append({"config": describe_knobs(k), "knobs": k.to_dict(), "measured_s": r["step_time_s"],
                     "predicted_s": pred.step_time_s, "spread": (max(st) - min(st)) / r["step_time_s"],
                     "live_buckets": r["num_buffers"], "sim_buckets": pred.num_buffers,
                     "step_times_s": list(st), "pass_medians_s": r.get("pass_medians_s", [r["step_time_s"]])})
    summary = compare([r["predicted_s"] for r in rows], [r["measured_s"] for r in rows], [r["spread"] for r in rows])
    return {"rows": rows, "summary": summary, "cluster": cluster.to_dict(),
            "network": type(sim.network).__name__, "model": ev.profile.name,
            "total_grad_bytes": int(ev.workload.total_grad_bytes)}


def format_report(res: dict) -> str:
    lines = [f"{'configuration':<30} {'measured':>10} {'predicted':>10} {'error':>8} {'spread':>7}"]
    for r in res["rows"]:
        err = r["predicted_s"] / r["measured_s"] - 1
        lines.append(f"{r['config']:<30} {r['measured_s'] * 1e3:>8.1f}ms {r['predicted_s'] * 1e3:>8.1f}ms "
                     f"{err:>+8.1%} {r['spread']:>7.1%}")
    s = res["summary"]
    rows = res["rows"]
    lines.append(f"MAPE {s['mape']:.2%}, Spearman {s['spearman']:.3f}; simulator's pick: {rows[s['sim_best']]['config']} "
                 f"(live best: {rows[s['live_best']]['config']}), gap {s['pick_gap']:.2%} "
                 f"({'within' if s['pick_within_noise'] else 'beyond'} noise {s['noise']:.2%})")
    return "\n".join(lines)


def fidelity_points(res: dict) -> list[dict]:
    """The rows of a validation result as points for :func:`commtune.plots.fidelity.draw_fidelity`,
    grouped by stream count."""
    return [{"predicted_s": r["predicted_s"], "measured_s": r["measured_s"], "label": r["config"],
             "group": f"{r['knobs']['num_streams']} stream{'s' if r['knobs']['num_streams'] > 1 else ''}"}
            for r in res["rows"]]


def plot(res: dict, path: str, title: str = "") -> str:
    """Write the predicted-vs-measured scatter (PNG/SVG/PDF by extension) atomically."""
    from commtune.plots.fidelity import save_fidelity

    s = res["summary"]
    return save_fidelity(fidelity_points(res), path, title=title or f"MAPE {s['mape']:.1%}, Spearman {s['spearman']:.2f}")
