"""Physical lower bound of the step time for a workload on a network.

Whatever the knobs: communication cannot start before the first gradient is
ready; it moves bytes no faster than the best per-byte cost any stream count
or algorithm reaches; and the last gradient's all-reduce starts after backward
ends, so it cannot be hidden. With ``a*``/``b*`` the smallest latency and
per-byte cost over the allowed knobs and ``rho`` the smallest wire ratio::

    LB = F + max(B, r_first + a* + b* * rho * total_bytes, B + a* + b* * rho * last_bytes)
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
    a_min, b_min = float(np.min(a)), float(np.min(b))
    gbpe = workload.grad_bytes_per_element
    rho = min(float(wire_bytes_per_element(p, gbpe)) for p in wire_precisions) / gbpe
    total = workload.total_grad_bytes * rho
    last = float(workload.grad_bytes[-1]) * rho
    first_ready = float(workload.ready_s[0])
    comm_bound = max(first_ready + a_min + b_min * total, workload.backward_s + a_min + b_min * last)
    return workload.forward_s + max(workload.backward_s, comm_bound)
