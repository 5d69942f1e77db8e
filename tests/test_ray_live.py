"""Live search on a Ray cluster: the worker group is placed on Ray once per search (slow: Ray + torch ranks)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

pytest.importorskip("ray.tune")
pytest.importorskip("torch")


@pytest.fixture
def ray_temp(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="ctr", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    try:
        yield temp
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_live_search_starts_group_once_and_asha_prunes(tmp_path, capsys, monkeypatch, ray_temp):
    import optuna

    from commtune.cli import main as run_cli
    from commtune.runtime import ray_group

    groups = []

    class Counted(ray_group.RayWorkerGroup):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            groups.append(self)

    monkeypatch.setattr(ray_group, "RayWorkerGroup", Counted)
    budget = 6
    storage = f"sqlite:///{tmp_path}/live.db"
    # 1 KiB buckets are several times slower than 25 MiB ones: ASHA stops some trials at its rungs
    space = tmp_path / "slow.yaml"
    space.write_text("name: raylive\nbase: ddp_default\nknobs:\n  fusion_policy: static\n"
                     "  fusion_threshold_bytes: {choices: [25MiB, 1KiB]}\n  first_bucket_bytes: 1KiB\n"
                     "  num_streams: {choices: [1, 8]}\n  hierarchical: false\n")
    rc = run_cli(["search", "--model", "resnet50", "--bw", "10gbit", "--objective", "live", "--ranks", "2",
                  "--backend", "ray", "--space", str(space), "--trials", str(budget), "--sampler", "random", "--seed", "2",
                  "--live-scale", "0.05", "--live-steps", "6", "--live-warmup", "1", "--pruner", "median",
                  "--ray-temp-dir", ray_temp, "--storage", storage, "--study", "raylive",
                  "--json", "--quiet", "--workdir", str(tmp_path), "-o", str(tmp_path / "p.json")])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    d = json.loads(out.out)
    assert d["backend"] == "ray"
    # one group of 2 rank actors (2 processes) for the whole search, measured trials and report included
    assert len(groups) == 1 and len(groups[0].handles) == 2 and len(set(groups[0].pids)) == 2
    assert d["measured"]["launches"] == 1
    served = [st["trials"] for st in groups[0].final]
    assert served[0] == served[1] >= budget  # every Ray trial ran on these actors (plus the report's)
    log = groups[0].final[0]["log"]  # rank 0's trials, in order
    assert any(r["stopped"] and r["timed_steps"] < 6 for r in log[:budget])  # ASHA stopped some mid-way
    study = optuna.load_study(study_name="raylive", storage=storage)
    states = [t.state for t in study.trials]
    finished = states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED)
    assert finished == budget
    assert os.path.exists(d["profile_path"])


@pytest.mark.slow
def test_ray_group_settles_an_abandoned_trial_and_names_a_lost_rank(ray_temp):
    import ray

    from commtune.knobs import DDP_DEFAULT
    from commtune.runtime.ray_group import RayGroupClient, RayWorkerGroup
    from commtune.runtime.synthetic import layer_specs, synthetic_profile
    from commtune.runtime.worker_group import GroupFailure

    ray.init(num_cpus=3, include_dashboard=False, _temp_dir=ray_temp, log_to_driver=False)
    task = {"layers": layer_specs(synthetic_profile("resnet50", 0.02, 0.02, 0.04)), "compute": "emulated",
            "mode": None, "steps": 4, "warmup": 1}
    group = RayWorkerGroup(task, 2, timeout_s=60)
    try:
        assert group.strategy == "PACK" and len(set(group.pids)) == 2
        # a trial whose search side vanishes after its first step (what ASHA's stop does to a Ray trial)
        gone = RayGroupClient(group.handles, 60)
        gone.link.send({"op": "trial", "id": 1, "knobs": DDP_DEFAULT.to_dict(), "prune": True})
        assert gone.link.recv(60)["op"] == "step"
        # the next trial (another process's client) first ends it, then runs in full on the same ranks
        r = RayGroupClient(group.handles, 60).trial(DDP_DEFAULT)
        assert len(r["step_times_s"]) == 4 and not r["pruned"]
        log = ray.get(group.handles[0].status.remote())["log"]
        assert [x["stopped"] for x in log] == [True, False]
        ray.kill(group.handles[1])
        with pytest.raises(GroupFailure, match="rank 1 of the Ray worker group is gone"):
            RayGroupClient(group.handles, 10).trial(DDP_DEFAULT)
    finally:
        group.close()
