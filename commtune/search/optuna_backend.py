"""Optuna backend: ask/tell over a (possibly shared) study.

``config.trials`` is the *total* target of finished trials in the study:
re-running the same command resumes it, and several worker processes (or
machines, or Ray drivers) on one storage fill it together. A trial is
admitted only while fewer than ``trials`` finished-or-running trials precede
it (by trial number; queued trials ahead count as they will run), so
concurrent workers stop at exactly the target; a
worker whose remaining budget is held by other workers' running trials waits
for them. Dead workers' trials are failed and retried
(:mod:`commtune.search.liveness`: heartbeats on RDB storages).

The study's creator enqueues the warm start (creating a study is atomic, so
it happens once however many workers start together) and samples with
``config.seed``; every other worker samples with a seed derived from it and
its unique worker id, so N copies of one command explore instead of
repeating each other.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import time

from commtune.errors import CommtuneError
from commtune.search import SearchConfig, SearchResult
from commtune.search.liveness import Worker, tell
from commtune.search.samplers import make_sampler, warm_start_points
from commtune.search.storage import display, normalise, open_storage

_WAIT_S = 0.2


def worker_seed(seed: int | None, worker_id: str) -> int | None:
    """The sampler seed of a worker that joins an existing study."""
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{seed}/{worker_id}".encode()).digest()[:4], "little")


def _holds_budget(t) -> bool:
    """A finished (complete or pruned) trial, or a running one (dead workers' are reaped first)."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


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
    """Load the study, or create it: ``(study, created)``; only its creator gets ``created``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_heartbeat_warning()
    storage = open_storage(config.storage, create_dirs=create_dirs, heartbeat_s=config.heartbeat_s,
                           grace_s=config.grace_s)
    kwargs = {"study_name": config.study_name, "storage": storage, "direction": "minimize",
              "sampler": make_sampler(config.sampler, config.seed), "pruner": make_pruner(config.pruner)}
    try:
        try:
            return optuna.create_study(**kwargs), True
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.create_study(**kwargs, load_if_exists=True), False
    except CommtuneError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a storage that opened but cannot hold a study
        raise CommtuneError(f"unusable storage {display(str(config.storage))!r}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def _quiet_heartbeat_warning() -> None:
    """Optuna warns that heartbeats are meant for ``Study.optimize``; commtune drives them itself."""
    import warnings

    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def join_study(config: SearchConfig):
    """Open the study as a worker: ``(study, worker, screened)``.

    The creator stamps the study's attributes and enqueues the warm start;
    a worker joining an existing study checks the space and re-seeds its
    sampler from its own id.
    """
    study, created = open_study(config)
    worker = Worker(study)
    screened = 0
    if created:
        for k, v in {**config.study_attrs, "space_fingerprint": config.space.fingerprint()}.items():
            study.set_user_attr(k, v)
        if config.sampler == "auto":
            points, screened = warm_start_points(config.space, config.objective, config.seed, config.screen)
            for p in points[: config.trials]:
                study.enqueue_trial(p)
    else:
        fp = study.user_attrs.get("space_fingerprint")
        if fp is not None and fp != config.space.fingerprint():
            worker.close()
            raise CommtuneError(
                f"study {config.study_name!r} was created with a different search space; "
                f"use another --study or --storage"
            )
        study.sampler = make_sampler(config.sampler, worker_seed(config.seed, worker.id))
    return study, worker, screened


def _will_hold_budget(t) -> bool:
    """Holds the budget now, or is queued (WAITING: a warm start or a dead worker's retry) and will.

    A queued trial ahead must count: a worker whose ``ask`` looked for queued
    trials just before a retry was enqueued creates a new trial behind it, and
    the retry is run later by someone else (this overshot the budget by one).
    """
    from optuna.trial import TrialState

    return _holds_budget(t) or t.state == TrialState.WAITING


def admit(study, trial, worker: Worker, trials: int) -> bool:
    """Claim a freshly asked trial; hand it back if the budget is already held by earlier trials.

    Trial numbers are assigned under a lock on the study row (Optuna's RDB
    storage), so every trial numbered below this one is visible here.
    """
    from optuna.trial import TrialState

    worker.claim(trial._trial_id)
    ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and _will_hold_budget(t)]
    if len(ahead) < trials:
        return True
    trial.set_user_attr("surplus", True)
    tell(study, trial, state=TrialState.FAIL)
    worker.release(trial._trial_id)
    return False


class _TrialsSnapshot:
    """A study's storage whose reads of that study's trials return one snapshot (writes pass through)."""

    def __init__(self, storage, study_id: int) -> None:
        self._inner, self._study_id = storage, study_id
        self._trials = storage.get_all_trials(study_id, deepcopy=False)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        if study_id != self._study_id:
            return self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@contextlib.contextmanager
def one_read_per_trial(study):
    """While a trial samples its parameters, the sampler sees the study as read once.

    TPE with ``constant_liar`` (and the group decomposition) re-read every
    trial of the study several times per trial; on a shared RDB study each
    read fetches every other worker's running trial again. One snapshot
    taken after ``ask`` holds what they need: the other trials (running ones
    with the parameters their workers sampled), not this trial's own.
    """
    real = study._storage
    study._storage = _TrialsSnapshot(real, study._study_id)
    try:
        yield
    finally:
        study._storage = real


def budget_wait(config: SearchConfig) -> float:
    """How long a worker waits, without progress, for other workers' running trials."""
    return 3.0 * config.grace_s


def run(config: SearchConfig) -> SearchResult:
    if config.trials < 1:
        raise CommtuneError(f"--trials must be at least 1, got {config.trials}")
    study, worker, screened = join_study(config)
    try:
        new = _work(study, worker, config)
    finally:
        worker.close()
    return result_from_study(study, config, new, screened)


def _work(study, worker: Worker, config: SearchConfig) -> int:
    """Ask, evaluate, tell until the study holds ``config.trials`` finished trials; new trials run here."""
    from optuna.trial import TrialState

    space, objective = config.space, config.objective
    finished = (TrialState.COMPLETE, TrialState.PRUNED)  # pruned trials use up the budget too
    stepwise = bool(getattr(objective, "supports_steps", False)) and config.pruner not in (None, "none")
    trials = worker.reap()
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
        held = [t for t in worker.trials() if _holds_budget(t)]
        now_complete = sum(t.state in finished for t in held)
        if now_complete >= config.trials:
            complete = now_complete
            break
        if len(held) >= config.trials:
            # Other workers' running trials hold the rest of the budget: wait for
            # them to finish (or, if their worker died, to be failed and retried).
            if now_complete > complete or waiting_since is None:
                complete, waiting_since = now_complete, time.monotonic()
            elif time.monotonic() - waiting_since > budget_wait(config):
                break
            time.sleep(_WAIT_S)
            continue
        waiting_since = None
        trial = study.ask()
        try:
            if not admit(study, trial, worker, config.trials):
                continue
            with one_read_per_trial(study):
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
            tell(study, trial, state=TrialState.FAIL)
            worker.release(trial._trial_id)
            raise
        if metrics.get("pruned"):
            told = tell(study, trial, state=TrialState.PRUNED)
        else:
            told = tell(study, trial, value)
            best = min(best, value) if told else best
        worker.release(trial._trial_id)
        new += told
        complete = now_complete + told  # at least; the next look counts the other workers' too
        if config.progress:
            config.progress(complete, config.trials, best)
    return new


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
