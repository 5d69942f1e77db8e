"""Measure DDP's per-tensor and per-bucket costs on one device (``profile-model --ddp-costs``).

With one rank there is no network, so the simulator's single-GPU step is a
closed form (``simulators.system``; ``n == 1``): with K buckets and T tensors,
``step = F + B + T*tensor_hook + K*bucket_cost`` (+ optimizer, not timed here).
This module times forward + backward of the module without DDP and wrapped in
``DistributedDataParallel`` on a world-size-1 process group (gloo on CPU,
NCCL on CUDA) at several bucket caps, counts the buckets each cap gives with
the simulator's own bucketing rule, and fits ``bucket_cost`` as the slope of
step time over K and ``tensor_hook`` from the intercept above the no-DDP
time. The costs belong in a cluster file (``bucket_cost``, ``tensor_hook``).
A calibration, so it sits in the probe (above ``simulators``, whose bucketing
rule it uses, and above ``commtune.models``, whose recorder drives the module).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

from commtune.errors import CommtuneError
from commtune.models.base import ModelProfile
from commtune.models.record import RecordOptions, driving



def default_caps(profile: ModelProfile) -> list[int]:
    """Bucket caps that give very different bucket counts for any model: one
    tensor per bucket, a quarter of the gradients, all of them (bytes)."""
    total = profile.grad_bytes(4)
    return [1, max(total // 4, 1), 2 * total]


def bucket_counts(profile: ModelProfile, caps_bytes: Sequence[int]) -> list[int]:
    """Buckets DDP forms at each cap (the simulator's static rule, fp32 gradients;
    an explicit ``bucket_cap_mb`` caps the first bucket too in current torch)."""
    from commtune.cluster import ClusterSpec
    from commtune.knobs import Knobs
    from simulators import Simulator, synthetic_workload

    sizes = [t.numel for t in profile.ready_order()]
    w = synthetic_workload(np.arange(1, len(sizes) + 1) * 1e-6, sizes)
    sim = Simulator(w, ClusterSpec(nodes=1, gpus_per_node=1))
    return [sim.run(Knobs(fusion_policy="static", fusion_threshold_bytes=int(c),
                          first_bucket_bytes=int(c))).num_buffers
            for c in caps_bytes]


def fit_ddp_costs(no_ddp_s: float, step_s: Sequence[float], buckets: Sequence[int], tensors: int) -> dict[str, float]:
    """``bucket_cost_s`` = slope of step time over buckets (least squares, >= 0);
    ``tensor_hook_s`` = (intercept - no-DDP time) / tensors (>= 0)."""
    k = np.asarray(buckets, dtype=np.float64)
    t = np.asarray(step_s, dtype=np.float64)
    if len(set(k.tolist())) < 2:
        raise CommtuneError("the bucket caps give the same number of buckets; use caps that differ more")
    slope, intercept = np.polyfit(k, t, 1)
    return {"bucket_cost_s": max(float(slope), 0.0),
            "tensor_hook_s": max(float(intercept - no_ddp_s), 0.0) / max(int(tensors), 1)}


def measure_ddp_costs(module: Any, profile: ModelProfile, example: Any, device: Any, loss: Callable[[Any], Any],
                      steps: int = 5, warmup: int = 2, caps_bytes: Sequence[int] | None = None) -> dict[str, Any]:
    """Time ``module`` (``loss(module(example)).backward()``) without and with
    DDP at ``caps_bytes`` (default :func:`default_caps`) and fit the costs
    (module docstring); torch must be installed."""
    import torch
    import torch.distributed as dist

    cuda = device.type == "cuda"
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    elif dist.get_world_size() != 1:
        raise CommtuneError("--ddp-costs needs its own single-rank process group; run it outside a distributed job")
    try:
        def timed(model) -> float:
            times = []
            for i in range(warmup + steps):
                model.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                loss(model(example)).backward()
                if cuda:
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append(time.perf_counter() - t)
            return statistics.median(times)

        no_ddp = timed(module)
        caps = [int(c) for c in (caps_bytes or default_caps(profile))]
        step = []
        for cap in caps:
            ddp = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device.index or 0] if cuda else None, bucket_cap_mb=cap / 2**20,
                )
            step.append(timed(ddp))
            del ddp
    finally:
        if created:
            dist.destroy_process_group()
    buckets = bucket_counts(profile, caps)
    fit = fit_ddp_costs(no_ddp, step, buckets, profile.num_tensors)
    return {**fit, "no_ddp_s": no_ddp, "caps_bytes": caps, "buckets": buckets, "step_s": step}


def measure_recorded(module: Any, profile: ModelProfile, options: RecordOptions) -> dict[str, Any]:
    """:func:`measure_ddp_costs` of ``module`` as :func:`commtune.models.record.record_module`
    recorded it into ``profile`` with ``options`` (same device, input shape, loss and step counts)."""
    module, device, example, _, loss = driving(module, options)
    return measure_ddp_costs(module, profile, example, device, loss, options.steps, options.warmup)
