"""Ray Tune with ASHA for step-wise objectives (live trials with a pruner).

The study is joined like any worker's (:func:`~commtune.search.optuna_backend.join_study`:
enqueue-once, per-worker seed, claims with heartbeats, the shared budget);
``OptunaSearch`` asks and tells on it. A trial ASHA stops before its last
step is stored PRUNED (its value is a partial median), not COMPLETE. Tune's
own results stay in ``<ray temp dir>/tune-results`` (printed on stderr).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from ray.tune.search.optuna import OptunaSearch

from commtune.search import SearchConfig, SearchResult


def _trainable(config: dict, objective=None, space=None):
    import statistics

    from ray import tune

    knobs = space.knobs_from_params(dict(config))

    # one report per timed step (training_iteration = step): ASHA stops bad trials early
    def on_step(step: int, times: list[float]) -> bool:
        tune.report({objective.metric: float(statistics.median(times)), "timed_steps": step})
        return False

    try:
        objective.evaluate_steps(knobs, on_step)
    finally:
        # A live objective placed on Ray (place_objective) only detaches from its rank actors here;
        # one that was not placed started a group in this trial's process: stop its ranks.
        close = getattr(objective, "close", None)
        if close is not None:
            close()


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


#: The driver's workers by id: Tune pickles its searcher (for its experiment state), and a worker
#: (heartbeat thread, locks) cannot be pickled; the searcher refers to it by id.
_WORKERS: dict = {}


class SharedStudySearch(OptunaSearch):
    """OptunaSearch as a worker of the shared study: claims, budget, PRUNED for early stops."""

    def __init__(self, *args, worker_id: str, trials: int, max_t: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.worker_id, self.trials, self.max_t = worker_id, trials, max_t

    def suggest(self, trial_id: str):
        from ray.tune.search import Searcher

        from commtune.search.optuna_backend import admit

        params = super().suggest(trial_id)
        ot = self._ot_trials[trial_id]
        if not admit(self._ot_study, ot, _WORKERS[self.worker_id], self.trials):
            del self._ot_trials[trial_id]
            return Searcher.FINISHED
        return params

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        from optuna.trial import TrialState

        from commtune.search.liveness import tell

        ot = self._ot_trials.get(trial_id)
        steps = int(result.get("training_iteration", 0)) if result else 0
        if ot is not None and steps:
            with contextlib.suppress(Exception):
                ot.set_user_attr("timed_steps", steps)  # as the Optuna backend records it
        stopped = not error and ot is not None and 0 < steps < self.max_t
        if stopped:  # ASHA stopped it: a partial value, not a finished trial
            tell(self._ot_study, ot, state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
        else:
            with contextlib.suppress(Exception):
                super().on_trial_complete(trial_id, result, error)
        if ot is not None:
            _WORKERS[self.worker_id].release(ot._trial_id)


def _searcher(study, worker, config: SearchConfig) -> SharedStudySearch:
    _WORKERS[worker.id] = worker
    return SharedStudySearch(space=_DefineByRun(config.space), metric=config.objective.metric, mode="min",
                             sampler=study.sampler, study_name=config.study_name, storage=study._storage,
                             worker_id=worker.id, trials=config.trials, max_t=int(config.objective.max_steps))


def run(config: SearchConfig) -> SearchResult:
    from ray import tune
    from optuna.trial import TrialState

    from commtune.search.optuna_backend import join_study, result_from_study
    from commtune.search.ray_session import init_ray, place_objective

    study, worker, screened = join_study(config)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = config.trials - sum(t.state in finished for t in worker.reap())
    started = keep_ray = False
    try:
        if remaining > 0:
            started = init_ray(config)
            keep_ray = place_objective(config, started)
            results = os.path.join(config.ray_temp_dir or os.path.join(tempfile.gettempdir(), "ct-ray"),
                                   "tune-results")
            print(f"commtune: Ray Tune results in {results}", file=sys.stderr)
            tuner = tune.Tuner(
                tune.with_parameters(_trainable, objective=config.objective, space=config.space),
                tune_config=tune.TuneConfig(search_alg=_searcher(study, worker, config), num_samples=remaining,
                                            scheduler=asha_scheduler(config.objective),
                                            max_concurrent_trials=config.concurrency, time_budget_s=config.timeout_s),
                run_config=tune.RunConfig(storage_path=results, name=config.study_name, verbose=0),
            )
            with contextlib.redirect_stdout(sys.stderr):  # Tune prints tables; stdout is the report's
                tuner.fit()
    finally:
        worker.close()
        _WORKERS.pop(worker.id, None)
        if started and not keep_ray:
            import ray

            ray.shutdown()
    return result_from_study(study, config, max(remaining, 0), screened, backend="ray")
