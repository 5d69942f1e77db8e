"""An emulated cluster on one machine: network namespaces on a bridge, shaped links.

Each host is a namespace ``<prefix>-hostN`` with ``eth0`` at an address from a
private /24; links are capped with ``htb`` in both directions; a per-stream
cap is an ``LD_PRELOAD`` shim setting ``SO_MAX_PACING_RATE``; latency is a
user-space NFQUEUE delay program. Launch ranks with :func:`run_on_hosts`.
"""
from commtune.emulation.launch import RankFailure, RankResult, run_on_hosts
from commtune.emulation.spec import EmulatedCluster
from commtune.emulation.state import ClusterState, HostInfo, state_path
from commtune.emulation.topology import down, emulated_cluster, problems, status, up

__all__ = [
    "ClusterState",
    "EmulatedCluster",
    "HostInfo",
    "RankFailure",
    "RankResult",
    "down",
    "emulated_cluster",
    "problems",
    "run_on_hosts",
    "state_path",
    "status",
    "up",
]
