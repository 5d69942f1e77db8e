"""``commtune validate``: run configurations live and in the calibrated simulator, compare.

Live: real DDP steps (``sharding: none``) or FSDP2 steps (``grad`` / ``full`` / ``hybrid``:
:func:`held_out_sharded`, :func:`parse_sharded_configs`; the simulator's sharded timeline
predicts them) of the synthetic model (:class:`commtune.evaluators.live.LiveEvaluator`). Simulated:
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
from commtune.knobs import DDP_DEFAULT, FSDP2_DEFAULT, KNOBS, SHARDED, Knobs
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


#: the most units ahead that a held-out draw prefetches (the fsdp space's range; FSDP2 caps it to the units)
PREFETCH_MAX = 4
#: the smallest unit cap a held-out draw takes, as a share of the model's parameter bytes (at most ~32 units
#: beside the per-block ones: many small all-gathers are latency-bound, but not one per tensor)
UNIT_SHARE_MIN = 1 / 32


def sharded_knobs(sharding: str, unit_bytes: int, forward_prefetch: int, backward_prefetch: int = 1,
                  reshard_after_forward: bool = True, reduce_precision: str = "fp32",
                  shard_group_size: int = 0) -> Knobs:
    """One sharded configuration on FSDP2's defaults (:data:`~commtune.knobs.FSDP2_DEFAULT`); knobs that do
    not apply to ``sharding`` (backward prefetch and reshard under ``grad``) keep those defaults."""
    if sharding not in SHARDED:
        raise CommtuneError(f"sharding {sharding!r}: give one of {', '.join(SHARDED)}")
    kw = dict(sharding=sharding, unit_bytes=int(unit_bytes), forward_prefetch=int(forward_prefetch),
              reduce_precision=reduce_precision)
    if sharding != "grad":
        kw.update(backward_prefetch=int(backward_prefetch), reshard_after_forward=reshard_after_forward)
    if sharding == "hybrid":
        kw["shard_group_size"] = int(shard_group_size)
    return Knobs.from_dict(kw, base=FSDP2_DEFAULT)


def held_out_sharded(profile, n: int = 8, seed: int = 0, shardings: Sequence[str] = ("full",),
                     shard_group_size: int = 0) -> list[Knobs]:
    """``n`` distinct sharded configurations of ``profile`` (a ModelProfile), none of which calibration
    ran (the probe times bare collectives): every fourth one unit per block (``unit_bytes`` 0, what FSDP
    users wrap), the others a unit cap drawn log-uniformly from :data:`UNIT_SHARE_MIN` of the model's
    parameter bytes to all of them; forward prefetch 1..4 and backward prefetch 0..4, both at most the
    units there are ahead (``max(1, units - 1)``, as FSDP2's prefetch lists); reshard after forward or
    not and the reduce precision (fp32 / bf16) at random; ``shardings`` alternating. Configurations
    with the same units and knobs count once."""
    from commtune.models.units import UNIT_BYTES_PER_ELEMENT, group_units

    shardings = list(shardings)
    rng = np.random.default_rng(seed)
    total = sum(t.numel for layer in profile.layers for t in layer.tensors) * UNIT_BYTES_PER_ELEMENT
    lo, hi = max(1, int(total * UNIT_SHARE_MIN)), max(2, int(total))
    out: list[Knobs] = []
    seen = set()
    for _ in range(50 * n):
        if len(out) == n:
            break
        i = len(out)
        sharding = shardings[i % len(shardings)]
        unit = 0 if i % 4 == 0 else int(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        units = group_units(profile, unit)
        most = min(PREFETCH_MAX, max(1, len(units) - 1))
        fwd, bwd = int(rng.integers(1, most + 1)), int(rng.integers(0, most + 1))
        reshard = bool(rng.integers(2))
        precision = ("fp32", "bf16")[int(rng.integers(2))]
        knobs = sharded_knobs(sharding, unit, fwd, bwd, reshard, precision, shard_group_size)
        key = (tuple(u.first for u in units), *(v for k, v in sorted(knobs.active().items()) if k != "unit_bytes"))
        if key not in seen:
            seen.add(key)
            out.append(knobs)
    if len(out) < n:
        raise CommtuneError(f"{profile.name} has only {len(out)} distinct sharded configurations to draw; "
                            f"ask for at most {len(out)} (--held-out)")
    return out


def parse_sharded_configs(text: str, sharding: str = "full", shard_group_size: int = 0) -> list[Knobs]:
    """``"0:1:1,4MiB:2:0:keep:bf16"``: per entry the unit cap (0: one unit per block), forward prefetch and,
    optionally, backward prefetch, ``reshard`` or ``keep`` (reshard after forward or not) and the reduce
    precision; the rest FSDP2's defaults."""
    from commtune.units import parse_size

    out = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        parts = entry.split(":")
        if not 2 <= len(parts) <= 5:
            raise CommtuneError(f"--configs entry {entry!r}: expected UNIT:FWD[:BWD[:reshard|keep[:fp32|bf16]]], "
                                "e.g. 0:1:1 (FSDP2's defaults) or 4MiB:2:0:keep:bf16")
        unit = parse_size(parts[0], "--configs unit")
        try:
            fwd, bwd = int(parts[1]), int(parts[2]) if len(parts) > 2 else 1
        except ValueError:
            raise CommtuneError(f"--configs entry {entry!r}: prefetch counts must be integers") from None
        if not (0 <= fwd <= PREFETCH_MAX and 0 <= bwd <= PREFETCH_MAX):
            raise CommtuneError(f"--configs entry {entry!r}: prefetch counts must be 0-{PREFETCH_MAX}")
        reshard = parts[3] if len(parts) > 3 else "reshard"
        if reshard not in ("reshard", "keep"):
            raise CommtuneError(f"--configs entry {entry!r}: the fourth field must be reshard or keep")
        precision = parts[4] if len(parts) > 4 else "fp32"
        if precision not in KNOBS["reduce_precision"].choices:
            raise CommtuneError(f"--configs entry {entry!r}: the reduce precision must be fp32 or bf16")
        out.append(sharded_knobs(sharding, unit, fwd, bwd, reshard == "reshard", precision, shard_group_size))
    if not out:
        raise CommtuneError("--configs is empty; give e.g. 0:1:1,4MiB:2:0:keep")
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
    """A configuration in the report's words (sharded: unit cap, prefetch, reshard, reduce precision)."""
    if k.sharding in SHARDED:
        a = k.active()
        s = f"{k.sharding}, unit {format_size(k.unit_bytes) if k.unit_bytes else 'per block'}, prefetch {a['forward_prefetch']}"
        if "backward_prefetch" in a:
            s += f"/{a['backward_prefetch']}"
        if a.get("reshard_after_forward") is False:
            s += ", keep"
        elif "reshard_after_forward" in a and a["reshard_after_forward"] is not True:
            s += f", reshard to {a['reshard_after_forward']}"
        if a.get("shard_group_size"):
            s += f", group {a['shard_group_size']}"
        return s + (f", {k.reduce_precision} reduce" if k.reduce_precision != "fp32" else "")
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

    from commtune.sharding_checks import check_sharding

    if mode is not None:
        configs = [dataclasses.replace(k, stream_mode=mode) if k.sharding == "none" else k for k in configs]
    ev = evaluator or LiveEvaluator(model, LiveSettings(launch, scale=scale, forward_s=forward_s, backward_s=backward_s,
                                                        share=share, steps=steps, warmup=warmup, passes=passes,
                                                        repeat_noisy=repeat_noisy))
    cluster = sim_cluster(calib, launch.hosts, launch.world_size)
    sim = Simulator(ev.workload, cluster, network=network)
    for k in configs:  # a sharded configuration the model or cluster cannot take: one line, before any rank starts
        check_sharding(k, ev.profile, cluster)
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
        flags = sim.network.extrapolation(k) if k.sharding == "none" else []  # its ranges are the all-reduce's
        row = {"config": describe_knobs(k), "knobs": k.to_dict(), "mode": k.stream_mode,
                     "measured_s": r["step_time_s"], "predicted_s": pred.step_time_s,
                     "error": pred.step_time_s / r["step_time_s"] - 1,
                     "spread": (max(st) - min(st)) / r["step_time_s"],
                     "pass_spread": relative_spread(passes),
                     "live_buckets": r["num_buffers"], "sim_buckets": pred.num_buffers,
                     "step_times_s": list(st), "pass_medians_s": passes,
                     "extrapolation": flags,
                     "host_busy_cores": r.get("host_busy_cores"), "host_cores": r.get("host_cores")}
        if k.sharding != "none":
            row.update(live_units=r.get("num_units"), sim_units=pred.num_buffers)
        rows.append(row)
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
        if "sim_units" in r and r.get("live_units") != r["sim_units"]:
            notes.append(f"UNITS live {r.get('live_units')} / simulated {r['sim_units']}")
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


def point_group(knobs: dict) -> str:
    """A row's group in the fidelity plot: its stream count (DDP), its sharding and whether it reshards (FSDP2)."""
    k = Knobs.from_dict(knobs)
    if k.sharding in SHARDED:
        return f"{k.sharding}, {'keep' if k.active().get('reshard_after_forward') is False else 'reshard'}"
    return f"{k.num_streams} stream{'s' if k.num_streams > 1 else ''}"


def fidelity_points(res: dict) -> list[dict]:
    """The rows of a validation result as points for :func:`commtune.plots.fidelity.draw_fidelity`,
    grouped by :func:`point_group`."""
    return [{"predicted_s": r["predicted_s"], "measured_s": r["measured_s"], "label": r["config"],
             "group": point_group(r["knobs"])} for r in res["rows"]]


def plot(res: dict, path: str, title: str = "") -> str:
    """Write the predicted-vs-measured scatter (PNG/SVG/PDF by extension) atomically."""
    from commtune.plots.fidelity import save_fidelity

    s = res["summary"]
    return save_fidelity(fidelity_points(res), path, title=title or f"MAPE {s['mape']:.1%}, Spearman {s['spearman']:.2f}")
