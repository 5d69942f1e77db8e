"""Ray backend: trials evaluated by a long-lived pool of Ray actors.

The driver is an ordinary worker of the shared study
(:mod:`commtune.search.optuna_backend`: the same ask/claim/budget/tell
loop, heartbeats and enqueue-once), so ``--trials`` is exact for any mix of
Optuna and Ray drivers on one storage. It keeps ``concurrency`` trials in
flight on ``concurrency`` actors spread over the cluster's nodes; each actor
is started once (objective and space shipped once) and evaluates trial after
trial, so a trial costs a remote call, not a process.

Step-wise objectives with a pruner (live trials) run under Ray Tune with
ASHA instead (:mod:`commtune.search.ray_tune`).

By default a local Ray instance is started (no dashboard, short temp dir,
worker logs not forwarded); ``--ray-address`` joins an existing cluster and
ships commtune to its nodes (``runtime_env`` ``py_modules``); a node
that lacks a dependency is named in a one-line error. A lost node costs the
trials running there: they are failed and queued again, the pool shrinks,
and one line says so.
"""
from __future__ import annotations

import contextlib
import io
import sys
import time

from commtune.errors import CommtuneError
from commtune.search import SearchConfig, SearchResult
from commtune.search.ray_session import first_line, init_ray, place_objective


class Evaluator:
    """One pool actor: holds the objective and space, evaluates params."""

    def __init__(self, objective, space) -> None:
        self.objective, self.space = objective, space

    def where(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def evaluate(self, params: dict) -> dict:
        metrics = self.objective.evaluate(self.space.knobs_from_params(params))
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    def close(self) -> None:
        """Stop what the evaluator holds in this actor (a live evaluator's worker group)."""
        close = getattr(self.objective, "close", None)
        if close is not None:
            close()


def run(config: SearchConfig) -> SearchResult:
    try:
        import ray
    except ImportError:
        raise CommtuneError("--backend ray needs Ray: pip install 'commtune[ray]'") from None
    if config.trials < 1:
        raise CommtuneError(f"--trials must be at least 1, got {config.trials}")
    stepwise = bool(getattr(config.objective, "supports_steps", False)) and config.pruner not in (None, "none")
    if stepwise:
        from commtune.search import ray_tune

        return ray_tune.run(config)
    from commtune.search.optuna_backend import join_study, result_from_study

    study, worker, screened = join_study(config)
    started = keep_ray = False
    notices = _RayNotices()
    # Ray prints cluster events on stdout (a node marked dead; a raylet gone, also while it shuts
    # down): keep them out of the report for the whole session, shutdown included.
    with contextlib.redirect_stdout(notices):
        try:
            started = init_ray(config)
            keep_ray = place_objective(config, started)
            new, nodes = _drive(study, worker, config, notices)
        finally:
            worker.close()
            if started and not keep_ray:
                ray.shutdown()
    result = result_from_study(study, config, new, screened, backend="ray")
    result.extra["ray_nodes"] = nodes
    return result


class _RayNotices(io.TextIOBase):
    """Stands in for stdout while Ray runs: keeps its notices out of the report; counts dead nodes."""

    def __init__(self) -> None:
        self.text: list[str] = []

    def write(self, s: str) -> int:
        self.text.append(s)
        return len(s)

    def dead_nodes(self) -> int:
        return "".join(self.text).count("has been marked dead")


def _drive(study, worker, config: SearchConfig, notices: _RayNotices) -> tuple[int, int]:
    """Keep ``concurrency`` trials in flight on the actor pool until the budget is held; (new trials, nodes used)."""
    import ray
    from optuna.trial import TrialState

    from commtune.search.liveness import tell
    from commtune.search.optuna_backend import _WAIT_S, _holds_budget, admit, budget_wait, one_read_per_trial

    actor_cls = ray.remote(num_cpus=1, max_restarts=0)(Evaluator).options(scheduling_strategy="SPREAD")
    idle = [actor_cls.remote(config.objective, config.space) for _ in range(max(config.concurrency, 1))]
    try:
        nodes = set(ray.get([a.where.remote() for a in idle], timeout=120))
    except ray.exceptions.GetTimeoutError:
        raise CommtuneError(f"Ray could not start {len(idle)} workers within 120 s (--concurrency above the "
                            "cluster's free CPUs?)") from None
    except ray.exceptions.RayError as exc:
        raise CommtuneError(f"a Ray node cannot run commtune: {first_line(exc)}") from None
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    running: dict = {}  # object ref -> (actor, trial, params)
    new, best, lost = 0, float("inf"), []
    complete = sum(t.state in finished for t in worker.reap())
    waiting_since: float | None = None
    t0 = time.monotonic()
    if config.progress:
        config.progress(complete, config.trials, best)
    while True:
        out_of_time = config.timeout_s is not None and time.monotonic() - t0 >= config.timeout_s
        while idle and not out_of_time:  # fill the pool
            held = [t for t in worker.trials() if _holds_budget(t)]
            if len(held) >= config.trials:
                break
            trial = study.ask()
            if not admit(study, trial, worker, config.trials):
                continue
            with one_read_per_trial(study):
                params = config.space.suggest(trial)
            actor = idle.pop()
            running[actor.evaluate.remote(params)] = (actor, trial, params)
        if not running:
            complete = sum(t.state in finished for t in worker.trials())
            if complete >= config.trials or out_of_time:
                break
            # the rest of the budget is held by other workers' running trials
            if waiting_since is None:
                waiting_since = time.monotonic()
            elif time.monotonic() - waiting_since > budget_wait(config):
                break
            time.sleep(_WAIT_S)
            continue
        waiting_since = None
        done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        for ref in done:
            actor, trial, params = running.pop(ref)
            try:
                metrics = ray.get(ref)
            except ray.exceptions.RayActorError:  # its node (or process) is gone: the pool shrinks
                _requeue(study, worker, trial)
                lost.append(trial.number)
                if not idle and not running:
                    break
                continue
            except ray.exceptions.RayTaskError:
                tell(study, trial, state=TrialState.FAIL)
                worker.release(trial._trial_id)
                raise
            value = float(metrics[config.objective.metric])
            if tell(study, trial, value):
                new += 1
                best = min(best, value)
            worker.release(trial._trial_id)
            idle.append(actor)
            if config.progress:
                complete = sum(t.state in finished for t in study.get_trials(deepcopy=False))
                config.progress(complete, config.trials, best)
        if not idle and not running:  # every actor lost
            break
    with contextlib.suppress(Exception):  # the live evaluator's ranks stop with their actor's trials
        ray.get([a.close.remote() for a in idle], timeout=60)
    if lost:
        print(f"commtune: {len(lost)} Ray worker(s) lost ({notices.dead_nodes()} node(s) marked dead); their trials "
              f"{', '.join(map(str, lost))} were failed and queued again", file=sys.stderr)
    return new, len(nodes)


def _requeue(study, worker, trial) -> None:
    """A trial whose actor died: fail it and queue its configuration again (Optuna's retry callback)."""
    import optuna
    from optuna.trial import TrialState

    from commtune.search.liveness import MAX_RETRY, tell

    if tell(study, trial, state=TrialState.FAIL):
        optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY)(study, study._storage.get_trial(trial._trial_id))
    worker.release(trial._trial_id)
