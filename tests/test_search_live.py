"""Live search: `--objective live` (measured DDP steps, pruning), `--objective multi` (simulator
screens, live confirms), flag errors, the profile's `measured` section. Live runs use 2 local
gloo ranks of a tiny synthetic model (marked slow); one emulated-cluster run needs root (netns)."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys

import pytest

from commtune.cli import main as run_cli
from commtune.knobs import DDP_DEFAULT, Knobs
from commtune.profiles import load_profile

LIVE = ["search", "--model", "resnet50", "--quiet", "--live-scale", "0.02", "--live-forward-ms", "20",
        "--live-backward-ms", "40", "--live-timeout", "120"]


# --------------------------------------------------------------------------- fast: pruning logic, flags, profile

class FakeSteps:
    """A step-wise objective: bigger buckets are slower; counts the steps it 'runs'."""

    name = "fake-steps"
    metric = "step_time_s"
    supports_batch = False
    supports_steps = True
    steps = 10

    def __init__(self):
        self.steps_run: list[int] = []

    def _t(self, knobs: Knobs) -> float:
        return 0.1 + knobs.fusion_threshold_bytes / 2**30

    def evaluate(self, knobs):
        return {"step_time_s": self._t(knobs)}

    def evaluate_steps(self, knobs, on_step):
        times = []
        for i in range(1, self.steps + 1):
            times.append(self._t(knobs))
            if on_step(i, list(times)):
                self.steps_run.append(i)
                return {"step_time_s": statistics.median(times), "timed_steps": i, "pruned": True}
        self.steps_run.append(self.steps)
        return {"step_time_s": statistics.median(times), "timed_steps": self.steps}

    def lower_bound_s(self):
        return None


def test_median_pruner_stops_slow_trials_after_few_steps():
    from commtune.search import SearchConfig
    from commtune.search.optuna_backend import run
    from commtune.search.space import load_space

    obj = FakeSteps()
    cfg = SearchConfig(space=load_space("ddp"), objective=obj, sampler="random", trials=12, seed=0,
                       study_name="prune", pruner="median", screen=0)
    res = run(cfg)
    assert res.extra["pruned"] >= 1
    assert min(obj.steps_run) < obj.steps  # a pruned trial ran fewer steps than a full one
    assert res.extra["timed_steps"] == sum(obj.steps_run) < obj.steps * len(obj.steps_run)
    assert res.trials + res.extra["pruned"] == 12  # pruned trials use up the budget


@pytest.mark.parametrize("extra, needle", [
    (["--objective", "live", "--ranks", "2"], "cannot apply"),  # default space varies dynamic-policy knobs
    (["--objective", "live", "--space", "ddp", "--ranks", "1"], "--ranks"),
    (["--ranks", "2"], "--ranks is for live measurement"),
    (["--objective", "live", "--space", "ddp", "--sampler", "grid"], "--sampler grid"),
    (["--objective", "live", "--space", "ddp", "--confirm", "2"], "--confirm K confirms"),
    (["--objective", "multi", "--space", "ddp", "--pruner", "median"], "--pruner"),
    (["--objective", "live", "--space", "ddp", "--pruner", "asha"], "unknown pruner"),
    (["--objective", "live", "--space", "ddp", "--cluster", "emulated", "--ranks", "2"], "drop --ranks"),
    (["--objective", "live", "--space", "ddp", "--cluster", "emulated", "--bw", "1gbit"], "drop --bw"),
    (["--objective", "live", "--space", "ddp", "--bw", "10gbit,25gbit"], "one --bw"),
    (["--objective", "live", "--space", "ddp", "--backend", "ray", "--concurrency", "2"], "--concurrency must be 1"),
    (["--objective", "multi", "--space", "ddp", "--confirm", "0"], "--confirm"),
    (["--objective", "live", "--space", "ddp", "--live-scale", "2"], "--live-scale"),
    (["--objective", "live", "--space", "ddp", "--cluster", "vpc-32gbit"], "describe the same cluster"),
    (["--objective", "lvie"], "did you mean"),
])
def test_bad_live_flags_one_line_exit_2(tmp_path, capsys, extra, needle):
    rc = run_cli([*LIVE, "--workdir", str(tmp_path / "w"), "--trials", "2", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_space_check_accepts_ddp_and_fixed_static(tmp_path):
    from commtune.errors import CommtuneError
    from commtune.runtime.ddp_plan import check_space as check_live_space
    from commtune.search.space import load_space

    check_live_space(load_space("ddp"))
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nbase: horovod_default\nknobs:\n  num_streams: {low: 1, high: 4}\n")
    with pytest.raises(CommtuneError, match="fixes fusion_policy=dynamic"):
        check_live_space(load_space(f))
    with pytest.raises(CommtuneError, match="cycle_time_ms"):
        check_live_space(load_space("horovod"))


def test_cluster_from_emulated_state():
    import math

    from commtune.emulation.state import ClusterState, HostInfo
    from commtune.evaluators.live import cluster_from_state

    hosts = [HostInfo(i, f"ct-host{i}", "eth0", f"10.77.0.{i + 2}") for i in range(3)]
    st = ClusterState("ct", "ct-br", "10.77.0.0/24", hosts, 125e6, 40e6, 1e-3, None, None)
    c = cluster_from_state(st)
    assert (c.nodes, c.gpus_per_node, c.inter_bw_Bps, c.per_stream_Bps, c.inter_latency_s) == (3, 1, 125e6, 40e6, 1e-3)
    st2 = ClusterState("ct", "ct-br", "10.77.0.0/24", hosts, 125e6, None, 0.0, None, None)
    assert math.isinf(cluster_from_state(st2).per_stream_Bps)


def test_profile_measured_section_round_trips_and_stays_optional(tmp_path, profile_factory):
    import dataclasses

    from commtune.profiles import Profile, save_profile

    p = profile_factory()
    assert "measured" not in p.to_dict()  # old-style profiles unchanged
    save_profile(p, tmp_path / "a.json")
    assert load_profile(tmp_path / "a.json").measured == {}
    q = dataclasses.replace(p, measured={"step_time_s": 0.3, "step_times_s": [0.3, 0.31]})
    save_profile(q, tmp_path / "b.json")
    assert load_profile(tmp_path / "b.json").measured["step_time_s"] == 0.3
    assert Profile.from_dict(json.loads((tmp_path / "b.json").read_text())).to_dict() == q.to_dict()


# --------------------------------------------------------------------------- slow: live runs on 2 local ranks

def _run_json(capsys, argv):
    rc = run_cli(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


@pytest.mark.slow
def test_live_search_writes_profile_with_measured_times(tmp_path, capsys):
    out = tmp_path / "live.json"
    d = _run_json(capsys, [*LIVE, "--objective", "live", "--ranks", "2", "--space", "ddp", "--trials", "3",
                           "--live-steps", "3", "--workdir", str(tmp_path), "-o", str(out), "--json"])
    assert d["objective"] == "live"
    m = d["measured"]
    assert len(m["step_times_s"]) == 3 and 0.06 * 0.95 < m["step_time_s"] < 2.0
    assert m["live"]["launch"] == "2 local ranks"
    assert "ddp_default" in m["baselines"]
    prof = load_profile(out)
    assert prof.measured["step_time_s"] == pytest.approx(m["step_time_s"])
    assert prof.predicted["step_time_s"] == pytest.approx(d["predicted_step_time_s"])  # simulator, same synthetic model
    assert prof.provenance["objective"] == "live"
    assert (prof.cluster.nodes, prof.cluster.gpus_per_node) == (2, 1)
    assert prof.knobs.fusion_policy == "static"


@pytest.mark.slow
def test_streamed_live_run_stops_early_when_told():
    from commtune.cluster import ClusterSpec
    from commtune.models import load_model
    from commtune.probe.launch import LaunchSpec
    from commtune.scenario import Scenario
    from commtune.evaluators.live import LiveEvaluator, LiveSettings

    sc = Scenario(load_model("resnet50"), ClusterSpec(nodes=2, gpus_per_node=1))
    live = LiveEvaluator(sc.model, scenario=sc, settings=LiveSettings(launch=LaunchSpec(ranks=2, timeout_s=120), scale=0.02, forward_s=0.1,
                                          backward_s=0.2, steps=12, warmup=1))
    seen = []
    m = live.evaluate_steps(DDP_DEFAULT, lambda i, ts: seen.append(i) or i >= 2)
    assert m["pruned"] and m["timed_steps"] == 2 and seen == [1, 2]
    assert live.steps_run == 2  # the ranks stopped right after step 2 (not at 12)
    full = live.evaluate_steps(DDP_DEFAULT, lambda i, ts: False)
    assert full["timed_steps"] == 12 and not full.get("pruned") and live.steps_run == 14
    pruned_log, full_log = live.trial_log
    assert pruned_log["pruned"] and pruned_log["steps_wall_s"] < full_log["steps_wall_s"] / 3  # 1+2 vs 1+12 steps
    # replayed from the cache: no trial; both trials ran on one worker group (one launch)
    again = live.evaluate_steps(DDP_DEFAULT, lambda i, ts: i >= 3)
    assert again["pruned"] and again["replayed"] and live.launches == 1 and len(live.trial_log) == 2
    live.close()


@pytest.mark.slow
def test_live_search_prunes_slow_configuration(tmp_path, capsys):
    space = tmp_path / "slow.yaml"
    space.write_text("name: slowtest\nbase: ddp_default\nknobs:\n  fusion_policy: static\n"
                     "  fusion_threshold_bytes: {choices: [25MiB, 1KiB]}\n  first_bucket_bytes: 1KiB\n"
                     "  num_streams: {choices: [1, 8]}\n  hierarchical: false\n")
    # random seed 2 samples 25MiB/1, 25MiB/8, 25MiB/1, then 1KiB/8: several times slower, pruned
    d = _run_json(capsys, [*LIVE, "--objective", "live", "--ranks", "2", "--space", str(space), "--trials", "4",
                           "--live-steps", "6", "--sampler", "random", "--seed", "2", "--workdir", str(tmp_path),
                           "--no-profile", "--json"])
    import optuna

    st = optuna.load_study(study_name=d["study"], storage=f"sqlite:///{tmp_path / 'commtune-studies.db'}")
    pruned = [t for t in st.trials if t.state.name == "PRUNED"]
    assert d["pruned"] >= 1 and pruned
    assert all(t.user_attrs["timed_steps"] < 6 for t in pruned)
    assert d["best_active"]["fusion_threshold_bytes"] == 25 * 2**20


@pytest.mark.slow
def test_multi_fidelity_confirms_top_k_and_picks_measured_best(tmp_path, capsys):
    out = tmp_path / "multi.json"
    d = _run_json(capsys, [*LIVE, "--objective", "multi", "--confirm", "2", "--ranks", "2", "--space", "ddp",
                           "--trials", "10", "--live-steps", "3", "--workdir", str(tmp_path), "-o", str(out), "--json"])
    rows = d["confirmed"]
    assert len(rows) == 2 and {r["sim_rank"] for r in rows} == {1, 2}
    assert rows[0]["measured_step_time_s"] <= rows[1]["measured_step_time_s"]
    assert Knobs.from_dict(d["best"]) == Knobs.from_dict(rows[0]["knobs"])  # the measured best wins
    assert all(r["predicted_step_time_s"] > 0 and r["measured_step_time_s"] > 0 for r in rows)
    prof = load_profile(out)
    assert len(prof.measured["confirmed"]) == 2 and prof.provenance["objective"] == "multi"
    assert prof.predicted["step_time_s"] == pytest.approx(d["predicted_step_time_s"])


def test_multi_table_output(tmp_path, capsys, monkeypatch):
    """The predicted-vs-measured table, with the live measurement stubbed (fast)."""
    from commtune.evaluators import live as live_mod

    class FakeGroup:
        def __init__(self):
            self.n = 0

        def trial(self, knobs, on_step=None):
            self.n += 1
            return {"knobs": knobs.to_dict(), "step_times_s": [0.1 + self.n * 0.01] * 2, "buckets": [{}],
                    "wall_s": 0.25, "overhead_s": 0.05, "steps_wall_s": 0.2, "rebuild_s": 0.01,
                    "decision_wait_s": 0.0, "pruned": False}

        def close(self):
            pass

    def fake_group(self):
        if self.group is None:
            self.group = FakeGroup()
        return self.group

    monkeypatch.setattr(live_mod.LiveEvaluator, "_group", fake_group)
    rc = run_cli([*LIVE, "--objective", "multi", "--ranks", "2", "--space", "ddp", "--trials", "8",
                  "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "measured live" in out and "predicted" in out and "measured step time" in out
    prof = load_profile(next(tmp_path.glob("*.json")))
    assert len(prof.measured["confirmed"]) == 3


# --------------------------------------------------------------------------- netns: a 2-host emulated cluster

@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("ip")
                    or not shutil.which("tc"), reason="needs root, ip and tc")
def test_live_search_on_emulated_cluster(tmp_path, capsys, monkeypatch):
    from commtune.emulation import EmulatedCluster, down, up

    monkeypatch.setenv("COMMTUNE_RUN_DIR", str(tmp_path / "run"))
    up(EmulatedCluster.parse(2, "200mbit", prefix="ctl"))
    try:
        d = _run_json(capsys, [*LIVE, "--objective", "live", "--cluster", "emulated", "--prefix", "ctl",
                               "--space", "ddp", "--trials", "2", "--live-steps", "2", "--workdir", str(tmp_path),
                               "--json"])
    finally:
        down("ctl")
    assert d["measured"]["live"]["launch"].startswith("2 ranks on emulated cluster ctl")
    prof = load_profile(d["profile_path"])
    assert (prof.cluster.nodes, prof.cluster.gpus_per_node) == (2, 1)
    assert prof.cluster.inter_bw_Bps == pytest.approx(200e6 / 8)
    assert prof.measured["step_time_s"] > 0.06
