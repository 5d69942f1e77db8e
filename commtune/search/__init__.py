"""Search: tune the knobs of a scenario against an objective.

Small interface, Ray Tune style:

* an *objective* (:mod:`commtune.search.objective`): knobs in, metrics out
  (the simulator today, pluggable);
* a *space* (:mod:`commtune.search.space`): what to vary;
* a *backend*: :mod:`~commtune.search.optuna_backend` (default),
  :mod:`~commtune.search.ray_backend`, :mod:`~commtune.search.grid_backend`;
  each exposes ``run(config: SearchConfig) -> SearchResult``.

:func:`commtune.search.runner.search` ties them to a scenario and writes the
profile.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from commtune.knobs import Knobs
from commtune.search.liveness import GRACE_S, HEARTBEAT_S

SAMPLERS = ("auto", "tpe", "gp", "cmaes", "random", "qmc", "grid")
BACKENDS = ("optuna", "ray")
PRUNERS = ("median", "halving", "none")


@dataclass
class SearchConfig:
    space: Any  # SearchSpace
    objective: Any  # Objective
    sampler: str = "auto"
    trials: int = 100
    timeout_s: float | None = None
    seed: int | None = 0
    storage: str | None = None  # URL as given (None = in memory)
    study_name: str = "commtune"
    screen: int = 4096  # batch-simulator screening points for the auto engine (0 = off)
    grid_points: int | None = None  # override points per numeric range for grid
    concurrency: int = 2  # Ray: concurrent trials
    ray_address: str | None = None
    ray_temp_dir: str | None = None
    progress: Callable[[int, int, float], None] | None = None  # (done, total, best) -> None
    study_attrs: dict[str, Any] = field(default_factory=dict)
    pruner: str | None = None  # step-wise objectives: median|halving (Optuna) / ASHA (Ray); None/"none" = off
    heartbeat_s: int = HEARTBEAT_S  # RDB storages: seconds between a worker's heartbeats (commtune.search.liveness)
    grace_s: int = GRACE_S  # RDB storages: a trial without a heartbeat this long is failed and retried


@dataclass
class SearchResult:
    best_knobs: Knobs
    best_metrics: dict[str, float]
    trials: int  # complete trials in the study (or grid points evaluated)
    new_trials: int  # evaluated by this run
    backend: str
    sampler: str
    study_name: str | None = None
    storage: str | None = None
    history: list[float] = field(default_factory=list)  # objective value per complete trial, in order
    extra: dict[str, Any] = field(default_factory=dict)


def run_backend(name: str, config: SearchConfig) -> SearchResult:
    from commtune.errors import CommtuneError, did_you_mean

    if config.sampler == "grid":
        from commtune.search import grid_backend

        return grid_backend.run(config)
    if name == "optuna":
        from commtune.search import optuna_backend

        return optuna_backend.run(config)
    if name == "ray":
        from commtune.search import ray_backend

        return ray_backend.run(config)
    raise CommtuneError(f"unknown backend {name!r}{did_you_mean(name, BACKENDS)}; backends: {', '.join(BACKENDS)}")
