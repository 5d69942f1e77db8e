"""The probe on the emulated cluster (network namespaces). Needs root, ip and tc."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"),
    reason="needs root, ip and tc")]

PREFIX = os.environ.get("COMMTUNE_TEST_PREFIX", "ctq")  # namespaces of these tests


def _ours() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(PREFIX + "-")]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMTUNE_RUN_DIR", str(tmp_path / "run"))
    yield
    from commtune.emulation import down

    down(PREFIX)


def test_emulated_probe_writes_calibration_and_cleans_up(run_dir, tmp_path, capsys):
    from commtune.cli import main
    from commtune.cluster import load_cluster_file
    from simulators.calibrated import CalibratedNetwork
    from simulators.network import network_for

    out = tmp_path / "calib.yaml"
    rc = main(["probe", "--emulated", "--hosts", "2", "--bw", "1gbit", "--prefix", PREFIX, "--sizes", "64KB:4MB",
               "--streams", "1,2", "--iters", "2", "-o", str(out), "--timeout", "60"])
    assert rc == 0
    assert "busbw(GB/s)" in capsys.readouterr().out
    spec = load_cluster_file(out)
    assert (spec.nodes, spec.gpus_per_node) == (2, 1)
    # 1 Gbit/s link: the derived link rate is at most the shaped rate (+ fit slack)
    assert 0.3e9 / 8 < spec.inter_bw_Bps < 1.3e9 / 8
    assert isinstance(network_for(spec), CalibratedNetwork)
    assert _ours() == []


def test_emulated_hung_rank_named_and_namespaces_removed(run_dir):
    from commtune.emulation import EmulatedCluster
    from commtune.probe.launch import LaunchSpec, ProbeFailure
    from commtune.probe.probe import parse_sizes, run_probe

    spec = EmulatedCluster.parse(2, "1gbit", prefix=PREFIX)
    with pytest.raises(ProbeFailure) as exc:
        run_probe(LaunchSpec(emulated=spec, timeout_s=15, fault="hang:1:5"), parse_sizes("4KB:16KB"), [1], iters=50)
    assert exc.value.rank == 1 and f"{PREFIX}-host1" in str(exc.value)
    assert _ours() == []


def test_default_probe_calibrates_then_validate_draws_held_out_points(run_dir, tmp_path, capsys):
    """The default path: probe (+ DDP calibration run) on a capped 2-host cluster, then
    validate's default held-out draw, every point carrying its extrapolation flags."""
    import json

    from commtune.cli import main
    from commtune.cluster import load_cluster_file
    from commtune.probe.ddp_calib import records_tensor_bytes

    assert main(["cluster", "up", "--prefix", PREFIX, "--hosts", "2", "--bw", "1gbit", "--per-stream", "300mbit",
                 "--replace"]) == 0
    out = tmp_path / "calib.yaml"
    assert main(["probe", "--emulated", "--prefix", PREFIX, "--sizes", "4KiB,1MiB,4MiB,8MiB", "--streams", "1,2,3",
                 "--iters", "2", "--ddp-steps", "2", "-o", str(out), "--timeout", "120"]) == 0
    capsys.readouterr()
    fit = load_cluster_file(out).meta["fit"]
    assert fit["calibrated"]["streams"] == [1, 2, 3] and fit["calibrated"]["world_size"] == 2
    assert 200e6 / 8 < fit["network"]["per_flow_Bps"] < 330e6 / 8  # the 300 Mbit/s per-flow cap
    assert fit["network"]["control_latency_s"] > 0 and "ddp_gap" in fit
    # the end-of-backward run: the last bucket's delay, fitted from its stored step times
    assert 0 <= fit["last_bucket_delay"]["delay_s"] < 0.1 and fit["last_bucket_delay"]["measured_s"] > 0
    assert load_cluster_file(out).last_bucket_delay_s == fit["last_bucket_delay"]["delay_s"]
    assert main(["validate", "--cluster", str(out), "--emulated", "--prefix", PREFIX, "--held-out", "3",
                 "--steps", "2", "--warmup", "1", "--passes", "1", "--scale", "0.05", "--plot", "", "--json",
                 "--timeout", "120"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["rows"]) == 3 and res["network"] == "CalibratedNetwork"
    assert all(r["measured_s"] > 0 and "extrapolation" in r for r in res["rows"])
    assert {"mape", "worst", "spearman", "pick_gap"} <= set(res["summary"])
    # the drift check re-timed the calibration's three DDP anchors: K = 1 and K = 3 at the largest
    # cap (8 tensors), K = 3 at the smallest (1 tensor); the tensors are sized to the measured link
    records = load_cluster_file(out).meta["ddp_calibration_measurements"]
    tensor = records_tensor_bytes(records)
    assert [(a["streams"], a["bucket_bytes"]) for a in res["drift"]["anchors"]] == [
        (1, 8 * tensor), (3, 8 * tensor), (3, tensor)]
    assert all(a["now_s"] > 0 for a in res["drift"]["anchors"]) and isinstance(res["drift"]["warn"], bool)
