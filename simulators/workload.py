"""Workload layer: the gradient readiness timeline of one training step.

From a model profile, a device, a batch size and a precision it derives the
forward time, the backward time and, for each gradient tensor in the order
backward produces it, the time (from the start of backward) at which it is
ready and its element count. For sharded data parallelism it also keeps
the per-layer forward and backward times (forward order) and the model
profile, whose layers :func:`commtune.models.units.group_units` groups into
units. With activation checkpointing each block (:attr:`Layer.block`), or an
evenly spaced fraction of the blocks, runs its forward again just before its
backward (charged to the backward of the block's last layer in forward order).

Compute time is FLOPs over the device's rate. A layer that declares its
matrix multiply (:attr:`Layer.matmul`) may pay, with ``matmul_k0 > 0``, a
fixed cost per output tile worth ``matmul_k0`` steps of the contraction
(:func:`matmul_time_factors`): a GEMM contracting over K runs at
``K / (K + k0)`` of the rate, so narrow models' matmuls run at a lower
fraction of peak than wide ones'. Without declared shapes or with
``matmul_k0 = 0`` the times are exactly FLOPs over the rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from commtune.devices import Device, get_device, grad_bytes_per_element
from commtune.errors import CommtuneError
from commtune.models.base import ModelProfile


@dataclass(frozen=True, eq=False)
class Workload:
    """Per-GPU timeline of one step. Arrays are in gradient ready order."""

    model: str
    batch_size: int
    precision: str
    forward_s: float
    backward_s: float
    ready_s: np.ndarray  # (T,) seconds after backward starts
    numel: np.ndarray  # (T,) elements
    names: tuple[str, ...]
    grad_bytes_per_element: int
    layer_backward: tuple[tuple[str, float, float], ...] = ()  # (layer, start_s, end_s) for traces
    optimizer_s: float = 0.0  # the optimizer step after the gradients are reduced
    layer_forward_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,) forward order
    layer_backward_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,) forward order, recompute included
    profile: ModelProfile | None = None  # the layers sharding groups into units
    activation_checkpointing: bool | float = False  # backward_s includes the recomputed blocks' forward (a fraction of them)

    @property
    def compute_s(self) -> float:
        """One GPU's step without any data-parallel framework."""
        return self.forward_s + self.backward_s + self.optimizer_s

    @property
    def grad_bytes(self) -> np.ndarray:
        return self.numel * self.grad_bytes_per_element

    @property
    def total_grad_bytes(self) -> int:
        return int(self.numel.sum()) * self.grad_bytes_per_element


def optimizer_time_s(model: ModelProfile, dev: Device) -> float:
    """The optimizer step: measured (``profile-model`` writes
    ``meta['optimizer_s']``) or the device class's per-parameter estimate."""
    measured = (model.meta or {}).get("optimizer_s")
    if measured is not None:
        return float(measured)
    return dev.optimizer_s(model.num_params, model.num_tensors)


def matmul_time_factors(matmul: tuple[int, int, int], batch_size: int, k0: float) -> tuple[float, float]:
    """The FLOPs a layer's matrix multiply ``(tokens M, in K, out N)`` per sample costs
    beyond ``2·M·K·N`` (forward) and ``4·M·K·N`` (backward) when every output tile pays
    a fixed ``k0`` contraction steps: forward contracts over K, the input gradient over
    N, the weight gradient over the batch's ``batch_size·M`` tokens, so the extras are
    ``2MKN·k0/K`` and ``2MKN·(k0/N + k0/(batch_size·M))``."""
    m, k, n = matmul
    mm = 2.0 * m * k * n
    return mm * k0 / k, mm * (k0 / n + k0 / (batch_size * m))


def checkpointed_blocks(model: ModelProfile, fraction: float) -> set[str]:
    """The blocks activation checkpointing recomputes when it covers ``fraction`` of them,
    evenly spaced (fms-fsdp's selective rule: block i, counted from 1, is recomputed when
    ``i·fraction`` reaches the next cut-off, 1/2, 3/2, ...); 1 = every block, 0 = none."""
    blocks = list(dict.fromkeys(layer.block for layer in model.layers if layer.block is not None))
    chosen, cut = set(), 0.5
    for i, name in enumerate(blocks, start=1):
        if i * fraction >= cut:
            chosen.add(name)
            cut += 1.0
    return chosen


def build_workload(
    model: ModelProfile, device: Device | str = "V100", batch_size: int = 64, precision: str = "amp",
    optimizer: bool = True, activation_checkpointing: bool | float = False, matmul_k0: float = 0.0,
) -> Workload:
    """Time each layer (measured times if the profile has them, else FLOPs
    over the device's effective throughput) and lay out the backward pass;
    ``optimizer`` adds the optimizer step (:func:`optimizer_time_s`);
    ``activation_checkpointing`` recomputes each block's forward at the start
    of its backward (a span ``<block> (recompute)``; layers outside blocks are
    not recomputed); a number in [0, 1] recomputes that fraction of the blocks
    (:func:`checkpointed_blocks`). ``matmul_k0`` (contraction steps, >= 0) is the
    per-tile cost of the matmuls layers declare (module docstring)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CommtuneError(f"batch size must be a positive integer, got {batch_size!r}")
    ac = activation_checkpointing
    fraction = float(ac) if isinstance(ac, (bool, int, float)) else -1.0
    if not 0.0 <= fraction <= 1.0:
        raise CommtuneError(f"activation checkpointing {activation_checkpointing!r}; accepted: true, false "
                            f"or a fraction of the blocks in [0, 1]")
    if not (isinstance(matmul_k0, (int, float)) and 0.0 <= matmul_k0 < float("inf")):
        raise CommtuneError(f"matmul_k0 {matmul_k0!r}; accepted: a finite number >= 0 (contraction steps)")
    dev = device if isinstance(device, Device) else get_device(device)
    flops_per_s = dev.flops_per_s(precision)
    # Measured times are for the profile's batch size; they scale linearly.
    time_scale = batch_size / model.measured_batch_size if model.measured_batch_size else 1.0

    def matmul_extra(layer) -> tuple[float, float]:
        if matmul_k0 > 0 and layer.matmul is not None:
            return matmul_time_factors(layer.matmul, batch_size, matmul_k0)
        return 0.0, 0.0

    def fwd(layer) -> float:
        if layer.fwd_time_s is not None:
            return layer.fwd_time_s * time_scale
        e = matmul_extra(layer)[0]
        return (layer.fwd_flops + e if e else layer.fwd_flops) * batch_size / flops_per_s

    def bwd(layer) -> float:
        if layer.bwd_time_s is not None:
            return layer.bwd_time_s * time_scale
        e = matmul_extra(layer)[1]
        return (layer.bwd_flops + e if e else layer.bwd_flops) * batch_size / flops_per_s

    layer_fwd = [fwd(layer) for layer in model.layers]
    forward_s = float(sum(layer_fwd))
    recompute: dict[str, float] = {}
    if fraction > 0:
        chosen = checkpointed_blocks(model, fraction)
        for layer, f in zip(model.layers, layer_fwd):
            if layer.block in chosen:
                recompute[layer.block] = recompute.get(layer.block, 0.0) + f
    layer_bwd = [0.0] * len(model.layers)
    t = 0.0
    ready, numel, names, spans = [], [], [], []
    for idx in reversed(range(len(model.layers))):
        layer = model.layers[idx]
        extra = 0.0
        if layer.block in recompute:  # the block's last layer in forward order: recompute it first
            extra = recompute.pop(layer.block)
            start, t = t, t + extra
            spans.append((f"{layer.block} (recompute)", start, t))
        start = t
        layer_bwd[idx] = extra + bwd(layer)
        t += bwd(layer)
        spans.append((layer.name, start, t))
        for tensor in reversed(layer.tensors):
            ready.append(t)
            numel.append(tensor.numel)
            names.append(tensor.name)
    if not numel:
        raise CommtuneError(f"model {model.name!r} has no parameter tensors to all-reduce")
    return Workload(
        model=model.name,
        batch_size=batch_size,
        precision=precision,
        forward_s=forward_s,
        backward_s=t,
        ready_s=np.asarray(ready, dtype=np.float64),
        numel=np.asarray(numel, dtype=np.int64),
        names=tuple(names),
        grad_bytes_per_element=grad_bytes_per_element(precision),
        layer_backward=tuple(spans),
        optimizer_s=optimizer_time_s(model, dev) if optimizer else 0.0,
        layer_forward_s=np.asarray(layer_fwd, dtype=np.float64),
        layer_backward_s=np.asarray(layer_bwd, dtype=np.float64),
        profile=model,
        activation_checkpointing=activation_checkpointing,
    )


def synthetic_workload(
    ready_s: list[float] | np.ndarray,
    numel: list[int] | np.ndarray,
    forward_s: float = 0.0,
    backward_s: float | None = None,
    grad_bytes_per_element: int = 4,
    optimizer_s: float = 0.0,
) -> Workload:
    """A hand-made timeline (for tests and closed-form checks)."""
    ready = np.asarray(ready_s, dtype=np.float64)
    return Workload(
        model="synthetic",
        batch_size=1,
        precision="fp32" if grad_bytes_per_element == 4 else "fp16",
        forward_s=float(forward_s),
        backward_s=float(ready.max() if backward_s is None else backward_s),
        ready_s=ready,
        numel=np.asarray(numel, dtype=np.int64),
        names=tuple(f"t{i}" for i in range(len(ready))),
        grad_bytes_per_element=grad_bytes_per_element,
        optimizer_s=float(optimizer_s),
    )
