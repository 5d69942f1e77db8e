"""Live DDP step timing of a synthetic model that mirrors a model profile.

The synthetic model (:mod:`commtune.runtime.synthetic`) has one module per profile layer, owning parameter tensors
of the profile's sizes (element counts optionally scaled by ``scale``). Its
compute is either

* ``"emulated"`` (default): a custom autograd Function per layer that sleeps
  until the layer's scheduled end, forward and backward. Sleeping releases the
  GIL, so several ranks on a few cores overlap compute with communication as
  GPUs would. Sleeps are to absolute deadlines from the start of the forward
  pass, so per-call overheads (and the loss and autograd's start between the
  passes) do not accumulate; the timeline is exactly the one
  :func:`~commtune.runtime.synthetic.sim_workload` gives the simulator.
* ``"real"``: each layer computes ``sum(p*p)`` over its parameters (real CPU
  work proportional to its size); no timeline is imposed.

Each step: barrier, forward, backward (DDP all-reduces buckets as gradients
become ready and waits for them at the end of backward). There is no
optimizer step. The step time is the slowest rank's; the result is the median
over ``steps`` timed steps after ``warmup`` (>= 1: DDP rebuilds its buckets in
gradient-ready order after the first iteration).

Knobs used: ``fusion_threshold_bytes`` (``bucket_cap_mb``),
``first_bucket_bytes`` (DDP's first-bucket cap), as :mod:`commtune.runtime.ddp_plan`
maps them, ``num_streams`` and ``stream_mode`` (the comm hook of
:mod:`commtune.probe.ddp_hooks` over K process groups, split or round robin;
a ``mode`` argument overrides every configuration's stream_mode) and ``wire_precision`` (fp16 compression in the hook). Buckets are
always reduced through that hook, also for K=1 (one extra process group; it is
how per-bucket timings are taken).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Sequence

from commtune.errors import CommtuneError
from commtune.host_load import busy_between, cpu_jiffies
from commtune.knobs import KNOBS, Knobs
from commtune.models.base import ModelProfile
from commtune.runtime.synthetic import COMPUTE_MODES, build_model, grad_check, layer_specs, profile_from_workload, synthetic_profile


def run_ddp_task(comm, task: dict, progress) -> dict:
    """Worker side: time every configuration of the task on this rank's DDP."""
    import torch

    from commtune.probe.ddp_hooks import make_multistream_hook
    from commtune.runtime.ddp_plan import construct_ddp, plan_for

    if comm.engine == "mpi":
        raise CommtuneError("DDP step timing runs on torch.distributed (gloo or nccl)")
    torch.manual_seed(1234 + comm.rank)
    specs = task["layers"]
    compute = task.get("compute", "emulated")
    steps, warmup = int(task["steps"]), int(task["warmup"])
    mode = task.get("mode")  # None: each configuration's stream_mode
    max_k = max(int(c["num_streams"]) for c in task["configs"])
    groups_all = comm.stream_groups(max_k)
    device = comm.device
    out = []
    for cfg in task["configs"]:
        knobs = Knobs.from_dict(cfg)
        model = build_model(specs, compute).to(device)
        plan = plan_for(knobs, mode)
        ddp = construct_ddp(model, plan)
        records: list[tuple] = []
        hook = make_multistream_hook(groups_all[: plan.num_streams], mode=plan.stream_mode, wire_precision=plan.wire_precision,
                                     recorder=lambda i, nb, t0, t1: records.append((i, nb, t0, t1)))
        ddp.register_comm_hook(None, hook)
        x = torch.randn(4, 8, device=device)
        w = torch.randn(4, 8, device=device)
        times = []
        cpu0 = None
        for it in range(warmup + steps):
            if it == warmup:
                cpu0 = cpu_jiffies()
            records.clear()
            for p in model.parameters():
                p.grad = None
            progress.tick()
            comm.barrier()
            progress.tick()
            t0 = time.perf_counter()
            (ddp(x) * w).sum().backward()
            comm.sync()
            dt = time.perf_counter() - t0
            if it >= warmup:
                times.append(dt)
        busy = busy_between(cpu0, cpu_jiffies())
        progress.tick()
        tmax = comm.max(times)
        bwd0 = model.clock.bwd_t0 or t0
        buckets = [{"index": i, "grad_bytes": nb, "start_s": s - bwd0, "end_s": e - bwd0}
                   for i, nb, s, e in sorted(records)]
        res = {"knobs": knobs.to_dict(), "step_time_s": statistics.median(tmax), "step_times_s": tmax,
               "buckets": buckets, "forward_s": bwd0 - t0, "host_busy_cores": busy, "host_cores": os.cpu_count()}
        if task.get("check_grads"):
            res["grad_check"] = grad_check(model, x, w, specs, compute, comm.world, comm.device,
                                           knobs.wire_precision == "fp16")
        out.append(res)
        del ddp, model
    return {"world_size": comm.world, "configs": out}


# --------------------------------------------------------------------------- driver side

@dataclass(frozen=True)
class DDPTimingSpec:
    """What to time: the synthetic model and how to run it."""

    profile: ModelProfile
    compute: str = "emulated"
    mode: str | None = None  # None: each configuration's stream_mode; else it overrides them
    steps: int = 5
    warmup: int = 2

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_MODES:
            raise CommtuneError(f"compute must be one of {COMPUTE_MODES}, got {self.compute!r}")
        if self.mode is not None:
            KNOBS["stream_mode"].parse(self.mode)
        if self.steps < 1 or self.warmup < 1:
            raise CommtuneError(f"need steps >= 1 and warmup >= 1 (DDP rebuilds buckets after step 1), "
                                f"got {self.steps} and {self.warmup}")


def _as_profile(workload_or_model, scale: float, forward_s: float, backward_s: float, share: str) -> ModelProfile:
    from simulators.workload import Workload

    if isinstance(workload_or_model, Workload):
        return profile_from_workload(workload_or_model)
    if isinstance(workload_or_model, ModelProfile) and workload_or_model.measured_batch_size == 1 \
            and workload_or_model.has_measured_times and scale == 1.0:
        return workload_or_model
    return synthetic_profile(workload_or_model, scale, forward_s, backward_s, share)


def time_ddp_configs(
    workload_or_model,
    configs: Sequence[Knobs],
    launch,
    steps: int = 5,
    warmup: int = 2,
    *,
    scale: float = 1.0,
    forward_s: float = 0.1,
    backward_s: float = 0.2,
    share: str = "flops",
    compute: str = "emulated",
    mode: str | None = None,
    check_grads: bool = False,
) -> list[dict]:
    """Time several configurations in one launch (see :func:`time_ddp_steps`)."""
    from commtune.probe.launch import run_task

    profile = _as_profile(workload_or_model, scale, forward_s, backward_s, share)
    spec = DDPTimingSpec(profile, compute, mode, steps, warmup)
    configs = [k if isinstance(k, Knobs) else Knobs.from_dict(dict(k)) for k in configs]
    if not configs:
        raise CommtuneError("no configurations to time")
    task = {"kind": "ddp", "layers": layer_specs(spec.profile), "compute": spec.compute, "mode": spec.mode,
            "steps": spec.steps, "warmup": spec.warmup, "configs": [k.to_dict() for k in configs],
            "check_grads": bool(check_grads)}
    return run_task(launch, task)["configs"]


def time_ddp_steps(workload_or_model, knobs: Knobs, launch, steps: int = 5, warmup: int = 2, **kw) -> dict:
    """Time real DDP steps of the synthetic model under ``knobs``.

    ``workload_or_model``: a zoo model name, a ModelProfile (mirrored with
    ``scale``/``forward_s``/``backward_s``/``share``) or a simulator Workload
    (its timeline reproduced). ``launch``: a :class:`~commtune.probe.launch.LaunchSpec`.
    Returns ``{"step_time_s": median, "step_times_s": [...], "buckets":
    [{"index", "grad_bytes", "start_s", "end_s"}, ...] (rank 0, last step,
    times from the start of backward), "knobs": {...}, "host_busy_cores"
    (rank 0's host over the timed steps; :mod:`commtune.host_load`), "host_cores"}``.
    """
    return time_ddp_configs(workload_or_model, [knobs], launch, steps, warmup, **kw)[0]
