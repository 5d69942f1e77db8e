"""Ray Tune backend: concurrent trials driven by ``OptunaSearch``.

By default a local Ray instance is started (no dashboard, short temp dir,
worker logs not forwarded); ``--ray-address`` joins an existing cluster
instead. The Optuna study behind ``OptunaSearch`` lives in the same storage
as the Optuna backend's, so ``--trials`` is again the study's total target.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from commtune.errors import CommtuneError
from commtune.search import SearchConfig, SearchResult


def _trainable(config: dict, objective=None, space=None, stepwise: bool = False):
    knobs = space.knobs_from_params({k: v for k, v in config.items()})
    try:
        _evaluate(knobs, objective, stepwise)
    finally:
        # A live objective's worker group lives in this Ray worker process only for this trial
        # (Ray ships the objective without it): stop its ranks.
        close = getattr(objective, "close", None)
        if close is not None:
            close()


def _evaluate(knobs, objective, stepwise: bool) -> None:
    from ray import tune

    if stepwise:
        import statistics

        # one report per timed step (training_iteration = step): ASHA stops bad trials early
        def on_step(step: int, times: list[float]) -> bool:
            tune.report({objective.metric: float(statistics.median(times)), "timed_steps": step})
            return False

        objective.evaluate_steps(knobs, on_step)
        return
    metrics = objective.evaluate(knobs)
    tune.report({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})


def asha_scheduler(objective):
    """ASHA over timed steps. Ray's defaults (max_t=100, grace_period=1, reduction_factor=4) are for
    long runs; a step-wise trial has the evaluator's ``max_steps`` steps and is noisy at its first."""
    from ray.tune.schedulers import ASHAScheduler

    max_t = int(objective.max_steps)
    return ASHAScheduler(time_attr="training_iteration", metric=objective.metric, mode="min", max_t=max_t,
                         grace_period=min(2, max_t), reduction_factor=2)


class _DefineByRun:
    """OptunaSearch's define-by-run space (a picklable callable)."""

    def __init__(self, space):
        self.space = space

    def __call__(self, trial):
        self.space.suggest(trial)
        return None


def _place_objective(config: SearchConfig, started: bool) -> bool:
    """Hook: an objective with its own processes (a live objective's worker group) places them on
    the Ray cluster once, before the trials; True if it keeps Ray running after this run (its
    ``close()`` shuts down the instance this run ``started``)."""
    place = getattr(config.objective, "place_on_ray", None)
    return bool(place(owns_ray=started)) if place is not None else False


def run(config: SearchConfig) -> SearchResult:
    try:
        import ray
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise CommtuneError("--backend ray needs Ray Tune: pip install 'commtune[ray]'") from None
    from optuna.trial import TrialState

    from commtune.search.optuna_backend import open_study, result_from_study
    from commtune.search.samplers import make_sampler, warm_start_points

    if config.trials < 1:
        raise CommtuneError(f"--trials must be at least 1, got {config.trials}")
    study = open_study(config)  # creates or resumes the study in the storage
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = config.trials - done
    screened = 0
    points = None
    if done == 0 and config.sampler == "auto":
        points, screened = warm_start_points(config.space, config.objective, config.seed, config.screen)
        points = points[: config.trials]
    if remaining > 0:
        started = False
        if not ray.is_initialized():
            kwargs = {"log_to_driver": False, "logging_level": "ERROR"}
            if config.ray_address:
                kwargs["address"] = config.ray_address
            else:
                temp = config.ray_temp_dir or os.path.join(tempfile.gettempdir(), "ct-ray")
                kwargs.update(include_dashboard=False, _temp_dir=temp,
                              num_cpus=max(config.concurrency, 1) + int(getattr(config.objective, "ray_cpus", 0)))
            try:
                ray.init(**kwargs)
            except Exception as exc:  # noqa: BLE001
                raise CommtuneError(f"cannot start or join Ray: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            started = True
        keep_ray = False
        space = config.space
        try:
            keep_ray = _place_objective(config, started)
            searcher = OptunaSearch(
                space=_DefineByRun(space),
                metric=config.objective.metric, mode="min", points_to_evaluate=points,
                sampler=make_sampler(config.sampler, config.seed), study_name=config.study_name,
                storage=study._storage,
            )
            with tempfile.TemporaryDirectory(prefix="ct-tune-") as results_dir:
                stepwise = bool(getattr(config.objective, "supports_steps", False)) and config.pruner not in (None, "none")
                tuner = tune.Tuner(
                    tune.with_parameters(_trainable, objective=config.objective, space=space, stepwise=stepwise),
                    tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                                scheduler=asha_scheduler(config.objective) if stepwise else None,
                                                max_concurrent_trials=config.concurrency,
                                                time_budget_s=config.timeout_s),
                    run_config=tune.RunConfig(storage_path=results_dir, name="commtune", verbose=0),
                )
                # Tune prints its own tables; keep stdout for commtune's report/JSON.
                with contextlib.redirect_stdout(sys.stderr):
                    tuner.fit()
        finally:
            if started and not keep_ray:
                ray.shutdown()
    return result_from_study(open_study(config), config, max(remaining, 0), screened, backend="ray")
