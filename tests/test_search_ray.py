"""Ray Tune backend: one short local run (slow: starting Ray takes seconds)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from commtune.cli import main as run_cli

pytest.importorskip("ray.tune")


@pytest.mark.slow
def test_ray_backend_completes_trials(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="ctr", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    try:
        rc = run_cli(["search", "--model", "resnet50", "--backend", "ray", "--trials", "6", "--concurrency", "2",
                      "--ray-temp-dir", temp, "--storage", f"sqlite:///{tmp_path}/ray.db", "--study", "ray",
                      "--json", "--quiet", "--workdir", str(tmp_path)])
        out = capsys.readouterr()
        assert rc == 0, out.err[-2000:]
        d = json.loads(out.out)
        assert d["backend"] == "ray" and d["trials"] == 6 and d["ray_nodes"] == 1
        assert d["predicted_step_time_s"] <= min(d["baselines"].values())
        assert os.path.exists(d["profile_path"])
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_bad_ray_address_fails_fast_in_one_line(tmp_path, capsys):
    import time

    t0 = time.monotonic()
    rc = run_cli(["search", "--model", "resnet50", "--backend", "ray", "--ray-address", "127.0.0.1:1", "--trials", "3",
                  "--storage", "memory", "--no-profile", "--quiet", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Ray head at 127.0.0.1:1" in err, err
    assert len(err.strip().splitlines()) == 1 and time.monotonic() - t0 < 30


@pytest.mark.slow
def test_asha_stopped_trials_are_pruned_and_budget_exact(tmp_path, monkeypatch):
    """Step-wise trials under Ray Tune + ASHA: early-stopped trials are PRUNED (not COMPLETE with a partial value)."""
    import statistics

    import optuna

    from commtune.search import SearchConfig
    from commtune.search.ray_backend import run
    from commtune.search.space import load_space
    from commtune.search.storage import open_storage

    class Steps:  # local: Ray pickles it by value
        name, metric, supports_batch, supports_steps, max_steps = "steps", "step_time_s", False, True, 6

        def evaluate(self, knobs):
            return {"step_time_s": 0.1 + knobs.fusion_threshold_bytes / 2**30}

        def evaluate_steps(self, knobs, on_step):
            times = []
            for i in range(1, self.max_steps + 1):
                times.append(self.evaluate(knobs)["step_time_s"])
                on_step(i, list(times))
            return {"step_time_s": statistics.median(times), "timed_steps": self.max_steps}

        def lower_bound_s(self):
            return None

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="ctr", dir="/tmp")
    url = f"sqlite:///{tmp_path}/a.db"
    try:
        cfg = SearchConfig(space=load_space("ddp"), objective=Steps(), sampler="random", trials=10, seed=0,
                           storage=url, study_name="asha", pruner="median", screen=0, concurrency=2,
                           ray_temp_dir=temp)
        run(cfg)
        assert os.path.isdir(os.path.join(temp, "tune-results"))  # Tune's results stay where the log says
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    trials = optuna.load_study(study_name="asha", storage=open_storage(url)).get_trials()
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 10 and "RUNNING" not in states
    assert states.count("PRUNED") >= 1, states  # 10 random thresholds are never all better than the rung's median
    assert all(t.user_attrs["timed_steps"] == 6 for t in trials if t.state.name == "COMPLETE")
    assert all(t.user_attrs["timed_steps"] < 6 for t in trials if t.state.name == "PRUNED")


@pytest.mark.slow
def test_killed_ray_driver_rerun_meets_the_budget(tmp_path):
    """A Ray driver (and the local Ray it started) killed -9 mid-search; the same command run again.

    Its RUNNING trials are failed once their heartbeats are older than the grace
    period and retried; the warm start is not queued again; the budget is exact.
    """
    import signal
    import subprocess
    import sys
    import time

    import optuna

    from commtune.search.storage import open_storage

    budget, url = 40, f"sqlite:///{tmp_path}/d.db"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}

    def driver(temp: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "commtune", "search", "--model", "resnet50", "--backend", "ray",
                                 "--concurrency", "2", "--trials", str(budget), "--storage", url, "--study", "d",
                                 "--heartbeat", "1", "--grace", "4", "--ray-temp-dir", temp, "--no-profile",
                                 "--json", "--quiet", "--workdir", str(tmp_path)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own group: the local Ray dies with it

    def trials():
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            return optuna.load_study(study_name="d", storage=open_storage(url)).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            return []

    temps = [tempfile.mkdtemp(prefix="ctk", dir="/tmp") for _ in range(2)]
    try:
        first = driver(temps[0])
        deadline = time.monotonic() + 120
        while sum(t.state.name == "COMPLETE" for t in trials()) < 8 and first.poll() is None:
            assert time.monotonic() < deadline, "the first driver made no progress"
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()[1][-2000:]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        enqueued = sum("fixed_params" in t.system_attrs for t in trials())
        second = driver(temps[1])
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    finally:
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
    ts = trials()
    states = [t.state.name for t in ts]
    assert states.count("COMPLETE") == budget and "RUNNING" not in states and "WAITING" not in states, states
    assert json.loads(out)["trials"] == budget
    # the warm start was queued once: the second driver queued only retries of the first one's trials
    assert sum("fixed_params" in t.system_attrs and "failed_trial" not in t.system_attrs for t in ts) <= enqueued
    retried = {t.system_attrs["failed_trial"] for t in ts if "failed_trial" in t.system_attrs}
    assert retried <= {t.number for t in ts if t.state.name == "FAIL"}
