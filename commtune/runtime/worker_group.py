"""A persistent worker group for live search: ranks start once, trials reconfigure in place.

The search process (the *driver*) holds a :class:`WorkerGroup`; every rank runs
:func:`serve`. For each trial the driver sends the configuration to rank 0,
rank 0 broadcasts it on the :class:`~commtune.runtime.worker_loop.ControlChannel`,
every rank rebuilds only what changed (:class:`~commtune.runtime.worker_loop.Reconfigurer`:
the DDP wrapper around the same module, stream process groups cached per
stream count; a sharded configuration -- ``sharding`` grad / full / hybrid --
shards a fresh copy of the model with FSDP2, on the same ranks) and runs :func:`~commtune.runtime.worker_loop.run_trial` (the loop
the AutoTuner shares). With pruning, rank 0 sends each timed step's slowest-rank
time and waits for the driver's go/stop; the result ends the trial, and the
next trial runs in the same processes.

Three ways to start the group, one protocol (messages are JSON-able dicts):

* :class:`commtune.probe.live_group.WorkerGroup` (``--ranks N``, ``--cluster
  emulated``): the driver launches the ranks with the probe's launcher and
  talks to rank 0 through a :class:`FileLink` (the launcher lives in the
  probe: the runtime never imports it);
* :class:`commtune.runtime.ray_group.RayWorkerGroup` (``--backend ray``): one
  Ray actor per rank, reached through actor calls;
* :class:`InJobGroup` (``torchrun ... -m commtune search --objective live``):
  the user's launcher started the ranks; rank 0 runs the search and serves in a
  thread (a :class:`QueueLink`), the other ranks only serve
  (:func:`serve_in_job`).

The model on the ranks is the synthetic mirror of a model profile
(:mod:`commtune.runtime.synthetic`) or the user's own (``model_factory``:
``pkg.mod:make_model``, synthetic inputs as ``commtune profile-model``).
"""
from __future__ import annotations

import json
import os
import queue
from dataclasses import dataclass
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, Knobs

#: rank 0 re-broadcasts an idle message this often while it waits for the driver
#: (the other ranks' collectives would time out otherwise)
IDLE_S = 5.0
#: how long rank 0 waits for the driver's go/stop after a step (then stops the trial)
DECISION_WAIT_S = 60.0
POLL_S = 0.0005
#: extra time the ranks get to start (import torch, rendezvous) on top of the trial timeout
START_S = 60.0


class GroupFailure(CommtuneError):
    """The worker group failed; ``rank`` is the rank blamed (or None)."""

    def __init__(self, message: str, rank: int | None = None):
        super().__init__(message)
        self.rank = rank


# --------------------------------------------------------------------------- links

class FileLink:
    """Messages between two processes through numbered JSON files in a folder.

    One side sends into ``<dir>/<send>/``, the other reads them in order
    (``00000001.json``, ...); files are written atomically and removed once read.
    """

    def __init__(self, directory: str | os.PathLike, send: str, recv: str) -> None:
        self.send_dir, self.recv_dir = Path(directory) / send, Path(directory) / recv
        self.send_dir.mkdir(parents=True, exist_ok=True)
        self.recv_dir.mkdir(parents=True, exist_ok=True)
        self.sent = self.received = 0

    def send(self, msg: dict) -> None:
        self.sent += 1
        path = self.send_dir / f"{self.sent:08d}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(msg))
        os.replace(tmp, path)

    def poll(self) -> dict | None:
        path = self.recv_dir / f"{self.received + 1:08d}.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        self.received += 1
        path.unlink(missing_ok=True)
        return json.loads(text)

    def recv(self, timeout_s: float, check: Callable[[], None] = lambda: None) -> dict | None:
        """The next message, or None after ``timeout_s``; ``check()`` runs while waiting (may raise)."""
        deadline = time.monotonic() + timeout_s
        n = 0
        while True:
            msg = self.poll()
            if msg is not None:
                return msg
            if time.monotonic() >= deadline:
                return None
            n += 1
            if n % 200 == 0:
                check()
            time.sleep(POLL_S if n < 2000 else 20 * POLL_S)


class QueueLink:
    """The same interface between two threads of one process (one end each: :meth:`pair`)."""

    def __init__(self, send: queue.Queue, recv: queue.Queue) -> None:
        self._send, self._recv = send, recv

    @classmethod
    def pair(cls) -> tuple["QueueLink", "QueueLink"]:
        a, b = queue.Queue(), queue.Queue()
        return cls(a, b), cls(b, a)

    def send(self, msg: dict) -> None:
        self._send.put(json.loads(json.dumps(msg)))  # same values as through a file

    def recv(self, timeout_s: float, check: Callable[[], None] = lambda: None) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._recv.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None
                check()


# --------------------------------------------------------------------------- rank side

class Workload:
    """The module the ranks train and one step of it (synthetic mirror or the user's model).

    ``fresh()`` builds a new unsharded copy of ``module`` with the same weights (what a
    sharded trial shards: ``fully_shard`` changes a module for good)."""

    def __init__(self, module: Any, step: Callable[[Any], Any], records: list | None = None,
                 clock: Any = None, name: str = "model", inputs: tuple = (), spec: tuple | None = None,
                 fresh: Callable[[], Any] | None = None) -> None:
        self.module, self.step, self.records, self.clock, self.name = module, step, records, clock, name
        self.fresh = fresh
        self.inputs = inputs  # the synthetic model's (x, w), for the gradient check
        self.spec = spec  # the synthetic model's (layers, compute), for the gradient check
        self.t0 = 0.0

    def run_step(self, model: Any) -> None:
        if self.records is not None:
            self.records.clear()
        self.t0 = time.perf_counter()
        self.step(model)


def make_workload(task: dict, device: Any, rank: int) -> Workload:
    """The task's model on ``device``: ``task["model_factory"]`` (the user's) or the synthetic ``layers``."""
    import torch

    torch.manual_seed(1234 + rank)  # inputs differ per rank (gradients must be averaged for real)
    factory = task.get("model_factory")
    if factory:
        from commtune.models.record import RecordOptions, _make_input, _scalar_loss, build_module

        opts = task.get("record_options") or {}
        options = RecordOptions(batch_size=int(opts.get("batch_size", 8)),
                                input_shape=tuple(opts["input_shape"]) if opts.get("input_shape") else None,
                                seq_len=opts.get("seq_len"), vocab=opts.get("vocab"))
        torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
        module = build_module(factory).to(device).train()
        torch.manual_seed(1234 + rank)
        example, _ = _make_input(torch, module, options, device)

        def user_step(model: Any) -> None:
            _scalar_loss(torch, model(example)).backward()

        def user_copy() -> Any:
            copy = build_module(factory).to(device).train()
            copy.load_state_dict(module.state_dict())
            return copy

        return Workload(module, user_step, name=type(module).__name__, fresh=user_copy)
    from commtune.runtime.synthetic import build_model

    def synthetic_copy() -> Any:  # the same weights: the model's generator is seeded
        return build_model(task["layers"], task.get("compute", "emulated")).to(device)

    module = synthetic_copy()
    x = torch.randn(4, 8, device=device)
    w = torch.randn(4, 8, device=device)

    def synthetic_step(model: Any) -> None:
        (model(x) * w).sum().backward()

    return Workload(module, synthetic_step, records=[], clock=module.clock, name="synthetic", inputs=(x, w),
                    spec=(task["layers"], task.get("compute", "emulated")), fresh=synthetic_copy)


def _trial_result(msg: dict, knobs: Knobs, out: dict, wl: Workload, reconf: Any) -> dict:
    times = out["step_times_s"]
    res = {"op": "result", "id": msg["id"], "knobs": knobs.to_dict(),
           "step_time_s": float(statistics.median(times)) if times else float("nan"),
           "step_times_s": times, "warmup_times_s": out["warmup_times_s"], "steps_wall_s": out["steps_wall_s"],
           "rebuild_s": out["rebuild_s"], "rebuilt": out["rebuilt"], "pruned": out["stopped"], "buckets": [],
           "host_busy_cores": out.get("host_busy_cores"), "host_cores": out.get("host_cores")}
    sp = reconf.shard_plan
    if sp is not None:  # FSDP2: the units it sharded and the prefetch it applied (capped to the units)
        res["shard"] = {"units": len(sp.units), "forward_prefetch": sp.forward_prefetch,
                        "backward_prefetch": sp.backward_prefetch, "mesh_shape": list(sp.mesh_shape)}
    clock = getattr(reconf.current, "clock", None) if wl.clock is not None else None
    if wl.records is not None:
        bwd0 = (clock.bwd_t0 if clock is not None else None) or wl.t0
        res["buckets"] = [{"index": i, "grad_bytes": nb, "start_s": s - bwd0, "end_s": e - bwd0}
                          for i, nb, s, e in sorted(wl.records)] if sp is None else []
        res["forward_s"] = bwd0 - wl.t0
    return res


def serve(link: Any, wl: Workload, *, mode: str | None = None, steps: int = 8, warmup: int = 1,
          tick: Callable[[], None] = lambda: None, driver_alive: Callable[[], bool] = lambda: True,
          check_grads: bool = False, process_group: Any = None, device: Any = None,
          gpus_per_node: int | None = None) -> int:
    """Every rank: run trials until the driver says stop; returns the number of trials.

    A sharded configuration runs FSDP2 on a fresh copy of ``wl``'s model
    (:func:`~commtune.runtime.worker_loop.trial_plan`); ``gpus_per_node`` is what
    ``shard_group_size: 0`` means (None: the world).

    ``link`` (rank 0 only; None elsewhere) carries the driver's messages:
    ``{"op": "trial", "id", "knobs", "stream_mode"?, "steps"?, "warmup"?, "prune", "lookahead"?}``
    and ``{"op": "stop"}``; rank 0 answers ``{"op": "ready"}`` once, per pruned
    step ``{"op": "step", "id", "step", "t"}`` (the driver answers ``{"op":
    "decision", "stop"}``; with ``lookahead`` rank 0 reads it one step later)
    and ``{"op": "result", ...}`` per trial.
    """
    from commtune.runtime.apply import plan_for
    from commtune.runtime.worker_loop import ControlChannel, Pruning, Reconfigurer, run_trial, trial_plan

    channel = ControlChannel(process_group)
    src = channel.is_src
    reconf = Reconfigurer(wl.module, process_group, always_hook=wl.records is not None,
                          hook_options={"recorder": lambda i, nb, t0, t1: wl.records.append((i, nb, t0, t1))}
                          if wl.records is not None else None, fresh=wl.fresh)
    tick()
    reconf.apply(plan_for(DDP_DEFAULT))  # first DDP build and stream group before the first trial
    if src:
        link.send({"op": "ready", "world": _world(process_group), "model": wl.name})
    trials = 0
    while True:
        msg = None
        if src:
            msg = link.recv(IDLE_S, _check_driver(driver_alive))
            if msg is None:
                msg = {"op": "stop"} if not driver_alive() else {"op": "idle"}
        tick()
        msg = channel.bcast(msg)
        if msg["op"] in ("idle", "decision"):  # a late answer for a trial that has ended: nothing to do
            continue
        if msg["op"] != "trial":
            return trials
        knobs = Knobs.from_dict(msg["knobs"])
        plan = trial_plan(knobs, msg.get("stream_mode") or mode, gpus_per_node)

        waited = [0.0]

        def send(step: int, t: float, _id=msg["id"]) -> None:
            link.send({"op": "step", "id": _id, "step": step, "t": t})

        def stop(step: int) -> bool:
            t0 = time.perf_counter()
            answer = link.recv(DECISION_WAIT_S, _check_driver(driver_alive))
            waited[0] += time.perf_counter() - t0
            return answer is None or bool(answer.get("stop"))

        pruning = Pruning(send, stop, lookahead=bool(msg.get("lookahead", True))) if msg.get("prune") else None
        out = run_trial(reconf, plan, wl.run_step, channel, int(msg.get("warmup", warmup)), int(msg.get("steps", steps)),
                        pruning=pruning, tick=tick)
        trials += 1
        grad = _grad_check(wl, reconf.current, knobs, process_group, device) \
            if check_grads and wl.spec is not None else None
        if src:
            res = _trial_result(msg, knobs, out, wl, reconf)
            res["decision_wait_s"] = waited[0]
            if grad is not None:
                res["grad_check"] = grad
            link.send(res)


def _world(process_group: Any) -> int:
    import torch.distributed as dist

    return dist.get_world_size(process_group)


def _check_driver(alive: Callable[[], bool]) -> Callable[[], None]:
    def check() -> None:
        if not alive():
            raise GroupFailure("the search process is gone")
    return check


def _grad_check(wl: Workload, module: Any, knobs: Knobs, process_group: Any, device: Any) -> dict:
    """After a trial: the current module's averaged gradients (DDP's, or FSDP2's shards gathered)
    against a plain all-reduce of a fresh copy's local gradients (the synthetic model only)."""
    from commtune.runtime.synthetic import grad_check

    x, w = wl.inputs
    layers, compute = wl.spec
    low = knobs.reduce_precision != "fp32" if knobs.sharding != "none" else knobs.wire_precision != "fp32"
    return grad_check(module, x, w, layers, compute, _world(process_group), device, low)


# --------------------------------------------------------------------------- driver side

class _Driver:
    """The search side of the protocol; subclasses start the ranks and say how they fail."""

    link: Any
    timeout_s: float

    def __init__(self) -> None:
        self.trials = 0
        self.info: dict = {}
        self._next_id = 0
        self.closed = False

    def _check(self) -> None:
        """Raise if the ranks are gone."""

    def _hung(self, what: str) -> BaseException:
        return GroupFailure(f"the worker group sent nothing for {self.timeout_s:g} s ({what})")

    def _recv(self, what: str) -> dict:
        msg = self.link.recv(self.timeout_s, self._check)
        if msg is None:
            raise self._hung(what)
        return msg

    def _ready(self) -> None:
        msg = self.link.recv(self.timeout_s + START_S, self._check)  # interpreters, torch, rendezvous
        if msg is None:
            raise self._hung("starting")
        if msg.get("op") != "ready":
            raise GroupFailure(f"unexpected first message from rank 0: {msg!r}")
        self.info = msg

    def trial(self, knobs: Knobs, on_step: Callable[[int, list[float]], bool] | None = None, *,
              stream_mode: str | None = None, steps: int | None = None, warmup: int | None = None,
              lookahead: bool = True) -> dict:
        """Time ``knobs`` on the group. ``on_step(step, slowest times so far) -> stop`` after each
        timed step (pruning); the result's ``pruned`` says whether it stopped the trial.
        ``lookahead``: the ranks run the next step while ``on_step`` decides
        (:class:`~commtune.runtime.worker_loop.Pruning`).
        Adds ``wall_s`` (driver side, send to result) and ``overhead_s`` (``wall_s`` minus rank 0's
        warm-up and timed steps)."""
        if self.closed:
            raise GroupFailure("the worker group is closed")
        self._next_id += 1
        tid = self._next_id
        msg: dict[str, Any] = {"op": "trial", "id": tid, "knobs": knobs.to_dict(), "prune": on_step is not None,
                               "lookahead": lookahead}
        for k, v in (("stream_mode", stream_mode), ("steps", steps), ("warmup", warmup)):
            if v is not None:
                msg[k] = v
        t0 = time.perf_counter()
        self.link.send(msg)
        times: list[float] = []
        while True:
            m = self._recv(f"trial {tid}: {knobs.describe()}")
            if m.get("id") != tid:
                raise GroupFailure(f"out-of-order message from rank 0: {m!r}")
            if m["op"] == "step":
                times.append(float(m["t"]))
                self.link.send({"op": "decision", "id": tid, "stop": bool(on_step(len(times), list(times)))})
            elif m["op"] == "result":
                break
        wall = time.perf_counter() - t0
        self.trials += 1
        if on_step is not None:  # the last step is reported without a decision
            all_times = m["step_times_s"]
            for i in range(len(times), len(all_times)):
                on_step(i + 1, all_times[: i + 1])
        m["wall_s"] = wall
        m["overhead_s"] = wall - float(m["steps_wall_s"])
        return m

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.link.send({"op": "stop"})

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class InJobGroup(_Driver):
    """Rank 0 of a job the user's launcher started (torchrun): serves in a thread of this process.

    Construct it on rank 0 after ``dist.init_process_group`` while every other
    rank calls :func:`serve_in_job` with the same ``task``."""

    def __init__(self, task: dict, timeout_s: float = 300.0, device: Any = None) -> None:
        super().__init__()
        self.timeout_s = float(timeout_s)
        self.link, rank0_end = QueueLink.pair()
        self._box: dict[str, Any] = {}

        def target() -> None:
            try:
                serve_in_job(task, rank0_end, device=device)
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the driver's thread
                self._box["err"] = exc

        self._thread = threading.Thread(target=target, daemon=True, name="ct-rank0-worker")
        self._thread.start()
        self._ready()

    def _check(self) -> None:
        if not self._thread.is_alive():
            err = self._box.get("err")
            raise GroupFailure(f"rank 0's worker failed: {type(err).__name__}: {err}") if err else \
                GroupFailure("rank 0's worker ended before the search")

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._thread.join(timeout=self.timeout_s)


def serve_in_job(task: dict, link: Any = None, device: Any = None) -> int:
    """A rank of a torchrun job: serve the search's trials (``link``: rank 0's end, else None)."""
    import torch.distributed as dist

    wl = make_workload(task, device or "cpu", dist.get_rank())
    return serve(link, wl, mode=task.get("mode"), steps=int(task["steps"]), warmup=int(task["warmup"]),
                 check_grads=bool(task.get("check_grads")), device=device or "cpu",
                 gpus_per_node=task.get("gpus_per_node"))


# --------------------------------------------------------------------------- a job the user launched

@dataclass(frozen=True)
class JobLaunch:
    """The ranks of a job the user's launcher started (torchrun sets RANK, WORLD_SIZE,
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT): live trials run in them, the
    search on rank 0. Plays the part of :class:`~commtune.probe.launch.LaunchSpec`."""

    world_size: int
    local_world_size: int = 1
    rank: int = 0
    timeout_s: float = 300.0
    engine: str = "gloo"

    @classmethod
    def from_env(cls, timeout_s: float = 300.0, engine: str = "gloo") -> "JobLaunch":
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local < 1 or world % local:
            local = 1
        return cls(world, local, int(os.environ["RANK"]), timeout_s, engine)

    @property
    def hosts(self) -> int:
        return self.world_size // self.local_world_size

    def describe(self) -> str:
        return f"{self.world_size} ranks of this job ({self.hosts} nodes x {self.local_world_size})"

    def init(self) -> Any:
        """Join the job's process group (collective); the device this rank's model runs on."""
        import datetime

        import torch
        import torch.distributed as dist

        device = torch.device("cpu")
        if self.engine == "nccl":
            if not torch.cuda.is_available():
                raise CommtuneError("--live-engine nccl needs CUDA GPUs; use gloo on CPU")
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        if not dist.is_initialized():
            dist.init_process_group(self.engine, timeout=datetime.timedelta(seconds=self.timeout_s + 30))
        return device
