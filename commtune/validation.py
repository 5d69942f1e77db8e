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

Orchestration: above what it compares and draws (:mod:`commtune.evaluators`,
:mod:`commtune.probe`, ``simulators``, :mod:`commtune.plots`), below the API and the
CLI. Layers: ``tests/test_architecture.py``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from commtune.cluster import ClusterSpec, load_cluster_file
from commtune.errors import CommtuneError
from commtune.host_load import CPU_BOUND_SHARE, cpu_bound
from commtune.knobs import DDP_DEFAULT, KNOBS, Knobs
from commtune.stats import mape, relative_spread, resolved_concordance, spearman
from commtune.units import MiB, format_size



def grid_configs(buckets_bytes: Sequence[int] = (1 * MiB, 5 * MiB, 25 * MiB, 100 * MiB),
                 streams: Sequence[int] = (1, 2, 4), wire: Sequence[str] = ("fp32",),
                 first_bucket_bytes: int = 1 * MiB) -> list[Knobs]:
    """DDP configurations: every bucket cap x stream count x wire precision."""
    return [dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=int(b), num_streams=int(k), wire_precision=w,
                                first_bucket_bytes=int(first_bucket_bytes))
            for w in wire for k in streams for b in buckets_bytes]


def held_out_configs(calib: ClusterSpec | None, n: int = 12, seed: int = 0, bucket_range: tuple[int, int] = (MiB, 1024 * MiB),
                     max_bucket_bytes: int | None = None, max_streams: int = 8,
                     modes: Sequence[str] = ("split", "round_robin")) -> list[Knobs]:
    """``n`` DDP configurations calibration did not use: bucket caps drawn log-uniformly
    from ``bucket_range`` (the search range; above ``max_bucket_bytes``, e.g. the model's
    gradient bytes, every cap is one bucket, so the draw stops there), stream counts
    1..``max_streams`` with every other point at a count the probe did not measure
    (when there is one), stream modes alternating over ``modes``."""
    rng = np.random.default_rng(seed)
    lo, hi = bucket_range
    if max_bucket_bytes:
        hi = max(lo * 2, min(hi, int(max_bucket_bytes)))
    probed = set(calib.meta.get("fit", {}).get("calibrated", {}).get("streams", [])) if calib is not None and calib.meta else set()
    unprobed = [k for k in range(1, max_streams + 1) if k not in probed]
    modes = list(modes)
    out: list[Knobs] = []
    seen = set()
    while len(out) < n:
        i = len(out)
        bucket = int(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        k = int(rng.choice(unprobed)) if unprobed and i % 2 == 0 else int(rng.integers(1, max_streams + 1))
        mode = modes[(i // 2) % len(modes)]
        knobs = dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=bucket, num_streams=k, first_bucket_bytes=MiB,
                                    stream_mode=mode)
        key = (bucket >> 16, k, mode)
        if key not in seen:
            seen.add(key)
            out.append(knobs)
    return out


def parse_configs(text: str) -> list[Knobs]:
    """``"25MiB:2,4MiB:3:round_robin"``: bucket cap, stream count and (optional) stream mode per entry."""
    from commtune.units import parse_size

    out = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise CommtuneError(f"--configs entry {entry!r}: expected BUCKET:STREAMS[:MODE], e.g. 25MiB:2:split")
        bucket = parse_size(parts[0], "--configs bucket", allow_zero=False)
        try:
            k = int(parts[1])
        except ValueError:
            raise CommtuneError(f"--configs entry {entry!r}: streams must be an integer") from None
        if not 1 <= k <= 64:
            raise CommtuneError(f"--configs entry {entry!r}: streams must be 1-64")
        kw = dict(fusion_threshold_bytes=bucket, num_streams=k, first_bucket_bytes=MiB)
        if len(parts) == 3:
            if parts[2] not in KNOBS["stream_mode"].choices:
                raise CommtuneError(f"--configs entry {entry!r}: mode must be split or round_robin")
            kw["stream_mode"] = parts[2]
        out.append(dataclasses.replace(DDP_DEFAULT, **kw))
    if not out:
        raise CommtuneError("--configs is empty; give e.g. 25MiB:2,4MiB:3")
    return out


def sim_cluster(calib: ClusterSpec | str, hosts: int, world_size: int) -> ClusterSpec:
    spec = load_cluster_file(calib) if isinstance(calib, (str, os.PathLike)) else calib
    if world_size % hosts:
        raise CommtuneError(f"{world_size} ranks do not divide over {hosts} hosts")
    return dataclasses.replace(spec, nodes=hosts, gpus_per_node=world_size // hosts)


def compare(predicted: Sequence[float], measured: Sequence[float], spreads: Sequence[float] | None = None,
            pass_spreads: Sequence[float] | None = None) -> dict:
    """MAPE, worst error, Spearman, pick gap (simulator's best measured vs the measured best),
    and the order kept over the pairs the measurement resolves (``concordance`` of
    ``resolved_pairs``; :func:`commtune.stats.resolved_concordance` with ``pass_spreads``)."""
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    err = np.abs(p - m) / m
    rho = spearman(p, m)
    sim_best = int(np.argmin(p))
    live_best = int(np.argmin(m))
    gap = float(m[sim_best] / m[live_best] - 1.0)
    noise = float(max(spreads[sim_best], spreads[live_best])) if spreads is not None else 0.0
    conc, resolved, pairs = resolved_concordance(p, m, pass_spreads if pass_spreads is not None else np.zeros(len(m)))
    return {"mape": mape(p, m), "worst": float(np.max(err)), "worst_index": int(np.argmax(err)), "spearman": rho,
            "concordance": conc, "resolved_pairs": resolved, "pairs": pairs,
            "sim_best": sim_best, "live_best": live_best, "pick_gap": gap,
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
                   warmup: int = 2, mode: str | None = None, network=None, evaluator=None, passes: int = 1,
                   repeat_noisy: int = 0, drift_from: str | os.PathLike | None = None) -> dict:
    """Run ``configs`` live and simulated; returns rows and summary figures.
    ``mode`` (split/round_robin) overrides every configuration's stream_mode; ``passes`` and
    ``repeat_noisy``: see :meth:`commtune.evaluators.live.LiveEvaluator.evaluate_many`.
    ``drift_from`` (a calibration file): afterwards re-time its anchors (:mod:`commtune.probe.drift`),
    in the result as ``drift``."""
    from commtune.evaluators.live import LiveEvaluator, LiveSettings
    from simulators import Simulator

    if mode is not None:
        configs = [dataclasses.replace(k, stream_mode=mode) for k in configs]
    ev = evaluator or LiveEvaluator(model, LiveSettings(launch, scale=scale, forward_s=forward_s, backward_s=backward_s,
                                                        share=share, steps=steps, warmup=warmup, passes=passes,
                                                        repeat_noisy=repeat_noisy))
    cluster = sim_cluster(calib, launch.hosts, launch.world_size)
    sim = Simulator(ev.workload, cluster, network=network)
    try:
        live = ev.evaluate_many(configs)
    finally:
        if evaluator is None:  # its ranks exit now, not after this process (nor beside the drift check's)
            ev.close()
    rows = []
    for k, r in zip(configs, live):
        st = r["step_times_s"]
        passes = r.get("pass_medians_s", [r["step_time_s"]])
        pred = sim.run(k)
        flags = sim.network.extrapolation(k)
        rows.append({"config": describe_knobs(k), "knobs": k.to_dict(), "mode": k.stream_mode,
                     "measured_s": r["step_time_s"], "predicted_s": pred.step_time_s,
                     "error": pred.step_time_s / r["step_time_s"] - 1,
                     "spread": (max(st) - min(st)) / r["step_time_s"],
                     "pass_spread": relative_spread(passes),
                     "live_buckets": r["num_buffers"], "sim_buckets": pred.num_buffers,
                     "step_times_s": list(st), "pass_medians_s": passes,
                     "extrapolation": flags,
                     "host_busy_cores": r.get("host_busy_cores"), "host_cores": r.get("host_cores")})
    summary = compare([r["predicted_s"] for r in rows], [r["measured_s"] for r in rows], [r["spread"] for r in rows],
                      [r["pass_spread"] for r in rows])
    summary["cpu_bound_points"] = sum(cpu_bound(r["host_busy_cores"], r["host_cores"]) for r in rows)
    res = {"rows": rows, "summary": summary, "cluster": cluster.to_dict(),
           "network": type(sim.network).__name__, "model": ev.profile.name,
           "total_grad_bytes": int(ev.workload.total_grad_bytes)}
    if drift_from is not None:
        from commtune.probe.drift import drift_for

        res["drift"] = drift_for(launch, drift_from)
    return res


def format_report(res: dict) -> str:
    lines = [f"{'configuration':<42} {'measured':>10} {'predicted':>10} {'error':>8} {'spread':>7}  note"]
    for r in res["rows"]:
        err = r["predicted_s"] / r["measured_s"] - 1
        notes = [("EXTRAPOLATION " if not f["modelled"] else "") + f["kind"] for f in r.get("extrapolation", [])]
        if cpu_bound(r.get("host_busy_cores"), r.get("host_cores")):
            notes.append(f"CPU-BOUND {r['host_busy_cores']:.1f}/{r['host_cores']} cores")
        note = "; ".join(notes)
        lines.append(f"{r['config']:<42} {r['measured_s'] * 1e3:>8.1f}ms {r['predicted_s'] * 1e3:>8.1f}ms "
                     f"{err:>+8.1%} {r['spread']:>7.1%}  {note}")
    s = res["summary"]
    rows = res["rows"]
    if "resolved_pairs" in s:
        lines.append(f"order kept in {s['concordance']:.0%} of the {s['resolved_pairs']} of {s['pairs']} pairs the "
                     f"measurement resolves (apart by more than their pass spread and 2%)")
    lines.append(f"MAPE {s['mape']:.2%}, worst {s['worst']:.2%} ({rows[s['worst_index']]['config']}), Spearman {s['spearman']:.3f}; simulator's pick: {rows[s['sim_best']]['config']} "
                 f"(live best: {rows[s['live_best']]['config']}), gap {s['pick_gap']:.2%} "
                 f"({'within' if s['pick_within_noise'] else 'beyond'} noise {s['noise']:.2%})")
    if s.get("cpu_bound_points"):
        lines.append(cpu_bound_note(s["cpu_bound_points"], len(rows)))
    if res.get("drift"):
        from commtune.probe.drift import format_drift

        lines.append(format_drift(res["drift"]))
    return "\n".join(lines)


def cpu_bound_note(points: int, total: int) -> str:
    """The report's line when ``points`` of ``total`` configurations ran CPU-bound."""
    return (f"{points} of {total} configurations kept at least {CPU_BOUND_SHARE:.0%} of the host's cores busy while "
            "timed (CPU-BOUND): the simulator models no CPU limit, and on an emulated cluster every host shares "
            "this machine's cores, so those live steps include contention that separate hosts would not have")


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
