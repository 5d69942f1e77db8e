"""Who runs a trial of a shared study, and whether that worker is still alive.

Every search process is a :class:`Worker` with an identity unique across
hosts, containers and PID namespaces (hostname + a random UUID; the trial's
``commtune:worker`` system attribute). A worker *claims* each trial it
runs and keeps it alive:

* **RDB storages** (SQLite, PostgreSQL, MySQL): Optuna heartbeats. One
  thread per worker records a heartbeat for every trial it holds every
  ``heartbeat_s`` seconds, stamped by the database's clock, so it works across
  machines. A RUNNING trial whose last heartbeat is older than ``grace_s``
  (or that never got one and started more than ``grace_s`` ago) is failed by
  whichever worker looks next, and Optuna's retry callback queues its
  configuration again (at most :data:`MAX_RETRY` times).
* **Journal files**: no heartbeats in Optuna. A trial counts as dead only if
  its owner ran on this host in this PID namespace and that PID is gone;
  owners elsewhere are never failed (journal liveness is single-host: use an
  RDB to share a study across machines or containers).

A live worker's trial is never failed by another worker: its heartbeats
(RDB) or its PID (journal) keep it. If it is failed anyway (a worker frozen
for longer than the grace period), the owner's ``tell`` is dropped quietly
(:func:`tell`).
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

from commtune.proc import pid_alive

HEARTBEAT_S = 5  # seconds between heartbeats (Optuna wants whole seconds)
GRACE_S = 20  # a trial without a heartbeat for this long is failed and retried
MAX_RETRY = 2  # a configuration whose worker died this many times is not queued again
OWNER = "commtune:worker"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def heartbeats(storage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return storage is not None and is_heartbeat_enabled(storage)


class Worker:
    """This process as a worker of one study: identity, claims, heartbeats."""

    def __init__(self, study) -> None:
        self.study = study
        self.storage = study._storage
        self.host = socket.gethostname()
        self.id = f"{self.host}/{uuid.uuid4().hex[:12]}"
        self.tag = {"id": self.id, "host": self.host, "pidns": _pid_namespace(), "pid": os.getpid()}
        self._held: set[int] = set()
        self._last_reap = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if heartbeats(self.storage):
            self._thread = threading.Thread(target=self._beat, name="commtune-heartbeat", daemon=True)
            self._thread.start()

    # -- claims -----------------------------------------------------------
    def claim(self, trial_id: int) -> None:
        """Tag a trial this worker just asked for and start its heartbeats."""
        self.storage.set_trial_system_attr(trial_id, OWNER, self.tag)
        with self._lock:
            self._held.add(trial_id)
        if self._thread is not None:
            self.storage.record_heartbeat(trial_id)

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.discard(trial_id)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * HEARTBEAT_S)

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while not self._stop.wait(interval):
            with self._lock:
                held = list(self._held)
            for trial_id in held:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 -- a database hiccup: the next beat retries
                    pass

    # -- other workers' trials --------------------------------------------
    def trials(self) -> list:
        """All trials of the study, reaping dead workers' at most once per heartbeat interval.

        A dead worker's trial is failed only after the grace period (several
        heartbeats), so looking more often than every heartbeat finds nothing
        new; it would cost every ask a query of the heartbeats.
        """
        import time

        interval = self.storage.get_heartbeat_interval() if heartbeats(self.storage) else 1
        if time.monotonic() - self._last_reap >= (interval or 1):
            return self.reap()
        return self.study.get_trials(deepcopy=False)

    def reap(self) -> list:
        """Fail the RUNNING trials of dead workers (retrying them on RDBs); return all trials."""
        import time

        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        self._last_reap = time.monotonic()
        study = self.study
        if heartbeats(self.storage):
            dead = stale_trial_ids(self.storage, study._study_id)
        else:
            dead = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if not self._owner_alive(t)]
        callback = self.storage.get_heartbeat_stale_trial_callback() if heartbeats(self.storage) else None
        for trial_id in dead:
            try:
                failed = self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:  # another worker got there first
                continue
            if failed and callback is not None:
                callback(study, self.storage.get_trial(trial_id))
        return study.get_trials(deepcopy=False)

    def _owner_alive(self, t) -> bool:
        """Journal storages: only an owner on this host, in this PID namespace, can be checked."""
        tag = t.system_attrs.get(OWNER)
        if not tag:  # asked but never claimed: claims follow within milliseconds
            return t.datetime_start is None or datetime.now() - t.datetime_start < timedelta(seconds=GRACE_S)
        if tag["host"] != self.host or tag["pidns"] != self.tag["pidns"]:
            return True
        return tag["id"] == self.id or pid_alive(tag["pid"])


def stale_trial_ids(storage, study_id: int) -> list[int]:
    """RUNNING trials with a heartbeat older than the grace period, or none for that long.

    Optuna's own check skips trials that never got a heartbeat (a worker
    killed between asking and claiming would hold its trial forever); those
    count from their start time instead (the worker's clock: hosts sharing a
    study need clocks within the grace period of each other).
    """
    import sqlalchemy
    import sqlalchemy.orm
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    storage = getattr(storage, "_backend", storage)  # a study wraps its RDBStorage in a cache
    grace = timedelta(seconds=storage.grace_period or 2 * storage.heartbeat_interval)
    stale = []
    local_now = datetime.now()
    with _create_scoped_session(storage.scoped_session, True) as session:
        db_now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        rows = (session.query(models.TrialModel)
                .options(sqlalchemy.orm.selectinload(models.TrialModel.heartbeats))
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(models.TrialModel.study_id == study_id).all())
        for trial in rows:
            if trial.heartbeats:  # stamped by the database's clock
                age = db_now - trial.heartbeats[0].heartbeat.replace(tzinfo=None)
            elif trial.datetime_start is not None:  # stamped by the worker's clock
                age = local_now - trial.datetime_start
            else:
                continue
            if age > grace:
                stale.append(trial.trial_id)
    return stale


def tell(study, trial, *args, **kwargs) -> bool:
    """``study.tell`` that accepts that a trial was failed meanwhile (owner presumed dead)."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        study.tell(trial, *args, **kwargs)
        return True
    except UpdateFinishedTrialError:
        return False
    except ValueError as exc:  # "Cannot tell a FAIL trial." -- failed by another worker meanwhile
        if "Cannot tell a" in str(exc):
            return False
        raise


__all__ = ["Worker", "HEARTBEAT_S", "GRACE_S", "MAX_RETRY", "stale_trial_ids", "tell", "heartbeats"]
