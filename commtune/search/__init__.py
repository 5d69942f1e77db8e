"""Search: tune the knobs of a scenario against an objective.

Small interface, Ray Tune style:

* an *objective*: knobs in, metrics out, such as an evaluator of
  :mod:`commtune.evaluators` (the simulator, live DDP), seen only through its interface;
* a *space* (:mod:`commtune.search.space`): what to vary;
* a *backend* (a registry, :func:`get_backend`): :mod:`~commtune.search.optuna_backend`
  (default), :mod:`~commtune.search.ray_backend`, :mod:`~commtune.search.grid_backend`,
  :mod:`~commtune.search.horovod_replica` (Horovod's autotuner, a baseline);
  each exposes ``run(config: SearchConfig) -> SearchResult`` and sees the
  evaluator only through its interface.

Layer: below the runtime, the probe and the evaluators, so that the space grammar,
the samplers and the study storage they share sit under all of them; search imports
only the foundation modules, ``simulators`` and ``search_spaces``. Tying an
evaluator, a space and an engine to a scenario (report, profile) is orchestration
above both: :func:`commtune.tuning.search_scenario`. Layers: ``tests/test_architecture.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from commtune.knobs import Knobs
from commtune.registry import Registry
from commtune.search.liveness import GRACE_S, HEARTBEAT_S

SAMPLERS = ("auto", "tpe", "gp", "cmaes", "random", "qmc", "grid")
BACKENDS = ("optuna", "ray", "horovod")  # --backend choices (grid: --sampler grid)
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


BackendRun = Callable[[SearchConfig], SearchResult]
#: registered backends: name -> module that defines ``run(config)`` (imported on use)
BACKEND_REGISTRY: Registry[BackendRun] = Registry(
    "backend", "backends", {"optuna": "commtune.search.optuna_backend", "ray": "commtune.search.ray_backend",
                            "grid": "commtune.search.grid_backend", "horovod": "commtune.search.horovod_replica"},
    attr="run")


def register_backend(name: str) -> Callable[[BackendRun], BackendRun]:
    """Decorator: register ``run(config) -> SearchResult`` as backend ``name``."""
    return BACKEND_REGISTRY.register(name)


def backend_names() -> list[str]:
    return BACKEND_REGISTRY.names()


def get_backend(name: str) -> BackendRun:
    """The backend's ``run``; unknown names: one-line CommtuneError."""
    return BACKEND_REGISTRY.get(name)


def run_backend(name: str, config: SearchConfig) -> SearchResult:
    """Run backend ``name`` on ``config`` (``sampler="grid"`` means the grid backend).
    The backend sees the evaluator only through its interface."""
    return get_backend("grid" if config.sampler == "grid" else name)(config)


from commtune._callable import make_callable  # noqa: E402

make_callable(__name__, "commtune.api:search")  # commtune.search(...) is the public API function
