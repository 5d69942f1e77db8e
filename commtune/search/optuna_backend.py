"""Optuna backend: ask/tell over a (possibly shared) study.

``config.trials`` is the *total* target of complete trials in the study:
re-running the same command resumes it, and several worker processes (or
machines) on one storage fill it together. A trial is admitted only while
fewer than ``trials`` complete-or-running trials precede it (by trial
number), so concurrent workers stop at exactly the target; a worker whose
remaining budget is held by other workers' running trials waits for them
(at most ``_MAX_WAIT_S`` without progress, for owners on other hosts that
may have died). Trials left RUNNING by a killed worker on this host are
marked FAIL (an untagged RUNNING trial counts as dead after
``_STALE_NO_OWNER_S``), so a re-run completes the budget.
"""
from __future__ import annotations

import os
import socket
import time

from commtune.errors import CommtuneError
from commtune.search import SearchConfig, SearchResult
from commtune.search.samplers import make_sampler, warm_start_points
from commtune.proc import pid_alive
from commtune.search.storage import display, normalise, open_storage

_HOST = socket.gethostname()
_WAIT_S = 0.2
_MAX_WAIT_S = 60.0
_STALE_NO_OWNER_S = 10.0  # a live worker tags its trial within milliseconds of asking


def _alive(worker: str | None, start) -> bool:
    """Is the RUNNING trial owned by a live worker (or a worker we cannot check)?"""
    if not worker:
        return start is None or (time.time() - start.timestamp()) < _STALE_NO_OWNER_S
    host, _, pid = worker.rpartition(":")
    return host != _HOST or pid_alive(pid)


def _holds_budget(t) -> bool:
    """A finished (complete or pruned) trial, or a running one whose worker is alive."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.RUNNING and _alive(t.user_attrs.get("worker"), t.datetime_start))


def _reap(study) -> list:
    """Fail RUNNING trials of dead local workers; return the live trial list."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING and not _alive(t.user_attrs.get("worker"), t.datetime_start):
            try:
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except Exception:  # noqa: BLE001 -- another worker got there first
                pass
    return study.get_trials(deepcopy=False)


#: Pruning live trials: a trial may be stopped from its 2nd timed step on, once 2 trials finished
#: (Optuna's defaults, n_startup_trials=5 / n_warmup_steps=0, suit long studies of noisy epochs).
PRUNE_STARTUP_TRIALS = 2
PRUNE_WARMUP_STEPS = 2


def make_pruner(name: str | None):
    import optuna

    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_STEPS)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=PRUNE_WARMUP_STEPS + 1, reduction_factor=2)
    from commtune.errors import did_you_mean
    from commtune.search import PRUNERS

    raise CommtuneError(f"unknown pruner {name!r}{did_you_mean(name, PRUNERS)}; pruners: {', '.join(PRUNERS)}")


def open_study(config: SearchConfig, create_dirs: bool = False):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(config.storage, create_dirs=create_dirs)
    sampler = make_sampler(config.sampler, config.seed)
    pruner = make_pruner(config.pruner)
    try:
        return optuna.create_study(study_name=config.study_name, storage=storage, sampler=sampler,
                                   pruner=pruner, direction="minimize", load_if_exists=True)
    except CommtuneError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a storage that opened but cannot hold a study
        raise CommtuneError(f"unusable storage {display(str(config.storage))!r}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def run(config: SearchConfig) -> SearchResult:
    from optuna.trial import TrialState

    if config.trials < 1:
        raise CommtuneError(f"--trials must be at least 1, got {config.trials}")
    study = open_study(config)
    space, objective = config.space, config.objective
    trials = _reap(study)
    screened = 0
    if not trials:
        for k, v in {**config.study_attrs, "space_fingerprint": space.fingerprint()}.items():
            study.set_user_attr(k, v)
        if config.sampler == "auto":
            points, screened = warm_start_points(space, objective, config.seed, config.screen)
            for p in points[: config.trials]:
                study.enqueue_trial(p, skip_if_exists=True)
    else:
        fp = study.user_attrs.get("space_fingerprint")
        if fp is not None and fp != space.fingerprint():
            raise CommtuneError(
                f"study {config.study_name!r} was created with a different search space; "
                f"use another --study or --storage"
            )
    me = f"{_HOST}:{os.getpid()}"
    finished = (TrialState.COMPLETE, TrialState.PRUNED)  # pruned trials use up the budget too
    stepwise = bool(getattr(objective, "supports_steps", False)) and config.pruner not in (None, "none")
    complete = sum(t.state in finished for t in trials)
    best = min((t.value for t in trials if t.state == TrialState.COMPLETE), default=float("inf"))
    new = 0
    waiting_since: float | None = None
    t0 = time.monotonic()
    if config.progress:
        config.progress(complete, config.trials, best)
    while complete < config.trials:
        if config.timeout_s is not None and time.monotonic() - t0 >= config.timeout_s:
            break
        held = [t for t in _reap(study) if _holds_budget(t)]
        if len(held) >= config.trials:
            # Other workers' running trials hold the rest of the budget: wait for
            # them to finish (or, if their worker died, to be reaped).
            now_complete = sum(t.state in finished for t in held)
            if now_complete > complete or waiting_since is None:
                complete, waiting_since = now_complete, time.monotonic()
            elif time.monotonic() - waiting_since > _MAX_WAIT_S:
                break
            time.sleep(_WAIT_S)
            continue
        waiting_since = None
        trial = study.ask()
        try:
            trial.set_user_attr("worker", me)
            ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and _holds_budget(t)]
            if len(ahead) >= config.trials:  # lost a race for the last trial: hand it back
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            params = space.suggest(trial)
            knobs = space.knobs_from_params(params)
            if stepwise:
                metrics = objective.evaluate_steps(knobs, _pruning_callback(trial))
            else:
                metrics = objective.evaluate(knobs)
            value = float(metrics[objective.metric])
            if "timed_steps" in metrics:  # steps measured for this trial (0: replayed from an earlier one)
                trial.set_user_attr("timed_steps", 0 if metrics.get("replayed") else int(metrics["timed_steps"]))
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        new += 1
        if metrics.get("pruned"):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
            best = min(best, value)
        complete = sum(t.state in finished for t in study.get_trials(deepcopy=False))
        if config.progress:
            config.progress(complete, config.trials, best)
    return result_from_study(study, config, new, screened)


def _pruning_callback(trial):
    """``on_step(step, times)``: report the running median step time, ask the pruner."""
    import statistics

    def on_step(step: int, times: list[float]) -> bool:
        trial.report(float(statistics.median(times)), step)
        return trial.should_prune()

    return on_step


def result_from_study(study, config: SearchConfig, new: int, screened: int = 0, backend: str = "optuna") -> SearchResult:
    from optuna.trial import TrialState

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if not done:
        raise CommtuneError(f"study {config.study_name!r} has no complete trial (timeout too short?)")
    bt = min(done, key=lambda t: (t.value, t.number))
    knobs = config.space.knobs_from_params(bt.params)
    metrics = config.objective.evaluate(knobs)
    return SearchResult(
        best_knobs=knobs, best_metrics=dict(metrics), trials=len(done), new_trials=new, backend=backend,
        sampler=config.sampler, study_name=config.study_name,
        storage=display(normalise(config.storage)) if config.storage else "memory",
        history=[float(t.value) for t in done], extra={"screened": screened, "best_trial": bt.number, **_step_stats(study)},
    )


def _step_stats(study) -> dict:
    """Pruned trials and timed steps (step-wise objectives only; {} otherwise)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not any("timed_steps" in t.user_attrs for t in trials):
        return {}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    return {"pruned": len(pruned), "timed_steps": sum(int(t.user_attrs.get("timed_steps", 0)) for t in trials),
            "timed_steps_pruned": sum(int(t.user_attrs.get("timed_steps", 0)) for t in pruned)}
