"""The step simulator as an evaluator (batch-capable, every knob)."""
from __future__ import annotations

from typing import Any

import numpy as np

from commtune.evaluators.base import Evaluator, register_evaluator
from commtune.knobs import Knobs


class SimulatorEvaluator(Evaluator):
    """The step simulator of a :class:`commtune.scenario.Scenario` (or of a given
    ``workload`` on the scenario's cluster, e.g. the live synthetic model's)."""

    name = "simulator"
    supports_batch = True

    def __init__(self, scenario, workload=None):
        self.scenario = scenario
        self.workload = workload
        if workload is None:
            self.simulator = scenario.simulator
        else:
            from simulators import Simulator

            self.simulator = Simulator(workload, scenario.cluster)

    def evaluate(self, knobs: Knobs) -> dict[str, float]:
        return {k: float(v) for k, v in self.simulator.run(knobs).to_dict().items()}

    def evaluate_batch(self, configs) -> dict[str, np.ndarray]:
        return self.simulator.run_batch(configs)

    def lower_bound_s(self) -> float:
        from simulators.bounds import step_lower_bound_s

        w = self.scenario.workload if self.workload is None else self.workload
        return float(step_lower_bound_s(w, self.simulator.network))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scenario": self.scenario.describe()}

    def __getstate__(self):  # Ray ships evaluators to workers; the simulator is rebuilt there
        return {"scenario": self.scenario, "workload": self.workload}

    def __setstate__(self, state):
        self.__init__(state["scenario"], state.get("workload"))


@register_evaluator("simulator")
def _simulator(scenario, **_options) -> Evaluator:
    return SimulatorEvaluator(scenario)
