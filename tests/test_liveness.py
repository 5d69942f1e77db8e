"""Worker liveness on shared studies: identities, heartbeats, retries, enqueue-once, seeds, storage URLs."""
from __future__ import annotations

import os

import optuna
import pytest
from optuna.trial import TrialState

from commtune.errors import CommtuneError
from commtune.search import liveness
from commtune.search.liveness import OWNER, Worker, stale_trial_ids, tell
from commtune.search.optuna_backend import worker_seed
from commtune.search.storage import open_storage, portable


def _study(url: str, name: str = "s"):
    from commtune.search.optuna_backend import _quiet_heartbeat_warning

    _quiet_heartbeat_warning()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=open_storage(url, heartbeat_s=1, grace_s=2),
                               load_if_exists=True)


def _age_heartbeat(db: str, trial_id: int, seconds: int) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = ?",
                (f"-{seconds} seconds", trial_id))
    con.commit()
    con.close()


def test_dead_workers_trial_is_failed_and_retried(tmp_path):
    db = f"{tmp_path}/h.db"
    study = _study(f"sqlite:///{db}")
    dead, alive = Worker(study), Worker(study)
    try:
        t_dead, t_alive = study.ask(), study.ask()
        x = t_dead.suggest_float("x", 0, 1)
        t_alive.suggest_float("x", 0, 1)
        dead.claim(t_dead._trial_id)
        alive.claim(t_alive._trial_id)
        _age_heartbeat(db, t_dead._trial_id, 60)  # its worker stopped beating a minute ago
        assert stale_trial_ids(study._storage, study._study_id) == [t_dead._trial_id]
        trials = alive.reap()
        states = {t.number: t.state for t in trials}
        assert states[t_dead.number] == TrialState.FAIL and states[t_alive.number] == TrialState.RUNNING
        retry = [t for t in trials if t.state == TrialState.WAITING]
        assert len(retry) == 1 and retry[0].params == {"x": x}
        assert retry[0].system_attrs["failed_trial"] == t_dead.number
        assert not tell(study, t_dead, 1.0)  # the presumed-dead owner's late tell is dropped quietly
        assert tell(study, t_alive, 0.5)
        alive.reap()  # a second look fails nothing more and queues no second retry
        assert sum(t.state == TrialState.WAITING for t in study.get_trials()) == 1
    finally:
        dead.close()
        alive.close()


def test_claim_tags_a_unique_identity(tmp_path):
    study = _study(f"sqlite:///{tmp_path}/i.db")
    a, b = Worker(study), Worker(study)
    try:
        t = study.ask()
        a.claim(t._trial_id)
        tag = study.get_trials()[0].system_attrs[OWNER]
        assert tag["id"] == a.id and tag["pid"] == os.getpid() and tag["pidns"].startswith("pid:")
        assert a.id != b.id and a.id.split("/")[0] == b.id.split("/")[0]  # same host, different workers
    finally:
        a.close()
        b.close()


def test_unclaimed_trial_counts_from_its_start(tmp_path):
    """A worker killed between ask and claim left no heartbeat: the trial is stale after the grace period."""
    study = _study(f"sqlite:///{tmp_path}/u.db")
    t = study.ask()
    assert stale_trial_ids(study._storage, study._study_id) == []
    import datetime

    storage = study._storage._backend
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        row = session.query(models.TrialModel).filter(models.TrialModel.trial_id == t._trial_id).one()
        row.datetime_start = datetime.datetime.now() - datetime.timedelta(seconds=30)
    assert stale_trial_ids(study._storage, study._study_id) == [t._trial_id]


def test_journal_never_fails_a_trial_it_cannot_check(tmp_path):
    """Journal: an owner in another PID namespace (or host) is taken as alive; a gone local PID is dead."""
    study = _study(str(tmp_path / "j.log"))
    w = Worker(study)
    other_ns, gone = study.ask(), study.ask()
    tag = dict(w.tag)
    study._storage.set_trial_system_attr(other_ns._trial_id, OWNER, {**tag, "id": "h/x", "pidns": "pid:[1]", "pid": 1})
    study._storage.set_trial_system_attr(gone._trial_id, OWNER, {**tag, "id": "h/y", "pid": 2 ** 22 + 1})
    states = {t.number: t.state for t in w.reap()}
    assert states[other_ns.number] == TrialState.RUNNING and states[gone.number] == TrialState.FAIL
    assert not liveness.heartbeats(study._storage)
    w.close()


def test_study_created_once_and_joiners_reseeded(tmp_path):
    from commtune.search import SearchConfig
    from commtune.search.optuna_backend import open_study
    from commtune.search.space import load_space

    cfg = SearchConfig(space=load_space("default"), objective=None, storage=f"sqlite:///{tmp_path}/c.db",
                       study_name="c")
    (_, first), (_, second) = open_study(cfg), open_study(cfg)
    assert first and not second
    assert worker_seed(0, "a/1") != worker_seed(0, "b/1")
    assert worker_seed(0, "a/1") == worker_seed(0, "a/1") and worker_seed(None, "a/1") is None


def test_warm_start_enqueued_once_by_the_creator(tmp_path, capsys):
    from commtune.cli import main

    url = f"sqlite:///{tmp_path}/w.db"
    args = ["search", "--model", "resnet50", "--storage", url, "--study", "w", "--no-profile", "--quiet", "--json"]
    assert main([*args, "--trials", "3"]) == 0
    assert main([*args, "--trials", "12"]) == 0  # a resume (or a second worker) enqueues nothing
    capsys.readouterr()
    trials = optuna.load_study(study_name="w", storage=open_storage(url)).get_trials()
    enqueued = [t for t in trials if "fixed_params" in t.system_attrs]
    assert len(enqueued) == 3  # the first run's budget: points[:trials], once


def test_profile_storage_is_portable():
    assert portable("sqlite:////home/me/work/commtune-studies.db") == "sqlite:///commtune-studies.db"
    assert portable("/data/x/studies.log") == "journal://studies.log"
    assert portable("postgresql://alice:s3cret@db.internal:5432/tune") == \
        "postgresql+psycopg://alice:***@db.internal:5432/tune"
    assert portable(None) == "memory"


def test_missing_postgres_driver_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(CommtuneError, match=r"needs the database driver 'psycopg': pip install 'commtune\[postgres\]'"):
        open_storage("postgresql://u:pw@127.0.0.1:1/db")


def test_sqlite_on_network_fs_warns(tmp_path, monkeypatch, capsys):
    from commtune.search import storage

    monkeypatch.setattr(storage, "mount_type", lambda p: "nfs4")
    open_storage(f"sqlite:///{tmp_path}/n.db")
    err = capsys.readouterr().err
    assert "is on nfs4" in err and "postgresql://" in err and len(err.strip().splitlines()) == 1
    assert storage.mount_type(tmp_path) != ""  # the real lookup finds the mount holding tmp_path


def test_retry_queued_ahead_counts_against_the_budget(tmp_path):
    """A worker that created a trial just after a dead worker's retry was queued must not overshoot.

    Budget 3: trials 0 and 1 complete, trial 2's worker died (failed, retry
    queued as trial 3), and trial 4 was created by a worker whose ``ask``
    looked for queued trials before the retry existed. Trial 3 will run,
    so trial 4 is surplus.
    """
    from commtune.search.optuna_backend import admit

    db = f"{tmp_path}/b.db"
    study = _study(f"sqlite:///{db}")
    w = Worker(study)
    try:
        for v in (1.0, 2.0):
            t = study.ask()
            t.suggest_float("x", 0, 1)
            assert admit(study, t, w, 3)
            study.tell(t, v)
        t_dead = study.ask()
        t_dead.suggest_float("x", 0, 1)
        assert admit(study, t_dead, w, 3)
        w.release(t_dead._trial_id)
        _age_heartbeat(db, t_dead._trial_id, 60)
        w.reap()  # fails trial 2, queues its retry as trial 3
        late = optuna.Trial(study, study._storage.create_new_trial(study._study_id))  # the racing worker's ask
        assert late.number == 4
        assert not admit(study, late, w, 3)
        assert study.get_trials()[4].state == TrialState.FAIL and study.get_trials()[4].user_attrs["surplus"]
        retry = study.ask()  # the queued retry is admitted: it fills the budget exactly
        assert retry.number == 3 and admit(study, retry, w, 3)
    finally:
        w.close()


def test_one_read_per_trial_samples_exactly_as_fresh_reads(tmp_path, monkeypatch):
    """The sampling snapshot changes no decision of a seeded search, and reads the study once per trial."""
    from commtune.search import SearchConfig, optuna_backend
    from commtune.search.space import load_space
    from commtune.evaluators.base import make_evaluator
    from commtune.api import make_scenario

    def run(name: str, snapshot: bool) -> list:
        if not snapshot:
            monkeypatch.setattr(optuna_backend, "one_read_per_trial", lambda study: __import__("contextlib").nullcontext())
        sc = make_scenario("resnet50", bw="32gbit")
        cfg = SearchConfig(space=load_space("default"), objective=make_evaluator("simulator", sc), sampler="auto",
                           trials=25, seed=3, storage=f"sqlite:///{tmp_path}/{name}.db", study_name=name, screen=64)
        optuna_backend.run(cfg)
        monkeypatch.undo()
        return [t.params for t in _study(f"sqlite:///{tmp_path}/{name}.db", name).get_trials()]

    reads = []
    real = optuna_backend._TrialsSnapshot.__init__

    def counting(self, storage, study_id):
        reads.append(study_id)
        real(self, storage, study_id)

    monkeypatch.setattr(optuna_backend._TrialsSnapshot, "__init__", counting)
    with_snapshot = run("snap", True)
    assert len(reads) == 25
    assert with_snapshot == run("fresh", False)
