"""Physical lower bound of the step time for a workload on a network.

Whatever the knobs: communication cannot start before the first gradient is
ready; it moves bytes no faster than the best per-byte cost any stream count
or algorithm (ring or tree) reaches; and the last gradient's all-reduce
starts after backward ends, so it cannot be hidden. With ``a*``/``b*`` the
smallest latency and per-byte cost over the allowed knobs and algorithms,
``rho`` the smallest wire ratio, ``B' = s*B + T*hook`` (s = 1 + rank skew, per-tensor hooks) and
``c`` the per-buffer cost (at least one buffer) and ``d`` the last buffer's delay after
backward (``ClusterSpec.last_bucket_delay_s``, n > 1)::

    LB = s*F + max(B', r_first + a* + b* * rho * total_bytes, B' + d + c + a* + b* * rho * last_bytes)
         + optimizer + step overhead
"""
from __future__ import annotations

import numpy as np

from simulators.network import NetworkModel
from simulators.system import wire_bytes_per_element
from simulators.workload import Workload


def step_lower_bound_s(
    workload: Workload, network: NetworkModel, max_streams: int = 16,
    hierarchical: tuple[bool, ...] = (False, True), wire_precisions: tuple[str, ...] = ("fp32", "fp16"),
) -> float:
    ks = np.repeat(np.arange(1, max_streams + 1), len(hierarchical))
    hs = np.tile(np.asarray(hierarchical, dtype=bool), max_streams)
    a, b = network.coeffs(ks, hs)
    a2, b2 = network.alt_coeffs(ks, hs)
    a_min, b_min = float(min(np.min(a), np.min(a2))), float(min(np.min(b), np.min(b2)))
    c = getattr(network, "cluster", None)
    hooks = float(getattr(c, "tensor_hook_s", 0.0)) * len(workload.ready_s)
    cost = float(getattr(c, "bucket_cost_s", 0.0))
    fixed = workload.optimizer_s + float(getattr(c, "step_overhead_s", 0.0))
    gbpe = workload.grad_bytes_per_element
    rho = min(float(wire_bytes_per_element(p, gbpe)) for p in wire_precisions) / gbpe
    total = workload.total_grad_bytes * rho
    last = float(workload.grad_bytes[-1]) * rho
    stretch = 1.0 + (float(getattr(c, "rank_skew", 0.0)) if network.world_size > 1 else 0.0)
    first_ready = float(workload.ready_s[0]) * stretch
    backward = workload.backward_s * stretch + hooks
    end_delay = float(getattr(c, "last_bucket_delay_s", 0.0)) if network.world_size > 1 else 0.0
    comm_bound = max(first_ready + a_min + b_min * total, backward + end_delay + cost + a_min + b_min * last)
    return workload.forward_s * stretch + max(backward, comm_bound) + fixed
