"""The step simulator as an evaluator (batch-capable, every knob)."""
from __future__ import annotations

from typing import Any

import numpy as np

from commtune.evaluators.base import Evaluator, register_evaluator
from commtune.knobs import SHARDING_KNOBS, Knobs

#: What a configuration whose peak memory exceeds the device's scores: never the best.
INFEASIBLE_S = float("inf")
_INFEASIBLE = {"step_time_s": INFEASIBLE_S, "samples_per_s": 0.0, "scaling_efficiency": 0.0}


class SimulatorEvaluator(Evaluator):
    """The step simulator of a :class:`commtune.scenario.Scenario` (or of a given
    ``workload`` on the scenario's cluster, e.g. the live synthetic model's).

    Every evaluation also reports ``peak_memory_bytes`` (:mod:`simulators.memory`);
    a configuration above the device's memory is infeasible: its step time is
    :data:`INFEASIBLE_S` (so no search returns it) and :attr:`infeasible`
    counts it.
    """

    name = "simulator"
    supports_batch = True

    def __init__(self, scenario, workload=None):
        self.scenario = scenario
        self.workload = workload
        self.memory_limit_bytes = scenario.memory_limit_bytes()
        self.infeasible = 0
        self._peaks: dict[tuple, int] = {}
        if workload is None:
            self.simulator = scenario.simulator
        else:
            from simulators import Simulator

            self.simulator = Simulator(workload, scenario.cluster)

    def peak_memory_bytes(self, knobs: Knobs) -> int:
        """Per-GPU peak memory of ``knobs`` (cached: only the sharded knobs change it)."""
        return self._peak(tuple(getattr(knobs, name) for name in SHARDING_KNOBS))

    def _peak(self, key: tuple) -> int:
        """Peak memory of the sharded knob values ``key`` (in :data:`SHARDING_KNOBS` order), cached."""
        if key not in self._peaks:
            self._peaks[key] = int(self.scenario.memory(Knobs(**dict(zip(SHARDING_KNOBS, key)))).peak)
        return self._peaks[key]

    def evaluate(self, knobs: Knobs) -> dict[str, float]:
        out = {k: float(v) for k, v in self.simulator.run(knobs).to_dict().items()}
        peak = self.peak_memory_bytes(knobs)
        out["peak_memory_bytes"] = float(peak)
        if peak > self.memory_limit_bytes:
            self.infeasible += 1
            out.update(_INFEASIBLE)
        return out

    def evaluate_batch(self, configs) -> dict[str, np.ndarray]:
        from simulators import KnobArrays

        arrays = configs if isinstance(configs, KnobArrays) else KnobArrays.from_knobs(list(configs))
        out = dict(self.simulator.run_batch(arrays))
        cols = (np.asarray(getattr(arrays, name)).tolist() for name in SHARDING_KNOBS)
        peaks = np.array([self._peak(key) for key in zip(*cols)], dtype=float)
        over = peaks > self.memory_limit_bytes
        out["peak_memory_bytes"] = peaks
        if over.any():
            self.infeasible += int(over.sum())
            for name, value in _INFEASIBLE.items():
                if name in out:
                    out[name] = np.where(over, value, np.asarray(out[name], dtype=float))
        return out

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
