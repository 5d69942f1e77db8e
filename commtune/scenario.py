"""A scenario: model + cluster + workload parameters, ready to simulate.

This is the left half of commtune's data flow (model profile + cluster spec
-> simulator); knobs are the other input, given per evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from commtune.cluster import ClusterSpec
from commtune.devices import get_device
from commtune.knobs import Knobs
from commtune.models.base import ModelProfile
from simulators import Simulator, Workload, build_workload
from simulators.memory import MemoryBreakdown, peak_memory


@dataclass(frozen=True)
class Scenario:
    model: ModelProfile
    cluster: ClusterSpec
    batch_size: int = 64
    precision: str = "amp"
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        from commtune.limits import RANGES

        RANGES["batch_size"].check(self.batch_size, "batch size")

    @cached_property
    def workload(self) -> Workload:
        return build_workload(self.model, get_device(self.cluster.device), self.batch_size, self.precision,
                              activation_checkpointing=self.activation_checkpointing)

    @cached_property
    def simulator(self) -> Simulator:
        return Simulator(self.workload, self.cluster)

    def memory(self, knobs: Knobs, optimizer: str = "adam") -> MemoryBreakdown:
        """The per-GPU peak memory of one step under ``knobs`` (:mod:`simulators.memory`)."""
        return peak_memory(self.model, knobs, world_size=self.cluster.world_size,
                           gpus_per_node=self.cluster.gpus_per_node, batch_size=self.batch_size,
                           precision=self.precision, optimizer=optimizer,
                           activation_checkpointing=self.activation_checkpointing)

    def memory_limit_bytes(self) -> int:
        """The memory of one GPU of the cluster's device (``devices.yaml``); configurations above it do not fit."""
        from commtune.devices import device_memory_bytes

        return device_memory_bytes(self.cluster.device)

    def describe(self) -> str:
        ckpt = ", activation checkpointing" if self.activation_checkpointing else ""
        return (
            f"{self.model.name} (batch {self.batch_size}/GPU, {self.precision}{ckpt}) on {self.cluster.describe()}"
        )
