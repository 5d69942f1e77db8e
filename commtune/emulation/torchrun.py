"""torchrun on the emulated cluster: one agent per host, a c10d rendezvous on host 0.

Exactly what a user runs on real machines (one ``torchrun`` per node, the
same ``--rdzv-endpoint``), each agent started inside its host's namespace::

    ip netns exec <prefix>-host<i> torchrun --nnodes N --nproc-per-node G \\
        --rdzv-backend c10d --rdzv-endpoint <host0>:PORT --rdzv-id ID \\
        --rdzv-conf is_host=<1 on host 0> --local-addr <host i> \\
        -m commtune search --objective live ...

``--local-addr`` and ``--rdzv-conf is_host=0|1`` are needed here because
every namespace shares the machine's hostname: torchrun would otherwise
advertise an address the other hosts cannot reach, and host 0 would not
recognise the endpoint as its own (nobody would serve the rendezvous store).
On real machines neither is needed. The agents run through :func:`commtune.emulation.run_on_hosts`
(own process group each, all killed on a failure or timeout: no orphans).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

from commtune.emulation.launch import RankResult, run_on_hosts
from commtune.emulation.state import ClusterState

RDZV_PORT = 29400


def torchrun_argv(state: ClusterState, host: int, args: Sequence[str], *, nproc: int = 1, port: int = RDZV_PORT,
                  rdzv_id: str = "commtune") -> list[str]:
    """The command line of host ``host``'s torchrun agent (``args``: what follows, e.g. ``-m commtune ...``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(state.num_hosts),
            "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{state.address(0)}:{port}", "--rdzv-id", rdzv_id,
            "--rdzv-conf", f"is_host={int(host == 0)}", "--local-addr", state.address(host), *args]


def run_torchrun(state: ClusterState, args: Sequence[str], *, nproc: int = 1, port: int = RDZV_PORT,
                 rdzv_id: str = "commtune", timeout_s: float = 600.0, echo: TextIO | None = None,
                 cwd: str | None = None) -> list[RankResult]:
    """One torchrun agent per host of ``state`` (in its namespace); wait for all (see the module doc).
    Returns per-host results; a failed agent raises :class:`~commtune.emulation.launch.RankFailure`."""
    argvs = [torchrun_argv(state, h, args, nproc=nproc, port=port, rdzv_id=rdzv_id) for h in range(state.num_hosts)]
    pp = os.environ.get("PYTHONPATH", "")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"PYTHONPATH": root + (os.pathsep + pp if pp else ""), "PYTHONUNBUFFERED": "1",
           "TORCH_CPP_LOG_LEVEL": "ERROR"}
    return run_on_hosts(state, argvs, env_extra=env, timeout_s=timeout_s, echo=echo, cwd=cwd)
