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
rank-synchronisation wait of its ranks (``ClusterSpec.collective_jitter_s``)
plus the framework's host work around it, ``h0 + h1*S``
(``ClusterSpec.unit_host_s``, ``unit_host_s_per_byte``: added to ``a``, ``f``
and ``b``).
The optimizer runs on the shard: ``optimizer_s / group``. Forward and
backward stretch by ``1 + rank_skew`` (n > 1); the step pays
``step_overhead_s``. DDP's per-tensor hooks, per-bucket costs and SM share,
host work per byte, ``wire_precision`` and the all-reduce's negotiation do not
apply. ::

    step = max(end of compute, end of the last collective) + optimizer_s/group + step_overhead

:func:`schedule_sharded` is the reference scheduler (one configuration, with
its collectives); :func:`timeline` runs the same timeline for many
configurations (:func:`sharded_batch`, and ``Simulator.run`` as one row) in a
loop compiled by numba where it imports (a pure-Python fallback otherwise), and
agrees with the reference exactly; ``StepResult.collectives`` is the
reference's, built when read. The collective times are one line per
configuration and collective (:func:`collective_lines`, from the network's
coefficients tabulated per group size, :func:`shard_coeff_table`) applied to
each unit's elements (:func:`unit_times`); a positive ``unit_bytes`` groups
units by a compiled greedy pass equal to ``group_units`` (:meth:`UnitPlan.build`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.knobs import KNOBS
from commtune.models.units import ROOT_UNIT, UNIT_BYTES_PER_ELEMENT, Unit, group_units, layer_numels
from simulators.network import SHARD_OPS, NetworkModel, latency_bounded
from simulators.system import KnobArrays
from simulators.workload import Workload



@dataclass(frozen=True, eq=False)
class UnitPlan:
    """The units of one workload under one ``unit_bytes``, as index arrays.

    ``unit_of[i]`` is layer i's unit; ``fwd_reach[i]``: forward first needs
    ``unit_of[i]`` at layer i; ``bwd_reach[i]``: backward first needs it at
    layer i (its last layer); ``grads_ready[i]``: layer i's backward completes
    its unit's gradients (its first layer); ``kept[u]``: never resharded
    (FSDP2's root); ``regather_order``: the other units in the order backward
    needs them; ``labels``: the units' names (None: greedy units, ``unit0``,
    ``unit1``, ... as :func:`~commtune.models.units.group_units` names them)."""

    numel: np.ndarray  # (U,)
    unit_of: np.ndarray  # (L,) int64
    fwd_reach: np.ndarray  # (L,) bool
    bwd_reach: np.ndarray  # (L,) bool
    grads_ready: np.ndarray  # (L,) bool
    kept: np.ndarray  # (U,) bool
    regather_order: np.ndarray  # (R,) int64, unit indices
    labels: tuple[str, ...] | None = None

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """The units' names, forward order."""
        return self.labels if self.labels is not None else tuple(f"unit{u}" for u in range(len(self.numel)))

    @classmethod
    def build(cls, workload: Workload, unit_bytes: int, layer_numel: np.ndarray | None = None) -> "UnitPlan":
        """The plan of ``group_units(workload.profile, unit_bytes)``; ``layer_numel`` (the
        profile's :func:`~commtune.models.units.layer_numels`, int64) spares recounting them.
        A positive ``unit_bytes`` takes the compiled greedy grouping (:func:`_greedy_units`,
        equal to ``group_units``'), no :class:`Unit` objects."""
        if workload.profile is None:
            raise CommtuneError(f"workload {workload.model!r} has no layers to shard (build it with build_workload)")
        if unit_bytes <= 0 or not workload.profile.layers:
            return cls.from_units(group_units(workload.profile, int(unit_bytes)), len(workload.profile.layers))
        numel = np.asarray(layer_numels(workload.profile) if layer_numel is None else layer_numel, dtype=np.int64)
        nlayers = len(numel)
        unit_of, sizes = np.empty(nlayers, dtype=np.int64), np.zeros(nlayers, dtype=np.int64)
        first, last = np.empty(nlayers, dtype=np.bool_), np.empty(nlayers, dtype=np.bool_)
        cap = max(int(unit_bytes) // UNIT_BYTES_PER_ELEMENT, 1)
        units = int(_compiled(_greedy_units)(numel, cap, unit_of, first, last, sizes))
        # greedy units are consecutive and none is the root: backward needs them last first
        return cls(sizes[:units].astype(np.float64), unit_of, first, last, first, np.zeros(units, dtype=np.bool_),
                   np.arange(units - 1, -1, -1, dtype=np.int64))

    @classmethod
    def from_units(cls, units: list[Unit], nlayers: int) -> "UnitPlan":
        """The plan of ``units`` (:func:`~commtune.models.units.group_units`) over ``nlayers`` layers."""
        unit_of = np.zeros(nlayers, dtype=np.int64)
        fwd_reach = np.zeros(nlayers, dtype=bool)
        bwd_reach = np.zeros(nlayers, dtype=bool)
        ready = np.zeros(nlayers, dtype=bool)
        for u, unit in enumerate(units):
            unit_of[list(unit.layers)] = u
            fwd_reach[unit.first] = bwd_reach[unit.last] = ready[unit.first] = True
        kept = np.array([unit.name == ROOT_UNIT for unit in units], dtype=bool)
        order = sorted((u for u in range(len(units)) if not kept[u]), key=lambda u: -units[u].last)
        return cls(np.array([unit.numel for unit in units], dtype=np.float64), unit_of, fwd_reach, bwd_reach, ready,
                   kept, np.asarray(order, dtype=np.int64), tuple(unit.name for unit in units))


def _greedy_units(numel, cap, unit_of, first, last, sizes):  # pragma: no cover - numba
    """``group_units``' greedy grouping for ``unit_bytes > 0`` (layers in ready order, last
    first, filled up to ``cap`` elements; a layer over the cap alone; parameter-less layers
    join the open unit), compiled: writes each layer's unit (forward order) into ``unit_of``,
    whether it is its unit's first / last layer into ``first`` / ``last``, the units'
    elements into ``sizes[:units]``, and returns the number of units."""
    nlayers = numel.shape[0]
    g = 0
    size = 0
    for i in range(nlayers - 1, -1, -1):
        n = numel[i]
        if i < nlayers - 1 and size > 0 and n > 0 and size + n > cap:
            g += 1
            size = 0
        unit_of[i] = g
        size += n
    for i in range(nlayers):
        u = g - unit_of[i]
        unit_of[i] = u
        sizes[u] += numel[i]
        first[i] = i == 0 or unit_of[i - 1] != u
        if i > 0:
            last[i - 1] = first[i]
    if nlayers > 0:
        last[nlayers - 1] = True
    return g + 1


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

    def take(self, idx: np.ndarray) -> "ShardedParams":
        """The configurations at ``idx`` (an index array), in that order."""
        return ShardedParams(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


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
    regather = ((knobs.sharding == "full") | (knobs.sharding == "hybrid")) & (reshard != 0)
    return ShardedParams(group=group, regather=regather, hybrid=knobs.sharding == "hybrid",
                         forward_prefetch=knobs.forward_prefetch.astype(np.int64),
                         backward_prefetch=knobs.backward_prefetch.astype(np.int64),
                         optimizer_s=workload.optimizer_s / group)


def shard_coeff_table(network: NetworkModel, group: int) -> np.ndarray:
    """``(a, b, f)`` of every sharded collective over groups of ``group`` ranks for each
    stream count the knob allows: an array (len(SHARD_OPS), 3, K), row k-1 for k streams
    (:meth:`NetworkModel.shard_coeffs`), computed once per network and group size (they
    depend on nothing else)."""
    tables = network.__dict__.setdefault("_shard_tables", {})
    table = tables.get(group)
    if table is None:
        ks = np.arange(1, int(KNOBS["num_streams"].high) + 1, dtype=np.float64)
        grp = np.full(ks.shape, group, dtype=np.int64)
        table = tables[group] = np.array([np.broadcast_arrays(*network.shard_coeffs(op, ks, grp))
                                          for op in SHARD_OPS], dtype=np.float64)
    return table


#: the collectives of :func:`collective_lines` / :func:`unit_times`, in their order
COLLECTIVES = ("allgather", "regather", "reduce_scatter", "replica_allreduce")


def _coeffs(network: NetworkModel, op: str, streams: np.ndarray, group: np.ndarray) -> np.ndarray:
    """``(a, b, f)`` of ``op`` per configuration (k streams, groups of ``group``): (rows, 3)."""
    j = SHARD_OPS.index(op)
    if (group == group[0]).all():  # one group size (one configuration): no grouping needed
        return shard_coeff_table(network, int(group[0]))[j][:, streams - 1].T
    values, inverse = np.unique(group, return_inverse=True)
    tables = np.array([shard_coeff_table(network, int(g)) for g in values.tolist()])
    return tables[inverse, j, :, streams - 1]


def collective_lines(knobs: KnobArrays, params: ShardedParams, workload: Workload, network: NetworkModel,
                     cluster: ClusterSpec) -> np.ndarray:
    """Per configuration and collective (:data:`COLLECTIVES`): ``(a + w + h0, (b + h1) * bytes per
    element, f + w + h0 or 0)``, an array (configurations, 4, 3); a unit of E elements takes
    ``latency_bounded(a + w + b*bytes*E, f + w)`` (module docstring). A collective that does not
    run (one rank; the replica all-reduce without ``hybrid``) is all 0, and so is its time."""
    streams = knobs.num_streams.astype(np.int64)
    group = params.group
    reshard = knobs.reshard_after_forward.astype(np.int64)
    regroup = np.where(reshard >= 2, np.minimum(reshard, group), group)
    param_bytes = 4.0 if workload.precision == "fp32" else 2.0
    grad_bytes = np.where(knobs.reduce_precision == "bf16", 2.0, 4.0)
    jitter = float(getattr(cluster, "collective_jitter_s", 0.0))
    host0 = float(getattr(cluster, "unit_host_s", 0.0))
    host1 = float(getattr(cluster, "unit_host_s_per_byte", 0.0))
    rows = len(group)
    ranks = np.empty((rows, 4))
    ranks[:, 0] = ranks[:, 2] = group
    ranks[:, 1] = regroup
    ranks[:, 3] = cluster.world_size / group
    coef = np.empty((rows, 4, 3))
    for c, (op, grp) in enumerate((("allgather", group), ("allgather", regroup), ("reduce_scatter", group),
                                   ("replica_allreduce", group))):
        coef[:, c] = _coeffs(network, op, streams, grp)
    w = jitter * np.sqrt(2.0 * np.log(np.maximum(ranks, 1.0))) if jitter > 0 else 0.0
    size = np.empty((rows, 4))  # bytes per element, powers of two: b*bytes*E is exactly b*(bytes*E)
    size[:, :2] = param_bytes
    size[:, 2:] = grad_bytes[:, None]
    out = np.empty((rows, 4, 3))
    out[..., 0] = coef[..., 0] + w + host0
    out[..., 1] = (coef[..., 1] + host1) * size
    out[..., 2] = np.where(coef[..., 2] > 0, coef[..., 2] + w + host0, 0.0)
    runs = ranks > 1
    runs[:, 3] &= params.hybrid
    out[~runs] = 0.0
    return out


def unit_times(plan: UnitPlan, lines: np.ndarray, sharpness: float = math.inf) -> np.ndarray:
    """Seconds of each collective (:data:`COLLECTIVES`) of each unit of ``plan`` for each row of
    ``lines`` (:func:`collective_lines`): (configurations, 4, units); ``sharpness`` the
    network's ``bound_sharpness``."""
    line = lines[..., 1, None] * plan.numel
    line += lines[..., 0, None]  # a + b*E
    floor = lines[..., 2, None]
    return latency_bounded(line, floor, sharpness) if (floor > 0).any() else line


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
    units = len(plan.numel)
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


def _timeline(fwd, bwd, unit_of, fwd_reach, bwd_reach, grads_ready, kept, order, times, regather, hybrid, pf, pb,
              compute_end, comm_end, busy):  # pragma: no cover - numba
    """:func:`schedule_sharded` for every row (configuration) of the (rows, 4, units) times."""
    rows, _, units = times.shape
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
                    link = start + times[c, 0, issued]
                    total += times[c, 0, issued]
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
                    link = start + times[c, 1, w]
                    total += times[c, 1, w]
                    ready_at[w] = link
                    issued += 1
                if not kept[u] and ready_at[u] > t:
                    t = ready_at[u]
            t += bwd[i]
            if grads_ready[i]:
                start = t if t > link else link
                link = start + times[c, 2, u]
                total += times[c, 2, u]
                if hybrid[c]:
                    start = link if link > lane else lane
                    lane = start + times[c, 3, u]
                    total += times[c, 3, u]
        compute_end[c] = t
        comm_end[c] = link if link > lane else lane
        busy[c] = total


@functools.cache
def _compiled(fn: Callable) -> Callable:
    """``fn`` (:func:`_timeline`, :func:`_greedy_units`) compiled by numba (cached on disk), or as
    it is where numba does not import."""
    try:
        import numba
    except ImportError:
        return fn
    return numba.njit(cache=True)(fn)


def timeline(plan: UnitPlan, fwd_s: np.ndarray, bwd_s: np.ndarray, times: np.ndarray, regather: np.ndarray,
             hybrid: np.ndarray, forward_prefetch: np.ndarray,
             backward_prefetch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(compute_end, comm_end, busy)`` of each row of ``times`` (:func:`unit_times` on
    ``plan``) by the compiled :func:`_timeline`: the per-layer compute times (forward order,
    stretched) contiguous float64, the flags and prefetch depths one entry per row (bool,
    bool, int64, int64)."""
    rows = len(regather)
    compute_end, comm_end, busy = np.empty(rows), np.empty(rows), np.empty(rows)
    _compiled(_timeline)(fwd_s, bwd_s, plan.unit_of, plan.fwd_reach, plan.bwd_reach, plan.grads_ready, plan.kept,
                         plan.regather_order, np.ascontiguousarray(times, dtype=np.float64), regather, hybrid,
                         forward_prefetch, backward_prefetch, compute_end, comm_end, busy)
    return compute_end, comm_end, busy


def sharded_batch(plan: UnitPlan, fwd_s: np.ndarray, bwd_s: np.ndarray, times: np.ndarray,
                  params: ShardedParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(compute_end, comm_end, busy)`` per configuration of ``params`` (all on ``plan``)."""
    f64 = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    return timeline(plan, f64(fwd_s), f64(bwd_s), times, params.regather.astype(np.bool_),
                    params.hybrid.astype(np.bool_), params.forward_prefetch.astype(np.int64),
                    params.backward_prefetch.astype(np.int64))


def reference_collectives(plan: UnitPlan, fwd_s: np.ndarray, bwd_s: np.ndarray, times: np.ndarray, regather: bool,
                          hybrid: bool, forward_prefetch: int, backward_prefetch: int) -> tuple[Collective, ...]:
    """The collectives of one configuration (row 0 of ``times``) by the reference scheduler
    :func:`schedule_sharded`, in issue order: what ``StepResult.collectives`` builds when read."""
    out = schedule_sharded(plan, fwd_s.tolist(), bwd_s.tolist(), *times[0].tolist(), regather, hybrid,
                           forward_prefetch, backward_prefetch)[0]
    return tuple(out)
