"""Live DDP step timing on local gloo ranks, the multi-stream hook, and `commtune validate`."""
from __future__ import annotations

import dataclasses

import pytest

from commtune.cli import main
from commtune.knobs import DDP_DEFAULT
from commtune.probe.ddp_step import time_ddp_configs
from commtune.runtime.synthetic import sim_workload, synthetic_profile
from commtune.probe.launch import LaunchSpec
from commtune.probe.probe import calibration, write_calibration

KiB, MiB = 2**10, 2**20


@pytest.fixture(scope="module")
def small_profile():
    return synthetic_profile("resnet50", scale=0.02, forward_s=0.02, backward_s=0.04)


def test_synthetic_profile_matches_sim_workload(small_profile):
    w = sim_workload(small_profile)
    assert w.forward_s == pytest.approx(0.02) and w.backward_s == pytest.approx(0.04)
    assert w.numel.sum() == sum(t.numel for t in small_profile.tensors())
    assert w.grad_bytes_per_element == 4
    assert w.optimizer_s == 0.0  # the synthetic DDP step runs no optimizer


def test_synthetic_backward_follows_the_scheduled_timeline(small_profile, monkeypatch):
    """Backward deadlines count from the forward's start: host work between the passes
    (loss, autograd's start) takes from the first layer's time instead of shifting the step."""
    import time

    import torch

    from commtune.runtime.synthetic import build_model, layer_specs

    specs = layer_specs(small_profile)
    model = build_model(specs, "emulated")
    w = sim_workload(small_profile)
    x = model(torch.randn(4, 8))
    time.sleep(0.02)  # the host busy between forward and backward (half the backward)
    x.sum().backward()
    end = time.perf_counter()
    c = model.clock
    assert c.bwd_t0 == pytest.approx(c.fwd_t0 + w.forward_s, abs=1e-9)
    assert end - c.fwd_t0 == pytest.approx(w.forward_s + w.backward_s, abs=8e-3)  # not 20 ms later


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["split", "round_robin"])
def test_ddp_timing_sane_and_gradients_equal_plain(small_profile, mode):
    base = dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=512 * KiB, first_bucket_bytes=128 * KiB)
    configs = [dataclasses.replace(base, num_streams=k) for k in (1, 2)]
    if mode == "split":
        configs.append(dataclasses.replace(base, num_streams=2, wire_precision="fp16"))
    res = time_ddp_configs(small_profile, configs, LaunchSpec(ranks=2, timeout_s=90), steps=2, warmup=1,
                           mode=mode, check_grads=True)
    sim = sim_workload(small_profile)
    for r in res:
        assert r["grad_check"]["allclose"], r["grad_check"]
        assert len(r["step_times_s"]) == 2
        # at least the emulated compute, and not absurdly more on loopback
        assert 0.06 * 0.98 <= r["step_time_s"] < 2.0
        assert sum(b["grad_bytes"] for b in r["buckets"]) == sim.total_grad_bytes
        assert all(b["end_s"] >= b["start_s"] for b in r["buckets"])
        assert len(r["buckets"]) > 3  # small caps: several buckets, as DDP really used
        assert 0 <= r["host_busy_cores"] <= r["host_cores"]  # rank 0's host over the timed steps


@pytest.mark.slow
def test_validate_tiny_local_run_writes_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    recs = []
    for k in (1, 2):
        for s in (2**16, 2**20, 2**22):
            recs.append({"streams": k, "size_bytes": s, "count": s // 4, "time_s": 2e-4 + s / 1e9})
    spec, extra = calibration({"world_size": 2, "engine": "gloo", "records": recs}, hosts=1)
    # DDP calibration records as the probe stores them (step times made up: the drift is then large)
    extra["ddp_calibration_measurements"] = [{"streams": k, "bucket_bytes": c, "stream_mode": "split", "step_time_s": 10.0}
                                             for k in (1, 2) for c in (2**20, 2**23)]
    calib = tmp_path / "calib.yaml"
    write_calibration(str(calib), spec, extra)
    png = tmp_path / "v.png"
    args = ["validate", "--cluster", str(calib), "--ranks", "2", "--scale", "0.02", "--forward-ms", "20",
            "--backward-ms", "40", "--buckets", "256KiB,2MiB", "--streams", "1,2", "--steps", "2",
            "--warmup", "1", "--plot", str(png), "--timeout", "90"]
    rc = main(args)
    assert rc == 0
    out = capsys.readouterr().out
    assert "MAPE" in out and "Spearman" in out and "simulator's pick" in out
    assert png.exists() and png.stat().st_size > 1000
    # the drift check re-timed the three anchors live (10 s then: far faster now, a warning)
    drift = [line for line in out.splitlines() if line.startswith("drift since calibration")]
    assert len(drift) == 1 and "K=1 8 MiB 10000.0 -> " in drift[0] and "K=2 1 MiB" in drift[0]
    assert "re-run `commtune probe`" in drift[0]
    assert main(args + ["--no-drift-check"]) == 0
    assert "drift since calibration" not in capsys.readouterr().out
