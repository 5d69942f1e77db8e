"""The step simulator: workload x system x network -> metrics of one step.

>>> from commtune.models import load_model
>>> from commtune.cluster import preset
>>> from simulators import Simulator, build_workload
>>> sim = Simulator(build_workload(load_model("resnet50")), preset("vpc-32gbit"))
>>> sim.run(Knobs()).step_time_s  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.knobs import Knobs
from simulators.batch import schedule_batch
from simulators.network import NetworkModel, network_for
from simulators.sharded import Collective, UnitPlan, schedule_sharded, sharded_batch, sharded_params, unit_times
from simulators.system import Buffer, KnobArrays, schedule, system_params
from simulators.workload import Workload

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
    per-unit timeline (``buffers`` stays empty).
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
    collectives: tuple[Collective, ...] = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("buffers")
        d.pop("collectives")
        return d


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
        self._ready = self._ready_arr.tolist()
        self._hooks_s = float(hooks[-1]) if len(hooks) else 0.0
        self._bytes = workload.grad_bytes.astype(np.float64)
        self._bytes_list = self._bytes.tolist()
        self._layer_fwd = workload.layer_forward_s * self._stretch
        self._layer_bwd = workload.layer_backward_s * self._stretch
        self._plans: dict[int, UnitPlan] = {}

    def unit_plan(self, unit_bytes: int) -> UnitPlan:
        """The workload's sharding units under ``unit_bytes`` (cached)."""
        plan = self._plans.get(unit_bytes)
        if plan is None:
            plan = self._plans[unit_bytes] = UnitPlan.build(self.workload, unit_bytes)
        return plan

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

    def _run_sharded(self, knobs: Knobs) -> StepResult:
        arrays = KnobArrays.from_knobs([knobs])
        plan = self.unit_plan(int(knobs.unit_bytes))
        params = sharded_params(arrays, self.workload, self.cluster)
        times = [x[0].tolist() for x in unit_times(plan, arrays, params, self.workload, self.network, self.cluster)]
        collectives, compute_end, comm_end, busy = schedule_sharded(
            plan, self._layer_fwd.tolist(), self._layer_bwd.tolist(), *times, bool(params.regather[0]),
            bool(params.hybrid[0]), int(params.forward_prefetch[0]), int(params.backward_prefetch[0]))
        opt = float(params.optimizer_s[0])
        m = self._finish_sharded(compute_end, comm_end, busy, len(plan.names), opt)
        return StepResult(
            step_time_s=float(m["step_time_s"]), compute_time_s=float(m["compute_time_s"]),
            comm_time_s=float(m["comm_time_s"]), exposed_comm_s=float(m["exposed_comm_s"]),
            scaling_efficiency=float(m["scaling_efficiency"]), samples_per_s=float(m["samples_per_s"]),
            num_buffers=len(plan.names), negotiation_s=0.0, negotiation_msgs_rank0=0,
            forward_s=self.workload.forward_s, backward_s=self.workload.backward_s, optimizer_s=opt,
            interference_s=float(m["interference_s"]), collectives=tuple(collectives),
        )

    def _batch_sharded(self, knobs: KnobArrays) -> dict[str, np.ndarray]:
        """:meth:`run_batch` of sharded rows: one compiled timeline pass per distinct ``unit_bytes``."""
        n = len(knobs)
        params = sharded_params(knobs, self.workload, self.cluster)
        compute_end, comm_end, busy = np.zeros(n), np.zeros(n), np.zeros(n)
        units = np.zeros(n, dtype=np.int64)
        values, inverse = np.unique(knobs.unit_bytes, return_inverse=True)
        for v, value in enumerate(values.tolist()):
            idx = np.flatnonzero(inverse == v)
            plan = self.unit_plan(int(value))
            sub = knobs.take(idx)
            sub_params = sharded_params(sub, self.workload, self.cluster)
            times = unit_times(plan, sub, sub_params, self.workload, self.network, self.cluster)
            compute_end[idx], comm_end[idx], busy[idx] = sharded_batch(
                plan, self._layer_fwd, self._layer_bwd, times, sub_params)
            units[idx] = len(plan.names)
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
        params = system_params(KnobArrays.from_knobs([knobs]), self.workload, self.network, self.cluster)
        row = params.row(0)
        buffers, rounds, busy, delay = schedule(self._ready, self._bytes_list, row)
        m = self._finish(buffers[-1].done_s, busy, len(buffers), rounds, row[4], row[5], delay)
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
            buffers=tuple(buffers),
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
        params = system_params(knobs, self.workload, self.network, self.cluster)
        out = schedule_batch(self._ready_arr, self._bytes, params)
        return self._finish(out["comm_end_s"], out["comm_busy_s"], out["num_buffers"], out["rounds"],
                            params.nego_s, params.nego_msgs, out["delay_s"])
