"""The live search's persistent worker group and the worker loop it shares with the AutoTuner.

Fast: the message links, the step bookkeeping, plan comparison. Slow (processes): one group
of 2 gloo ranks through several reconfigurations (gradients equal a plain all-reduce's after
every switch; DDP rebuilt only on a change; pruning stops a trial), and failure handling
(a killed or hung rank ends the search naming it; completed trials stay in the study)."""
from __future__ import annotations

import threading

import pytest

from commtune.knobs import DDP_DEFAULT, Knobs
from commtune.runtime.apply import plan_for
from commtune.runtime.worker_group import FileLink, QueueLink
from commtune.runtime.worker_loop import TrialTimer, same_ddp

MiB = 2**20


def _knobs(cap=25 * MiB, k=1, wire="fp32", first=1 * MiB) -> Knobs:
    return Knobs.from_dict({"fusion_threshold_bytes": cap, "first_bucket_bytes": first, "num_streams": k,
                            "wire_precision": wire, "fusion_policy": "static"}, base=DDP_DEFAULT)


# --------------------------------------------------------------------------- fast

def test_file_link_delivers_in_order_and_removes_files(tmp_path):
    driver = FileLink(tmp_path, send="down", recv="up")
    rank0 = FileLink(tmp_path, send="up", recv="down")
    for i in range(3):
        driver.send({"op": "trial", "id": i})
    assert [rank0.recv(1.0)["id"] for _ in range(3)] == [0, 1, 2]
    assert rank0.recv(0.01) is None
    assert not list((tmp_path / "down").iterdir())
    rank0.send({"op": "result", "t": 0.25})
    assert driver.recv(1.0) == {"op": "result", "t": 0.25}


def test_link_recv_runs_check_while_waiting(tmp_path):
    a, _ = QueueLink.pair()
    calls = []

    def check():
        calls.append(1)
        raise RuntimeError("peer gone")

    with pytest.raises(RuntimeError, match="peer gone"):
        a.recv(5.0, check)
    link = FileLink(tmp_path, send="x", recv="y")
    with pytest.raises(RuntimeError, match="peer gone"):
        link.recv(5.0, check)
    assert len(calls) == 2


def test_queue_link_pair_crosses_threads():
    a, b = QueueLink.pair()
    threading.Thread(target=lambda: b.send({"echo": b.recv(2.0)["x"]})).start()
    a.send({"x": [1, 2]})
    assert a.recv(2.0) == {"echo": [1, 2]}


def test_trial_timer_discards_warmup():
    t = TrialTimer(warmup=2, steps=3)
    assert [t.add(x) for x in (9.0, 8.0, 1.0, 3.0, 2.0)] == [False, False, False, False, True]
    assert t.warm == [9.0, 8.0] and t.timed == [1.0, 3.0, 2.0] and t.median() == 2.0


def test_same_ddp_ignores_stream_mode_of_one_stream():
    assert same_ddp(plan_for(_knobs(k=1), "split"), plan_for(_knobs(k=1), "round_robin"))
    assert not same_ddp(plan_for(_knobs(k=2), "split"), plan_for(_knobs(k=2), "round_robin"))
    assert not same_ddp(plan_for(_knobs(cap=4 * MiB)), plan_for(_knobs()))
    assert not same_ddp(plan_for(_knobs(wire="fp16")), plan_for(_knobs()))
    assert not same_ddp(None, plan_for(_knobs()))


# --------------------------------------------------------------------------- slow: real ranks

def _task(check_grads=False, steps=3):
    from commtune.runtime.synthetic import layer_specs, synthetic_profile

    prof = synthetic_profile("resnet50", 0.02, 0.02, 0.04)
    return {"layers": layer_specs(prof), "compute": "emulated", "mode": None, "steps": steps, "warmup": 1,
            "check_grads": check_grads}


@pytest.mark.slow
def test_group_reconfigures_in_place_and_gradients_stay_ddps():
    from commtune.probe.launch import LaunchSpec
    from commtune.probe.live_group import WorkerGroup

    configs = [_knobs(), _knobs(cap=1 * MiB, k=2), _knobs(cap=1 * MiB, k=2), _knobs(cap=4 * MiB, k=4, wire="fp16"),
               _knobs(cap=256 * 1024, k=2, first=64 * 1024), _knobs()]
    with WorkerGroup(LaunchSpec(ranks=2, timeout_s=120), _task(check_grads=True)) as g:
        results = [g.trial(k) for k in configs]
        pruned = g.trial(_knobs(cap=2 * MiB), on_step=lambda step, times: step >= 1)  # runs step 2 ahead
        strict = g.trial(_knobs(cap=2 * MiB), on_step=lambda step, times: step >= 2, lookahead=False)
    assert g.trials == 8
    for k, r in zip(configs, results):
        assert r["grad_check"]["allclose"], (k.describe(), r["grad_check"])
        assert len(r["step_times_s"]) == 3 and len(r["warmup_times_s"]) == 1 and not r["pruned"]
        assert r["knobs"] == k.to_dict()
        assert r["wall_s"] >= r["steps_wall_s"] > 0
        assert 0 <= r["host_busy_cores"] <= r["host_cores"]  # /proc/stat over the timed steps
    assert [r["rebuilt"] for r in results] == [False, True, False, True, True, True]  # the first is the start's
    assert len(results[4]["buckets"]) > len(results[0]["buckets"])  # 256 KiB buckets: more of them than 25 MiB
    assert pruned["pruned"] and len(pruned["step_times_s"]) == 1
    # the step run ahead is not counted as measured: warm-up + 1 step of about equal length
    assert pruned["steps_wall_s"] < 3 * (pruned["warmup_times_s"][0] + pruned["step_times_s"][0])
    assert strict["pruned"] and len(strict["step_times_s"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("fault, timeout_s, needle", [("kill:1:30", 120, "rank 1"),
                                                       ("hang:1:30", 8, "rank 1 (local) hung")])
def test_failed_or_hung_rank_ends_search_naming_it_trials_kept(tmp_path, capsys, monkeypatch, fault, timeout_s, needle):
    import optuna

    from commtune.cli import main as run_cli

    monkeypatch.setenv("COMMTUNE_PROBE_FAULT", fault)  # rank 1 dies/hangs during the 3rd trial
    rc = run_cli(["search", "--model", "resnet50", "--quiet", "--live-scale", "0.02", "--live-forward-ms", "20",
                  "--live-backward-ms", "40", "--live-timeout", str(timeout_s), "--objective", "live",
                  "--ranks", "2", "--space", "ddp", "--trials", "6", "--live-steps", "3", "--sampler", "random",
                  "--workdir", str(tmp_path), "--study", "fail", "--no-profile"])
    err = capsys.readouterr().err
    assert rc != 0 and needle in err, err
    st = optuna.load_study(study_name="fail", storage=f"sqlite:///{tmp_path / 'commtune-studies.db'}")
    states = [t.state.name for t in st.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") >= 2 and states[-1] == "FAIL", states


# --------------------------------------------------------------------------- netns: torchrun across emulated hosts

def _orphans(marker: str) -> list[str]:
    """Processes whose command line holds ``marker`` (a unique path of the run)."""
    import os

    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


@pytest.mark.slow
@pytest.mark.netns
def test_torchrun_on_emulated_hosts_searches_prunes_and_leaves_nothing(tmp_path, monkeypatch):
    import json
    import os
    import shutil
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("needs root, ip and tc")
    from commtune.emulation import EmulatedCluster, down, up
    from commtune.emulation.torchrun import run_torchrun
    from commtune.profiles import load_profile

    monkeypatch.setenv("COMMTUNE_RUN_DIR", str(tmp_path / "run"))
    space = tmp_path / "slow.yaml"  # 1 KiB buckets on 8 streams are many times slower: pruned
    space.write_text("name: slowtest\nbase: ddp_default\nknobs:\n  fusion_policy: static\n"
                     "  fusion_threshold_bytes: {choices: [25MiB, 4MiB, 1KiB]}\n  first_bucket_bytes: 1KiB\n"
                     "  num_streams: {choices: [1, 2, 8]}\n  hierarchical: false\n")
    work = tmp_path / "work"
    state = up(EmulatedCluster.parse(4, "1gbit", prefix="lb"), replace=True)
    try:
        results = run_torchrun(state, ["-m", "commtune", "search", "--objective", "live", "--model", "resnet50",
                                       "--space", str(space), "--trials", "8", "--sampler", "random", "--seed", "1",
                                       "--live-scale", "0.02", "--live-forward-ms", "20", "--live-backward-ms", "40",
                                       "--live-steps", "5", "--workdir", str(work), "--json", "--quiet"],
                               port=29411, timeout_s=900)
    finally:
        down("lb")
    assert all(r.returncode == 0 for r in results)
    reports = [json.loads(r.stdout) for r in results if r.stdout.strip()]
    assert len(reports) == 1  # rank 0 searched (on whichever host the rendezvous made it)
    d = reports[0]
    assert d["measured"]["live"]["launch"] == "4 ranks of this job (4 nodes x 1)"
    assert d["measured"]["launches"] == 1 and d["trials"] + d["pruned"] == 8 and d["pruned"] >= 1
    assert _orphans(str(work)) == []
    # the profile applies: wrap() on the model it was tuned for (the fingerprint matches), in a 1-rank job
    prof = load_profile(d["profile_path"])
    assert (prof.cluster.nodes, prof.cluster.gpus_per_node) == (4, 1)
    code = ("import os, torch.distributed as dist, warnings\n"
            "from commtune.runtime import wrap\n"
            "from commtune.runtime.synthetic import SyntheticModel, synthetic_profile\n"
            "from commtune.models import load_model\n"
            "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='29413')\n"
            "dist.init_process_group('gloo', rank=0, world_size=1)\n"
            "warnings.simplefilter('ignore')\n"
            f"ddp = wrap(SyntheticModel(synthetic_profile(load_model('resnet50'), 1.0)), {d['profile_path']!r})\n"
            "print(ddp.commtune_plan.bucket_cap_bytes, ddp.commtune_plan.num_streams)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(prof.knobs.fusion_threshold_bytes), str(prof.knobs.num_streams)]


@pytest.mark.slow
def test_live_search_of_the_users_model_writes_a_profile_wrap_accepts(tmp_path, capsys):
    import json

    from commtune.cli import main as run_cli
    from commtune.models.record import build_module
    from commtune.profiles import load_profile
    from commtune.runtime.checks import check_model

    src = tmp_path / "mymodels.py"
    src.write_text("from torch import nn\n\ndef make_model():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), "
                   "nn.Flatten(), nn.Linear(8 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 10))\n")
    spec = f"{src}:make_model"
    rc = run_cli(["search", "--objective", "live", "--model-factory", spec, "--input-shape", "3,8,8", "--batch-size", "4",
                  "--ranks", "2", "--space", "ddp", "--trials", "3", "--live-steps", "2", "--pruner", "none",
                  "--workdir", str(tmp_path / "w"), "--json", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    d = json.loads(out.out)
    assert d["trials"] == 3 and d["measured"]["live"]["model_factory"] == spec
    prof = load_profile(d["profile_path"])
    check_model(build_module(spec), prof)  # raises if the fingerprint were the synthetic mirror's


def test_model_factory_flag_errors(tmp_path, capsys):
    from commtune.cli import main as run_cli

    for extra, needle in ((["--model", "resnet50", "--objective", "live"], "drop --model"),
                          (["--objective", "simulator"], "is for live measurement")):
        rc = run_cli(["search", "--model-factory", "x.py:f", *extra, "--workdir", str(tmp_path)])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert run_cli(["search", "--workdir", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err
