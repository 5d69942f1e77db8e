"""The evaluator interface and its registry: knobs in, metrics out.

Search backends see only this interface. An evaluator

* evaluates one configuration (:meth:`Evaluator.evaluate`) and returns a dict
  of metrics including ``step_time_s`` (the value minimised);
* evaluates many (:meth:`Evaluator.evaluate_many`; a batch simulator also
  offers :meth:`Evaluator.evaluate_batch` over ``KnobArrays``, flag
  ``supports_batch``);
* optionally reports step by step for pruning (``supports_steps``,
  :meth:`Evaluator.evaluate_steps`; ``max_steps`` steps at most);
* says which knobs it can apply (``applies``: None = every registered knob)
  and refuses spaces that vary others (:meth:`Evaluator.check_space`);
* may carry a ``screening`` evaluator (a batch simulator of the same
  workload) for screening and multi-fidelity confirmation.

Members register a factory ``factory(scenario, **options)``::

    @register_evaluator("mine")
    def _mine(scenario, **options):
        return MyEvaluator(scenario, **options)

Members: ``simulator`` (:mod:`commtune.evaluators.simulator`) and ``live``
(:mod:`commtune.evaluators.live`, measured PyTorch DDP steps).
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Sequence

import numpy as np

from commtune.knobs import Knobs
from commtune.registry import Registry

METRIC = "step_time_s"


class Evaluator(abc.ABC):
    """Knobs in, metrics out. Lower ``step_time_s`` is better."""

    name: str = "evaluator"
    metric: str = METRIC
    supports_batch: bool = False
    supports_steps: bool = False
    max_steps: int | None = None  # step-wise evaluators: steps per full evaluation
    applies: tuple[str, ...] | None = None  # knobs it can apply (None: all)
    screening: "Evaluator | None" = None  # a cheap batch evaluator of the same workload, if any

    @abc.abstractmethod
    def evaluate(self, knobs: Knobs) -> dict[str, Any]:
        """Metrics of one configuration (must include :data:`METRIC`)."""

    def evaluate_many(self, configs: Sequence[Knobs]) -> list[dict[str, Any]]:
        """Metrics of several configurations, in order."""
        return [self.evaluate(k) for k in configs]

    def evaluate_batch(self, configs) -> dict[str, np.ndarray]:
        """Metrics of many configurations (a ``KnobArrays`` or list of Knobs) as arrays."""
        rows = configs if isinstance(configs, list) else [configs.knobs(i) for i in range(len(configs))]
        results = self.evaluate_many(rows)
        return {m: np.asarray([r[m] for r in results]) for m in results[0]} if results else {}

    def evaluate_steps(self, knobs: Knobs, on_step: Callable[[int, list[float]], bool]) -> dict[str, Any]:
        """Step-wise evaluation: ``on_step(step, times)`` after each step, True stops it
        (the metrics then carry ``pruned: True``). Default: one plain evaluation."""
        return self.evaluate(knobs)

    def key(self, knobs: Knobs) -> Knobs:
        """What the result depends on (knobs it cannot apply normalised away)."""
        return knobs

    def check_space(self, space, what: str | None = None) -> None:
        """One-line CommtuneError if ``space`` varies knobs this evaluator cannot apply."""

    def lower_bound_s(self) -> float | None:
        """A step time no configuration can beat, if known."""
        return None

    def study_key(self) -> str:
        """What distinguishes this evaluator's studies (part of the study name)."""
        return self.name

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def close(self) -> None:
        """Release what measuring holds (the live evaluator's ranks); the search calls it at its end."""


EvaluatorFactory = Callable[..., Evaluator]
#: members registered by importing their module (kept lazy: live pulls in torch on use only)
REGISTRY: Registry[EvaluatorFactory] = Registry(
    "objective", "objectives", {"simulator": "commtune.evaluators.simulator", "live": "commtune.evaluators.live"})
EVALUATORS = REGISTRY.items  # name -> factory, for what has been registered so far


def register_evaluator(name: str) -> Callable[[EvaluatorFactory], EvaluatorFactory]:
    """Decorator: register ``factory(scenario, **options) -> Evaluator`` as ``name``."""
    return REGISTRY.register(name)


def evaluator_names() -> list[str]:
    return REGISTRY.names()


def make_evaluator(name: str, scenario, **options) -> Evaluator:
    """The registered evaluator ``name`` for ``scenario``."""
    return REGISTRY.get(name)(scenario, **options)
