"""The runtime engine: profiles applied to real DDP (gloo, multi-process), the AutoTuner.

The multi-process checks run once (2 ranks on localhost, ``tests/runtime_job.py
checks``, ~10 s) and each test reads its part of the result. The emulated-
cluster test needs root and Linux namespaces (``netns`` marker).
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from commtune.errors import CommtuneError  # noqa: E402
from commtune.knobs import Knobs  # noqa: E402
from commtune.models import load_model  # noqa: E402
from commtune.profiles import load_profile as load_any_profile  # noqa: E402
from commtune.runtime import load_profile, module_fingerprint, parse_space, plan_for  # noqa: E402
from commtune.runtime.synthetic import SyntheticModel, synthetic_profile  # noqa: E402

JOB = Path(__file__).with_name("runtime_job.py")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_local(scenario: str, out: Path, world: int = 2, timeout: float = 120) -> list[dict]:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        procs.append(subprocess.Popen([sys.executable, str(JOB), scenario, str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            errs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-3000:] for e in errs)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("runtime-checks")
    return _run_local("checks", out), out


# ---------------------------------------------------------------- no processes

def test_missing_and_corrupt_profile_one_line(tmp_path):
    with pytest.raises(CommtuneError) as exc:
        load_profile(tmp_path / "nope.json")
    assert "cannot read profile" in str(exc.value) and "\n" not in str(exc.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "commtune-profile/1", "model": ')
    with pytest.raises(CommtuneError) as exc:
        load_profile(bad)
    assert "not valid JSON" in str(exc.value) and "\n" not in str(exc.value)
    bad.write_text('{"schema": "other/9"}')
    with pytest.raises(CommtuneError, match="unknown profile schema"):
        load_profile(bad)


def test_plan_maps_knobs():
    p = plan_for(Knobs(fusion_policy="static", fusion_threshold_bytes=5 * 2**20, first_bucket_bytes=2**18,
                       num_streams=4, wire_precision="fp16"), "round_robin")
    assert (p.bucket_cap_bytes, p.first_bucket_bytes, p.num_streams, p.wire_precision, p.stream_mode) == \
        (5 * 2**20, 2**18, 4, "fp16", "round_robin") and p.needs_hook and not p.not_applied
    assert not plan_for(Knobs(fusion_policy="static")).needs_hook
    d = plan_for(Knobs(fusion_policy="dynamic", hierarchical=True))
    assert d.bucket_cap_bytes == 128 * 2**20 and len(d.not_applied) == 4
    with pytest.raises(CommtuneError, match="stream_mode"):
        plan_for(Knobs(), "zigzag")


def test_parse_space_forms_and_errors():
    params, fixed = parse_space({"fusion_threshold_bytes": {"low": "1MiB", "high": "64MiB", "log": True},
                                 "num_streams": [1, 2, 4], "wire_precision": {"value": "fp16"},
                                 "fusion_policy": "static", "stream_mode": {"choices": ["split", "round_robin"]}})
    assert params["fusion_threshold_bytes"].low == 2**20 and params["fusion_threshold_bytes"].log
    assert params["num_streams"].choices == (1, 2, 4) and fixed == {"wire_precision": "fp16"}
    with pytest.raises(CommtuneError, match="cannot be tuned on a live DDP job"):
        parse_space({"cycle_time_ms": [1, 2]})
    with pytest.raises(CommtuneError, match="only be 'static'"):
        parse_space({"fusion_policy": "dynamic"})
    with pytest.raises(CommtuneError, match="num_streams"):
        parse_space({"num_streams": [0, 2]})


def test_module_fingerprint_matches_zoo_and_synthetic():
    from torch_reference_models import REFERENCE  # plain-torch twins of zoo models

    with torch.device("meta"):
        module = REFERENCE["resnet50"][0]()
    assert module_fingerprint(module) == load_model("resnet50").fingerprint()
    prof = synthetic_profile(load_model("resnet50"), scale=0.1, forward_s=0.01, backward_s=0.02)
    model = SyntheticModel(prof)
    assert module_fingerprint(model) == prof.fingerprint()
    assert sum(p.numel() for p in model.parameters()) == prof.num_params


# ---------------------------------------------------------------- 2 ranks, gloo

@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("mode", ["split", "round_robin"])
def test_multistream_gradients_equal_plain_ddp(job, k, mode):
    ranks, _ = job
    for res in ranks:
        got = res["grads"][f"{k}-{mode}-fp32"]
        assert got["close"] and got["max_abs_diff"] < 1e-6, got
        assert got["hook"] == (k > 1) and got["streams"] == k
        if k != 2:
            fp16 = res["grads"][f"{k}-{mode}-fp16"]
            assert fp16["close"] and fp16["hook"], fp16


@pytest.mark.slow
def test_bucket_sizes_follow_profile(job):
    b = job[0][0]["buckets"]
    sizes = [n for _, n in b["last_step"]]
    assert sum(sizes) == b["grad_bytes"]
    # DDP's rule: a bucket closes once it reaches its cap (so it exceeds it by < one tensor);
    # the first (earliest-ready) bucket has the first-bucket cap, the others the bucket cap.
    assert b["first"] <= sizes[0] < b["first"] + b["tensor_bytes"]
    for n in sizes[1:-1]:
        assert b["cap"] <= n < b["cap"] + b["tensor_bytes"]
    assert sizes[-1] <= b["cap"]
    assert len(sizes) == 1 + math.ceil((b["grad_bytes"] - sizes[0]) / b["cap"])


@pytest.mark.slow
def test_mismatched_profile_refused_naming_both(job):
    msg = job[0][0]["mismatch"]
    assert msg and "'resnet-ish' (8 tensors, 38,538 params" in msg and "'Sequential' (20 tensors, 327,680 params" in msg


@pytest.mark.slow
def test_world_size_mismatch_warns_strict_errors(job):
    res = job[0][0]
    assert len(res["world_warning"]) == 1 and "world size 16" in res["world_warning"][0]
    assert "this job has 2 ranks" in res["world_warning"][0]
    assert res["world_strict"] and "world size 16" in res["world_strict"]


@pytest.mark.slow
def test_dynamic_profile_applies_bucket_cap_and_warns(job):
    res = job[0][0]
    assert res["dynamic_cap"] == 512 * 1024
    (msg,) = res["dynamic_warning"]
    assert "fusion_policy=dynamic" in msg and "cycle_time_ms=5 ms" in msg and "negotiation" in msg


@pytest.mark.slow
def test_autotuner_localhost_rebuilds_locks_in_writes_profile(job):
    ranks, out = job
    t0, t1 = ranks[0]["tuner"], ranks[1]["tuner"]
    assert len(t0["history"]) == 3 and t0["first_trial_streams"] == 2  # the enqueued configuration first
    assert t0["wrappers"] >= 3 and not t0["tuning"] and t0["locked"] == t1["locked"]
    best = min(t0["history"], key=lambda h: h[1])
    assert t0["locked"] is not None
    assert t0["params_changed"] and t0["param_sum"] == t1["param_sum"]  # optimizer valid, ranks in sync
    prof = load_any_profile(out / "tuned.json")
    assert prof.knobs.to_dict() == t0["locked"]["knobs"] and prof.cluster.world_size == 2
    assert prof.predicted["step_time_s"] == pytest.approx(best[1])
    assert prof.provenance["backend"] == "live-ddp" and len(prof.provenance["measurements"]) == 3


@pytest.mark.slow
def test_autotuner_retunes_when_step_time_drifts(job):
    ranks, out = job
    d = ranks[0]["drift"]
    # 2 trials (1 step each) -> locked; 2 steps at the locked time; 2 steps 5x slower -> round 2 (2 trials)
    # -> locked again at the new time; no further re-tune.
    assert [r for r, _ in d["rounds"]] == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert [t for _, t in d["rounds"]] == [True, False, False, False, False, True, True, False, False, False,
                                           False, False]
    assert d["locked_time_s"] == pytest.approx(0.02) and d["history"] == 4
    assert load_any_profile(out / "drift.json").provenance["round"] == 2
    assert ranks[1]["drift"] == d


# ---------------------------------------------------------------- emulated cluster

@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_autotuner_picks_many_streams_under_per_stream_cap(tmp_path):
    from commtune.emulation import EmulatedCluster, emulated_cluster, run_on_hosts

    spec = EmulatedCluster.parse(2, "200mbit", per_stream="50mbit", prefix="ctrt")
    with emulated_cluster(spec, replace=True) as state:
        run_on_hosts(state, [[sys.executable, str(JOB), "tune", str(tmp_path)]] * 2,
                     env_extra={"PYTHONPATH": str(ROOT)}, timeout_s=120, master_port=_free_port())
    res = json.loads((tmp_path / "rank0.json").read_text())
    times = dict(res["history"])
    assert times[4] < 0.6 * times[1], times  # 4 streams clearly beat 1 under a 50 Mbit/s per-flow cap
    assert res["locked_streams"] >= 3, res
    assert load_any_profile(tmp_path / "tuned.json").knobs.num_streams == res["locked_streams"]
