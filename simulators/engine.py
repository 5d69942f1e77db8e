"""The step simulator: workload x system x network -> metrics of one step.

>>> from commtune.models import load_model
>>> from commtune.cluster import preset
>>> from simulators import Simulator, build_workload
>>> sim = Simulator(build_workload(load_model("resnet50")), preset("vpc-32gbit"))
>>> sim.run(Knobs()).step_time_s  # doctest: +SKIP
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.knobs import Knobs
from simulators.batch import schedule_batch
from simulators.kernels import NSCRATCH, kernels
from simulators.network import NetworkModel, network_for
from commtune.models.units import layer_numels
from simulators.sharded import (Collective, UnitPlan, collective_lines, reference_collectives, sharded_batch,
                                sharded_params, timeline, unit_times)
from simulators.system import Buffer, KnobArrays, system_params, system_row, system_terms
from simulators.workload import Workload

_new_buffer = functools.partial(tuple.__new__, Buffer)

METRICS = (
    "step_time_s",
    "compute_time_s",
    "comm_time_s",
    "exposed_comm_s",
    "scaling_efficiency",
    "samples_per_s",
    "num_buffers",
    "negotiation_s",
    "negotiation_msgs_rank0",
)


@dataclass(frozen=True)
class StepResult:
    """Metrics of one simulated step (times in seconds).

    ``compute_time_s`` is one GPU's step without a data-parallel framework
    (forward + backward + optimizer); ``comm_time_s`` the time the network is
    busy with all-reduce; ``exposed_comm_s`` what the step adds beyond
    compute (exposed communication, per-bucket interference, hooks, the
    framework's per-step cost); ``scaling_efficiency`` = compute / step.
    ``interference_s`` is what buffers, hooks and the slowest rank added to
    forward + backward.

    Step = s*forward + max(s*backward + hooks + D, communication done) +
    optimizer + step overhead, with s = 1 + rank_skew (n > 1) and D from
    ``simulators.system``; with n > 1 the last gradient is dispatched
    ``last_bucket_delay_s`` after it is ready (the framework's end-of-backward
    work), so the last buffer's all-reduce starts that much later unless the
    network is still busy.

    Sharded configurations (``sharding`` other than ``none``) follow
    :mod:`simulators.sharded`: ``num_buffers`` counts units, ``comm_time_s``
    is the sum of the collectives' durations, negotiation is 0,
    ``optimizer_s`` the optimizer on the shard and ``collectives`` the
    per-unit timeline (``buffers`` stays empty). The metrics come from the
    compiled timeline; ``collectives`` is built by the reference scheduler
    when first read (``collectives_fn``, its recipe, is no metric).
    """

    step_time_s: float
    compute_time_s: float
    comm_time_s: float
    exposed_comm_s: float
    scaling_efficiency: float
    samples_per_s: float
    num_buffers: int
    negotiation_s: float
    negotiation_msgs_rank0: int
    forward_s: float
    backward_s: float
    optimizer_s: float = 0.0
    interference_s: float = 0.0
    buffers: tuple[Buffer, ...] = ()
    collectives_fn: Callable[[], tuple[Collective, ...]] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def collectives(self) -> tuple[Collective, ...]:
        """The sharded collectives in issue order (reference scheduler, built on first read); () for all-reduce."""
        return self.collectives_fn() if self.collectives_fn is not None else ()

    def to_dict(self) -> dict:
        """The metrics (every field but ``buffers`` and ``collectives_fn``)."""
        return {name: getattr(self, name) for name in _METRIC_FIELDS}


_METRIC_FIELDS = tuple(name for name in StepResult.__dataclass_fields__ if name not in ("buffers", "collectives_fn"))

#: how many unit plans (one per ``unit_bytes``) and sharded collective lines (one per configuration
#: but its ``unit_bytes`` and prefetch) a simulator keeps
PLAN_CACHE, LINE_CACHE = 256, 4096


class _ShardedEntry(NamedTuple):
    """What :meth:`Simulator.run` of a sharded configuration needs besides its units and prefetch depths."""

    lines: np.ndarray  # collective_lines, (1, 4, 3)
    regather: np.ndarray  # (1,) bool
    hybrid: np.ndarray  # (1,) bool
    optimizer_s: float


def _bounded_get(cache: dict, key, build: Callable, limit: int):
    """``cache[key]``, built by ``build()`` when missing; beyond ``limit`` entries the oldest goes."""
    value = cache.get(key)
    if value is None:
        value = build()
        if len(cache) >= limit:
            cache.pop(next(iter(cache), None), None)
        cache[key] = value
    return value


class Simulator:
    """Simulates steps of one workload on one cluster under many knob settings."""

    def __init__(self, workload: Workload, cluster: ClusterSpec, network: NetworkModel | None = None):
        self.workload = workload
        self.cluster = cluster
        self.network = network or network_for(cluster)
        # The slowest rank sets the pace (rank_skew, n > 1); each gradient's
        # hook runs on backward: tensor i is ready (i+1) hooks later.
        self._stretch = 1.0 + (cluster.rank_skew if cluster.world_size > 1 else 0.0)
        hooks = cluster.tensor_hook_s * np.arange(1, len(workload.ready_s) + 1)
        self._ready_arr = workload.ready_s * self._stretch + hooks
        if cluster.world_size > 1 and len(self._ready_arr):
            # the last buffer's all-reduce starts last_bucket_delay after backward (its last
            # gradient's dispatch); backward itself ends on time
            self._ready_arr[-1] += cluster.last_bucket_delay_s
        self._hooks_s = float(hooks[-1]) if len(hooks) else 0.0
        self._bytes = workload.grad_bytes.astype(np.float64)
        self._terms = system_terms(workload, self.network, cluster)
        self._layer_fwd = np.ascontiguousarray(workload.layer_forward_s * self._stretch, dtype=np.float64)
        self._layer_bwd = np.ascontiguousarray(workload.layer_backward_s * self._stretch, dtype=np.float64)
        self._layer_numel = np.asarray(layer_numels(workload.profile), dtype=np.int64) if workload.profile else None
        self._plans: dict[int, UnitPlan] = {}
        self._entries: dict[tuple, _ShardedEntry] = {}
        self._sharpness = float(getattr(self.network, "bound_sharpness", math.inf))

    def unit_plan(self, unit_bytes: int) -> UnitPlan:
        """The workload's sharding units under ``unit_bytes`` (cached, at most :data:`PLAN_CACHE`)."""
        return _bounded_get(self._plans, unit_bytes,
                            lambda: UnitPlan.build(self.workload, unit_bytes, self._layer_numel), PLAN_CACHE)

    def _finish_sharded(self, compute_end, comm_end, busy, units, optimizer_s) -> dict:
        """Step metrics of sharded configurations (:mod:`simulators.sharded`)."""
        w = self.workload
        step = np.maximum(compute_end, comm_end) + optimizer_s + self.cluster.step_overhead_s
        zero = step * 0.0
        return {
            "step_time_s": step,
            "compute_time_s": zero + w.compute_s,
            "comm_time_s": busy,
            "exposed_comm_s": step - w.compute_s,
            "scaling_efficiency": w.compute_s / step,
            "samples_per_s": self.cluster.world_size * w.batch_size / step,
            "num_buffers": units,
            "negotiation_s": zero,
            "negotiation_msgs_rank0": zero,
            "interference_s": zero + (self._stretch - 1.0) * (w.forward_s + w.backward_s),
        }

    def _sharded_entry(self, knobs: Knobs) -> _ShardedEntry:
        """The collective lines and flags of one sharded configuration (all but its units and prefetch)."""
        arrays = KnobArrays.from_knobs([knobs])
        params = sharded_params(arrays, self.workload, self.cluster)
        return _ShardedEntry(collective_lines(arrays, params, self.workload, self.network, self.cluster),
                             params.regather.astype(np.bool_), params.hybrid.astype(np.bool_),
                             float(params.optimizer_s[0]))

    def _run_sharded(self, knobs: Knobs) -> StepResult:
        # the lines are cached per (streams, sharding, group, reshard, precision), the plans per unit_bytes
        key = (knobs.num_streams, knobs.sharding, knobs.shard_group_size, knobs.reshard_after_forward,
               knobs.reduce_precision)
        e = _bounded_get(self._entries, key, lambda: self._sharded_entry(knobs), LINE_CACHE)
        plan = self.unit_plan(int(knobs.unit_bytes))
        times = unit_times(plan, e.lines, self._sharpness)
        pf, pb = int(knobs.forward_prefetch), int(knobs.backward_prefetch)
        compute_end, comm_end, busy = timeline(plan, self._layer_fwd, self._layer_bwd, times, e.regather, e.hybrid,
                                               np.array([pf], dtype=np.int64), np.array([pb], dtype=np.int64))
        units = len(plan.numel)
        m = self._finish_sharded(float(compute_end[0]), float(comm_end[0]), float(busy[0]), units, e.optimizer_s)
        return StepResult(
            step_time_s=float(m["step_time_s"]), compute_time_s=float(m["compute_time_s"]),
            comm_time_s=float(m["comm_time_s"]), exposed_comm_s=float(m["exposed_comm_s"]),
            scaling_efficiency=float(m["scaling_efficiency"]), samples_per_s=float(m["samples_per_s"]),
            num_buffers=units, negotiation_s=0.0, negotiation_msgs_rank0=0,
            forward_s=self.workload.forward_s, backward_s=self.workload.backward_s, optimizer_s=e.optimizer_s,
            interference_s=float(m["interference_s"]),
            collectives_fn=functools.partial(reference_collectives, plan, self._layer_fwd, self._layer_bwd, times,
                                             bool(e.regather[0]), bool(e.hybrid[0]), pf, pb),
        )

    def _batch_sharded(self, knobs: KnobArrays) -> dict[str, np.ndarray]:
        """:meth:`run_batch` of sharded rows: one compiled timeline pass per distinct ``unit_bytes``."""
        n = len(knobs)
        params = sharded_params(knobs, self.workload, self.cluster)
        compute_end, comm_end, busy = np.zeros(n), np.zeros(n), np.zeros(n)
        units = np.zeros(n, dtype=np.int64)
        lines = collective_lines(knobs, params, self.workload, self.network, self.cluster)
        values, inverse = np.unique(knobs.unit_bytes, return_inverse=True)
        for v, value in enumerate(values.tolist()):
            idx = np.flatnonzero(inverse == v)
            plan = self.unit_plan(int(value))
            sub_params = params.take(idx)
            times = unit_times(plan, lines[idx], self._sharpness)
            compute_end[idx], comm_end[idx], busy[idx] = sharded_batch(
                plan, self._layer_fwd, self._layer_bwd, times, sub_params)
            units[idx] = len(plan.numel)
        return self._finish_sharded(compute_end, comm_end, busy, units, params.optimizer_s)

    def _finish(self, comm_end, busy, nbuf, rounds, nego_s, nego_msgs, delay) -> dict:
        """Step metrics from the schedule's outcome; floats or arrays (one entry per configuration)."""
        w = self.workload
        compute = w.compute_s
        backward = w.backward_s * self._stretch + self._hooks_s + delay
        step = (w.forward_s * self._stretch + np.maximum(backward, comm_end) + w.optimizer_s
                + self.cluster.step_overhead_s)
        return {
            "step_time_s": step,
            "compute_time_s": step * 0.0 + compute,
            "comm_time_s": busy,
            "exposed_comm_s": step - compute,
            "scaling_efficiency": compute / step,
            "samples_per_s": self.cluster.world_size * w.batch_size / step,
            "num_buffers": nbuf,
            "negotiation_s": rounds * nego_s,
            "negotiation_msgs_rank0": rounds * nego_msgs,
            "interference_s": self._hooks_s + delay + (self._stretch - 1.0) * (w.forward_s + w.backward_s),
        }

    def run(self, knobs: Knobs) -> StepResult:
        """Simulate one configuration, keeping the per-buffer (sharded: per-collective) schedule."""
        if knobs.sharding != "none":
            return self._run_sharded(knobs)
        row = system_row(knobs, self._terms)
        buf = np.empty((NSCRATCH, len(self._bytes) + 1))
        prow = np.array(row, dtype=np.float64)
        nb, rounds, busy, delay = kernels().schedule_row(self._ready_arr, self._bytes, prow, buf)
        # Buffer rows built by tuple.__new__ (C calls only): first, last as ints, then five floats
        buffers = tuple(map(_new_buffer, zip(*buf[:2, :nb].astype(np.int64).tolist(), *buf[2:7, :nb].tolist())))
        m = self._finish(buffers[-1].done_s, busy, nb, rounds, row[4], row[5], delay)
        return StepResult(
            step_time_s=float(m["step_time_s"]),
            compute_time_s=float(m["compute_time_s"]),
            comm_time_s=float(m["comm_time_s"]),
            exposed_comm_s=float(m["exposed_comm_s"]),
            scaling_efficiency=float(m["scaling_efficiency"]),
            samples_per_s=float(m["samples_per_s"]),
            num_buffers=len(buffers),
            negotiation_s=float(m["negotiation_s"]),
            negotiation_msgs_rank0=int(m["negotiation_msgs_rank0"]),
            forward_s=self.workload.forward_s,
            backward_s=self.workload.backward_s,
            optimizer_s=self.workload.optimizer_s,
            interference_s=float(m["interference_s"]),
            buffers=buffers,
        )

    def run_batch(self, knobs: KnobArrays | Sequence[Knobs]) -> dict[str, np.ndarray]:
        """Simulate many configurations at once; returns one array per metric."""
        if not isinstance(knobs, KnobArrays):
            knobs = KnobArrays.from_knobs(list(knobs))
        sharded = np.asarray(knobs.sharding) != "none"
        if sharded.any():
            if sharded.all():
                return self._batch_sharded(knobs)
            parts = [(rows, part(knobs.take(rows))) for rows, part in (
                (np.flatnonzero(~sharded), self._batch_allreduce), (np.flatnonzero(sharded), self._batch_sharded))]
            out = {}
            for key in parts[0][1]:
                out[key] = np.zeros(len(knobs), dtype=np.result_type(*(np.asarray(p[key]) for _, p in parts)))
                for rows, p in parts:
                    out[key][rows] = p[key]
            return out
        return self._batch_allreduce(knobs)

    def _batch_allreduce(self, knobs: KnobArrays) -> dict[str, np.ndarray]:
        """:meth:`run_batch` of all-reduce (``sharding: none``) rows."""
        params = system_params(knobs, self.workload, self.network, self.cluster, self._terms)
        out = schedule_batch(self._ready_arr, self._bytes, params)
        return self._finish(out["comm_end_s"], out["comm_busy_s"], out["num_buffers"], out["rounds"],
                            params.nego_s, params.nego_msgs, out["delay_s"])
