"""Memory layer: the per-GPU peak memory of one training step.

The peak is taken where activations are largest, at the turn from forward to
backward, and is the sum of named terms (:class:`MemoryBreakdown`):

- **params, grads, optimizer_states**: bytes per parameter from the precision
  and the optimizer (:func:`bytes_per_param`), divided by the shard degree as
  the ``sharding`` knob says: ``none`` shards nothing; ``grad`` (ZeRO-2) shards
  gradients and optimizer states over the world, parameters stay replicated;
  ``full`` (FSDP2 / ZeRO-3) shards all three over the world; ``hybrid`` (HSDP)
  all three over the shard group (``shard_group_size``, 0 = the GPUs per
  node). Each unit (:func:`commtune.models.units.group_units`) is one flat
  buffer split evenly with padding: ``ceil(numel / n)`` elements per rank.
- **gathered_params** (``full``/``hybrid``): the unsharded units alive at once,
  the largest run of consecutive units: forward ``1 + forward_prefetch``,
  backward ``1 + backward_prefetch``; with ``reshard_after_forward`` false every
  unit stays gathered from its forward to its backward (all of them at the
  turn); with an integer N (smaller than the shard degree) each unit keeps an
  N-way shard between its forward and its backward, on top of the windows.
- **unit_grads** (sharded): the unsharded gradient of the largest unit being
  reduced, at the reduce precision (FSDP2 casts it to ``reduce_dtype`` before
  the reduce-scatter; ZeRO-2's reduce bucket); the larger of the forward
  (gathered only) and backward (gathered + this) transients is taken.
- **ddp_buckets** (``none``): PyTorch DDP's default
  ``gradient_as_bucket_view=False`` keeps its buckets as a second copy of every
  gradient (with ``True``, or Horovod's fusion buffer, it would be smaller).
- **activations**: batch x the model's :attr:`Layer.act_bytes` (16-bit bytes;
  fp32 training keeps twice that). With activation checkpointing every block
  (:attr:`Layer.block`) keeps only its input (its first layer's
  ``input_bytes``) and one block's full activations are alive at once during
  its recompute; layers outside blocks keep theirs. A model without blocks is
  not checkpointed.
- **reserve**: :data:`RESERVE_BYTES`, an allowance for the CUDA context, NCCL's
  buffers and the caching allocator's fragmentation (not a measurement);
  :attr:`MemoryBreakdown.allocated` leaves it out, for comparing with
  ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from commtune.devices import PRECISIONS, Device
from commtune.errors import CommtuneError
from commtune.knobs import Knobs
from commtune.models.base import ModelProfile
from commtune.models.units import Unit, group_units
from commtune.units import format_size

#: Optimizers whose state the model counts: Adam (two fp32 moments) and SGD with momentum (one).
OPTIMIZERS = ("adam", "sgd")

#: Allowance for the CUDA context, NCCL buffers and allocator fragmentation (1 GiB; an estimate).
RESERVE_BYTES = 1 << 30

#: Bytes per element of the gradient reduce-scatter at each ``reduce_precision``.
REDUCE_BYTES = {"fp32": 4, "bf16": 2}


@dataclass(frozen=True)
class ParamBytes:
    """Bytes held per parameter: the parameter, its gradient, the optimizer's state."""

    param: int
    grad: int
    state: int


def bytes_per_param(precision: str, optimizer: str = "adam") -> ParamBytes:
    """Bytes per parameter for a precision and optimizer.

    ``fp32`` and ``amp`` (autocast: fp32 weights, fp32 gradients) hold 4 + 4 and
    the optimizer's fp32 moments (Adam 8, SGD momentum 4). ``fp16``/``bf16``
    (mixed precision as ZeRO counts it) hold 2-byte parameters and gradients and
    fp32 master weights beside the moments (Adam 4 + 8 = 12, SGD 4 + 4 = 8)."""
    if precision not in PRECISIONS:
        raise CommtuneError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if optimizer not in OPTIMIZERS:
        raise CommtuneError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    moments = 8 if optimizer == "adam" else 4
    if precision in ("fp32", "amp"):
        return ParamBytes(4, 4, moments)
    return ParamBytes(2, 2, 4 + moments)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Per-GPU peak memory of one step, in bytes, term by term (see the module docstring)."""

    params: int
    grads: int
    optimizer_states: int
    gathered_params: int
    unit_grads: int
    ddp_buckets: int
    activations: int
    reserve: int
    shard_degree: int

    @property
    def allocated(self) -> int:
        """The peak without :attr:`reserve` (what ``torch.cuda.max_memory_allocated`` sees)."""
        return (self.params + self.grads + self.optimizer_states + self.gathered_params
                + self.unit_grads + self.ddp_buckets + self.activations)

    @property
    def peak(self) -> int:
        """The per-GPU peak, reserve included: what must fit in the device's memory."""
        return self.allocated + self.reserve

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "allocated": self.allocated, "peak": self.peak}


def shard_degree(knobs: Knobs, world_size: int, gpus_per_node: int) -> int:
    """Ranks each sharded tensor is split over: 1 (none), the world (grad, full) or the shard group (hybrid)."""
    if knobs.sharding == "none":
        return 1
    if knobs.sharding != "hybrid":
        return world_size
    group = knobs.shard_group_size or gpus_per_node
    if group > world_size or world_size % group:
        raise CommtuneError(f"shard group size {group} does not divide the world size {world_size}; "
                            f"give a divisor of {world_size}")
    return group


def peak_memory(model: ModelProfile, knobs: Knobs, *, world_size: int, gpus_per_node: int,
                batch_size: int, precision: str = "amp", optimizer: str = "adam",
                activation_checkpointing: bool = False,
                reserve_bytes: int = RESERVE_BYTES) -> MemoryBreakdown:
    """The per-GPU peak memory of one training step of ``model`` under ``knobs``."""
    per = bytes_per_param(precision, optimizer)
    n = shard_degree(knobs, world_size, gpus_per_node)
    total = model.num_params
    gathered = unit_grads = buckets = 0
    if knobs.sharding == "none":
        params, grads, states = total, total, total
        buckets = total * per.grad
    else:
        units = group_units(model, knobs.unit_bytes)
        shard = sum(math.ceil(u.numel / n) for u in units)
        params = shard if knobs.sharding in ("full", "hybrid") else total
        grads = states = shard
        unit_grads = max(u.numel for u in units) * REDUCE_BYTES[knobs.reduce_precision]
        if knobs.sharding in ("full", "hybrid"):
            forward, backward = _gathered(units, knobs, n, per.param)
            if forward > backward + unit_grads:
                gathered, unit_grads = forward, 0
            else:
                gathered = backward
    return MemoryBreakdown(
        params=params * per.param, grads=grads * per.grad, optimizer_states=states * per.state,
        gathered_params=gathered, unit_grads=unit_grads, ddp_buckets=buckets,
        activations=activation_bytes(model, batch_size, precision, activation_checkpointing),
        reserve=reserve_bytes, shard_degree=n,
    )


def _gathered(units: list[Unit], knobs: Knobs, n: int, param_bytes: int) -> tuple[int, int]:
    """Bytes of gathered (unsharded) parameters alive in forward and in backward."""
    sizes = [u.numel * param_bytes for u in units]
    reshard = knobs.reshard_after_forward
    if reshard is False:
        return sum(sizes), sum(sizes)
    resident = 0
    if reshard is not True and reshard < n:  # an N-way shard of each unit kept until its backward
        resident = sum(math.ceil(u.numel / reshard) for u in units) * param_bytes
    return (_window(sizes, 1 + knobs.forward_prefetch) + resident,
            _window(sizes, 1 + knobs.backward_prefetch) + resident)


def _window(sizes: list[int], k: int) -> int:
    """The largest sum of ``k`` consecutive sizes (all of them if fewer)."""
    k = min(k, len(sizes))
    run = best = sum(sizes[:k])
    for i in range(k, len(sizes)):
        run += sizes[i] - sizes[i - k]
        best = max(best, run)
    return best


def activation_bytes(model: ModelProfile, batch_size: int, precision: str = "amp",
                     checkpointing: bool = False) -> int:
    """Activation bytes saved for backward per GPU (batch x per-sample bytes; fp32 doubles
    the 16-bit :attr:`Layer.act_bytes`)."""
    scale = 2 if precision == "fp32" else 1
    if not checkpointing:
        return batch_size * scale * sum(layer.act_bytes for layer in model.layers)
    outside = 0
    blocks: dict[str, list[int]] = {}  # block -> [its input, its full activations]
    for layer in model.layers:
        if layer.block is None:
            outside += layer.act_bytes
        elif layer.block not in blocks:
            blocks[layer.block] = [layer.input_bytes, layer.act_bytes]
        else:
            blocks[layer.block][1] += layer.act_bytes
    kept = sum(inp for inp, _ in blocks.values()) + max((full for _, full in blocks.values()), default=0)
    return batch_size * scale * (outside + kept)


def require_fit(memory: MemoryBreakdown, device: Device) -> None:
    """Raise a one-line :class:`CommtuneError` when ``memory.peak`` exceeds the device's memory."""
    if device.memory_bytes and memory.peak > device.memory_bytes:
        raise CommtuneError(f"the step needs {format_size(memory.peak)} per GPU ({memory.peak} bytes), "
                            f"device {device.name} has {format_size(device.memory_bytes)} "
                            f"({device.memory_bytes} bytes)")
