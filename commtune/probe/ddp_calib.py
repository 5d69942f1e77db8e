"""Per-bucket cost of DDP's path, fitted from a short DDP calibration run.

Raw back-to-back all-reduces (the probe's bursts) can show no gap between
buffers while DDP still pays something per bucket: the comm hook (split,
K ``all_reduce`` calls, futures) and the reducer's per-bucket bookkeeping run
on the host's cores next to the transfers. This module times DDP itself on a
*calibration* workload that is not the one being validated: ``count`` equal
tensors of ``tensor_bytes`` ready evenly over ``backward_s`` (link-bound by
design), bucket caps ``small`` (one tensor per bucket) and ``large`` (eight).
The tensor size adapts to the link (:func:`ddp_tensor_bytes`: 1 MiB from 1 Gbit/s
per flow up, less below, so a step takes about :data:`TARGET_STEP_S`); the records
carry it (``tensor_bytes``; records without it are of 1 MiB tensors). The
difference between the two step times is what the extra buckets cost; per
stream count K the gap ``g_K`` (see ``simulators.system``) is chosen so that
the simulator reproduces that difference with everything else in the
calibration unchanged; the calibration keeps the linear model
``g(K) = gap0 + gap_per_stream*K`` fitted over those K (so unprobed K are
interpolated, not looked up).

Round robin (``stream_mode``): the same two bucket caps are timed for a few
K > 1 with buckets on successive streams (:data:`RR_STREAMS`). The simulator
models round robin from the same parameters (one stream's coefficients, the
link's aggregate rate shared fairly; ``simulators.fairshare``) plus one term these
points fit (:func:`fit_round_robin_gap`): the link time lost per collective while
K streams contend for it, ``g_rr(K) = rr_gap0 + rr_gap_per_stream*K`` (per K
the gap that zeroes the mean relative error of the two caps, then least
squares over K, as the split gap). :func:`round_robin_check` then reports the finished
calibration's error on those points (a fit residual, not a held-out figure).

End of backward (:func:`fit_last_bucket_delay`): on the calibration workload the
link is still busy when backward ends, so what every rank does there before the
last bucket's all-reduce can start (the reducer's end-of-backward work, the last
rank to arrive) is hidden. A second short run times a workload where it is not
(:func:`tail_workload`: four tensors of the calibration's size over the first half of a
backward long enough that their buckets are done before it ends, then one twice as
large at its end, one stream, one bucket per tensor); the delay ``d >= 0`` for which the simulator
reproduces its step time is ``ClusterSpec.last_bucket_delay_s``.

Budget (:func:`estimate_ddp_calibration_s`, :func:`streams_within`): the run's
seconds are estimated from the link, and ``commtune probe --budget`` times fewer
stream counts when they do not fit what is left.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.knobs import DDP_DEFAULT, Knobs
from commtune.probe.link_estimate import LinkEstimate
from commtune.units import KiB, MiB, format_size, format_time

#: calibration tensors and their backward; tensors per bucket of the large cap
COUNT, BACKWARD_S, LARGE_TENSORS = 16, 0.05, 8
#: the bounds of a calibration tensor (the largest: the workload before it adapted to the link)
MIN_TENSOR, MAX_TENSOR = 64 * KiB, MiB
#: the link time the tensor size aims at for a step of one stream's large buckets (the slowest
#: configuration): that of COUNT largest tensors on 1 Gbit/s and many ranks (0.27 s), so from
#: 1 Gbit/s per flow up the workload is the 1 MiB one on any number of ranks
TARGET_STEP_S = 2 * COUNT * MAX_TENSOR / (1e9 / 8)
#: seconds to launch the ranks once (start Python, import torch, gloo rendezvous and the stream
#: groups); an assumption of a few seconds, as local and emulated ranks start
LAUNCH_S = 5.0
#: timed steps of the end-of-backward run beyond the configurations' (:func:`calibrate_ddp`)
TAIL_EXTRA_STEPS = 2
#: the end-of-backward run's forward, its shortest backward, and that backward in one-stream
#: all-reduces of a tensor (:func:`tail_backward_s`)
TAIL_FORWARD_S, TAIL_MIN_BACKWARD_S, TAIL_SPAN = 0.05, 0.2, 16


def ddp_tensor_bytes(link: LinkEstimate, ranks: int, count: int = COUNT) -> int:
    """Bytes per calibration tensor so that ``count`` of them all-reduced on one stream take about
    :data:`TARGET_STEP_S` of link time: ``TARGET_STEP_S * rate(1) / (2(n-1)/n) / count``, within
    [:data:`MIN_TENSOR`, :data:`MAX_TENSOR`], a multiple of 4 KiB."""
    n = max(int(ranks), 2)
    rate = link.rate_Bps(1)
    ideal = TARGET_STEP_S * rate / (2.0 * (n - 1) / n) / count if math.isfinite(rate) else MAX_TENSOR
    t = int(min(max(ideal, MIN_TENSOR), MAX_TENSOR))
    return t - t % (4 * KiB)


def cluster_link(cluster: ClusterSpec) -> LinkEstimate:
    """The :class:`~commtune.probe.plan.LinkEstimate` of a calibration (its fitted link)."""
    return LinkEstimate(float(cluster.inter_latency_s), float(cluster.per_stream_Bps), float(cluster.inter_bw_Bps))


def records_tensor_bytes(records: Sequence[dict]) -> int:
    """The tensor size of DDP calibration records (``tensor_bytes``; 1 MiB without it: older files)."""
    sizes = {int(r.get("tensor_bytes", MiB)) for r in records}
    if len(sizes) > 1:
        raise ValueError(f"DDP calibration records of several tensor sizes: {sorted(sizes)}")
    return sizes.pop() if sizes else MiB


def calib_workload(count: int = COUNT, tensor_bytes: int = MiB, backward_s: float = BACKWARD_S):
    """``count`` tensors of ``tensor_bytes`` ready evenly over ``backward_s``, no forward."""
    from simulators.workload import synthetic_workload

    ready = np.linspace(backward_s / count, backward_s, count)
    return synthetic_workload(ready, np.full(count, tensor_bytes // 4), forward_s=0.0, backward_s=backward_s)


def solve_rising(f, target: float, hi: float, iters: int = 50, max_hi: float | None = None) -> float:
    """The x >= 0 at which ``f`` (rising in x) reaches ``target``: 0 when f(0) is already
    there; else the bracket [0, hi] doubles while f(hi) is below ``target`` and hi < ``max_hi``
    (default ``hi``: no doubling), ``max_hi`` when f is still below there (callers report
    such a result as a warning), else bisection (``iters`` halvings)."""
    lo = 0.0
    if f(lo) >= target:
        return 0.0
    top = hi if max_hi is None else max(hi, max_hi)
    while f(hi) < target and hi < top:
        lo, hi = hi, min(2 * hi, top)
    if f(hi) <= target:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


#: stream counts at which the DDP calibration run also times round robin (those probed)
RR_STREAMS = (2, 4, 8)


def calib_knobs(streams: int, bucket_bytes: int, mode: str = "split") -> Knobs:
    """One calibration configuration: every bucket (the first too) capped at ``bucket_bytes``."""
    return dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=int(bucket_bytes), first_bucket_bytes=int(bucket_bytes),
                               num_streams=int(streams), stream_mode=mode)


def record_knobs(record: dict) -> Knobs:
    """The configuration a DDP calibration record timed."""
    return calib_knobs(record["streams"], record["bucket_bytes"], record.get("stream_mode", "split"))


def calib_configs(streams: Sequence[int], small: int = MiB, large: int = LARGE_TENSORS * MiB,
                  rr_streams: Sequence[int] = ()) -> list[Knobs]:
    """Split configurations for every K, round-robin ones for ``rr_streams``; both bucket caps."""
    return ([calib_knobs(k, c, "split") for k in streams for c in (small, large)]
            + [calib_knobs(k, c, "round_robin") for k in rr_streams for c in (small, large)])


def run_ddp_gap_calibration(launch, streams: Sequence[int], steps: int = 8, warmup: int = 2, passes: int = 2,
                            rr_streams: Sequence[int] = (), tensor_bytes: int = MiB) -> list[dict]:
    """Time the calibration configurations of ``tensor_bytes`` tensors live (:func:`time_calib_configs`);
    every record carries ``tensor_bytes``."""
    configs = calib_configs(streams, tensor_bytes, LARGE_TENSORS * tensor_bytes, rr_streams)
    recs = time_calib_configs(launch, configs, steps, warmup, calib_workload(tensor_bytes=tensor_bytes), passes)
    return [{**r, "tensor_bytes": int(tensor_bytes)} for r in recs]


def time_calib_configs(launch, configs: Sequence[Knobs], steps: int = 8, warmup: int = 2, workload=None,
                       passes: int = 2) -> list[dict]:
    """Time ``configs`` on the calibration workload; records ``streams``, ``bucket_bytes``,
    ``stream_mode``, ``host_busy_cores`` (mean over the passes), ``step_time_s`` (the median of the steps of ``passes`` passes in
    alternating order, one launch: slow drifts of the host load hit every configuration alike)."""
    import statistics

    from commtune.host_load import mean_busy_cores
    from commtune.probe.ddp_step import time_ddp_configs

    w = workload or calib_workload()
    order = [i for p in range(passes) for i in (range(len(configs)) if p % 2 == 0 else range(len(configs))[::-1])]
    res = time_ddp_configs(w, [configs[i] for i in order], launch, steps, warmup)
    pooled: dict[int, list[dict]] = {}
    for i, r in zip(order, res):
        pooled.setdefault(i, []).append(r)
    out = []
    for i, k in enumerate(configs):
        times = [t for r in pooled[i] for t in r["step_times_s"]]
        out.append({"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes, "stream_mode": k.stream_mode,
                    "step_time_s": statistics.median(times), "step_times_s": times,
                    "num_buckets": len(pooled[i][-1]["buckets"]),
                    "host_busy_cores": mean_busy_cores(pooled[i])})
    return out


#: the gap searches' first bracket, and the most a per-collective gap may be
GAP_BRACKET_S, GAP_MAX_S = 0.02, 1.0


def fit_ddp_gaps(records: Sequence[dict], cluster: ClusterSpec, workload=None,
                 g_max_s: float = GAP_MAX_S) -> dict[int, dict]:
    """Per K: the gap g >= 0 for which the simulated step-time difference between the
    small-bucket and the large-bucket configuration equals the measured one (the
    calibrated network with a constant gap g; every other parameter unchanged);
    ``at_bound`` when even ``g_max_s`` leaves the simulated difference below the measured one."""
    from simulators import Simulator
    from simulators.network import network_for

    w = workload or calib_workload(tensor_bytes=records_tensor_bytes(records))
    by_k: dict[int, dict[int, float]] = {}
    for r in records:
        if r.get("stream_mode", "split") != "split":
            continue  # round robin is checked, not fitted (round_robin_check)
        by_k.setdefault(int(r["streams"]), {})[int(r["bucket_bytes"])] = float(r["step_time_s"])
    base_net = network_for(cluster)
    out = {}
    for k, by_cap in sorted(by_k.items()):
        small, large = min(by_cap), max(by_cap)
        measured = by_cap[small] - by_cap[large]
        knobs = [calib_knobs(k, c) for c in (small, large)]

        def diff(g: float) -> float:
            sim = Simulator(w, cluster, network=_with_gap(base_net, g))
            return sim.run(knobs[0]).step_time_s - sim.run(knobs[1]).step_time_s

        g = solve_rising(diff, measured, min(GAP_BRACKET_S, g_max_s), max_hi=g_max_s)
        out[k] = {"gap_s": float(g), "measured_diff_s": measured, "simulated_diff_at_0_s": diff(0.0),
                  "small_bucket_bytes": small, "large_bucket_bytes": large, "at_bound": bool(g >= g_max_s)}
    return out


def round_robin_check(records: Sequence[dict], cluster: ClusterSpec, workload=None) -> dict:
    """The finished calibration's predictions of the round-robin calibration points:
    per record the error, and ``needed`` = some error beyond that point's run-to-run
    spread ((max - min) / median of its steps) and beyond 3 %."""
    from simulators import Simulator

    w = workload or calib_workload(tensor_bytes=records_tensor_bytes(records))
    sim = Simulator(w, cluster)
    rows = []
    for r in records:
        if r.get("stream_mode") != "round_robin":
            continue
        pred = sim.run(record_knobs(r)).step_time_s
        st = r.get("step_times_s") or [r["step_time_s"]]
        rows.append({"streams": int(r["streams"]), "bucket_bytes": int(r["bucket_bytes"]),
                     "measured_s": float(r["step_time_s"]), "predicted_s": float(pred),
                     "error": float(pred / r["step_time_s"] - 1), "spread": float((max(st) - min(st)) / r["step_time_s"])})
    needed = any(abs(x["error"]) > max(x["spread"], 0.03) for x in rows)
    return {"points": rows, "needed": bool(needed),
            "mape": float(np.mean([abs(x["error"]) for x in rows])) if rows else float("nan")}


def fit_round_robin_gap(records: Sequence[dict], cluster: ClusterSpec, workload=None,
                        g_max_s: float = GAP_MAX_S) -> dict:
    """Per round-robin K: the link time g >= 0 lost per collective (every other parameter of the calibration
    unchanged) at which the mean relative error of the simulated step times of its
    points is 0; then ``g_rr(K) = rr_gap0 + rr_gap_per_stream*K`` by least squares over K
    (:func:`~commtune.probe.fit.fit_gap_model`). ``{"rr_gap0_s", "rr_gap_per_stream_s", "by_streams"}``."""
    from commtune.probe.fit import fit_gap_model
    from simulators import Simulator
    from simulators.calibrated import CalibratedNetwork
    from simulators.network import network_for

    w = workload or calib_workload(tensor_bytes=records_tensor_bytes(records))
    net = network_for(cluster)
    if not isinstance(net, CalibratedNetwork):
        return {"rr_gap0_s": 0.0, "rr_gap_per_stream_s": 0.0, "by_streams": {}}
    by_k: dict[int, list[dict]] = {}
    for r in records:
        if r.get("stream_mode") == "round_robin" and int(r["streams"]) > 1:
            by_k.setdefault(int(r["streams"]), []).append(r)
    out = {}
    for k, recs in sorted(by_k.items()):
        knobs = [record_knobs(r) for r in recs]
        measured = np.array([float(r["step_time_s"]) for r in recs])

        def err(g: float) -> float:  # rises with g
            sim = Simulator(w, cluster, network=net.replace(rr_gap0_s=g, rr_gap_per_stream_s=0.0))
            return float(np.mean([sim.run(x).step_time_s for x in knobs] / measured - 1))

        g = solve_rising(err, 0.0, min(GAP_BRACKET_S, g_max_s), max_hi=g_max_s)
        out[k] = {"gap_s": float(g), "error_at_0": err(0.0), "error_after": err(g), "at_bound": bool(g >= g_max_s)}
    g0, g1 = fit_gap_model({k: v["gap_s"] for k, v in out.items()}) if out else (0.0, 0.0)
    return {"rr_gap0_s": g0, "rr_gap_per_stream_s": g1, "by_streams": out}


def apply_round_robin_gap(spec: ClusterSpec, extra: dict, fitted: dict, tensor_bytes: int = MiB) -> ClusterSpec:
    """Write ``rr_gap_per_stream_s`` (:func:`fit_round_robin_gap`, on ``tensor_bytes`` tensors) into the calibration."""
    fit = extra["fit"]
    _warn_at_bound(fit, "round robin", fitted["by_streams"])
    fit["network"]["rr_gap0_s"] = float(fitted["rr_gap0_s"])
    fit["network"]["rr_gap_per_stream_s"] = float(fitted["rr_gap_per_stream_s"])
    fit["round_robin_gap"] = {"method": f"DDP calibration run, round robin at K in RR_STREAMS, bucket caps "
                                        f"{_caps(tensor_bytes)}: per K the link time lost per collective that zeroes "
                                        "the mean relative error, then g_rr(K) = rr_gap0 + rr_gap_per_stream*K "
                                        "(least squares)",
                              "by_streams": {int(k): v for k, v in fitted["by_streams"].items()}}
    return dataclasses.replace(spec, meta={**spec.meta, "fit": fit})


def apply_ddp_calibration(spec: ClusterSpec, extra: dict, records: Sequence[dict]) -> ClusterSpec:
    """Fit the DDP calibration run's ``records`` into a calibration: the split gap model,
    then (when round robin was timed) the round-robin link gap and its check."""
    spec = apply_ddp_gaps(spec, extra, fit_ddp_gaps(records, spec), records)
    if any(r.get("stream_mode") == "round_robin" for r in records):
        spec = apply_round_robin_gap(spec, extra, fit_round_robin_gap(records, spec), records_tensor_bytes(records))
        chk = round_robin_check(records, spec)
        extra["fit"]["round_robin_check"] = chk
        if chk["needed"]:
            extra["fit"]["warnings"].append(
                f"round robin is fitted with {chk['mape']:.1%} mean error on the DDP calibration points, "
                "beyond their spread: the link-gap term g_rr(K) does not explain them")
    return spec


def ddp_calibration_streams(extra: dict) -> tuple[list[int], list[int]]:
    """The stream counts a calibration's DDP run times: every probed K (split) and those of
    :data:`RR_STREAMS` among them (round robin)."""
    ks = sorted(int(k) for k in extra["fit"]["per_stream_fits"])
    return ks, [k for k in RR_STREAMS if k in ks]


def _step_s(link: LinkEstimate, ranks: int, tensor_bytes: int, per_bucket: int, streams: int,
            round_robin: bool = False) -> float:
    """Estimated step of the calibration workload with ``per_bucket`` tensors per bucket on ``streams``
    (round robin: as many as there are buckets at most): the last bucket after backward, or every
    bucket back to back from the first one ready."""
    buckets = -(-COUNT // per_bucket)
    one = link.collective_s(2, per_bucket * tensor_bytes, min(streams, buckets) if round_robin else streams, ranks)
    return max(BACKWARD_S + one, BACKWARD_S * per_bucket / COUNT + buckets * one)


def tail_step_s(link: LinkEstimate, ranks: int, tensor_bytes: int) -> float:
    """Estimated step of :func:`tail_workload` (:func:`tail_backward_s` from ``link``): forward,
    backward, then the last bucket alone."""
    backward = _tail_backward(link.collective_s(2, tensor_bytes, 1, ranks))
    return TAIL_FORWARD_S + backward + link.collective_s(2, 2 * tensor_bytes, 1, ranks)


def estimate_ddp_calibration_s(link: LinkEstimate, ranks: int, streams: Sequence[int], rr_streams: Sequence[int],
                               steps: int = 6, warmup: int = 2, passes: int = 2,
                               tensor_bytes: int | None = None) -> float:
    """Estimated seconds of :func:`calibrate_ddp`: two launches (:data:`LAUNCH_S`: the configurations,
    the tail), ``passes * (warmup + steps)`` steps of every configuration (split at ``streams``, round
    robin at ``rr_streams`` on its busy streams, both caps; a step as :func:`_step_s`, its barrier
    one latency-bound all-reduce) and ``warmup + steps + 2`` tail steps. ``tensor_bytes``: default
    :func:`ddp_tensor_bytes`."""
    t = ddp_tensor_bytes(link, ranks) if tensor_bytes is None else int(tensor_bytes)
    barrier = link.collective_s(2, 0.0, 1, ranks)
    configs = [(k, c, rr) for ks, rr in ((streams, False), (rr_streams, True)) for k in ks for c in (1, LARGE_TENSORS)]
    step_sum = sum(_step_s(link, ranks, t, c, k, rr) + barrier for k, c, rr in configs)
    tail = (warmup + steps + TAIL_EXTRA_STEPS) * (tail_step_s(link, ranks, t) + barrier)
    return 2 * LAUNCH_S + passes * (warmup + steps) * step_sum + tail


def stream_priority(streams: Sequence[int]) -> list[int]:
    """``streams`` in the order a cut keeps them: 1 (else the fewest), the most, then each time the
    one farthest from those kept (ties: the fewer streams)."""
    rest = sorted({int(k) for k in streams})
    if not rest:
        return []
    kept = [1 if 1 in rest else rest[0]]
    rest.remove(kept[0])
    if rest:
        kept.append(rest.pop())
    while rest:
        far = max(rest, key=lambda k: (min(abs(k - x) for x in kept), -k))
        rest.remove(far)
        kept.append(far)
    return kept


def streams_within(link: LinkEstimate, ranks: int, streams: Sequence[int], rr_streams: Sequence[int],
                   budget_s: float, steps: int = 6, tensor_bytes: int | None = None
                   ) -> tuple[list[int], list[int], float]:
    """The most stream counts (in :func:`stream_priority` order, at least two where two were asked:
    the gap model is a line in K) whose DDP calibration run fits ``budget_s`` seconds; round robin at
    those kept of ``rr_streams``. ``(streams, rr_streams, estimate_s)``, sorted."""
    order = stream_priority(streams)

    def kept(m: int) -> tuple[list[int], list[int], float]:
        ks = sorted(order[:m])
        rr = [k for k in rr_streams if k in ks]
        return ks, rr, estimate_ddp_calibration_s(link, ranks, ks, rr, steps, tensor_bytes=tensor_bytes)

    for m in range(len(order), 2, -1):
        cut = kept(m)
        if cut[2] <= budget_s:
            return cut
    return kept(2)


def calibrate_ddp(launch, spec: ClusterSpec, extra: dict, steps: int = 6, budget_s: float | None = None) -> ClusterSpec:
    """Run the DDP calibration on ``launch`` at :func:`ddp_calibration_streams` (tensors of
    :func:`ddp_tensor_bytes` at the calibration's link) and fit it into the calibration
    (:func:`apply_ddp_calibration`), then the end-of-backward run (:func:`apply_last_bucket_delay`);
    the part of ``commtune probe`` after the all-reduce sweep. ``budget_s``: fewer stream counts
    (:func:`streams_within`) when the run's estimate exceeds it, noted in ``fit.warnings``."""
    link, n = cluster_link(spec), spec.world_size
    tensor = ddp_tensor_bytes(link, n)
    ks, rr = ddp_calibration_streams(extra)
    if budget_s is not None:
        kept, kept_rr, est = streams_within(link, n, ks, rr, budget_s, steps, tensor)
        if kept != ks:
            extra["fit"]["warnings"].append(
                f"DDP calibration run cut to fit the budget: streams {_ks(kept)} of {_ks(ks)}, round robin "
                f"{_ks(kept_rr) or 'none'} of {_ks(rr) or 'none'} (estimated {est:.0f} s, {max(budget_s, 0):.0f} s left)")
        ks, rr = kept, kept_rr
    records = run_ddp_gap_calibration(launch, ks, steps=steps, warmup=2, rr_streams=rr, tensor_bytes=tensor)
    spec = apply_ddp_calibration(spec, extra, records)
    return apply_last_bucket_delay(spec, extra, time_tail(launch, spec, steps=steps + TAIL_EXTRA_STEPS, warmup=2,
                                                          tensor_bytes=tensor))


def _ks(ks: Sequence[int]) -> str:
    return ",".join(map(str, ks))


def _caps(tensor_bytes: int) -> str:
    return f"{format_size(tensor_bytes)} and {format_size(LARGE_TENSORS * tensor_bytes)}"


def tail_workload(backward_s: float, tensor_bytes: int = MiB, last_bytes: int | None = None):
    """Four ``tensor_bytes`` tensors ready over the first half of ``backward_s``, then one of
    ``last_bytes`` (default twice ``tensor_bytes``) at its end (forward 50 ms)."""
    from simulators.workload import synthetic_workload

    last = 2 * tensor_bytes if last_bytes is None else last_bytes
    ready = np.append(np.linspace(backward_s / 8, backward_s / 2, 4), backward_s)
    elements = np.array([tensor_bytes // 4] * 4 + [last // 4])
    return synthetic_workload(ready, elements, forward_s=TAIL_FORWARD_S, backward_s=backward_s)


def tail_backward_s(cluster: ClusterSpec, tensor_bytes: int = MiB) -> float:
    """A backward after whose first half four one-stream all-reduces of ``tensor_bytes`` (as the
    calibration predicts them) fit twice over: ``max(0.2 s, 16*t)``; the last bucket then runs alone."""
    from simulators.network import network_for

    a, b = network_for(cluster).coeffs(1, False)
    return _tail_backward(float(a) + float(b) * tensor_bytes)


def _tail_backward(allreduce_s: float) -> float:
    """The end-of-backward run's backward for a one-stream all-reduce of one tensor taking ``allreduce_s``."""
    return float(max(TAIL_MIN_BACKWARD_S, TAIL_SPAN * allreduce_s))


def time_tail(launch, cluster: ClusterSpec, steps: int = 10, warmup: int = 2, tensor_bytes: int = MiB) -> list[dict]:
    """Time :func:`tail_workload` of ``tensor_bytes`` tensors live (one stream, one bucket per tensor,
    one pass): the record :func:`time_calib_configs` gives, plus its ``backward_s`` and ``tensor_bytes``."""
    backward = tail_backward_s(cluster, tensor_bytes)
    (rec,) = time_calib_configs(launch, [calib_knobs(1, tensor_bytes)], steps, warmup,
                                tail_workload(backward, tensor_bytes), passes=1)
    return [{**rec, "backward_s": backward, "tensor_bytes": int(tensor_bytes)}]


#: the most the end-of-backward delay may be
LAST_BUCKET_DELAY_MAX_S = 0.1


def fit_last_bucket_delay(records: Sequence[dict], cluster: ClusterSpec,
                          d_max_s: float = LAST_BUCKET_DELAY_MAX_S) -> dict:
    """The delay ``d >= 0`` (``ClusterSpec.last_bucket_delay_s``) at which the simulated step
    time of the tail records (:func:`time_tail`) matches the measured one on average
    (bisection: the step time rises with d; everything else in the calibration unchanged).
    ``{"delay_s", "measured_s", "simulated_at_0_s"}`` (means over the records)."""
    from simulators import Simulator

    if not records:
        return {"delay_s": 0.0, "measured_s": float("nan"), "simulated_at_0_s": float("nan")}
    cases = [(tail_workload(float(r["backward_s"]), int(r.get("tensor_bytes", MiB))), record_knobs(r)) for r in records]
    measured = float(np.mean([float(r["step_time_s"]) for r in records]))

    def simulated(d: float) -> float:
        spec = dataclasses.replace(cluster, last_bucket_delay_s=d)
        return float(np.mean([Simulator(w, spec).run(k).step_time_s for w, k in cases]))

    d = solve_rising(simulated, measured, d_max_s)
    return {"delay_s": float(d), "measured_s": measured, "simulated_at_0_s": simulated(0.0)}


def apply_last_bucket_delay(spec: ClusterSpec, extra: dict, records: Sequence[dict]) -> ClusterSpec:
    """Fit the tail records into a calibration: ``last_bucket_delay_s`` and ``fit.last_bucket_delay``."""
    if not records:
        return spec
    fitted = fit_last_bucket_delay(records, spec)
    if fitted["delay_s"] >= LAST_BUCKET_DELAY_MAX_S:
        extra["fit"]["warnings"].append(
            f"the end-of-backward run took {format_time(fitted['measured_s'])}, more than even a "
            f"{format_time(LAST_BUCKET_DELAY_MAX_S)} delay before the last bucket explains: the delay is capped there")
    t = records_tensor_bytes(records)
    extra["fit"]["last_bucket_delay"] = {
        "method": f"DDP calibration run: 4 x {format_size(t)} tensors over the first half of backward, "
                  f"{format_size(2 * t)} at its end, 1 stream, one bucket per tensor; the delay before the last "
                  "bucket's all-reduce that matches the step time",
        **fitted}
    extra["ddp_tail_measurements"] = list(records)
    return dataclasses.replace(spec, last_bucket_delay_s=fitted["delay_s"], meta={**spec.meta, "fit": extra["fit"]})


def _warn_at_bound(fit: dict, mode: str, by_streams: dict) -> None:
    """A warning in ``fit`` for the stream counts whose gap search ended at its bound."""
    capped = sorted(int(k) for k, v in by_streams.items() if v.get("at_bound"))
    if capped:
        fit["warnings"].append(
            f"DDP calibration ({mode}) at K={','.join(map(str, capped))}: even a gap of {format_time(GAP_MAX_S)} "
            "per collective does not reproduce the measured step times (a saturated host?): capped there")


def _with_gap(net, g: float):
    """A copy of a network model whose gap is g for every stream count."""
    import copy

    from simulators.calibrated import CalibratedNetwork

    if isinstance(net, CalibratedNetwork):
        return net.replace(gap0_s=g, gap_per_stream_s=0.0)
    new = copy.copy(net)
    new.__dict__.pop("_table", None)
    new.buffer_gap_s = g
    return new


def apply_ddp_gaps(spec: ClusterSpec, extra: dict, gaps: dict[int, dict], records: Sequence[dict]) -> ClusterSpec:
    """Write the DDP-fitted gap model into the calibration: ``g(K) = gap0 + gap_per_stream*K``
    fitted over the per-K gaps (``fit.network``), ``buffer_gap_s`` = g(1)."""
    from commtune.probe.fit import fit_gap_model

    fit = extra["fit"]
    if not gaps:
        return spec
    g0, g1 = fit_gap_model({k: v["gap_s"] for k, v in gaps.items()})
    fit["network"]["gap0_s"], fit["network"]["gap_per_stream_s"] = g0, g1
    _warn_at_bound(fit, "split", gaps)
    t = records_tensor_bytes(records)
    fit["ddp_gap"] = {"method": f"DDP calibration run: {COUNT} x {format_size(t)} tensors over "
                                f"{format_time(BACKWARD_S)} of backward, bucket caps {_caps(t)}; per K the gap so the "
                                "simulated difference matches the measured one, then g(K) = gap0 + gap_per_stream*K "
                                "by least squares",
                      "by_streams": {int(k): v for k, v in gaps.items()}}
    extra["ddp_calibration_measurements"] = list(records)
    return dataclasses.replace(spec, buffer_gap_s=max(g0 + g1, 0.0), meta={**spec.meta, "fit": fit})
