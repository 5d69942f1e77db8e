"""A scenario: model + cluster + workload parameters, ready to simulate.

This is the left half of commtune's data flow (model profile + cluster spec
-> simulator); knobs are the other input, given per evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from commtune.cluster import ClusterSpec
from commtune.devices import get_device
from commtune.models.base import ModelProfile
from simulators import Simulator, Workload, build_workload


@dataclass(frozen=True)
class Scenario:
    model: ModelProfile
    cluster: ClusterSpec
    batch_size: int = 64
    precision: str = "amp"

    def __post_init__(self) -> None:
        from commtune.limits import RANGES

        RANGES["batch_size"].check(self.batch_size, "batch size")

    @cached_property
    def workload(self) -> Workload:
        return build_workload(self.model, get_device(self.cluster.device), self.batch_size, self.precision)

    @cached_property
    def simulator(self) -> Simulator:
        return Simulator(self.workload, self.cluster)

    def describe(self) -> str:
        return (
            f"{self.model.name} (batch {self.batch_size}/GPU, {self.precision}) on {self.cluster.describe()}"
        )
