"""A live ``nn.Module`` as a :class:`ModelProfile`, for fingerprint checks.

No forward pass: a layer is a module that directly owns parameters (the same
rule as :mod:`commtune.models.record`), layers in ``parameters()`` order, so
:meth:`ModelProfile.ready_order` is the reversed parameter order -- the order
DDP buckets gradients in and the order a recorded profile holds for ordinary
models. The fingerprint is therefore the one ``commtune profile-model`` and the
zoo compute.
"""
from __future__ import annotations

from typing import Any

from commtune.models.base import GradTensor, Layer, ModelProfile
from commtune.models.record import ROOT_LAYER


def module_profile(module: Any, name: str | None = None) -> ModelProfile:
    """Layers and gradient tensors of ``module`` (parameters with ``requires_grad``)."""
    layers: dict[str, list[GradTensor]] = {}
    for pname, param in module.named_parameters():  # deduplicated, parameters() order
        if not param.requires_grad:
            continue
        owner = pname.rpartition(".")[0] or ROOT_LAYER
        layers.setdefault(owner, []).append(GradTensor(pname, param.numel(), tuple(param.shape)))
    return ModelProfile(
        name=name or type(module).__name__,
        layers=tuple(Layer(owner, tuple(ts)) for owner, ts in layers.items()),
        meta={"source": "module"},
    )


def module_fingerprint(module: Any) -> str:
    return module_profile(module).fingerprint()


def describe_model(name: str, num_tensors: Any, num_params: Any, fingerprint: str) -> str:
    params = f"{num_params:,}" if isinstance(num_params, int) else str(num_params)
    return f"{name!r} ({num_tensors} tensors, {params} params, {fingerprint})"
