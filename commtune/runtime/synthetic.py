"""A module mirroring a model profile's parameter tensors, with emulated compute.

One module per profile layer owning tensors
of the profile's sizes (so the module's fingerprint is the profile's). Compute
runs on an emulated device timeline (``Clock.t``): a layer's forward or
backward starts when the device's previous layer ends, or later when it waits
for its parameters, and the host sleeps until it ends (sleep releases the
GIL, so several ranks on a few cores overlap compute and communication as GPUs
would). The host's own work (hooks, the loss, autograd's start) overlaps the
device's compute, as a GPU runs its queued kernels back to back while the host
launches ahead; so does a collective that blocks the host (gloo's), unless the
device needs its result. Under FSDP2 :func:`wait_for_gathers` makes a layer
wait for its unit's all-gather, as a GPU's compute stream waits on the
all-gather stream; under DDP nothing waits (compute never needs a bucket).
:func:`synthetic_profile` derives the profile to mirror (tensors scaled, given
forward/backward totals spread over the layers); save it with
:func:`commtune.models.save_profile` and ``commtune search --model`` that file:
the search then sees the same tensors and the same compute timeline.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from commtune.errors import CommtuneError
from commtune.models.base import GradTensor, Layer, ModelProfile

__all__ = ["SyntheticModel", "profile_from_workload", "sim_workload", "synthetic_profile", "wait_for_gathers"]
COMPUTE_MODES = ("emulated", "real")


def SyntheticModel(profile: ModelProfile, compute: str = "emulated", seed: int = 0) -> Any:  # noqa: N802
    """The ``nn.Module`` for ``profile`` (``compute``: ``"emulated"`` sleeps, ``"real"`` CPU work).

    Input: a float tensor (batch, features); output: the same shape.
    """
    return build_model(layer_specs(profile), compute, seed)


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
        layers.append(Layer(layer.name, tensors, fwd_time_s=forward_s * f / fsum, bwd_time_s=backward_s * b / bsum,
                            block=layer.block))
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


def sim_workload(profile: ModelProfile, optimizer: bool = False):
    """The simulator's Workload for the synthetic model (fp32 gradients, exact timeline).
    The synthetic DDP step has no optimizer step (:mod:`commtune.probe.ddp_step`), so none
    is added unless ``optimizer`` (a user's step function that runs one)."""
    from simulators.workload import build_workload

    return build_workload(profile, "V100", batch_size=1, precision="fp32", optimizer=optimizer)


def layer_specs(profile: ModelProfile) -> list[list]:
    """What every rank builds the synthetic model from: ``[name, numels, fwd_s, bwd_s, block]`` per layer."""
    return [[layer.name, [t.numel for t in layer.tensors], float(layer.fwd_time_s or 0.0),
             float(layer.bwd_time_s or 0.0), layer.block] for layer in profile.layers]


def build_model(specs: Sequence[Sequence], compute: str, seed: int = 0):
    import torch
    from torch import nn

    class Clock:
        fwd_t0 = 0.0  # when the forward starts (host and device)
        t = 0.0  # when the device's last layer ends
        bwd_t0: float | None = None  # when the backward's first layer may start: the forward's end on the device

    def sleep_until(t: float) -> None:
        d = t - time.perf_counter()
        if d > 0:
            time.sleep(d)

    class SleepLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, layer, *params):
            layer.compute(layer.fwd_s)
            ctx.layer = layer
            ctx.save_for_backward(*params)
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            layer = ctx.layer
            if layer.clock.bwd_t0 is None:
                layer.clock.bwd_t0 = layer.clock.t
            layer.compute(layer.bwd_s)
            s = g.sum()
            return (g, None, *[p * s for p in ctx.saved_tensors])

    class SyntheticLayer(nn.Module):
        """One profile layer: owns its tensors (``p0``, ``p1``, ...) and runs its part of the timeline."""

        def __init__(self, numels: Sequence[int], gen: Any, clock: Any, fwd_s: float, bwd_s: float) -> None:
            super().__init__()
            self.names = [f"p{j}" for j in range(len(numels))]
            for name, n in zip(self.names, numels):
                self.register_parameter(name, nn.Parameter(torch.rand(n, generator=gen) - 0.5))
            self.clock, self.fwd_s, self.bwd_s = clock, fwd_s, bwd_s
            self.gate: Any = None  # its unit's all-gather (:func:`wait_for_gathers`); None: never waits

        def compute(self, seconds: float) -> None:
            """``seconds`` of emulated compute on the device timeline, after its parameters' gather."""
            clock = self.clock
            start = clock.t if self.gate is None or self.gate.ready <= clock.t else self.gate.ready
            clock.t = start + seconds
            sleep_until(clock.t)

        def forward(self, x):
            params = [getattr(self, n) for n in self.names]  # FSDP2 swaps in the gathered tensors
            if compute == "emulated":
                return SleepLayer.apply(x, self, *params)
            return x + 1e-6 * sum((p * p).sum() for p in params) if params else x

    class SyntheticBlock(nn.Module):
        """The layers of one profile block (what ``fully_shard`` wraps as one unit at ``unit_bytes: 0``)."""

        def __init__(self, layers: Sequence[nn.Module]) -> None:
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    class SyntheticModel(nn.Module):
        def __init__(self):
            super().__init__()
            gen = torch.Generator().manual_seed(seed)
            self.clock = Clock()
            layers, blocks = [], []
            for spec in specs:
                _name, numels, f, b = spec[:4]
                layers.append(SyntheticLayer(numels, gen, self.clock, f, b))
                blocks.append(spec[4] if len(spec) > 4 else None)
            # Without block annotations every layer is a child of ``blocks`` (one unit each). With them
            # each block's layers form one child of ``blocks`` and a layer outside every block
            # (embeddings, head) is a child of the root (``layer<i>``: the root's unit), as FSDP
            # users wrap; children are registered in forward order, so parameters() keeps the
            # profile's order (layers outside blocks between two blocks come after all blocks).
            self.order: list[nn.Module] = []  # forward order (a plain list: not registered twice)
            if all(blk is None for blk in blocks):
                self.blocks = nn.ModuleList(layers)
                self.order = list(layers)
                return
            for i, (layer, blk) in enumerate(zip(layers, blocks)):
                if blk is None:
                    self.add_module(f"layer{i}", layer)
                    self.order.append(layer)
                    continue
                if not hasattr(self, "blocks"):
                    self.blocks = nn.ModuleList()
                if i and blocks[i - 1] == blk:
                    self.order[-1].layers.append(layer)
                else:
                    self.blocks.append(SyntheticBlock([layer]))
                    self.order.append(self.blocks[-1])

        def forward(self, x):
            self.clock.fwd_t0 = self.clock.t = time.perf_counter()
            self.clock.bwd_t0 = None
            for m in self.order:
                x = m(x)
            return x

    return SyntheticModel()


class _Gate:
    """When a unit's parameters were last gathered (perf_counter seconds)."""

    ready = float("-inf")


class _GatedAllGather:
    """FSDP2's all-gather (``set_custom_all_gather``) that stamps its unit's :class:`_Gate` when it
    completes. It runs synchronously, as FSDP2's default does on gloo; an asynchronous request
    completes before it returns (FSDP2 then has no work to wait on)."""

    def __init__(self, gate: _Gate) -> None:
        self.gate = gate

    def allocate(self, size: Sequence[int], *, dtype: Any, device: Any) -> Any:
        import torch

        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor: Any, input_tensor: Any, group: Any, async_op: bool = False) -> None:
        import torch.distributed as dist

        dist.all_gather_into_tensor(output_tensor, input_tensor, group=group)
        self.gate.ready = time.perf_counter()


def wait_for_gathers(model: Any) -> int:
    """Make each emulated layer of an FSDP2-sharded synthetic ``model`` start its compute only
    once its unit's latest all-gather (forward, or backward's re-gather) has completed, as a
    GPU's compute waits on the all-gather stream; returns the number of units gated (0: not
    a sharded synthetic model). A layer belongs to its nearest ``fully_shard``-ed ancestor."""
    from torch.distributed.fsdp import FSDPModule

    gates: dict[int, _Gate] = {}
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in reversed(units):  # reversed pre-order: a unit's descendants before the unit
        layers = [m for m in unit.modules() if hasattr(m, "compute") and getattr(m, "gate", 1) is None]
        if not layers:
            continue
        state = id(unit._get_fsdp_state())  # grouped fully_shard([a, b]): one state, one gate
        if state not in gates:
            gates[state] = _Gate()
            unit.set_custom_all_gather(_GatedAllGather(gates[state]))
        for layer in layers:
            layer.gate = gates[state]
    return len(gates)


def grad_check(model: Any, x: Any, w: Any, specs: Sequence, compute: str, world: int, device: Any,
               fp16_wire: bool = False) -> dict:
    """Compare ``model``'s averaged gradients after one step of ``(model(x) * w).sum()`` (DDP's, or
    FSDP2's sharded ones gathered) with a plain all-reduce of a fresh synthetic model's local
    gradients (collective). ``fp16_wire``: a 16-bit reduction (fp16 wire, bf16 reduce), looser tolerance."""
    import torch
    import torch.distributed as dist

    ref = build_model(specs, compute).to(device)
    (ref(x) * w).sum().backward()
    max_err = 0.0
    for p, q in zip(model.parameters(), ref.parameters()):
        g = q.grad.detach().clone()
        dist.all_reduce(g)
        g /= world
        pg = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad  # FSDP2: a DTensor shard
        max_err = max(max_err, float((pg - g).abs().max()))
        ok = torch.allclose(pg, g, rtol=1e-2, atol=2e-3) if fp16_wire else torch.allclose(pg, g, rtol=1e-5, atol=1e-6)
        if not ok:
            return {"allclose": False, "max_abs_err": max_err}
    return {"allclose": True, "max_abs_err": max_err}
