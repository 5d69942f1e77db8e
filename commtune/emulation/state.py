"""The state file of a running emulated cluster, and what launchers need from it."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from commtune.errors import CommtuneError

STATE_VERSION = 1
PACING_ENV = "COMMTUNE_PACING_BPS"
#: scheduling priority of everything run on an emulated host: the hosts stand for machines of their
#: own, so another job on the emulating machine must not take their CPU time (``nice``, root only).
#: With the kernel's autogroup on (``/proc/sys/kernel/sched_autogroup_enabled``, sched(7)) a nice
#: value only ranks a process within its session, and every host process starts its own
#: (``start_new_session``): against another job's session it then gets an equal share. Raising the
#: sessions' autogroup nice too was tried (2026-12-06, q18r / q18): no gain in repeatability with a
#: busy core (the slowed points are CPU-bound ones, whatever their share), and two of four quiet
#: calibrations came out with the slowest CPU-bound DDP points on record, so it is not done.
HOST_NICE = -10
IFNAME = "eth0"


def at_host_priority(argv: list[str]) -> list[str]:
    """``argv`` run at :data:`HOST_NICE`."""
    return ["nice", "-n", str(HOST_NICE), *argv]


def run_dir() -> Path:
    """Where state and compiled helpers live: ``$COMMTUNE_RUN_DIR`` or ``/run/commtune``."""
    return Path(os.environ.get("COMMTUNE_RUN_DIR") or "/run/commtune")


def state_path(prefix: str = "ct") -> Path:
    return run_dir() / f"emulated-{prefix}.json"


@dataclass
class HostInfo:
    index: int
    netns: str
    ifname: str
    address: str


@dataclass
class ClusterState:
    """A cluster that is up: where its hosts are and how to launch on them."""

    prefix: str
    bridge_netns: str
    subnet: str
    hosts: list[HostInfo]
    link_rate_Bps: float
    per_stream_Bps: float | None
    latency_s: float
    shim_path: str | None
    delay_helper: str | None
    helper_pids: list[int] = field(default_factory=list)
    created_at: float = 0.0
    version: int = STATE_VERSION

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)

    @property
    def master_addr(self) -> str:
        return self.hosts[0].address

    def address(self, host: int) -> str:
        return self.hosts[host].address

    def launch_prefix(self, host: int) -> list[str]:
        """argv prefix that runs a command inside ``host``'s namespace, at :data:`HOST_NICE`."""
        return at_host_priority(["ip", "netns", "exec", self.hosts[host].netns])

    def env_for(
        self,
        rank: int,
        world_size: int | None = None,
        master_port: int | None = None,
        base_env: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment variables for one rank (merge into ``os.environ``).

        Always: ``GLOO_SOCKET_IFNAME``, ``MASTER_ADDR`` (host 0), ``OMP_NUM_THREADS=1``,
        ``RANK``, ``LOCAL_RANK=0``; ``WORLD_SIZE``/``MASTER_PORT`` when given;
        ``LD_PRELOAD`` + ``COMMTUNE_PACING_BPS`` when a per-stream cap is set
        (the shim is prepended to any ``LD_PRELOAD`` in ``base_env``/``os.environ``).
        """
        env = {
            "GLOO_SOCKET_IFNAME": IFNAME,
            "TP_SOCKET_IFNAME": IFNAME,
            "MASTER_ADDR": self.master_addr,
            "OMP_NUM_THREADS": "1",
            "RANK": str(rank),
            "LOCAL_RANK": "0",
        }
        if world_size is not None:
            env["WORLD_SIZE"] = str(world_size)
        if master_port is not None:
            env["MASTER_PORT"] = str(master_port)
        if self.shim_path and self.per_stream_Bps:
            base = (base_env if base_env is not None else os.environ).get("LD_PRELOAD", "")
            env["LD_PRELOAD"] = self.shim_path + (" " + base if base else "")
            env[PACING_ENV] = str(int(self.per_stream_Bps))
        return env

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ClusterState":
        if data.get("version") != STATE_VERSION:
            raise CommtuneError(f"emulated-cluster state has version {data.get('version')!r}, expected {STATE_VERSION}; run `commtune cluster down`")
        data = dict(data)
        data["hosts"] = [HostInfo(**h) for h in data["hosts"]]
        return cls(**data)


def write_state(state: ClusterState) -> Path:
    """Write the state file atomically (temp file + rename)."""
    path = state_path(state.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_state(prefix: str = "ct") -> ClusterState | None:
    """The recorded state, or None if there is no state file."""
    path = state_path(prefix)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return ClusterState.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise CommtuneError(f"unreadable emulated-cluster state {path}: {exc}; run `commtune cluster down`") from None


def remove_state(prefix: str = "ct") -> None:
    state_path(prefix).unlink(missing_ok=True)
