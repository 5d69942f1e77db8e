"""What each launched rank runs: ``python -m commtune.probe.worker TASK.json``.

The task file says what to do (``kind``: ``allreduce`` for the probe, with its
``collectives`` and ``budget_s`` (:mod:`commtune.probe.plan`), ``ddp``
for DDP step timing) and where rank 0 writes its result (``out``, JSON).
A rank whose collective fails because a *peer* died waits a moment before
exiting, so the launcher sees the rank that failed first and names it.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

from commtune.io import atomic_write_json
from commtune.probe.progress import Progress


def ranks_per_host(comm) -> int:
    """Ranks sharing this rank's host (LOCAL_WORLD_SIZE, or MPI's shared-memory split)."""
    if comm.engine == "mpi":
        return comm.comm.Split_type(comm.MPI.COMM_TYPE_SHARED).Get_size()
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def run_task(task: dict) -> dict:
    """Run one task on this rank (collective across all ranks); returns the result."""
    from commtune.probe.comm import make_comm

    comm = make_comm(task.get("engine", "gloo"), float(task.get("timeout_s", 300)))
    progress = Progress(comm.rank)
    try:
        if task["kind"] == "allreduce":
            from commtune.probe.allreduce import MEASURE, measure_allreduce
            from commtune.probe.comm import REDUCE_SCATTER_STEPS

            plan = None
            if task.get("budget_s"):
                from commtune.probe.plan import planned_task

                task, plan = planned_task(comm, task, progress, {"reduce_scatter": REDUCE_SCATTER_STEPS[comm.engine]})
            records = measure_allreduce(comm, task["sizes"], task["streams"], int(task["iters"]), int(task["warmup"]), progress)
            result = {"world_size": comm.world, "engine": comm.engine, "records": records,
                      "ranks_per_host": ranks_per_host(comm)}
            if plan is not None:
                result["plan"] = plan
            sharded = [c for c in task.get("collectives") or () if c != "allreduce"]
            if sharded:
                result["collectives"] = {c: MEASURE[c](comm, task["sizes"], task["streams"], int(task["iters"]),
                                                       int(task["warmup"]), progress) for c in sharded}
            if task.get("burst_sizes"):
                from commtune.probe.allreduce import measure_bursts

                result["bursts"] = measure_bursts(comm, task["burst_sizes"], task["streams"], int(task["burst_count"]),
                                                  int(task["iters"]), int(task["warmup"]), progress)
            if task.get("host_sizes"):
                from commtune.probe.allreduce import measure_host

                result["host"] = measure_host(comm, task["host_sizes"], int(task["iters"]), int(task["warmup"]), progress)
        elif task["kind"] == "live_group":
            from commtune.probe.live_group import serve_task

            result = serve_task(comm, task, progress)
        elif task["kind"] == "ddp":
            from commtune.probe.ddp_step import run_ddp_task

            result = run_ddp_task(comm, task, progress)
        else:
            raise ValueError(f"unknown task kind {task['kind']!r}")
        progress.tick()
        comm.close()
    except BaseException:
        if progress.supervised:
            # Most likely a peer died: let the launcher see that rank first.
            traceback.print_exc()
            sys.stderr.flush()
            time.sleep(2.0)
        raise
    result["rank"] = comm.rank
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        task = json.load(fh)
    result = run_task(task)
    if result["rank"] == 0 and task.get("out"):
        atomic_write_json(task["out"], result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown of the comm libraries


if __name__ == "__main__":
    sys.exit(main())
