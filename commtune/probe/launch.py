"""Launching probe / DDP-timing ranks: local processes or the emulated cluster.

:class:`LaunchSpec` says where ranks run:

* ``LaunchSpec(ranks=4)``: four local processes on 127.0.0.1 (loopback);
* ``LaunchSpec(emulated=EmulatedCluster(...))``: one rank per emulated host,
  the cluster brought up for the run and torn down after
  (``commtune.emulation.emulated_cluster``);
* ``LaunchSpec(state=ClusterState)``: an emulated cluster already up.

Both paths go through ``commtune.emulation.run_on_hosts`` (own process group per
rank, every group killed on failure or timeout). Local ranks use a
:class:`ClusterState` whose hosts are all 127.0.0.1 without a namespace.
A failure becomes a :class:`ProbeFailure` naming the rank; for a timeout the
heartbeat files of :mod:`commtune.probe.progress` tell which rank hung.
"""
from __future__ import annotations

import json
import os
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commtune.errors import CommtuneError
from commtune.probe.progress import FAULT_ENV, HB_ENV, culprit, read_heartbeats

REPO_ROOT = str(Path(__file__).resolve().parents[2])


class ProbeFailure(CommtuneError):
    """A rank died, failed or hung; ``rank`` is the one blamed (or None)."""

    def __init__(self, message: str, rank: int | None = None):
        super().__init__(message)
        self.rank = rank


def _local_state(ranks: int):
    from commtune.emulation.state import ClusterState, HostInfo

    class _LocalHosts(ClusterState):
        def launch_prefix(self, host: int) -> list[str]:
            return []

        def env_for(self, rank, world_size=None, master_port=None, base_env=None):
            env = {"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "RANK": str(rank),
                   "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(len(self.hosts)),
                   "OMP_NUM_THREADS": "1"}
            if world_size is not None:
                env["WORLD_SIZE"] = str(world_size)
            if master_port is not None:
                env["MASTER_PORT"] = str(master_port)
            return env

    hosts = [HostInfo(i, "local", "lo", "127.0.0.1") for i in range(ranks)]
    return _LocalHosts(prefix="local", bridge_netns="", subnet="127.0.0.0/8", hosts=hosts, link_rate_Bps=0.0,
                       per_stream_Bps=None, latency_s=0.0, shim_path=None, delay_helper=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LaunchSpec:
    """Where and how ranks run (see the module docstring)."""

    ranks: int = 2
    emulated: Any = None  # commtune.emulation.EmulatedCluster
    state: Any = None  # commtune.emulation.ClusterState
    timeout_s: float = 300.0
    engine: str = "gloo"
    echo: bool = False
    fault: str | None = None  # COMMTUNE_PROBE_FAULT for tests

    def __post_init__(self) -> None:
        if self.emulated is None and self.state is None:
            if isinstance(self.ranks, bool) or not isinstance(self.ranks, int) or self.ranks < 2:
                raise CommtuneError(f"--ranks must be an integer >= 2, got {self.ranks!r}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise CommtuneError(f"--timeout must be a positive number of seconds, got {self.timeout_s!r}")
        if self.engine not in ("gloo", "nccl"):
            raise CommtuneError(f"launched ranks use torch.distributed (gloo or nccl), not {self.engine!r}; "
                                "run MPI under mpiexec")
        from commtune.extras import require

        require("torch", "launched ranks (probe, validate, live search)")  # before any rank or cluster starts

    @property
    def world_size(self) -> int:
        if self.state is not None:
            return self.state.num_hosts
        if self.emulated is not None:
            return self.emulated.hosts
        return self.ranks

    @property
    def hosts(self) -> int:
        """Hosts the ranks span (1 for local ranks)."""
        return 1 if self.state is None and self.emulated is None else self.world_size

    def describe(self) -> str:
        if self.state is not None:
            return f"{self.world_size} ranks on emulated cluster {self.state.prefix}"
        if self.emulated is not None:
            return f"{self.world_size} ranks on an emulated cluster ({self.emulated.describe()})"
        return f"{self.ranks} local ranks"


def run_task(spec: LaunchSpec, task: dict, *, abort=None, lifetime_s: float | None = None) -> dict:
    """Run ``task`` on every rank of ``spec``; return rank 0's result.

    ``lifetime_s`` (default ``spec.timeout_s``): how long the ranks may run in all;
    ``abort`` (a ``threading.Event``): set by a watchdog to stop them as on a timeout
    of ``spec.timeout_s`` (the hung rank is named from the heartbeats)."""
    kw = {"abort": abort, "lifetime_s": lifetime_s}
    if spec.emulated is not None and spec.state is None:
        from commtune.emulation import emulated_cluster

        with emulated_cluster(spec.emulated, replace=True) as state:
            return _run(spec, state, task, emulated=True, **kw)
    if spec.state is not None:
        return _run(spec, spec.state, task, emulated=True, **kw)
    return _run(spec, _local_state(spec.ranks), task, emulated=False, **kw)


def _run(spec: LaunchSpec, state, task: dict, emulated: bool, abort=None, lifetime_s: float | None = None) -> dict:
    from commtune.emulation.launch import RankFailure, run_on_hosts

    world = state.num_hosts
    # ranks may still write heartbeats when a stopped driver removes this (seen as a traceback at exit)
    with tempfile.TemporaryDirectory(prefix="commtune-probe-", ignore_cleanup_errors=True) as tmp:
        hb = Path(tmp) / "hb"
        hb.mkdir()
        out = Path(tmp) / "result.json"
        task = {**task, "engine": spec.engine, "timeout_s": spec.timeout_s + 30, "out": str(out)}
        task_file = Path(tmp) / "task.json"
        task_file.write_text(json.dumps(task))
        argv = [sys.executable, "-m", "commtune.probe.worker", str(task_file)]
        pp = os.environ.get("PYTHONPATH", "")
        env = {HB_ENV: str(hb), "PYTHONPATH": REPO_ROOT + (os.pathsep + pp if pp else ""),
               "PYTHONUNBUFFERED": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
        if spec.fault:
            env[FAULT_ENV] = spec.fault
        port = random.randint(20000, 45000) if emulated else free_port()
        try:
            run_on_hosts(state, [argv] * world, env_extra=env, timeout_s=lifetime_s or spec.timeout_s,
                         master_port=port, echo=sys.stderr if spec.echo else None, abort=abort)
        except RankFailure as exc:
            raise _explain(exc, hb, world, state, spec) from None
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError):
            raise ProbeFailure("rank 0 finished without writing its result") from None


def _explain(exc, hb: Path, world: int, state, spec: LaunchSpec) -> ProbeFailure:
    msg = str(exc)
    if "timed out" in msg:
        blame = culprit(read_heartbeats(hb), world, time.time())
        if blame is not None:
            rank, why = blame
            where = state.hosts[rank].netns
            return ProbeFailure(f"rank {rank} ({where}) {why}; stopped all ranks after the {spec.timeout_s:g} s timeout", rank)
        return ProbeFailure(msg)
    rank = None
    if msg.startswith("rank "):
        try:
            rank = int(msg.split()[1])
        except ValueError:
            pass
    return ProbeFailure(msg, rank)
