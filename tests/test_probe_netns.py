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

PREFIX = "ctq"


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
