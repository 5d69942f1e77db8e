"""Sharded data parallelism (FSDP2, HSDP, ZeRO): the per-unit timeline of one step.

Units are :func:`commtune.models.units.group_units` of the workload's model
under ``unit_bytes`` (in forward order of first use). With ``n`` ranks, the
shard group is the world for ``grad`` / ``full`` and ``shard_group_size``
(0 = the GPUs per node) for ``hybrid``; each collective is split over
``num_streams`` streams like an all-reduce buffer under ``split``
(:meth:`simulators.network.NetworkModel.shard_coeffs`).

Forward, layers in order: when compute first needs unit u (it reaches
``u.first``), every unit ``j <= u + forward_prefetch`` not yet gathered has its
all-gather issued (units ``0..forward_prefetch`` at time 0, so the first
unit's gather is exposed); a layer's compute waits for its unit's gather.

Backward, layers in reverse: units whose parameters were resharded after
forward (``full`` / ``hybrid`` with ``reshard_after_forward`` not false; never
FSDP2's ``root`` unit, which it keeps for backward) are re-gathered, in the
order backward needs them (``u.last`` descending), ``backward_prefetch``
ahead by the same rule, over ``reshard_after_forward`` ranks when it is an
integer (``min(N, group)``); ``grad`` and ``reshard_after_forward: false``
keep the gathered parameters. A unit's reduce-scatter is issued when its
gradients are ready (its first layer's backward done); under ``hybrid`` the
all-reduce of its shard across the groups follows on its own stream (the
inter-node link; FSDP2's all-reduce stream), first in first out.

The link (the documented simpler rule instead of a fair share): the
all-gather stream and the reduce-scatter stream share one link, which serves
one collective at a time in the order the training thread issues them
(FSDP2's program order: a unit's pre-backward gathers, its compute, its
reduce-scatter): ``start = max(issue, end of the previous collective)``,
``end = start + T``. Two link-bound collectives finish together as a fair
share would finish them; a latency-bound one does not overlap another.

Collective time ``T = latency_bounded(a + w + b*S, f + w)``: S the unit's
full bytes (gathers: parameters in the scenario's precision, 2 bytes unless
fp32; reduce-scatter and HSDP all-reduce: ``reduce_precision``), ``w`` the
rank-synchronisation wait of its ranks (``ClusterSpec.collective_jitter_s``).
The optimizer runs on the shard: ``optimizer_s / group``. Forward and
backward stretch by ``1 + rank_skew`` (n > 1); the step pays
``step_overhead_s``. DDP's per-tensor hooks, per-bucket costs and SM share,
host work per byte, ``wire_precision`` and the all-reduce's negotiation do not
apply. ::

    step = max(end of compute, end of the last collective) + optimizer_s/group + step_overhead

:func:`schedule_sharded` is the reference scheduler (one configuration, with
its collectives); :func:`sharded_batch` runs the same timeline for many
configurations in a loop compiled by numba where it imports (a pure-Python
fallback otherwise), and agrees with the reference exactly.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.models.units import group_units
from simulators.network import NetworkModel, latency_bounded
from simulators.system import KnobArrays
from simulators.workload import Workload

#: the unit FSDP2 keeps gathered between forward and backward (``fully_shard`` on the root module)
ROOT_UNIT = "root"


@dataclass(frozen=True, eq=False)
class UnitPlan:
    """The units of one workload under one ``unit_bytes``, as index arrays.

    ``unit_of[i]`` is layer i's unit; ``fwd_reach[i]``: forward first needs
    ``unit_of[i]`` at layer i; ``bwd_reach[i]``: backward first needs it at
    layer i (its last layer); ``grads_ready[i]``: layer i's backward completes
    its unit's gradients (its first layer); ``kept[u]``: never resharded
    (FSDP2's root); ``regather_order``: the other units in the order backward
    needs them."""

    names: tuple[str, ...]
    numel: np.ndarray  # (U,)
    unit_of: np.ndarray  # (L,) int64
    fwd_reach: np.ndarray  # (L,) bool
    bwd_reach: np.ndarray  # (L,) bool
    grads_ready: np.ndarray  # (L,) bool
    kept: np.ndarray  # (U,) bool
    regather_order: np.ndarray  # (R,) int64, unit indices

    @classmethod
    def build(cls, workload: Workload, unit_bytes: int) -> "UnitPlan":
        if workload.profile is None:
            raise CommtuneError(f"workload {workload.model!r} has no layers to shard (build it with build_workload)")
        units = group_units(workload.profile, int(unit_bytes))
        nlayers = len(workload.profile.layers)
        unit_of = np.zeros(nlayers, dtype=np.int64)
        fwd_reach = np.zeros(nlayers, dtype=bool)
        bwd_reach = np.zeros(nlayers, dtype=bool)
        ready = np.zeros(nlayers, dtype=bool)
        for u, unit in enumerate(units):
            unit_of[list(unit.layers)] = u
            fwd_reach[unit.first] = bwd_reach[unit.last] = ready[unit.first] = True
        kept = np.array([unit.name == ROOT_UNIT for unit in units], dtype=bool)
        order = sorted((u for u in range(len(units)) if not kept[u]), key=lambda u: -units[u].last)
        return cls(tuple(unit.name for unit in units), np.array([unit.numel for unit in units], dtype=np.float64),
                   unit_of, fwd_reach, bwd_reach, ready, kept, np.asarray(order, dtype=np.int64))


class Collective(NamedTuple):
    """One sharded collective of the reference timeline: ``kind`` (allgather, regather,
    reduce_scatter, replica_allreduce), the unit's index, start and end (seconds from the
    start of the step)."""

    kind: str
    unit: int
    start_s: float
    end_s: float


@dataclass(frozen=True, eq=False)
class ShardedParams:
    """Per-configuration numbers of a batch of sharded configurations (one row each)."""

    group: np.ndarray  # int, ranks per shard group
    regather: np.ndarray  # bool, backward re-gathers the resharded units
    hybrid: np.ndarray  # bool, HSDP's all-reduce across groups
    forward_prefetch: np.ndarray  # int
    backward_prefetch: np.ndarray  # int
    optimizer_s: np.ndarray  # the optimizer on the shard


def shard_group(knobs: KnobArrays, cluster: ClusterSpec) -> np.ndarray:
    """Ranks per shard group of each configuration; a hybrid group size that does not
    divide the world size is one clear error."""
    n = cluster.world_size
    size = np.where(knobs.shard_group_size > 0, knobs.shard_group_size, cluster.gpus_per_node).astype(np.int64)
    hybrid = knobs.sharding == "hybrid"
    bad = hybrid & ((size > n) | (n % np.maximum(size, 1) != 0))
    if bad.any():
        raise CommtuneError(f"shard_group_size {int(size[np.argmax(bad)])} does not divide the world size {n}; "
                            f"give a divisor of {n} (0 = the GPUs per node, {cluster.gpus_per_node})")
    return np.where(hybrid, size, n)


def sharded_params(knobs: KnobArrays, workload: Workload, cluster: ClusterSpec) -> ShardedParams:
    group = shard_group(knobs, cluster)
    reshard = knobs.reshard_after_forward.astype(np.int64)
    regather = np.isin(knobs.sharding, ("full", "hybrid")) & (reshard != 0)
    return ShardedParams(group=group, regather=regather, hybrid=knobs.sharding == "hybrid",
                         forward_prefetch=knobs.forward_prefetch.astype(np.int64),
                         backward_prefetch=knobs.backward_prefetch.astype(np.int64),
                         optimizer_s=workload.optimizer_s / group)


def unit_times(plan: UnitPlan, knobs: KnobArrays, params: ShardedParams, workload: Workload,
               network: NetworkModel, cluster: ClusterSpec) -> tuple[np.ndarray, ...]:
    """``(gather, regather, reduce_scatter, replica_allreduce)`` seconds, each (configurations, units)."""
    k = knobs.num_streams.astype(np.float64)[:, None]
    group = params.group[:, None]
    reshard = knobs.reshard_after_forward.astype(np.int64)[:, None]
    regroup = np.where(reshard >= 2, np.minimum(reshard, group), group)
    param_bytes = 4.0 if workload.precision == "fp32" else 2.0
    grad_bytes = np.where(knobs.reduce_precision == "bf16", 2.0, 4.0)[:, None]
    jitter = float(getattr(cluster, "collective_jitter_s", 0.0))
    sharp = float(getattr(network, "bound_sharpness", math.inf))

    def time(op: str, grp: np.ndarray, ranks: np.ndarray, size: np.ndarray) -> np.ndarray:
        a, b, f = network.shard_coeffs(op, k, grp)
        r = np.asarray(ranks, dtype=np.float64)
        w = jitter * np.sqrt(2.0 * np.log(np.maximum(r, 1.0))) if jitter > 0 else np.zeros(r.shape)
        line = a + w + b * size
        t = latency_bounded(line, np.where(f > 0, f + w, 0.0), sharp) if (f > 0).any() else line
        return np.where(r > 1, t, 0.0)

    numel = plan.numel[None, :]
    gather = time("allgather", group, group, numel * param_bytes)
    regather = time("allgather", regroup, regroup, numel * param_bytes)
    reduce = time("reduce_scatter", group, group, numel * grad_bytes)
    across = time("replica_allreduce", group, cluster.world_size / group, numel * grad_bytes)
    across = np.where(params.hybrid[:, None], across, 0.0)
    return gather, regather, reduce, across


def schedule_sharded(plan: UnitPlan, fwd_s: list[float], bwd_s: list[float], gather: list[float],
                     regather_t: list[float], reduce: list[float], across: list[float], regather: bool,
                     hybrid: bool, forward_prefetch: int, backward_prefetch: int
                     ) -> tuple[list[Collective], float, float, float]:
    """Reference scheduler for one configuration (module docstring): per-layer compute
    times (forward order, stretched) and per-unit collective times. Returns the collectives
    in issue order, the end of compute, the end of communication and the collectives'
    summed durations."""
    out: list[Collective] = []
    busy = 0.0
    link = 0.0  # when the link is free (its last collective's end)
    lane = 0.0  # HSDP's all-reduce stream
    units = len(plan.names)
    ready_at = [0.0] * units  # when each unit's parameters are gathered
    t = 0.0

    def on_link(kind: str, u: int, issue: float, dur: float) -> float:
        nonlocal link, busy
        busy += dur
        start = issue if issue > link else link
        link = start + dur
        out.append(Collective(kind, u, start, link))
        return link

    issued = 0
    for i, dt in enumerate(fwd_s):
        u = int(plan.unit_of[i])
        if plan.fwd_reach[i]:
            while issued < units and issued <= u + forward_prefetch:
                ready_at[issued] = on_link("allgather", issued, t, gather[issued])
                issued += 1
            t = max(t, ready_at[u])
        t += dt
    order = plan.regather_order.tolist() if regather else []
    issued = reached = 0
    for i in reversed(range(len(bwd_s))):
        u = int(plan.unit_of[i])
        if plan.bwd_reach[i] and order:
            reached += 0 if plan.kept[u] else 1
            while issued < len(order) and issued < reached + backward_prefetch:
                w = order[issued]
                ready_at[w] = on_link("regather", w, t, regather_t[w])
                issued += 1
            if not plan.kept[u]:
                t = max(t, ready_at[u])
        t += bwd_s[i]
        if plan.grads_ready[i]:
            end = on_link("reduce_scatter", u, t, reduce[u])
            if hybrid:
                start = max(end, lane)
                lane = start + across[u]
                busy += across[u]
                out.append(Collective("replica_allreduce", u, start, lane))
    return out, t, max(link, lane), busy


def _timeline(fwd, bwd, unit_of, fwd_reach, bwd_reach, grads_ready, kept, order, gather, regather_t, reduce,
              across, regather, hybrid, pf, pb, compute_end, comm_end, busy):  # pragma: no cover - numba
    """:func:`schedule_sharded` for every row (configuration) of the (rows, units) time arrays."""
    rows, units = gather.shape
    nlayers = fwd.shape[0]
    nreg = order.shape[0]
    ready_at = np.zeros(units)
    for c in range(rows):
        link = 0.0
        lane = 0.0
        total = 0.0
        t = 0.0
        issued = 0
        for i in range(nlayers):
            u = unit_of[i]
            if fwd_reach[i]:
                while issued < units and issued <= u + pf[c]:
                    start = t if t > link else link
                    link = start + gather[c, issued]
                    total += gather[c, issued]
                    ready_at[issued] = link
                    issued += 1
                if ready_at[u] > t:
                    t = ready_at[u]
            t += fwd[i]
        issued = 0
        reached = 0
        for i in range(nlayers - 1, -1, -1):
            u = unit_of[i]
            if bwd_reach[i] and regather[c] and nreg > 0:
                if not kept[u]:
                    reached += 1
                while issued < nreg and issued < reached + pb[c]:
                    w = order[issued]
                    start = t if t > link else link
                    link = start + regather_t[c, w]
                    total += regather_t[c, w]
                    ready_at[w] = link
                    issued += 1
                if not kept[u] and ready_at[u] > t:
                    t = ready_at[u]
            t += bwd[i]
            if grads_ready[i]:
                start = t if t > link else link
                link = start + reduce[c, u]
                total += reduce[c, u]
                if hybrid[c]:
                    start = link if link > lane else lane
                    lane = start + across[c, u]
                    total += across[c, u]
        compute_end[c] = t
        comm_end[c] = link if link > lane else lane
        busy[c] = total


@functools.cache
def _kernel() -> Callable:
    """:func:`_timeline` compiled by numba (cached on disk), or as it is where numba does not import."""
    try:
        import numba
    except ImportError:
        return _timeline
    return numba.njit(cache=True)(_timeline)


def sharded_batch(plan: UnitPlan, fwd_s: np.ndarray, bwd_s: np.ndarray, times: tuple[np.ndarray, ...],
                  params: ShardedParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(compute_end, comm_end, busy)`` per configuration of ``params`` (all on ``plan``)."""
    rows = len(params.group)
    compute_end, comm_end, busy = np.zeros(rows), np.zeros(rows), np.zeros(rows)
    gather, regather_t, reduce, across = (np.ascontiguousarray(x, dtype=np.float64) for x in times)
    _kernel()(np.ascontiguousarray(fwd_s, dtype=np.float64), np.ascontiguousarray(bwd_s, dtype=np.float64),
              plan.unit_of, plan.fwd_reach, plan.bwd_reach, plan.grads_ready, plan.kept, plan.regather_order,
              gather, regather_t, reduce, across, params.regather.astype(np.bool_), params.hybrid.astype(np.bool_),
              params.forward_prefetch, params.backward_prefetch, compute_end, comm_end, busy)
    return compute_end, comm_end, busy
