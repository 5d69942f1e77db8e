"""The probe on local gloo ranks, under mpiexec, and its failure handling."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commtune.cli import main
from commtune.cluster import load_cluster_file
from commtune.probe.launch import LaunchSpec, ProbeFailure
from commtune.probe.probe import parse_sizes, run_probe
from simulators.calibrated import CalibratedNetwork
from simulators.network import network_for

REPO = Path(__file__).resolve().parents[1]


TAG = f"COMMTUNE_TEST_TAG={os.getpid()}".encode()


def _workers_alive() -> list[int]:
    """PIDs of this test session's probe workers still running (a /proc scan;
    workers inherit the TAG variable, so other jobs' workers are not counted)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            stat = (d / "stat").read_text()
            environ = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"commtune.probe.worker" in cmd and TAG in environ and stat.split(") ")[-1][0] != "Z":
            pids.append(int(d.name))
    return pids


@pytest.mark.slow
def test_probe_cli_two_ranks_table_and_calibration(tmp_path, capsys):
    out = tmp_path / "calib.yaml"
    rc = main(["probe", "--ranks", "2", "--sizes", "4KB:1MB", "--streams", "1,2", "--iters", "2",
               "--warmup", "1", "-o", str(out), "--timeout", "60", "--burst-sizes", "64KB,256KB", "--burst-count", "4",
               "--host-sizes", "64KB,1MB", "--fit-min-size", "0", "--no-ddp-calibration"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "busbw(GB/s)" in text and "# streams: 2" in text and "time(us)" in text
    spec = load_cluster_file(out)
    assert (spec.nodes, spec.gpus_per_node) == (1, 2)
    assert set(spec.meta["fit"]["per_stream_fits"]) == {1, 2}
    assert len(spec.meta["measurements"]) == 2 * 5
    assert isinstance(network_for(spec), CalibratedNetwork)
    # pipelining and host work were measured, fitted and read back
    fit = spec.meta["fit"]
    assert spec.inflight_per_stream == fit["pipelining"]["inflight_per_stream"] >= 1
    assert len(spec.meta["burst_measurements"]) == 2 * 2 and len(spec.meta["host_measurements"]) == 2
    assert spec.host_pre_s_per_byte == fit["host"]["pre_s_per_byte"] >= 0
    assert spec.host_post_s_per_byte == fit["host"]["post_s_per_byte"] >= 0
    m, g = network_for(spec).pipelining([1, 2])
    assert m.tolist() == [spec.inflight_per_stream] * 2
    gap0, gap1 = fit["network"]["gap0_s"], fit["network"]["gap_per_stream_s"]
    assert g.tolist() == pytest.approx([max(gap0 + gap1 * k, 0.0) for k in (1, 2)])
    # the simulator loads it end to end
    rc = main(["simulate", "--model", "resnet50", "--cluster", str(out), "--fusion-policy", "static", "--streams", "2"])
    assert rc == 0 and "step time" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["probe", "--ranks", "1"], "--ranks"),
    (["probe", "--ranks", "2", "--sizes", "8MB:1MB"], "larger than end"),
    (["probe", "--ranks", "2", "--sizes", "abc"], "malformed"),
    (["probe", "--ranks", "2", "--streams", "0,2"], "--streams"),
    (["probe", "--ranks", "2", "--bw", "fast"], "--emulated"),
    (["probe", "--emulated", "--bw", "1 parsec", "--hosts", "2"], "link rate"),
    (["probe"], "nothing to run on"),
    (["validate", "--cluster", "/nonexistent/calib.yaml", "--ranks", "2"], "cannot read cluster file"),
    (["validate", "--cluster", "/nonexistent/calib.yaml", "--ranks", "2", "--plot", "v.jpgx"], "image format"),
])
def test_bad_arguments_one_line_exit_2(argv, needle, capsys, monkeypatch):
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    if argv[:2] == ["probe", "--emulated"] and os.geteuid() != 0:
        needle = "root"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("fault, rank, words", [("kill:1:6", 1, "exited with status -9"),
                                                 ("hang:2:6", 2, "hung")])
@pytest.mark.slow
def test_failed_rank_is_named_and_nothing_is_left(fault, rank, words, monkeypatch):
    monkeypatch.setenv(*TAG.decode().split("=", 1))
    t0 = time.monotonic()
    with pytest.raises(ProbeFailure) as exc:
        run_probe(LaunchSpec(ranks=3, timeout_s=12, fault=fault), parse_sizes("4KB:64KB"), [1], iters=50, warmup=0)
    assert exc.value.rank == rank, str(exc.value)
    assert f"rank {rank}" in str(exc.value) and words in str(exc.value)
    assert time.monotonic() - t0 < 40
    assert _workers_alive() == []


@pytest.mark.skipif(not (shutil.which("mpiexec") or os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec"))),
                    reason="mpiexec not installed")
@pytest.mark.slow
def test_mpi_probe_under_mpiexec(tmp_path):
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    out = tmp_path / "calib-mpi.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "commtune", "probe", "--engine", "mpi",
                        "--sizes", "4KB:1MB", "--streams", "1,2", "--iters", "2", "--fit-min-size", "0", "-o", str(out)],
                       capture_output=True, text=True, env=env, timeout=90)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("busbw(GB/s)") == 2 * 3  # only rank 0 prints: a block per stream count and collective
    spec = load_cluster_file(out)
    assert spec.meta["fit"]["engine"] == "mpi" and spec.meta["fit"]["world_size"] == 2
    # MPI's all-gather and reduce-scatter (Iallgather, Ireduce_scatter_block): ring steps n-1 each
    assert {c: f["params"]["steps_per_peer"] for c, f in spec.meta["fit"]["collectives"].items()} == \
        {"allgather": 1, "reduce_scatter": 1}
    assert len(spec.meta["collective_measurements"]["reduce_scatter"]) == 2 * 5
    assert isinstance(network_for(spec), CalibratedNetwork)
    # pipelining and host work were measured, fitted and read back
    fit = spec.meta["fit"]
    assert spec.inflight_per_stream == fit["pipelining"]["inflight_per_stream"] >= 1
    assert len(spec.meta["burst_measurements"]) == 2 * 2 and len(spec.meta["host_measurements"]) == 4  # defaults
    assert spec.host_pre_s_per_byte == fit["host"]["pre_s_per_byte"] >= 0
    assert spec.host_post_s_per_byte == fit["host"]["post_s_per_byte"] >= 0
    m, g = network_for(spec).pipelining([1, 2])
    assert m.tolist() == [spec.inflight_per_stream] * 2
    gap0, gap1 = fit["network"]["gap0_s"], fit["network"]["gap_per_stream_s"]
    assert g.tolist() == pytest.approx([max(gap0 + gap1 * k, 0.0) for k in (1, 2)])
