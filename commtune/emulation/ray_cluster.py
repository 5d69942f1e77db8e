"""A Ray cluster on emulated hosts: a head and more nodes, each in its host's namespace.

Every node runs ``ray start --block`` in its own network namespace with
``--node-ip-address`` = that host's bridge address. Ray binds its servers on
all interfaces, but inside a namespace those are only the loopback and the
private bridge, so nothing is exposed beyond the emulated cluster. Losing a
node is :func:`kill_node`: kill -9 of every process in its namespace.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Iterator, Sequence

from commtune.errors import CommtuneError


def _ray_bin() -> str:
    import sys

    path = os.path.join(os.path.dirname(sys.executable), "ray")
    return path if os.path.exists(path) else (shutil.which("ray") or "ray")


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def kill_node(state, host: int) -> None:
    """A node lost: kill -9 every process in the host's namespace."""
    for pid in netns_pids(state.hosts[host].netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_node(argv: list[str], env: dict, log_path: str, timeout_s: float, cleanup) -> subprocess.Popen:
    """``ray start --block`` until it says it is up; retried (a loaded host can miss Ray's fixed 30 s start-up)."""
    for _ in range(3):
        with open(log_path, "w") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            with open(log_path) as f:
                if "will now block forever" in f.read():
                    return proc
            time.sleep(0.5)
        cleanup()  # the failed attempt's raylet and workers
        proc.wait()
    raise CommtuneError(f"ray start failed 3 times: see {log_path}")


@contextlib.contextmanager
def ray_cluster(state, hosts: Sequence[int], port: int = 6380, num_cpus: int = 2,
                timeout_s: float = 120.0) -> Iterator[str]:
    """Start a head on ``hosts[0]`` and nodes on the others; yield ``HEAD:PORT``; kill them all."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("PYTHONPATH", None)  # nodes get commtune from the driver's runtime_env
    head = f"{state.address(hosts[0])}:{port}"
    temps, procs = [], []
    try:
        for i, h in enumerate(hosts):
            temp = tempfile.mkdtemp(prefix=f"ctr{h}", dir="/tmp")  # short: Ray's socket paths
            temps.append(temp)
            role = ["--head", f"--port={port}", "--include-dashboard=false"] if i == 0 else [f"--address={head}"]
            argv = [*state.launch_prefix(h), _ray_bin(), "start", "--block", *role,
                    f"--node-ip-address={state.address(h)}", f"--num-cpus={num_cpus}", f"--temp-dir={temp}",
                    "--disable-usage-stats"]
            procs.append(_start_node(argv, env, os.path.join(temp, "ray-start.log"), timeout_s,
                                     lambda h=h: kill_node(state, h)))
        yield head
    finally:
        for h in hosts:
            kill_node(state, h)
        for p in procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=10)
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


__all__ = ["ray_cluster", "kill_node", "netns_pids"]
