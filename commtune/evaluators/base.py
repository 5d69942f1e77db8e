"""Objectives ("evaluators"): knobs in, metrics out.

The search backends only see this interface, Ray Tune style: an objective
evaluates one configuration and returns a dict of metrics including
``step_time_s`` (the value minimised). The simulator is the one objective
today; a live-cluster evaluator plugs in by subclassing :class:`Objective`
and registering a factory::

    @register_objective("live")
    def _make_live(scenario, **options):
        return LiveClusterObjective(scenario, **options)

Objectives that can evaluate many configurations at once (the simulator)
set ``supports_batch`` and implement :meth:`Objective.evaluate_batch`; the
grid backend and the default engine's screening step use it.

Objectives that measure step by step (the live one) set ``supports_steps``
and implement ``evaluate_steps(knobs, on_step)``: ``on_step(step, times)``
is called after each timed step and returns True to stop (prune) the trial;
the Optuna backend reports the running median to its pruner, the Ray backend
to ASHA. Such objectives may expose ``screening_objective`` (a batch
simulator of the same workload) for the auto engine's screening.
"""
from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np

from commtune.errors import CommtuneError, did_you_mean
from commtune.knobs import Knobs

METRIC = "step_time_s"


class Objective(abc.ABC):
    """Knobs in, metrics out. Lower ``step_time_s`` is better."""

    name: str = "objective"
    metric: str = METRIC
    supports_batch: bool = False
    supports_steps: bool = False

    @abc.abstractmethod
    def evaluate(self, knobs: Knobs) -> dict[str, float]:
        """Metrics of one configuration (must include :data:`METRIC`)."""

    def evaluate_batch(self, configs) -> dict[str, np.ndarray]:
        """Metrics of many configurations (a ``KnobArrays`` or list of Knobs)."""
        if isinstance(configs, list):
            rows = configs
        else:
            rows = [configs.knobs(i) for i in range(len(configs))]
        results = [self.evaluate(k) for k in rows]
        return {m: np.asarray([r[m] for r in results]) for m in results[0]} if results else {}

    def lower_bound_s(self) -> float | None:
        """A step time no configuration can beat, if known."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class SimulatorObjective(Objective):
    """The step simulator of a :class:`commtune.scenario.Scenario`."""

    name = "simulator"
    supports_batch = True

    def __init__(self, scenario):
        self.scenario = scenario
        self.simulator = scenario.simulator

    def evaluate(self, knobs: Knobs) -> dict[str, float]:
        r = self.simulator.run(knobs)
        d = r.to_dict()
        return {k: float(v) for k, v in d.items()}

    def evaluate_batch(self, configs) -> dict[str, np.ndarray]:
        return self.simulator.run_batch(configs)

    def lower_bound_s(self) -> float:
        from simulators.bounds import step_lower_bound_s

        return float(step_lower_bound_s(self.scenario.workload, self.simulator.network))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scenario": self.scenario.describe()}

    def __getstate__(self):  # Ray ships objectives to workers; the simulator is rebuilt there
        return {"scenario": self.scenario}

    def __setstate__(self, state):
        self.__init__(state["scenario"])


ObjectiveFactory = Callable[..., Objective]
OBJECTIVES: dict[str, ObjectiveFactory] = {}


def register_objective(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    """Decorator: register ``factory(scenario, **options) -> Objective`` as ``name``."""

    def deco(factory: ObjectiveFactory) -> ObjectiveFactory:
        OBJECTIVES[name] = factory
        return factory

    return deco


@register_objective("simulator")
def _simulator(scenario, **_options) -> Objective:
    return SimulatorObjective(scenario)


@register_objective("live")
def _live(scenario, **options) -> Objective:
    """Measured DDP steps (:mod:`commtune.evaluators.live`); options: ``settings=LiveSettings(...)``."""
    from commtune.evaluators.live import LiveObjective

    return LiveObjective(scenario, **options)


def make_objective(name: str, scenario, **options) -> Objective:
    try:
        factory = OBJECTIVES[name]
    except KeyError:
        raise CommtuneError(
            f"unknown objective {name!r}{did_you_mean(name, list(OBJECTIVES))}; objectives: {', '.join(OBJECTIVES)}"
        ) from None
    return factory(scenario, **options)
