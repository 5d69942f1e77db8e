"""Per-bucket cost of DDP's path, fitted from a short DDP calibration run.

Raw back-to-back all-reduces (the probe's bursts) can show no gap between
buffers while DDP still pays something per bucket: the comm hook (split,
K ``all_reduce`` calls, futures) and the reducer's per-bucket bookkeeping run
on the host's cores next to the transfers. This module times DDP itself on a
*calibration* workload that is not the one being validated: ``count`` equal
tensors of ``tensor_bytes`` ready evenly over ``backward_s`` (link-bound by
design), bucket caps ``small`` (one tensor per bucket) and ``large``. The
difference between the two step times is what the extra buckets cost; per
stream count K the gap ``g_K`` (``ClusterSpec.buffer_gap_s``, see
``simulators.system``) is chosen so that the simulator reproduces that
difference with everything else in the calibration unchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.knobs import DDP_DEFAULT, Knobs
from commtune.units import MiB



def calib_workload(count: int = 16, tensor_bytes: int = MiB, backward_s: float = 0.05):
    from simulators.workload import synthetic_workload

    ready = np.linspace(backward_s / count, backward_s, count)
    return synthetic_workload(ready, np.full(count, tensor_bytes // 4), forward_s=0.0, backward_s=backward_s)


def calib_configs(streams: Sequence[int], small: int = MiB, large: int = 8 * MiB) -> list[Knobs]:
    return [dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=int(c), first_bucket_bytes=int(c), num_streams=int(k))
            for k in streams for c in (small, large)]


def run_ddp_gap_calibration(launch, streams: Sequence[int], steps: int = 8, warmup: int = 2, workload=None) -> list[dict]:
    """Time the calibration configurations live; records ``streams``, ``bucket_bytes``, ``step_time_s``."""
    from commtune.probe.ddp_step import time_ddp_configs

    w = workload or calib_workload()
    configs = calib_configs(streams)
    res = time_ddp_configs(w, configs, launch, steps, warmup)
    return [{"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes, "step_time_s": r["step_time_s"],
             "step_times_s": r["step_times_s"], "num_buckets": len(r["buckets"])} for k, r in zip(configs, res)]


def fit_ddp_gaps(records: Sequence[dict], cluster: ClusterSpec, workload=None,
                 g_max_s: float = 0.02) -> dict[int, dict]:
    """Per K: the gap g >= 0 for which the simulated step-time difference between the
    small-bucket and the large-bucket configuration equals the measured one."""
    from simulators import Simulator
    from simulators.network import network_for

    w = workload or calib_workload()
    by_k: dict[int, dict[int, float]] = {}
    for r in records:
        by_k.setdefault(int(r["streams"]), {})[int(r["bucket_bytes"])] = float(r["step_time_s"])
    base_net = network_for(cluster)
    out = {}
    for k, by_cap in sorted(by_k.items()):
        small, large = min(by_cap), max(by_cap)
        measured = by_cap[small] - by_cap[large]
        knobs = [dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=c, first_bucket_bytes=c, num_streams=k)
                 for c in (small, large)]

        def diff(g: float) -> float:
            net = _with_gap(base_net, k, g)
            sim = Simulator(w, cluster, network=net)
            return sim.run(knobs[0]).step_time_s - sim.run(knobs[1]).step_time_s

        lo, hi = 0.0, g_max_s
        if diff(lo) >= measured:
            g = 0.0
        else:
            for _ in range(50):  # diff(g) rises with g
                mid = 0.5 * (lo + hi)
                if diff(mid) < measured:
                    lo = mid
                else:
                    hi = mid
            g = 0.5 * (lo + hi)
        out[k] = {"gap_s": float(g), "measured_diff_s": measured, "simulated_diff_at_0_s": diff(0.0),
                  "small_bucket_bytes": small, "large_bucket_bytes": large}
    return out


def _with_gap(net, k: int, g: float):
    """A copy of a network model whose gap for stream count k is g."""
    import copy

    from simulators.network import CalibratedNetwork

    new = copy.copy(net)
    if isinstance(net, CalibratedNetwork):
        idx = int(np.abs(net._ks - k).argmin())
        new._g = net._g.copy()
        new._g[idx] = g
    else:
        new.buffer_gap_s = g
    return new


def apply_ddp_gaps(spec: ClusterSpec, extra: dict, gaps: dict[int, dict], records: Sequence[dict]) -> ClusterSpec:
    """Write the DDP-fitted gaps into the calibration (per-K ``gap_s``, ``buffer_gap_s`` = their median)."""
    fit = extra["fit"]
    for k, v in gaps.items():
        if k in fit["per_stream_fits"]:
            fit["per_stream_fits"][k]["gap_s"] = v["gap_s"]
    fit["ddp_gap"] = {"method": "DDP calibration run: 16 x 1 MiB tensors over 50 ms of backward, bucket caps "
                                "1 MiB vs 8 MiB; gap so the simulated difference matches the measured one",
                      "by_streams": {int(k): v for k, v in gaps.items()}}
    extra["ddp_calibration_measurements"] = list(records)
    med = float(np.median([v["gap_s"] for v in gaps.values()])) if gaps else spec.buffer_gap_s
    return dataclasses.replace(spec, buffer_gap_s=med)
