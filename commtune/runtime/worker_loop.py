"""The worker side of live tuning: apply a configuration, time steps.

Shared by the in-job :class:`~commtune.runtime.tuner.AutoTuner` and the
persistent worker group of ``commtune search --objective live``
(:mod:`commtune.runtime.worker_group`), so both measure the same thing:

* :class:`ControlChannel` -- cheap CPU collectives on a gloo group over the
  job's ranks (broadcast an object from the first rank, element-wise max);
* :class:`Reconfigurer` -- one module, one DDP wrapper at a time: a new
  :class:`~commtune.runtime.apply.DDPPlan` rebuilds the wrapper around the
  same parameters (stream process groups come from the cache of
  :func:`~commtune.runtime.hooks.stream_groups`: created once per stream
  count, reused); the same plan keeps the wrapper. A :class:`ShardSpec`
  (a sharded configuration, :func:`trial_plan`) shards a fresh copy of the
  module with FSDP2 (:func:`commtune.runtime.shard.plan_shard` /
  ``apply_plan``; ``fully_shard`` changes a module for good, so every new
  sharded configuration gets its own copy and the previous copy is freed;
  device meshes are cached per shape);
* :class:`TrialTimer` -- warm-up and timed step times of one trial;
* :func:`run_trial` -- the loop the worker group runs on every rank: apply,
  warm up, time steps (slowest rank per step), ask the source rank after each
  timed step whether to stop (pruning).
"""
from __future__ import annotations

import dataclasses
import gc
import inspect
import os
import statistics
import time
from typing import Any, Callable

import torch
import torch.distributed as dist

from commtune.errors import CommtuneError
from commtune.host_load import busy_between, cpu_jiffies
from commtune.knobs import SHARDED, Knobs
from commtune.runtime.apply import DDPPlan, build_ddp
from commtune.runtime.ddp_plan import live_key, plan_for

_DDP_HAS_INIT_SYNC = "init_sync" in inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters


class ControlChannel:
    """A gloo group over the ranks of ``process_group`` for control messages (collective to create)."""

    def __init__(self, process_group: Any = None) -> None:
        ranks = dist.get_process_group_ranks(process_group or dist.group.WORLD)
        self.group = dist.new_group(ranks, backend="gloo")
        self.src = ranks[0]
        self.rank = dist.get_rank()

    @property
    def is_src(self) -> bool:
        return self.rank == self.src

    def bcast(self, obj: Any = None) -> Any:
        """The source rank's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=self.src, group=self.group)
        return box[0]

    def max(self, values: list[float]) -> list[float]:
        """Element-wise maximum over the ranks."""
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return [float(v) for v in t.tolist()]

    def flag(self, value: bool | None = None) -> bool:
        """The source rank's boolean on every rank (one small broadcast, no pickling)."""
        t = torch.tensor([1 if value else 0], dtype=torch.int32)
        dist.broadcast(t, src=self.src, group=self.group)
        return bool(t.item())

    def barrier(self) -> None:
        dist.barrier(group=self.group)


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """A sharded trial: the configuration FSDP2 applies (:func:`~commtune.runtime.ddp_plan.live_key`)
    and the ranks per node that ``shard_group_size: 0`` means (None: the world)."""

    knobs: Knobs
    gpus_per_node: int | None = None

    def describe(self) -> str:
        return self.knobs.describe()


def trial_plan(knobs: Knobs, stream_mode: str | None = None, gpus_per_node: int | None = None) -> DDPPlan | ShardSpec:
    """What a live trial of ``knobs`` builds: a :class:`DDPPlan` (``sharding: none``;
    ``stream_mode`` overrides the knobs') or a :class:`ShardSpec` (FSDP2)."""
    if knobs.sharding in SHARDED:
        return ShardSpec(live_key(knobs), gpus_per_node)
    return plan_for(knobs, stream_mode)


class Reconfigurer:
    """Keeps ``module`` wrapped in DDP under the current plan; rebuilds only on a change.

    A replaced wrapper stops reducing gradients (its autograd hooks are
    removed) and refuses to run, so a stale reference fails loudly. The
    parameters are the same objects throughout (optimizers stay valid).
    ``always_hook``: reduce through commtune's hook also for one fp32 stream
    (the live probe does, for per-bucket timings).

    A :class:`ShardSpec` needs ``fresh``: a callable returning a new unsharded
    copy of ``module`` (same weights); the copy is sharded with FSDP2 and
    becomes :attr:`current` until the next change (``module`` itself is never
    sharded, so DDP plans keep wrapping it).
    """

    def __init__(self, module: torch.nn.Module, process_group: Any = None, *,
                 hook_options: dict[str, Any] | None = None, always_hook: bool = False,
                 fresh: Callable[[], torch.nn.Module] | None = None, **ddp_kwargs: Any) -> None:
        self.module = module
        self.process_group = process_group
        self.hook_options = hook_options
        self.always_hook = always_hook
        self.fresh = fresh
        self.ddp_kwargs = ddp_kwargs
        self.plan: DDPPlan | ShardSpec | None = None
        self.model: Any = None
        self.shard_plan: Any = None  # the ShardPlan of the current sharded copy (None under DDP)
        self.rebuilds = 0
        self._meshes: dict[tuple[int, ...], Any] = {}

    @property
    def current(self) -> torch.nn.Module:
        """The module being trained: ``module`` under DDP, the sharded copy under FSDP2."""
        return self.module if self.shard_plan is None else self.model

    def apply(self, plan: DDPPlan | ShardSpec) -> Any:
        """The wrapper for ``plan`` (collective when it changes): DDP, or an FSDP2-sharded copy."""
        if self.model is not None and (plan == self.plan if isinstance(plan, ShardSpec) else same_ddp(plan, self.plan)):
            return self.model
        if isinstance(plan, ShardSpec) and self.fresh is None:
            raise CommtuneError("sharded configurations need a way to build a fresh copy of the model "
                                "(Reconfigurer(fresh=...)); this job tunes DDP only")
        self._retire(self.model)
        self.model = self.shard_plan = None
        if isinstance(plan, ShardSpec):
            self.model = self._shard(plan)
        else:
            kwargs = dict(self.ddp_kwargs)
            if self.rebuilds and _DDP_HAS_INIT_SYNC:
                # The ranks' parameters are already equal (the first wrapper synced them, DDP keeps them
                # so): skip the rebuild's broadcast of every parameter from rank 0.
                kwargs.setdefault("init_sync", False)
            self.model = build_ddp(self.module, plan, self.process_group, hook_options=self.hook_options,
                                   always_hook=self.always_hook, **kwargs)
        self.plan = plan
        self.rebuilds += 1
        return self.model

    def _shard(self, spec: ShardSpec) -> torch.nn.Module:
        from commtune.runtime.shard import apply_plan, plan_shard
        from commtune.runtime.synthetic import wait_for_gathers

        gc.collect()  # the previous sharded copy (retired above) goes before the next is built
        copy = self.fresh()
        plan = plan_shard(copy, spec.knobs, dist.get_world_size(self.process_group), spec.gpus_per_node,
                          cap_prefetch=True)
        model = apply_plan(copy, plan, self._mesh(plan.mesh_shape, copy))
        wait_for_gathers(model)  # a synthetic mirror's compute waits for its unit's gather; others: no-op
        self.shard_plan = plan
        return model

    def _mesh(self, shape: tuple[int, ...], module: torch.nn.Module) -> Any:
        """The device mesh of ``shape`` over the ranks (created once per shape: new groups are collective)."""
        if shape not in self._meshes:
            from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

            p = next(module.parameters(), None)
            device = p.device.type if p is not None else "cpu"
            if self.process_group is not None:
                if len(shape) > 1:
                    raise CommtuneError("hybrid sharding needs the job's whole world (no process_group)")
                self._meshes[shape] = DeviceMesh.from_group(self.process_group, device)
            else:
                names = ("replicate", "shard") if len(shape) == 2 else ("shard",)
                self._meshes[shape] = init_device_mesh(device, shape, mesh_dim_names=names)
        return self._meshes[shape]

    @staticmethod
    def _retire(old: Any) -> None:
        if old is None:
            return
        if hasattr(old, "_remove_autograd_hooks"):
            old._remove_autograd_hooks()

        def replaced(*_: Any, **__: Any) -> Any:
            raise CommtuneError("this DDP wrapper was replaced after a reconfiguration; use the current one "
                                "(tuner.model: fetch it every step)")
        old.forward = replaced


def same_ddp(a: DDPPlan | ShardSpec | None, b: DDPPlan | ShardSpec | None) -> bool:
    """Whether two plans build the same DDP (the stream mode does not matter for one stream)."""
    if not isinstance(a, DDPPlan) or not isinstance(b, DDPPlan):
        return a is b
    key = lambda p: (p.bucket_cap_bytes, p.first_bucket_bytes, p.num_streams, p.wire_precision,  # noqa: E731
                     p.stream_mode if p.num_streams > 1 else "-")
    return key(a) == key(b)


class TrialTimer:
    """Step times of one trial: the first ``warmup`` are discarded, then ``steps`` are kept."""

    def __init__(self, warmup: int, steps: int) -> None:
        if warmup < 0 or steps < 1:
            raise CommtuneError(f"need warmup >= 0 and steps >= 1, got {warmup} and {steps}")
        self.warmup, self.steps = warmup, steps
        self.warm: list[float] = []
        self.timed: list[float] = []

    def add(self, dt: float) -> bool:
        """Record one step; True when the trial has all its steps."""
        (self.warm if len(self.warm) < self.warmup else self.timed).append(float(dt))
        return self.done

    @property
    def done(self) -> bool:
        return len(self.timed) >= self.steps

    @property
    def in_warmup(self) -> bool:
        return len(self.warm) < self.warmup

    def median(self) -> float:
        return float(statistics.median(self.timed))


def zero_grads(module: torch.nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def _sync(module: torch.nn.Module) -> None:
    p = next(module.parameters(), None)
    if p is not None and p.is_cuda:
        torch.cuda.synchronize(p.device)


class Pruning:
    """How a trial asks its pruner (every rank holds one; only the source rank's callables run).

    ``send(step, t)`` reports a timed step's slowest-rank time; ``stop(step)``
    waits for the answer (True: stop the trial). With ``lookahead`` the next
    step runs while the pruner decides (its latency -- a storage write, a
    network round trip -- hides behind the step); a stopped trial then drops
    the one step it ran ahead (not reported, not counted as measured).
    """

    def __init__(self, send: Callable[[int, float], None] = lambda step, t: None,
                 stop: Callable[[int], bool] = lambda step: False, lookahead: bool = True) -> None:
        self.send, self.stop, self.lookahead = send, stop, lookahead


def run_trial(reconf: Reconfigurer, plan: DDPPlan | ShardSpec, step_fn: Callable[[Any], Any], channel: ControlChannel,
              warmup: int, steps: int, *, pruning: Pruning | None = None,
              tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Every rank: apply ``plan``, run ``warmup`` + ``steps`` calls of ``step_fn(model)`` (the DDP
    wrapper, or the FSDP2-sharded copy of a :class:`ShardSpec`).

    Each step starts from zeroed gradients with the ranks together; its time
    on a rank runs to the end of backward (all buckets reduced). One small
    all-reduce (MAX) after each step gives the slowest rank's time and is the
    barrier before the next step; with ``pruning`` (given on every rank or on
    none) the source rank reports each timed step and the answer travels in
    the next step's all-reduce (lookahead) or in a broadcast right away (see
    :class:`Pruning`). ``tick`` is called before each collective
    (heartbeats). Returns ``{"step_times_s" (slowest rank per timed step),
    "warmup_times_s" (this rank), "steps_wall_s" (this rank: the warm-up and
    the reported steps), "rebuild_s", "rebuilt" (whether DDP was rebuilt),
    "stopped", "host_busy_cores" (this rank's host over the timed steps, from
    ``/proc/stat``; None where unreadable), "host_cores"}``.
    """
    t_apply = time.perf_counter()
    rebuilds = reconf.rebuilds
    tick()
    model = reconf.apply(plan)
    rebuild_s = time.perf_counter() - t_apply
    timer = TrialTimer(warmup, steps)
    slowest: list[float] = []
    wall = 0.0
    stopped = False
    pending = False  # lookahead: the answer for the last reported step is still to come
    src = channel.is_src
    tick()
    channel.barrier()
    cpu0 = None
    while not timer.done:
        if cpu0 is None and not timer.in_warmup:
            cpu0 = cpu_jiffies()
        zero_grads(reconf.current)
        t0 = time.perf_counter()
        step_fn(model)
        _sync(reconf.current)
        dt = time.perf_counter() - t0
        warm = timer.in_warmup
        timer.add(dt)
        stop = 1.0 if src and pending and pruning.stop(len(slowest)) else 0.0
        tick()
        tmax, stop = channel.max([dt, stop])  # also the barrier before the next step
        if warm:
            wall += dt
            continue
        if pending and stop:
            stopped = True  # this step ran ahead of the answer: dropped
            break
        pending = False
        wall += dt
        slowest.append(tmax)
        if pruning is None or timer.done:
            continue
        if src:
            pruning.send(len(slowest), tmax)
        if pruning.lookahead:
            pending = True
            continue
        tick()
        if channel.flag(pruning.stop(len(slowest)) if src else None):
            stopped = True
            break
    return {"step_times_s": slowest, "warmup_times_s": list(timer.warm), "steps_wall_s": wall,
            "rebuild_s": rebuild_s, "rebuilt": reconf.rebuilds > rebuilds, "stopped": stopped,
            "host_busy_cores": busy_between(cpu0, cpu_jiffies()), "host_cores": os.cpu_count()}
