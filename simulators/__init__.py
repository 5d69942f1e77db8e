"""commtune's simulator of one data-parallel training step.

Layered like ASTRA-sim: :mod:`~simulators.workload` (gradient readiness
timeline) -> :mod:`~simulators.system` (fusion, negotiation, streams) ->
:mod:`~simulators.network` (collective cost over links); sharded data
parallelism (FSDP2, HSDP, ZeRO) has its per-unit timeline in
:mod:`~simulators.sharded`. :class:`Simulator` ties them together; :func:`~simulators.batch.schedule_batch` evaluates many
configurations at once.
"""
from simulators.engine import METRICS, Simulator, StepResult
from simulators.calibrated import CalibratedNetwork
from simulators.network import AnalyticalNetwork, NetworkModel, network_for
from simulators.system import Buffer, KnobArrays
from simulators.workload import Workload, build_workload, synthetic_workload

__all__ = [
    "METRICS", "Simulator", "StepResult", "AnalyticalNetwork", "CalibratedNetwork", "NetworkModel",
    "network_for", "Buffer", "KnobArrays", "Workload", "build_workload", "synthetic_workload",
]
