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

    ``comm_time_s`` is the time the network is busy with all-reduce;
    ``exposed_comm_s`` the part of the step it adds beyond compute;
    ``scaling_efficiency`` = compute / step (1.0 = perfect overlap).
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
    buffers: tuple[Buffer, ...] = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("buffers")
        return d


class Simulator:
    """Simulates steps of one workload on one cluster under many knob settings."""

    def __init__(self, workload: Workload, cluster: ClusterSpec, network: NetworkModel | None = None):
        self.workload = workload
        self.cluster = cluster
        self.network = network or network_for(cluster)
        self._ready = workload.ready_s.tolist()
        self._bytes = workload.grad_bytes.astype(np.float64)
        self._bytes_list = self._bytes.tolist()

    def _finish(self, comm_end, busy, nbuf, rounds, nego_s, nego_msgs) -> dict:
        """Step metrics from the schedule's outcome; floats or arrays (one entry per configuration)."""
        w = self.workload
        compute = w.forward_s + w.backward_s
        step = w.forward_s + np.maximum(w.backward_s, comm_end)
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
        }

    def run(self, knobs: Knobs) -> StepResult:
        """Simulate one configuration, keeping the per-buffer schedule."""
        params = system_params(KnobArrays.from_knobs([knobs]), self.workload, self.network, self.cluster)
        row = params.row(0)
        buffers, rounds, busy = schedule(self._ready, self._bytes_list, row)
        m = self._finish(buffers[-1].done_s, busy, len(buffers), rounds, row[4], row[5])
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
            buffers=tuple(buffers),
        )

    def run_batch(self, knobs: KnobArrays | Sequence[Knobs]) -> dict[str, np.ndarray]:
        """Simulate many configurations at once; returns one array per metric."""
        if not isinstance(knobs, KnobArrays):
            knobs = KnobArrays.from_knobs(list(knobs))
        params = system_params(knobs, self.workload, self.network, self.cluster)
        out = schedule_batch(self.workload.ready_s, self._bytes, params)
        return self._finish(out["comm_end_s"], out["comm_busy_s"], out["num_buffers"], out["rounds"],
                            params.nego_s, params.nego_msgs)
