"""The collective back-ends the probe and the DDP timer run on.

:class:`TorchComm` wraps ``torch.distributed`` (gloo on CPU, NCCL on GPU);
:class:`MPIComm` wraps mpi4py. Both offer the few operations the probe needs:
``stream_groups(K)`` (K independent communicators: ``new_group`` /
``Comm.Dup``), ``allreduce_parts(parts, groups)`` (one non-blocking all-reduce
per part, part i on group i, then wait for all), ``allgather_parts`` and
``reduce_scatter_parts`` (the same for the sharded collectives, on the
``(full, shard)`` pairs of ``shard_parts``), ``barrier`` and an element-wise
``max`` of a float list across ranks.

The sharded collectives are what the backend implements: gloo's
``reduce_scatter_tensor`` is an all-reduce of the full buffer, of which each
rank keeps its chunk (pytorch/pytorch PR #118911; the list form
``reduce_scatter`` of PR #149869 runs one all-reduce per rank), NCCL and MPI
run ring / tree algorithms. The probe times them as they are and the fit
records the step count (:data:`REDUCE_SCATTER_STEPS`).

Rank/world come from the environment torchrun and our launchers set (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or from MPI.COMM_WORLD.
"""
from __future__ import annotations

import datetime
import os
import time
from typing import Any, Sequence

from commtune.errors import CommtuneError

ENGINES = ("gloo", "nccl", "mpi")

#: ring steps of a reduce-scatter per peer, by engine: gloo's is an all-reduce (2(n-1) steps,
#: see the module docstring), NCCL's and MPI's a ring of n-1 steps; an all-gather takes n-1
REDUCE_SCATTER_STEPS = {"gloo": 2, "nccl": 1, "mpi": 1}


def shard_slices(numel: int, world: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous ``(start, stop)`` element ranges covering ``numel`` elements, each a
    multiple of ``world`` long (every rank's shard of a part is ``(stop - start) / world``),
    as equal as that allows; ``numel`` must be a multiple of ``world`` and at least
    ``world * k``."""
    if world < 1 or k < 1 or numel % world or numel // world < k:
        raise ValueError(f"cannot split {numel} elements into {k} parts of whole shards over {world} ranks")
    rows = numel // world
    base, extra = divmod(rows, k)
    out, start = [], 0
    for i in range(k):
        stop = start + (base + (1 if i < extra else 0)) * world
        out.append((start, stop))
        start = stop
    return out


def env_has_rank() -> bool:
    """True when launched by torchrun or an equivalent (RANK and WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def mpi_world_size() -> int:
    """Size of MPI.COMM_WORLD if mpi4py is importable and we run under mpiexec, else 0."""
    if not any(k in os.environ for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_SIZE")):
        return 0
    try:
        from mpi4py import MPI
    except ImportError:
        return 0
    return MPI.COMM_WORLD.Get_size()


class TorchComm:
    def __init__(self, engine: str = "gloo", timeout_s: float = 300.0):
        import torch
        import torch.distributed as dist

        if engine not in ("gloo", "nccl"):
            raise CommtuneError(f"torch engine must be gloo or nccl, got {engine!r}")
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise CommtuneError(f"torch.distributed needs {', '.join(missing)} in the environment (use torchrun or --ranks)")
        self.torch, self.dist, self.engine = torch, dist, engine
        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if engine == "nccl":
            if not torch.cuda.is_available():
                raise CommtuneError("--engine nccl needs CUDA GPUs; use --engine gloo on CPU")
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        self.timeout = datetime.timedelta(seconds=timeout_s)
        if not dist.is_initialized():
            dist.init_process_group(engine, rank=self.rank, world_size=self.world, timeout=self.timeout)
        self._groups: list[Any] = []

    def stream_groups(self, k: int) -> list[Any]:
        """K process groups over all ranks (created once, collectively, and reused)."""
        while len(self._groups) < k:
            self._groups.append(self.dist.new_group(list(range(self.world)), timeout=self.timeout, backend=self.engine))
        return self._groups[:k]

    def buffer(self, numel: int):
        return self.torch.ones(numel, dtype=self.torch.float32, device=self.device)

    def split(self, buf, k: int) -> list[Any]:
        return list(buf.tensor_split(k))

    def sync(self) -> None:
        if self.engine == "nccl":
            self.torch.cuda.synchronize()

    def shard_parts(self, buf, k: int) -> list[tuple[Any, Any]]:
        """``(full, shard)`` per stream: ``full`` a view of part i of ``buf`` (:func:`shard_slices`),
        ``shard`` this rank's 1/n of it (its own tensor)."""
        return [(buf[a:b], self.torch.ones((b - a) // self.world, dtype=buf.dtype, device=self.device))
                for a, b in shard_slices(buf.numel(), self.world, k)]

    def allgather_parts(self, parts: Sequence[tuple[Any, Any]], groups: Sequence[Any]) -> None:
        """All-gather every part's shards into its full view, part i on group i; wait for all."""
        self._wait_all([self.dist.all_gather_into_tensor(full, shard, group=g, async_op=True)
                        for (full, shard), g in zip(parts, groups)])

    def reduce_scatter_parts(self, parts: Sequence[tuple[Any, Any]], groups: Sequence[Any]) -> None:
        """Reduce-scatter every part's full view into its shard (sum), part i on group i; wait for all."""
        self._wait_all([self.dist.reduce_scatter_tensor(shard, full, group=g, async_op=True)
                        for (full, shard), g in zip(parts, groups)])

    def allreduce_parts(self, parts: Sequence[Any], groups: Sequence[Any]) -> None:
        self._wait_all([self.dist.all_reduce(p, group=g, async_op=True) for p, g in zip(parts, groups)])

    def _wait_all(self, works: Sequence[Any]) -> None:
        """Wait for every launched collective, then for the device."""
        for w in works:
            w.wait()
        self.sync()

    def allreduce_burst(self, buffers_parts: Sequence[Sequence[Any]], groups: Sequence[Any]) -> None:
        """Start every buffer's parts (buffer after buffer, part i on group i) without waiting, then wait for all."""
        works = [self.dist.all_reduce(p, group=g, async_op=True) for parts in buffers_parts for p, g in zip(parts, groups)]
        for w in works:
            w.wait()
        self.sync()

    def host_pre(self, buf) -> None:
        """The host work before a bucket's all-reduce in DDP's comm hook: divide by the world size."""
        buf.div_(self.world)
        self.sync()

    def host_post(self, buf, dst) -> None:
        """The host work after it: copy the bucket back into the gradients."""
        dst.copy_(buf)
        self.sync()

    def barrier(self) -> None:
        if self.engine == "nccl":
            self.sync()
            t = self.torch.zeros(1, device=self.device)
            self.dist.all_reduce(t)
            self.sync()
        else:
            self.dist.barrier()

    def max(self, values: Sequence[float]) -> list[float]:
        t = self.torch.tensor(list(values), dtype=self.torch.float64, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return t.cpu().tolist()

    def close(self) -> None:
        # destroy_process_group once aborted rank 0 on exit (EMULATED-CLUSTER.md):
        # a barrier first, and a clean exit.
        try:
            self.barrier()
        finally:
            self.dist.destroy_process_group()


class MPIComm:
    def __init__(self) -> None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise CommtuneError("--engine mpi needs mpi4py (pip install mpi4py mpich)") from None
        import numpy as np

        self.MPI, self.np = MPI, np
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.world = self.comm.Get_size()
        self.engine = "mpi"
        self._groups: list[Any] = []

    def stream_groups(self, k: int) -> list[Any]:
        while len(self._groups) < k:
            self._groups.append(self.comm.Dup())
        return self._groups[:k]

    def buffer(self, numel: int):
        return self.np.ones(numel, dtype=self.np.float32)

    def split(self, buf, k: int) -> list[Any]:
        return self.np.array_split(buf, k)

    def shard_parts(self, buf, k: int) -> list[tuple[Any, Any]]:
        """As :meth:`TorchComm.shard_parts`: views of ``buf`` and this rank's shard arrays."""
        return [(buf[a:b], self.np.ones((b - a) // self.world, dtype=buf.dtype))
                for a, b in shard_slices(buf.size, self.world, k)]

    def allgather_parts(self, parts: Sequence[tuple[Any, Any]], groups: Sequence[Any]) -> None:
        reqs = [g.Iallgather(shard, full) for (full, shard), g in zip(parts, groups)]
        self.MPI.Request.Waitall(reqs)

    def reduce_scatter_parts(self, parts: Sequence[tuple[Any, Any]], groups: Sequence[Any]) -> None:
        reqs = [g.Ireduce_scatter_block(full, shard, op=self.MPI.SUM) for (full, shard), g in zip(parts, groups)]
        self.MPI.Request.Waitall(reqs)

    def allreduce_parts(self, parts: Sequence[Any], groups: Sequence[Any]) -> None:
        reqs = [g.Iallreduce(self.MPI.IN_PLACE, p, op=self.MPI.SUM) for p, g in zip(parts, groups)]
        self.MPI.Request.Waitall(reqs)

    def allreduce_burst(self, buffers_parts: Sequence[Sequence[Any]], groups: Sequence[Any]) -> None:
        reqs = [g.Iallreduce(self.MPI.IN_PLACE, p, op=self.MPI.SUM) for parts in buffers_parts for p, g in zip(parts, groups)]
        self.MPI.Request.Waitall(reqs)

    def host_pre(self, buf) -> None:
        self.np.divide(buf, self.world, out=buf)

    def host_post(self, buf, dst) -> None:
        self.np.copyto(dst, buf)

    def barrier(self) -> None:
        self.comm.Barrier()

    def max(self, values: Sequence[float]) -> list[float]:
        a = self.np.asarray(values, dtype=self.np.float64)
        out = self.np.empty_like(a)
        self.comm.Allreduce(a, out, op=self.MPI.MAX)
        return out.tolist()

    def close(self) -> None:
        self.comm.Barrier()
        for g in self._groups:
            g.Free()


def make_comm(engine: str, timeout_s: float = 300.0):
    if engine == "mpi":
        return MPIComm()
    return TorchComm(engine, timeout_s)


def now() -> float:
    return time.perf_counter()
