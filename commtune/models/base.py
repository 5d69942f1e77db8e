"""Value types describing a model to the simulator.

A :class:`ModelProfile` lists layers in forward order. Each layer carries its
per-sample forward/backward FLOPs (for the input size it was built for) and the
parameter tensors it owns, in the order ``module.parameters()`` yields them.
Backward visits layers in reverse, so gradients become ready in
:meth:`ModelProfile.ready_order`. Measured profiles may carry per-layer times
instead of (or beside) FLOPs; times win where present.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GradTensor:
    """One parameter (and so one gradient) tensor.

    ``shape`` is optional extra detail (zoo models and recorded profiles carry
    it); it is left out of equality and hashing so ``numel`` stays the identity.
    """

    name: str
    numel: int
    shape: tuple[int, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Layer:
    """One unit of compute; may own zero or more parameter tensors.

    ``fwd_flops``/``bwd_flops`` are per sample. ``fwd_time_s``/``bwd_time_s``
    are measured for the profile's ``measured_batch_size`` and override the
    FLOP estimate when set. ``block`` names the module this layer belongs to
    that sharded data parallelism wraps as one unit (one transformer block, one
    ResNet bottleneck); ``None`` for layers outside every block (embeddings,
    heads), which FSDP2's root unit holds.

    ``act_bytes`` is the activation memory this layer (with the parameter-free
    ops folded into it) saves for backward, per sample, in bytes of a 16-bit
    (mixed-precision) step; ``input_bytes`` is the size of the activation
    entering the layer, per sample, in the same units: what activation
    checkpointing keeps of a block is its first layer's ``input_bytes``. Both are
    0 where unknown and take no part in equality or fingerprints.

    ``matmul`` is ``(tokens, in_features, out_features)`` per sample of the one
    matrix multiply among the layer's FLOPs (``2·tokens·in·out`` of
    ``fwd_flops``, twice that of ``bwd_flops``), where the builder declares it;
    the workload then times that part by its shape
    (:func:`simulators.workload.matmul_time_factors`). ``None`` (every layer of
    the built-in zoo): all FLOPs at one rate. Not part of equality.
    """

    name: str
    tensors: tuple[GradTensor, ...] = ()
    fwd_flops: float = 0.0
    bwd_flops: float = 0.0
    fwd_time_s: float | None = None
    bwd_time_s: float | None = None
    block: str | None = None
    act_bytes: int = field(default=0, compare=False)
    input_bytes: int = field(default=0, compare=False)
    matmul: tuple[int, int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ModelProfile:
    """A model as the simulator sees it: layers, gradient tensors, compute."""

    name: str
    layers: tuple[Layer, ...]
    input_desc: str = ""
    measured_batch_size: int | None = None
    measured_device: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def tensors(self) -> list[GradTensor]:
        """Parameter tensors in forward (``module.parameters()``) order."""
        return [t for layer in self.layers for t in layer.tensors]

    def ready_order(self) -> list[GradTensor]:
        """Gradient tensors in the order backward produces them."""
        return [t for layer in reversed(self.layers) for t in reversed(layer.tensors)]

    @property
    def num_tensors(self) -> int:
        return sum(len(layer.tensors) for layer in self.layers)

    @property
    def num_params(self) -> int:
        return sum(t.numel for layer in self.layers for t in layer.tensors)

    def grad_bytes(self, bytes_per_element: int = 4) -> int:
        return self.num_params * bytes_per_element

    @property
    def has_measured_times(self) -> bool:
        return any(layer.bwd_time_s is not None for layer in self.layers)

    def fingerprint(self) -> str:
        """Short hash of the gradient sizes in ready order (names ignored)."""
        text = ",".join(str(t.numel) for t in self.ready_order())
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
