"""The live worker group launched by the search process (``--ranks N``, ``--cluster emulated``).

:class:`WorkerGroup` starts the ranks with :func:`commtune.probe.launch.run_task`
(task kind ``live_group``, every rank runs :func:`serve_task`) and talks to rank 0
through a :class:`~commtune.runtime.worker_group.FileLink` (numbered files in a
folder: it works across network namespaces, which share the filesystem). A rank
that dies ends the search naming it; a trial that outlasts ``launch.timeout_s``
stops every rank and names the hung one from the heartbeats. The protocol and
the worker loop are :mod:`commtune.runtime.worker_group`'s (the runtime never
imports the probe; the launcher lives here).
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

from commtune.errors import CommtuneError
from commtune.runtime.worker_group import FileLink, GroupFailure, _Driver, make_workload, serve


def serve_task(comm: Any, task: dict, progress: Any) -> dict:
    """Task kind ``live_group`` (``python -m commtune.probe.worker``): serve over a :class:`FileLink`."""
    from commtune.proc import pid_alive

    if comm.engine == "mpi":
        raise CommtuneError("the live worker group runs on torch.distributed (gloo or nccl)")
    wl = make_workload(task, comm.device, comm.rank)
    link = FileLink(task["link"], send="up", recv="down") if comm.rank == 0 else None
    pid = task.get("driver_pid")
    n = serve(link, wl, mode=task.get("mode"), steps=int(task["steps"]), warmup=int(task["warmup"]),
              tick=progress.tick, driver_alive=lambda: not pid or pid_alive(pid),
              check_grads=bool(task.get("check_grads")), device=comm.device, gpus_per_node=task.get("gpus_per_node"))
    return {"world_size": comm.world, "trials": n}


class WorkerGroup(_Driver):
    """Ranks launched once by the search process (``LaunchSpec``: local ranks or the emulated cluster).

    ``task``: what the ranks build (``layers``/``compute`` of the synthetic model,
    or ``model_factory``), ``steps``, ``warmup``, ``mode``; ``check_grads``.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, launch: Any, task: dict) -> None:
        super().__init__()
        self.launch = launch
        self.timeout_s = float(launch.timeout_s)
        self._tmp = tempfile.TemporaryDirectory(prefix="ct-group-")
        self.link = FileLink(self._tmp.name, send="down", recv="up")
        self._abort = threading.Event()
        self._box: dict[str, Any] = {}
        self.task = {**task, "kind": "live_group", "link": self._tmp.name, "driver_pid": os.getpid()}
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._launch, daemon=True, name="ct-worker-group")
        self._thread.start()
        try:
            self._ready()
        except BaseException:
            self._stop()
            raise
        self.startup_s = time.perf_counter() - self.started

    def _launch(self) -> None:
        from commtune.probe.launch import run_task

        try:
            self._box["res"] = run_task(self.launch, self.task, abort=self._abort, lifetime_s=float("inf"))
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the driver's thread
            self._box["err"] = exc

    def _failure(self) -> BaseException:
        err = self._box.get("err")
        if err is None:
            return GroupFailure("the worker group exited before the search ended")
        return err

    def _check(self) -> None:
        if not self._thread.is_alive():
            raise self._failure()

    def _hung(self, what: str) -> BaseException:
        self._abort.set()  # the launcher kills every rank and names the hung one (heartbeats)
        self._thread.join()
        err = self._box.get("err")
        return err if err is not None else super()._hung(what)

    def _stop(self) -> None:
        self._abort.set()
        self._thread.join()
        self._tmp.cleanup()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
            self._thread.join(timeout=self.timeout_s)
        finally:
            if self._thread.is_alive():
                self._abort.set()
                self._thread.join()
            self._tmp.cleanup()
        if "err" in self._box and self.trials:  # a failure while stopping: report it
            raise self._box["err"]
