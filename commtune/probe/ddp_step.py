"""Live DDP step timing of a synthetic model that mirrors a model profile.

The synthetic model has one module per profile layer, owning parameter tensors
of the profile's sizes (element counts optionally scaled by ``scale``). Its
compute is either

* ``"emulated"`` (default): a custom autograd Function per layer that sleeps
  until the layer's scheduled end, forward and backward. Sleeping releases the
  GIL, so several ranks on a few cores overlap compute with communication as
  GPUs would. Sleeps are to absolute deadlines from the start of the pass, so
  per-call overheads do not accumulate; the timeline is exactly the one
  :func:`sim_workload` gives the simulator.
* ``"real"``: each layer computes ``sum(p*p)`` over its parameters (real CPU
  work proportional to its size); no timeline is imposed.

Each step: barrier, forward, backward (DDP all-reduces buckets as gradients
become ready and waits for them at the end of backward). There is no
optimizer step. The step time is the slowest rank's; the result is the median
over ``steps`` timed steps after ``warmup`` (>= 1: DDP rebuilds its buckets in
gradient-ready order after the first iteration).

Knobs used: ``fusion_threshold_bytes`` (``bucket_cap_mb``),
``first_bucket_bytes`` (DDP's first-bucket cap; see :func:`ddp_bucket_kwargs`
for the private API involved), ``num_streams`` and ``stream_mode`` (the comm hook of
:mod:`commtune.probe.ddp_hooks` over K process groups, split or round robin;
a ``mode`` argument overrides every configuration's stream_mode) and ``wire_precision`` (fp16 compression in the hook). Buckets are
always reduced through that hook, also for K=1 (one extra process group; it is
how per-bucket timings are taken).
"""
from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import dataclass
from typing import Any, Sequence

from commtune.errors import CommtuneError
from commtune.knobs import KNOBS, Knobs
from commtune.models.base import GradTensor, Layer, ModelProfile

MiB = 2**20
COMPUTE_MODES = ("emulated", "real")


# --------------------------------------------------------------------------- profiles

def synthetic_profile(
    model: ModelProfile | str,
    scale: float = 1.0,
    forward_s: float = 0.1,
    backward_s: float = 0.2,
    share: str = "flops",
) -> ModelProfile:
    """The profile the synthetic model mirrors: tensors scaled by ``scale``
    (element counts, at least 1) and per-layer times that sum to ``forward_s``
    and ``backward_s``, split by FLOPs (``share="flops"``, falling back to
    size when the profile has none) or by parameter count (``"size"``).
    The result carries measured times for batch size 1, so
    :func:`sim_workload` reproduces the timeline exactly."""
    if isinstance(model, str):
        from commtune.models import load_model

        model = load_model(model)
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise CommtuneError(f"--scale must be in (0, 1], got {scale!r}")
    if forward_s < 0 or backward_s < 0:
        raise CommtuneError("forward and backward times must be non-negative")
    if share not in ("flops", "size"):
        raise CommtuneError(f"share must be 'flops' or 'size', got {share!r}")
    sizes = [sum(t.numel for t in layer.tensors) for layer in model.layers]
    fw = [layer.fwd_flops for layer in model.layers]
    bw = [layer.bwd_flops for layer in model.layers]
    if share == "size" or sum(bw) <= 0:
        fw = bw = [float(s) for s in sizes]
    fsum, bsum = sum(fw) or 1.0, sum(bw) or 1.0
    layers = []
    for layer, f, b in zip(model.layers, fw, bw):
        tensors = tuple(GradTensor(t.name, max(1, int(round(t.numel * scale)))) for t in layer.tensors)
        layers.append(Layer(layer.name, tensors, fwd_time_s=forward_s * f / fsum, bwd_time_s=backward_s * b / bsum))
    return ModelProfile(name=f"{model.name}-synthetic", layers=tuple(layers), measured_batch_size=1,
                        meta={"scale": scale, "forward_s": forward_s, "backward_s": backward_s, "share": share})


def profile_from_workload(workload) -> ModelProfile:
    """A profile (one layer per gradient tensor) that reproduces a Workload's timeline."""
    import numpy as np

    ready = np.asarray(workload.ready_s, dtype=float)
    bwd = np.diff(np.concatenate([[0.0], ready]))
    n = len(ready)
    layers = [Layer(name, (GradTensor(name, int(numel)),), fwd_time_s=workload.forward_s / n, bwd_time_s=float(b))
              for name, numel, b in zip(workload.names, workload.numel, bwd)]
    return ModelProfile(name=f"{workload.model}-synthetic", layers=tuple(reversed(layers)), measured_batch_size=1)


def sim_workload(profile: ModelProfile):
    """The simulator's Workload for the synthetic model (fp32 gradients, exact timeline)."""
    from simulators.workload import build_workload

    return build_workload(profile, "V100", batch_size=1, precision="fp32")


def _layer_specs(profile: ModelProfile) -> list[list]:
    return [[layer.name, [t.numel for t in layer.tensors], float(layer.fwd_time_s or 0.0), float(layer.bwd_time_s or 0.0)]
            for layer in profile.layers]


# --------------------------------------------------------------------------- the model (inside ranks)

def _build_model(specs: Sequence[Sequence], compute: str, seed: int = 0):
    import torch
    from torch import nn

    class Clock:
        fwd_t0 = 0.0
        bwd_t0: float | None = None

    def sleep_until(t: float) -> None:
        d = t - time.perf_counter()
        if d > 0:
            time.sleep(d)

    class SleepLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, fwd_end, bwd_end, clock, *params):
            sleep_until(clock.fwd_t0 + fwd_end)
            ctx.bwd_end = bwd_end
            ctx.clock = clock
            ctx.save_for_backward(*params)
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            clock = ctx.clock
            if clock.bwd_t0 is None:
                clock.bwd_t0 = time.perf_counter()
            sleep_until(clock.bwd_t0 + ctx.bwd_end)
            s = g.sum()
            return (g, None, None, None, *[p * s for p in ctx.saved_tensors])

    class SyntheticModel(nn.Module):
        def __init__(self):
            super().__init__()
            gen = torch.Generator().manual_seed(seed)
            self.clock = Clock()
            self.blocks = nn.ModuleList()
            self.fwd_end, self.bwd_end = [], []
            f_acc = 0.0
            total_b = sum(s[3] for s in specs)
            b_acc = 0.0
            for name, numels, f, b in specs:
                m = nn.Module()
                m.params = nn.ParameterList([nn.Parameter(torch.rand(n, generator=gen) - 0.5) for n in numels])
                self.blocks.append(m)
                f_acc += f
                self.fwd_end.append(f_acc)
                # backward runs the layers in reverse: layer i ends after all later layers and itself
                self.bwd_end.append(total_b - b_acc)
                b_acc += b

        def forward(self, x):
            self.clock.fwd_t0 = time.perf_counter()
            self.clock.bwd_t0 = None
            for i, m in enumerate(self.blocks):
                params = list(m.params)
                if compute == "emulated":
                    x = SleepLayer.apply(x, self.fwd_end[i], self.bwd_end[i], self.clock, *params)
                elif params:
                    x = x + 1e-6 * sum((p * p).sum() for p in params)
            return x

    return SyntheticModel()


def ddp_bucket_kwargs(first_bucket_bytes: int, bucket_bytes: int) -> dict:
    """DDP constructor arguments for a first-bucket cap and a bucket cap.

    ``bucket_cap_mb`` sets the cap. The first bucket: older torch always uses
    the private module global ``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``
    (set by :func:`_set_first_bucket` before constructing DDP); torch >= 2.8
    honours it only when ``bucket_cap_mb`` is left at its default, so where
    DDP accepts ``bucket_cap_mb_list`` we pass ``[first, cap]`` (the C++
    reducer repeats the last limit). Both are private/new API: check on
    upgrades (the per-bucket timings show the bucket sizes DDP really used).
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    cap_mb = max(bucket_bytes, 1) / MiB
    kw: dict[str, Any] = {"bucket_cap_mb": cap_mb}
    if "bucket_cap_mb_list" in inspect.signature(DDP.__init__).parameters:
        first_mb = max(first_bucket_bytes, 1) / MiB
        kw = {"bucket_cap_mb_list": [first_mb, cap_mb]}
    return kw


def _set_first_bucket(nbytes: int) -> int:
    import torch.distributed as dist

    old = dist._DEFAULT_FIRST_BUCKET_BYTES
    dist._DEFAULT_FIRST_BUCKET_BYTES = int(nbytes)
    return old


def run_ddp_task(comm, task: dict, progress) -> dict:
    """Worker side: time every configuration of the task on this rank's DDP."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from commtune.probe.ddp_hooks import make_multistream_hook

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
    stream = task.get("stream")  # {"dir", "driver_pid"}: per-step results to a driver that may stop early
    for ci, cfg in enumerate(task["configs"]):
        knobs = Knobs.from_dict(cfg)
        model = _build_model(specs, compute).to(device)
        old = _set_first_bucket(knobs.first_bucket_bytes)
        try:
            ddp = DDP(model, **ddp_bucket_kwargs(knobs.first_bucket_bytes, knobs.fusion_threshold_bytes))
        finally:
            _set_first_bucket(old)
        records: list[tuple] = []
        hook = make_multistream_hook(groups_all[: knobs.num_streams], mode=mode or knobs.stream_mode, wire_precision=knobs.wire_precision,
                                     recorder=lambda i, nb, t0, t1: records.append((i, nb, t0, t1)))
        ddp.register_comm_hook(None, hook)
        x = torch.randn(4, 8, device=device)
        w = torch.randn(4, 8, device=device)
        times = []
        for it in range(warmup + steps):
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
                if stream is not None and _stream_step(comm, progress, stream, ci, len(times), dt,
                                                       last=it == warmup + steps - 1):
                    break
        progress.tick()
        tmax = comm.max(times)
        bwd0 = model.clock.bwd_t0 or t0
        buckets = [{"index": i, "grad_bytes": nb, "start_s": s - bwd0, "end_s": e - bwd0}
                   for i, nb, s, e in sorted(records)]
        res = {"knobs": knobs.to_dict(), "step_time_s": statistics.median(tmax), "step_times_s": tmax,
               "buckets": buckets, "forward_s": bwd0 - t0}
        if task.get("check_grads"):
            res["grad_check"] = _grad_check(comm, model, x, w, specs, compute, knobs.wire_precision == "fp16")
        out.append(res)
        del ddp, model
    return {"world_size": comm.world, "configs": out}


def _driver_alive(pid) -> bool:
    from commtune.proc import pid_alive

    return not pid or pid_alive(pid)


def _stream_step(comm, progress, stream: dict, config: int, step: int, dt: float, last: bool,
                 wait_s: float = 30.0) -> bool:
    """Streaming mode (``task["stream"]``): rank 0 appends ``"<config> <step> <slowest rank's time>"``
    to ``<dir>/steps`` and (but after the last step) waits for the driver's ``<dir>/decision``
    (``"<config> <step> go|stop"``); every rank gets the decision. Outside the timed region.
    A dead driver (``driver_pid``) or no decision within ``wait_s`` means stop / go on."""
    import os

    progress.tick()
    (tmax,) = comm.max([dt])
    stop = 0.0
    if comm.rank == 0:
        d = stream["dir"]
        with open(os.path.join(d, "steps"), "a") as fh:
            fh.write(f"{config} {step} {tmax!r}\n")
        if not last:
            want = f"{config} {step} "
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    with open(os.path.join(d, "decision")) as fh:
                        text = fh.read()
                except OSError:
                    text = ""
                if text.startswith(want):
                    stop = 1.0 if text.split()[2] == "stop" else 0.0
                    break
                if not _driver_alive(stream.get("driver_pid")):
                    stop = 1.0
                    break
                time.sleep(0.002)
    if last:
        return False
    progress.tick()
    return comm.max([stop])[0] > 0


def _grad_check(comm, model, x, w, specs, compute, fp16_wire: bool = False) -> dict:
    """Compare DDP's averaged gradients with a plain all-reduce of local gradients."""
    import torch
    import torch.distributed as dist

    ref = _build_model(specs, compute).to(comm.device)
    (ref(x) * w).sum().backward()
    max_err = 0.0
    for p, q in zip(model.parameters(), ref.parameters()):
        g = q.grad.detach().clone()
        dist.all_reduce(g)
        g /= comm.world
        max_err = max(max_err, float((p.grad - g).abs().max()))
        ok = torch.allclose(p.grad, g, rtol=1e-2, atol=2e-3) if fp16_wire else torch.allclose(p.grad, g, rtol=1e-5, atol=1e-6)
        if not ok:
            return {"allclose": False, "max_abs_err": max_err}
    return {"allclose": True, "max_abs_err": max_err}


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
    stream: dict | None = None,
) -> list[dict]:
    """Time several configurations in one launch (see :func:`time_ddp_steps`).

    ``stream={"dir": D, "driver_pid": PID}``: rank 0 reports every timed step to
    ``D/steps`` and the driver may stop a configuration early via ``D/decision``
    (see :func:`_stream_step`; used by the live search objective for pruning)."""
    from commtune.probe.launch import run_task

    profile = _as_profile(workload_or_model, scale, forward_s, backward_s, share)
    spec = DDPTimingSpec(profile, compute, mode, steps, warmup)
    configs = [k if isinstance(k, Knobs) else Knobs.from_dict(dict(k)) for k in configs]
    if not configs:
        raise CommtuneError("no configurations to time")
    task = {"kind": "ddp", "layers": _layer_specs(spec.profile), "compute": spec.compute, "mode": spec.mode,
            "steps": spec.steps, "warmup": spec.warmup, "configs": [k.to_dict() for k in configs],
            "check_grads": bool(check_grads)}
    if stream is not None:
        task["stream"] = dict(stream)
    return run_task(launch, task)["configs"]


def time_ddp_steps(workload_or_model, knobs: Knobs, launch, steps: int = 5, warmup: int = 2, **kw) -> dict:
    """Time real DDP steps of the synthetic model under ``knobs``.

    ``workload_or_model``: a zoo model name, a ModelProfile (mirrored with
    ``scale``/``forward_s``/``backward_s``/``share``) or a simulator Workload
    (its timeline reproduced). ``launch``: a :class:`~commtune.probe.launch.LaunchSpec`.
    Returns ``{"step_time_s": median, "step_times_s": [...], "buckets":
    [{"index", "grad_bytes", "start_s", "end_s"}, ...] (rank 0, last step,
    times from the start of backward), "knobs": {...}}``.
    """
    return time_ddp_configs(workload_or_model, [knobs], launch, steps, warmup, **kw)[0]
