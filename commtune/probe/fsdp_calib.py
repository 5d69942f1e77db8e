"""Per-collective host cost of FSDP2's path, fitted from a short FSDP calibration run.

The probe times bare all-gathers and reduce-scatters back to back. FSDP2
pays more around each one: the copy-in of the unit's shards into one flat
buffer, the copy-out of the gathered buffer into the parameters, the
reduce-scatter's copy-in of the gradients, its hooks, and whatever stalls a
run of many collectives meets that a median of bare ones hides. This module
times FSDP2 itself on a *calibration* model that is not the one being
validated (:func:`calib_profile`: ``blocks`` equal blocks, no compute, so every
collective is on the step's critical path), at two unit sizes: one unit per
block (many small collectives) and ``group`` blocks per unit (few large
ones, the same bytes). ``ClusterSpec.unit_host_s`` (``h0``, per collective)
and ``unit_host_s_per_byte`` (``h1``) are the non-negative pair for which the
simulator reproduces both step times with everything else in the
calibration unchanged (:func:`fit_unit_host`; the step time is piecewise
linear in them, so a few Newton steps on the two equations, clamped at 0).

Block size adapts to the link the all-reduce sweep measured
(:func:`calib_block_bytes`): about :data:`TARGET_STEP_S` per step, so the run
takes a few seconds on any link (:func:`estimate_fsdp_calibration_s`; ``commtune probe
--budget`` times fewer steps when it does not fit what is left, :func:`steps_within`).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Sequence

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.knobs import FSDP2_DEFAULT, Knobs
from commtune.probe.ddp_calib import LAUNCH_S, cluster_link
from commtune.probe.link_estimate import LinkEstimate
from commtune.units import KiB, MiB, format_size, format_time

#: the calibration model: blocks, blocks per unit of the large-unit configuration
BLOCKS, GROUP = 16, 4
#: the step time the block size aims at, and the bounds of a block
TARGET_STEP_S, MIN_BLOCK, MAX_BLOCK = 0.3, 64 * KiB, 4 * MiB
#: the most h0 (seconds per collective) and h1 (seconds per byte) may be
H0_MAX_S, H1_MAX_S = 0.1, 1e-6
#: the fewest timed steps per configuration a budget cuts the run to
MIN_STEPS = 2


def block_bytes_for(rate_Bps: float, ranks: int, blocks: int = BLOCKS) -> int:
    """Bytes per block so that a step (a gather, a re-gather and a reduce-scatter of every
    unit, gloo's reduce-scatter an all-reduce) takes about :data:`TARGET_STEP_S` at ``rate_Bps``:
    ``TARGET_STEP_S * rate / (4 (n-1)/n) / blocks``, within [:data:`MIN_BLOCK`, :data:`MAX_BLOCK`],
    a multiple of 4 KiB."""
    n = max(int(ranks), 2)
    model = TARGET_STEP_S * float(rate_Bps) / (4.0 * (n - 1) / n)
    block = int(min(max(model / blocks, MIN_BLOCK), MAX_BLOCK)) if math.isfinite(model) else MAX_BLOCK
    return block - block % (4 * KiB)


def calib_block_bytes(cluster: ClusterSpec, blocks: int = BLOCKS) -> int:
    """:func:`block_bytes_for` at the calibration's one-stream rate (FSDP2 runs its collectives on
    one stream: the link rate, or the per-flow cap where one binds) and world size."""
    return block_bytes_for(min(float(cluster.inter_bw_Bps), float(cluster.per_stream_Bps)), cluster.world_size, blocks)


def estimate_fsdp_calibration_s(link: LinkEstimate, ranks: int, steps: int = 6, warmup: int = 2, passes: int = 2,
                                rs_steps: int = 2, blocks: int = BLOCKS, group: int = GROUP,
                                block_bytes: int | None = None) -> float:
    """Estimated seconds of :func:`calibrate_fsdp`: one launch (:data:`LAUNCH_S`) and ``passes *
    (warmup + steps)`` steps of each configuration, a step every unit's all-gather twice and its
    reduce-scatter (``rs_steps`` ring steps per peer: gloo's is an all-reduce) on one stream;
    ``block_bytes``: default :func:`block_bytes_for` at ``link``'s one-stream rate."""
    block = block_bytes_for(link.rate_Bps(1), ranks, blocks) if block_bytes is None else int(block_bytes)

    def step(per_unit: int) -> float:
        unit = per_unit * block
        return -(-blocks // per_unit) * (2 * link.collective_s(1, unit, 1, ranks) + link.collective_s(rs_steps, unit, 1, ranks))

    return LAUNCH_S + passes * (warmup + steps) * (step(1) + step(group))


def steps_within(link: LinkEstimate, ranks: int, budget_s: float, steps: int = 6, rs_steps: int = 2) -> int:
    """The most timed steps, ``steps`` down to :data:`MIN_STEPS`, whose run fits ``budget_s`` seconds."""
    fits = [s for s in range(min(steps, MIN_STEPS), steps + 1)
            if estimate_fsdp_calibration_s(link, ranks, s, rs_steps=rs_steps) <= budget_s]
    return max(fits, default=min(steps, MIN_STEPS))


def calib_profile(block_bytes: int, blocks: int = BLOCKS):
    """The calibration model: ``blocks`` blocks of one fp32 tensor of ``block_bytes`` each, no compute."""
    from commtune.models.base import GradTensor, Layer, ModelProfile

    layers = tuple(Layer(f"block{i}", (GradTensor(f"block{i}.w", block_bytes // 4),), fwd_time_s=0.0, bwd_time_s=0.0,
                         block=f"block{i}") for i in range(blocks))
    return ModelProfile(name="fsdp-calibration", layers=layers, measured_batch_size=1)


def calib_configs(block_bytes: int, group: int = GROUP) -> list[Knobs]:
    """One unit per block, and ``group`` blocks per unit; full sharding, resharded after
    forward, one unit prefetched each way, fp32 reduction."""
    base = dataclasses.replace(FSDP2_DEFAULT, sharding="full", reshard_after_forward=True, forward_prefetch=1,
                               backward_prefetch=1, reduce_precision="fp32")
    return [dataclasses.replace(base, unit_bytes=0), dataclasses.replace(base, unit_bytes=group * block_bytes)]


def time_fsdp_calibration(launch: Any, block_bytes: int, steps: int = 6, warmup: int = 2, passes: int = 2,
                          blocks: int = BLOCKS) -> list[dict]:
    """Time :func:`calib_configs` live as FSDP2 steps (one worker group; ``passes`` passes in
    alternating order, steps pooled): a record per configuration with ``unit_bytes``,
    ``units``, ``block_bytes``, ``blocks``, ``step_time_s`` (the median) and ``step_times_s``."""
    from commtune.probe.live_group import WorkerGroup
    from commtune.runtime.synthetic import layer_specs

    configs = calib_configs(block_bytes)
    task = {"mode": None, "steps": steps, "warmup": warmup, "gpus_per_node": launch.world_size // launch.hosts,
            "layers": layer_specs(calib_profile(block_bytes, blocks)), "compute": "emulated"}
    pooled: dict[int, list[dict]] = {}
    group = WorkerGroup(launch, task)
    try:
        for p in range(passes):
            for i in (range(len(configs)) if p % 2 == 0 else reversed(range(len(configs)))):
                pooled.setdefault(i, []).append(group.trial(configs[i]))
    finally:
        group.close()
    out = []
    for i, k in enumerate(configs):
        times = [float(t) for r in pooled[i] for t in r["step_times_s"]]
        out.append({"unit_bytes": k.unit_bytes, "units": int(pooled[i][-1].get("shard", {}).get("units", 0)),
                    "block_bytes": block_bytes, "blocks": blocks, "step_time_s": float(statistics.median(times)),
                    "step_times_s": times})
    return out


def _simulated(records: Sequence[dict], cluster: ClusterSpec, h0: float, h1: float) -> np.ndarray:
    from commtune.runtime.synthetic import sim_workload
    from simulators import Simulator

    spec = dataclasses.replace(cluster, unit_host_s=h0, unit_host_s_per_byte=h1)
    out = []
    for r in records:
        sim = Simulator(sim_workload(calib_profile(int(r["block_bytes"]), int(r["blocks"]))), spec)
        (k,) = [c for c in calib_configs(int(r["block_bytes"])) if c.unit_bytes == int(r["unit_bytes"])]
        out.append(sim.run(k).step_time_s)
    return np.asarray(out, dtype=float)


def fit_unit_host(records: Sequence[dict], cluster: ClusterSpec, iters: int = 4) -> dict:
    """The ``(h0, h1) >= 0`` for which the simulated step times of ``records``
    (:func:`time_fsdp_calibration`) match the measured ones: Newton steps on the two
    equations (slopes by finite differences: the step time is piecewise linear in them),
    a negative component set to 0 and the other refitted alone. ``{"unit_host_s",
    "unit_host_s_per_byte", "measured_s", "simulated_s", "simulated_at_0_s", "at_bound"}``."""
    measured = np.array([float(r["step_time_s"]) for r in records])
    at0 = _simulated(records, cluster, 0.0, 0.0)
    h = np.zeros(2)
    d = np.array([1e-4, 1e-10])
    for _ in range(iters):
        base = _simulated(records, cluster, *h)
        jac = np.stack([(_simulated(records, cluster, *(h + np.eye(2)[j] * d)) - base) / d[j] for j in range(2)],
                       axis=1)
        step, *_ = np.linalg.lstsq(jac, measured - base, rcond=None)
        new = h + step
        if (new < 0).any():  # one term alone: least squares on its own column
            j = int(np.argmax(new >= 0)) if (new >= 0).any() else 0
            col = jac[:, j]
            new = np.zeros(2)
            new[j] = max(h[j] + float(col @ (measured - base)) / max(float(col @ col), 1e-30), 0.0)
        new = np.minimum(new, [H0_MAX_S, H1_MAX_S])
        if np.allclose(new, h, rtol=1e-3, atol=[1e-7, 1e-14]):
            h = new
            break
        h = new
    sim = _simulated(records, cluster, *h)
    return {"unit_host_s": float(h[0]), "unit_host_s_per_byte": float(h[1]), "measured_s": measured.tolist(),
            "simulated_s": sim.tolist(), "simulated_at_0_s": at0.tolist(),
            "at_bound": bool(h[0] >= H0_MAX_S or h[1] >= H1_MAX_S)}


def apply_fsdp_calibration(spec: ClusterSpec, extra: dict, records: Sequence[dict]) -> ClusterSpec:
    """Fit the FSDP calibration records into a calibration: ``unit_host_s``,
    ``unit_host_s_per_byte``, ``fit.fsdp_calibration`` and ``fsdp_calibration_measurements``."""
    if not records:
        return spec
    fitted = fit_unit_host(records, spec)
    if fitted["at_bound"]:
        extra["fit"]["warnings"].append(
            f"the FSDP calibration run's steps took more than even {format_time(H0_MAX_S)} per collective explains "
            "(a saturated host?): the per-collective host cost is capped there")
    block = int(records[0]["block_bytes"])
    extra["fit"]["fsdp_calibration"] = {
        "method": f"FSDP2 calibration run: {records[0]['blocks']} blocks of {format_size(block)}, no compute, one unit "
                  f"per block vs {GROUP} blocks per unit (full, resharded, prefetch 1/1, fp32 reduce); the per-collective "
                  "host cost h0 + h1*bytes for which the simulator reproduces both step times", **fitted}
    extra["fsdp_calibration_measurements"] = list(records)
    return dataclasses.replace(spec, unit_host_s=fitted["unit_host_s"],
                               unit_host_s_per_byte=fitted["unit_host_s_per_byte"],
                               meta={**spec.meta, "fit": extra["fit"]})


def calibrate_fsdp(launch: Any, spec: ClusterSpec, extra: dict, steps: int = 6,
                   budget_s: float | None = None, rs_steps: int = 2) -> ClusterSpec:
    """Run the FSDP calibration on ``launch`` (:func:`time_fsdp_calibration` at
    :func:`calib_block_bytes`) and fit it into the calibration (:func:`apply_fsdp_calibration`);
    the part of ``commtune probe`` after the DDP calibration run, when it probed the sharded collectives.
    ``budget_s``: fewer timed steps (:func:`steps_within`, the reduce-scatter of ``rs_steps`` ring steps
    per peer) when the run's estimate exceeds it, noted in ``fit.warnings``."""
    block = calib_block_bytes(spec)
    if budget_s is not None:
        kept = steps_within(cluster_link(spec), spec.world_size, budget_s, steps, rs_steps)
        if kept < steps:
            extra["fit"]["warnings"].append(f"FSDP calibration run cut to fit the budget: {kept} timed steps per "
                                            f"configuration of {steps} ({max(budget_s, 0):.0f} s left)")
        steps = kept
    return apply_fsdp_calibration(spec, extra, time_fsdp_calibration(launch, block, steps=steps))


__all__ = ["apply_fsdp_calibration", "block_bytes_for", "calib_block_bytes", "calib_configs", "calib_profile",
           "calibrate_fsdp", "estimate_fsdp_calibration_s", "fit_unit_host", "steps_within", "time_fsdp_calibration"]
