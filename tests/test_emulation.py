"""The emulated cluster: namespaces up/down, shaping, per-stream cap, latency, launcher, CLI.

Needs root and ``ip``/``tc``; skipped otherwise. Every test cleans up its namespaces.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from commtune.errors import CommtuneError

pytestmark = pytest.mark.netns

PREFIX = "ctt"
needs_root = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"),
    reason="needs root, ip and tc",
)
needs_latency = pytest.mark.skipif(
    not shutil.which("iptables") or not os.path.exists("/usr/include/libnetfilter_queue/libnetfilter_queue.h"),
    reason="latency needs: apt-get install -y libnetfilter-queue-dev iptables",
)


def _our_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(PREFIX + "-")]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("ctrun")
    old = os.environ.get("COMMTUNE_RUN_DIR")
    os.environ["COMMTUNE_RUN_DIR"] = str(path)
    yield path
    if old is None:
        del os.environ["COMMTUNE_RUN_DIR"]
    else:
        os.environ["COMMTUNE_RUN_DIR"] = old


@pytest.fixture
def clean(run_dir):
    """Start and end with no namespaces of ours, whatever the test did."""
    from commtune.emulation import down

    down(PREFIX)
    yield run_dir
    down(PREFIX)
    assert _our_netns() == []


def _spec(hosts=2, bw="200mbit", per_stream=None, latency=None):
    from commtune.emulation import EmulatedCluster

    return EmulatedCluster.parse(hosts, bw, per_stream, latency, prefix=PREFIX)


def _mbit(bps: float) -> float:
    return bps * 8 / 1e6


# --- no root needed -----------------------------------------------------------------------------

def test_spec_validation():
    from commtune.emulation import EmulatedCluster

    with pytest.raises(CommtuneError, match="between 2 and 64"):
        _spec(hosts=1)
    with pytest.raises(CommtuneError, match="between 2 and 64"):
        _spec(hosts=65)
    with pytest.raises(CommtuneError, match="malformed"):
        _spec(bw="fast")
    with pytest.raises(CommtuneError, match="prefix"):
        EmulatedCluster(2, 1e6, prefix="Bad-Prefix")
    s = _spec(hosts=3, bw="1gbit", per_stream="300mbit", latency="1ms")
    assert s.link_rate_Bps == 125e6 and s.per_stream_Bps == 37.5e6 and s.latency_s == 1e-3
    assert s.host_address(2) == "10.77.0.3" and s.host_netns(2) == "ctt-host2"


def test_up_refuses_without_root(monkeypatch, tmp_path):
    from commtune.emulation import up

    monkeypatch.setenv("COMMTUNE_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CommtuneError, match="needs root") as ei:
        up(_spec())
    assert "\n" not in str(ei.value)


def test_up_refuses_without_tools(monkeypatch, tmp_path):
    from commtune.emulation import commands, up

    monkeypatch.setenv("COMMTUNE_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(commands.shutil, "which", lambda name: None if name == "tc" else "/usr/bin/" + name)
    with pytest.raises(CommtuneError, match="needs tc"):
        up(_spec())


def _cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    import commtune.cli as cli

    try:
        rc = cli.main(list(argv))
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv", [
    ["cluster", "up", "--hosts", "1", "--bw", "1gbit"],
    ["cluster", "up", "--hosts", "65", "--bw", "1gbit"],
    ["cluster", "up", "--hosts", "four", "--bw", "1gbit"],
    ["cluster", "up", "--hosts", "4", "--bw", "1gbitz"],
    ["cluster", "up", "--hosts", "4", "--bw", "1gbit", "--per-stream", "-3mbit"],
    ["cluster", "up", "--hosts", "4", "--bw", "1gbit", "--latency", "soon"],
    ["cluster", "up", "--hosts", "4"],
])
def test_cli_bad_args_one_line_exit_2(monkeypatch, capsys, argv):
    rc, out, err = _cli(monkeypatch, capsys, *argv)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err


# --- root: real namespaces ----------------------------------------------------------------------

@needs_root
def test_up_status_down_round_trip(clean):
    from commtune.emulation import down, problems, state_path, status, up

    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n")
    state = up(_spec(hosts=3, per_stream="50mbit"))
    try:
        assert sorted(_our_netns()) == ["ctt-br", "ctt-host0", "ctt-host1", "ctt-host2"]
        assert state_path(PREFIX).exists()
        got = status(PREFIX)
        assert got is not None and got.to_json() == state.to_json()
        assert problems(got) == []
        assert [h.address for h in got.hosts] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
        env = got.env_for(2, world_size=3, master_port=29511)
        assert env["MASTER_ADDR"] == "10.77.0.1" and env["GLOO_SOCKET_IFNAME"] == "eth0"
        assert env["COMMTUNE_PACING_BPS"] == str(int(50e6 / 8)) and os.path.exists(env["LD_PRELOAD"].split()[0])
        assert got.launch_prefix(2) == ["nice", "-n", "-10", "ip", "netns", "exec", "ctt-host2"]
        # nothing was added to the root namespace
        assert subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n") == root_links
        addr = subprocess.run(["ip", "netns", "exec", "ctt-host1", "ip", "-o", "-4", "addr", "show", "eth0"],
                              capture_output=True, text=True).stdout
        assert "10.77.0.2/24" in addr
    finally:
        down(PREFIX)
    assert _our_netns() == [] and status(PREFIX) is None
    assert down(PREFIX) == []  # idempotent


@needs_root
def test_up_twice_refused_then_replace(clean):
    from commtune.emulation import up

    up(_spec())
    with pytest.raises(CommtuneError, match="already up.*down"):
        up(_spec())
    state = up(_spec(hosts=3), replace=True)
    assert state.num_hosts == 3 and len(_our_netns()) == 4


@needs_root
def test_down_after_lost_state_file(clean):
    from commtune.emulation import down, state_path, up

    up(_spec(hosts=2))
    state_path(PREFIX).unlink()  # a crash that lost the state
    removed = down(PREFIX)
    assert _our_netns() == [] and any("namespace" in r for r in removed)


@needs_root
def test_down_after_killed_up(clean):
    """SIGKILL ``commtune cluster up`` half-way; ``down`` removes the leftovers."""
    from commtune.emulation import down

    proc = subprocess.Popen([sys.executable, "-m", "commtune", "cluster", "up", "--hosts", "64", "--bw", "100mbit",
                             "--prefix", PREFIX], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while len(_our_netns()) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _our_netns(), "up should have been killed mid-way"
    down(PREFIX)
    assert _our_netns() == []


@needs_root
def test_cli_round_trip(clean, monkeypatch, capsys):
    rc, out, err = _cli(monkeypatch, capsys, "cluster", "up", "--hosts", "2", "--bw", "100mbit",
                        "--per-stream", "1gbit", "--prefix", PREFIX)
    assert rc == 0 and "ctt-host1" in out and "warning" in err
    rc, out, err = _cli(monkeypatch, capsys, "cluster", "up", "--hosts", "2", "--bw", "100mbit", "--prefix", PREFIX)
    assert rc == 2 and "already up" in err and len(err.strip().splitlines()) == 1
    rc, out, _ = _cli(monkeypatch, capsys, "cluster", "status", "--json", "--prefix", PREFIX)
    assert rc == 0 and '"ctt-host0"' in out
    rc, out, _ = _cli(monkeypatch, capsys, "cluster", "down", "--prefix", PREFIX)
    assert rc == 0 and _our_netns() == []
    rc, out, _ = _cli(monkeypatch, capsys, "cluster", "status", "--prefix", PREFIX)
    assert rc == 1


@needs_root
def test_launcher_env_and_failure_kills_all(clean):
    from commtune.emulation import RankFailure, emulated_cluster, run_on_hosts
    from commtune.emulation.state import HOST_NICE

    with emulated_cluster(_spec(hosts=3)) as state:
        show = [sys.executable, "-c",
                "import os; print(os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['MASTER_ADDR'], "
                "os.environ['MASTER_PORT'], os.environ['X'], open('/proc/net/dev').read().count('eth0'))"]
        res = run_on_hosts(state, [show] * 3, env_extra=lambda r: {"X": f"x{r}"}, timeout_s=30, master_port=29600)
        assert [r.stdout.split() for r in res] == [[str(r), "3", "10.77.0.1", "29600", f"x{r}", "1"] for r in range(3)]
        prio = [sys.executable, "-c", "import os; print(os.nice(0))"]
        assert [r.stdout.strip() for r in run_on_hosts(state, [prio] * 2, timeout_s=30)] == [str(HOST_NICE)] * 2

        sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
        failer = [sys.executable, "-c", "import sys, time; time.sleep(0.3); sys.exit('boom here')"]
        t = time.monotonic()
        with pytest.raises(RankFailure, match=r"rank 1 \(ctt-host1\) exited with status 1: boom here") as ei:
            run_on_hosts(state, [sleeper, failer, sleeper], timeout_s=30)
        assert time.monotonic() - t < 10
        assert all(r.returncode is not None for r in ei.value.results)
        with pytest.raises(RankFailure, match="timed out"):
            run_on_hosts(state, [sleeper, sleeper], timeout_s=1)
        from commtune.emulation.topology import _pids_in_netns
        assert _pids_in_netns(_our_netns()) == []  # no orphans in the namespaces


def _best_rate_mbit(state, flows: int, tries: int = 2) -> float:
    """The best of a few throughput measurements: shaping caps the rate, a busy host only lowers it
    (once, mid-suite under CI, one 1.5 s measurement came out 13 % low)."""
    from commtune.emulation.netbench import measure_throughput

    return max(_mbit(measure_throughput(state, flows=flows, seconds=1.5)["rate_Bps"]) for _ in range(tries))


@needs_root
def test_link_rate(clean):
    from commtune.emulation import emulated_cluster

    with emulated_cluster(_spec(bw="200mbit")) as state:
        got = _best_rate_mbit(state, flows=1)
    # TCP/IP headers take ~4.4% of the wire rate
    assert 180 <= got <= 205, got


@needs_root
def test_per_stream_cap(clean):
    from commtune.emulation import emulated_cluster

    with emulated_cluster(_spec(bw="200mbit", per_stream="50mbit")) as state:
        one = _best_rate_mbit(state, flows=1)
        four = _best_rate_mbit(state, flows=4)
    assert 45 <= one <= 55, one
    assert 175 <= four <= 205, four


@needs_root
@needs_latency
def test_latency_rtt(clean):
    from commtune.emulation import emulated_cluster
    from commtune.emulation.netbench import measure_rtt

    with emulated_cluster(_spec(latency="1ms")) as state:
        assert len(state.helper_pids) == 1
        rtt = measure_rtt(state, count=50)
    assert 2.0e-3 <= rtt["min_s"] and rtt["p50_s"] <= 3.0e-3, rtt
    assert not os.path.exists(f"/proc/{state.helper_pids[0]}")  # helper gone after down


@needs_root
@needs_latency
def test_latency_keeps_the_link_rate(clean):
    """Bulk TCP through the delay helper (batch verdicts release every due packet): the link rate holds."""
    from commtune.emulation import emulated_cluster

    with emulated_cluster(_spec(bw="200mbit", latency="1ms")) as state:
        got = _best_rate_mbit(state, flows=4)
    assert 175 <= got <= 205, got


@needs_root
def test_gloo_ranks_through_launcher(clean):
    """torch.distributed gloo ranks, launched per host, all-reduce through the shaped, paced links."""
    pytest.importorskip("torch")
    from commtune.emulation import emulated_cluster, run_on_hosts

    code = ("import os, torch, torch.distributed as dist\n"
            "dist.init_process_group('gloo', rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']))\n"
            "x = torch.full((1 << 18,), float(dist.get_rank() + 1))\n"
            "dist.all_reduce(x)\n"
            "dist.barrier()\n"
            "print(float(x[0]), float(x[-1]))\n"
            "dist.destroy_process_group()\n")
    with emulated_cluster(_spec(hosts=2, bw="500mbit", per_stream="200mbit")) as state:
        res = run_on_hosts(state, [[sys.executable, "-c", code]] * 2, timeout_s=60, master_port=29555)
    assert [r.stdout.split() for r in res] == [["3.0", "3.0"]] * 2


def test_latency_without_iptables_says_what_to_install(monkeypatch, tmp_path):
    from commtune.emulation import topology, up

    monkeypatch.setenv("COMMTUNE_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_which = shutil.which
    monkeypatch.setattr(topology.shutil, "which", lambda n: None if n == "iptables" else real_which(n))
    with pytest.raises(CommtuneError, match="apt-get install -y libnetfilter-queue-dev iptables"):
        up(_spec(latency="1ms"))
