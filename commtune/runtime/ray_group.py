"""The persistent live worker group placed on a Ray cluster (``--backend ray --objective live``).

One Ray actor per rank, in a placement group (``PACK`` on a one-node cluster,
``STRICT_SPREAD`` over the nodes when there are at least as many nodes as
ranks, else ``SPREAD``), each with ``num_cpus`` CPUs (and one GPU with nccl).
The actors join one torch.distributed group (``tcp://`` rendezvous on rank 0's
node IP and a free port there) and each runs the same worker loop as launched
ranks (:func:`~commtune.runtime.worker_group.serve`) in a thread; rank 0's
loop talks through a queue pair inside its actor, which the search reaches
with actor calls (:class:`ActorLink`) instead of the files of a launched group.

The driver (the search process) starts the group once per search
(:class:`RayWorkerGroup`, held by the live evaluator) and keeps it until the
evaluator closes; every Ray Tune trial -- its own process, running one
configuration at a time (``max_concurrent_trials=1``) -- talks to the same
actors through a :class:`RayGroupClient` built from the rank-0 actor's handle.
A trial that Ray stops in the middle (ASHA) leaves the group mid-trial: the
next client first tells rank 0 to stop it (:meth:`RankActor.settle`).
"""
from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any

from commtune.errors import CommtuneError
from commtune.runtime.worker_group import START_S, GroupFailure, QueueLink, _Driver

#: longest single blocking actor call while the driver waits for rank 0
CHUNK_S = 1.0


class RankActor:
    """One rank of the group (made a Ray actor by :func:`_actor_class`)."""

    def __init__(self, rank: int, world: int, task: dict, engine: str = "gloo") -> None:
        self.rank, self.world, self.task, self.engine = rank, world, task, engine
        self.error: str | None = None
        self.trials: int | None = None
        self._stop = threading.Event()
        self._up: queue.Queue = queue.Queue()  # rank 0 -> search
        self._down: queue.Queue = queue.Queue()  # search -> rank 0
        self._inflight: int | None = None  # trial id sent to rank 0 without its result seen yet
        self._sent_at = 0.0
        self._unanswered = 0  # step messages of the trial in flight handed out without a decision back
        self._busy = 0  # recv calls running (one of a killed trial may still be waiting)
        self._lock = threading.Lock()
        self.log: list[dict] = []  # rank 0: per trial, when it was sent and ended, its steps' wall time
        self._thread: threading.Thread | None = None

    # -- start --------------------------------------------------------------------
    def address(self) -> tuple[str, int, int]:
        """This node's IP, a free port on it and this process's pid (rank 0 hosts the rendezvous)."""
        import os

        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port, os.getpid()

    def start(self, master: str, port: int, timeout_s: float) -> int:
        """Join the process group (blocks until every rank has) and start serving in a thread."""
        import datetime
        import os

        import torch
        import torch.distributed as dist

        device = torch.device("cpu")
        if self.engine == "nccl":
            device = torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            torch.cuda.set_device(device)
        dist.init_process_group(self.engine, init_method=f"tcp://{master}:{port}", rank=self.rank,
                                world_size=self.world, timeout=datetime.timedelta(seconds=timeout_s + 30))
        link = QueueLink(self._up, self._down) if self.rank == 0 else None
        self._thread = threading.Thread(target=self._serve, args=(link, device), daemon=True,
                                        name=f"ct-ray-rank{self.rank}")
        self._thread.start()
        return os.getpid()

    def _serve(self, link: Any, device: Any) -> None:
        from commtune.runtime.worker_group import make_workload, serve

        try:
            wl = make_workload(self.task, device, self.rank)
            self.trials = serve(link, wl, mode=self.task.get("mode"), steps=int(self.task["steps"]),
                                warmup=int(self.task["warmup"]), driver_alive=lambda: not self._stop.is_set(),
                                check_grads=bool(self.task.get("check_grads")), device=device,
                                gpus_per_node=self.task.get("gpus_per_node"))
        except BaseException as exc:  # noqa: BLE001 -- reported through status()
            self.error = f"{type(exc).__name__}: {exc}"
            self._up.put({"op": "error", "rank": self.rank, "error": self.error})

    # -- rank 0's mailbox -----------------------------------------------------------
    def send(self, msg: dict) -> None:
        with self._lock:
            if msg.get("op") == "trial":
                self._inflight, self._sent_at, self._unanswered = int(msg["id"]), time.time(), 0
            elif msg.get("op") == "decision":
                self._unanswered -= 1
        self._down.put(msg)

    def recv(self, timeout_s: float) -> dict | None:
        """The next message from rank 0, or None after ``timeout_s`` (the search's call)."""
        with self._lock:
            self._busy += 1
        try:
            return self._take(timeout_s)
        finally:
            with self._lock:
                self._busy -= 1

    def _take(self, timeout_s: float) -> dict | None:
        try:
            msg = self._up.get(timeout=timeout_s)
        except queue.Empty:
            return None
        with self._lock:  # counted here: a call whose caller Ray killed still takes its message
            if msg.get("op") == "step":
                self._unanswered += 1
            elif msg.get("op") == "result" and msg.get("id") == self._inflight:
                self._inflight = None
                self.log.append({"sent": self._sent_at, "ended": time.time(), "steps_wall_s": msg["steps_wall_s"],
                                 "timed_steps": len(msg["step_times_s"]), "stopped": bool(msg["pruned"])})
        return msg

    def settle(self, timeout_s: float) -> int | None:
        """End a trial whose search side went away (Ray stopped it): answer "stop" to its steps,
        drop its messages until its result. Returns the id of the trial it ended, or None."""
        deadline = time.monotonic() + timeout_s
        while self._busy and time.monotonic() < deadline:  # a killed trial's last recv call (<= CHUNK_S)
            time.sleep(0.01)
        tid = self._inflight
        if tid is None:
            return None
        while self._inflight is not None:
            if self._thread is None or not self._thread.is_alive():  # rank 0's loop has ended: nothing to settle
                return tid
            if self._unanswered > 0:  # rank 0 waits for this answer (one per step message it sent)
                self.send({"op": "decision", "id": tid, "stop": True})
                continue
            if time.monotonic() >= deadline:
                raise GroupFailure(f"rank 0 did not end the abandoned trial {tid} within {timeout_s:g} s")
            msg = self._take(min(CHUNK_S, max(0.0, deadline - time.monotonic())))
            if msg is not None and msg.get("op") == "error":
                self._up.put(msg)
                break
        return tid

    def status(self) -> dict:
        alive = self._thread is not None and self._thread.is_alive()
        return {"rank": self.rank, "alive": alive, "error": self.error, "trials": self.trials, "log": self.log}

    def stop(self, timeout_s: float) -> dict:
        """Tell the loop to stop (rank 0: the stop message) and wait for its thread."""
        self._stop.set()
        if self.rank == 0:
            self._down.put({"op": "stop"})
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.status()


def _actor_class():
    import ray

    return ray.remote(max_restarts=0, max_concurrency=4)(RankActor)


class ActorLink:
    """The search's end of rank 0's mailbox (the FileLink/QueueLink interface, over actor calls)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def send(self, msg: dict) -> None:
        import ray

        ray.get(self.actor.send.remote(msg))

    def recv(self, timeout_s: float, check=lambda: None) -> dict | None:
        import ray

        deadline = time.monotonic() + timeout_s
        while True:
            msg = ray.get(self.actor.recv.remote(min(CHUNK_S, max(0.0, deadline - time.monotonic()))))
            if msg is not None:
                return msg
            if time.monotonic() >= deadline:
                return None
            check()


class RayGroupClient(_Driver):
    """A search process's (a Ray Tune trial's) handle on a running group: runs trials on it,
    :meth:`close` only detaches (the group lives on)."""

    def __init__(self, handles: list, timeout_s: float) -> None:
        super().__init__()
        self.handles = list(handles)
        self.timeout_s = float(timeout_s)
        self.link = ActorLink(self.handles[0])

    def _recv(self, what: str) -> dict:
        msg = super()._recv(what)
        if msg.get("op") == "error":
            self._check(skip=msg["rank"])  # a lost peer is the cause, not the rank whose collective failed
            raise GroupFailure(f"rank {msg['rank']} of the Ray worker group failed: {msg['error']}", msg["rank"])
        return msg

    def _check(self, skip: int | None = None) -> None:
        import ray

        for rank, h in enumerate(self.handles):
            if rank == skip:
                continue
            try:
                st = ray.get(h.status.remote(), timeout=self.timeout_s)
            except Exception as exc:  # noqa: BLE001 -- RayActorError, GetTimeoutError
                raise GroupFailure(f"rank {rank} of the Ray worker group is gone ({type(exc).__name__})", rank) from None
            if not st["alive"]:
                raise GroupFailure(f"rank {rank} of the Ray worker group stopped: {st['error'] or 'no error'}", rank)

    def trial(self, knobs, on_step=None, **kw) -> dict:
        import ray

        ray.get(self.handles[0].settle.remote(self.timeout_s))  # a trial Ray stopped mid-way
        return super().trial(knobs, on_step, **kw)

    def close(self) -> None:
        self.closed = True


class RayWorkerGroup(RayGroupClient):
    """Starts ``world`` rank actors on the connected Ray cluster (the driver owns them)."""

    def __init__(self, task: dict, world: int, *, timeout_s: float = 300.0, engine: str = "gloo",
                 num_cpus: float = 1.0) -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if world < 2:
            raise CommtuneError(f"a Ray worker group needs at least 2 ranks, got {world}")
        t0 = time.perf_counter()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self.strategy = "PACK" if nodes <= 1 else ("STRICT_SPREAD" if world <= nodes else "SPREAD")
        bundle = {"CPU": float(num_cpus), **({"GPU": 1.0} if engine == "nccl" else {})}
        self.pg = placement_group([dict(bundle) for _ in range(world)], strategy=self.strategy)
        try:
            if not self.pg.wait(timeout_seconds=START_S):
                raise CommtuneError(f"the Ray cluster cannot place {world} ranks of {bundle} ({self.strategy}); "
                                    f"available: {ray.available_resources()}")
            cls = _actor_class()
            handles = [cls.options(num_cpus=num_cpus, num_gpus=1 if engine == "nccl" else 0,
                                   scheduling_strategy=PlacementGroupSchedulingStrategy(
                                       placement_group=self.pg, placement_group_bundle_index=r))
                       .remote(r, world, task, engine) for r in range(world)]
            super().__init__(handles, timeout_s)
            master, port, _ = ray.get(handles[0].address.remote(), timeout=START_S)
            self.pids = ray.get([h.start.remote(master, port, timeout_s) for h in handles],
                                timeout=timeout_s + START_S)
            self._ready()
        except BaseException:
            for h in getattr(self, "handles", []):
                ray.kill(h)
            remove_placement_group(self.pg)
            raise
        self.startup_s = time.perf_counter() - t0
        self.final: list[dict] = []  # each rank's status after close (trials served)

    def close(self) -> None:
        """Stop every rank's loop, then the actors and the placement group."""
        import ray
        from ray.util.placement_group import remove_placement_group

        if self.closed:
            return
        self.closed = True
        try:
            ray.get(self.handles[0].settle.remote(self.timeout_s))
            self.final = ray.get([h.stop.remote(self.timeout_s) for h in self.handles], timeout=self.timeout_s + 10)
        except Exception:  # noqa: BLE001 -- best effort: the actors are killed below anyway
            pass
        finally:
            for h in self.handles:
                ray.kill(h)
            remove_placement_group(self.pg)
