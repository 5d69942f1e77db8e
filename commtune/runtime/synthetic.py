"""A module mirroring a model profile's parameter tensors, with emulated compute.

For DDP experiments on a CPU-only machine: the parameters have the profile's
sizes in the profile's order (so the module's fingerprint is the profile's),
forward sleeps each layer's forward time, and backward is a custom autograd
function per layer that sleeps that layer's backward time and then produces
the layer's gradients -- so gradients become ready in the real order at the
real pace, and DDP's all-reduce overlaps with "compute" (sleep releases the
GIL, so several ranks on a few cores are not CPU-bound).

:func:`synthetic_profile` derives the profile to mirror (optionally scaled
down, with given forward/backward totals spread over layers by size); save it
with :func:`commtune.models.save_profile` and ``commtune search --model`` that
file: the search sees the same tensors and the same compute times.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from commtune.errors import CommtuneError
from commtune.models.base import GradTensor, Layer, ModelProfile


def synthetic_profile(model: ModelProfile, *, scale: float = 1.0, forward_s: float | None = None,
                      backward_s: float | None = None, batch_size: int = 32, name: str | None = None) -> ModelProfile:
    """``model`` with tensor sizes times ``scale`` and measured-style layer times.

    Without ``forward_s``/``backward_s`` the model must carry layer times. With
    them, each total is spread over the layers in proportion to their
    parameter counts (parameter-free layers get none).
    """
    if not scale > 0:
        raise CommtuneError(f"scale must be positive, got {scale!r}")
    if (forward_s is None or backward_s is None) and not model.has_measured_times:
        raise CommtuneError(f"{model.name} has no measured layer times; give forward_s and backward_s")
    layers = []
    sizes = [sum(t.numel for t in layer.tensors) for layer in model.layers]
    total = sum(sizes) or 1
    for layer, size in zip(model.layers, sizes):
        tensors = tuple(GradTensor(t.name, max(1, round(t.numel * scale))) for t in layer.tensors)
        fwd = forward_s * size / total if forward_s is not None else (layer.fwd_time_s or 0.0)
        bwd = backward_s * size / total if backward_s is not None else (layer.bwd_time_s or 0.0)
        layers.append(Layer(layer.name, tensors, fwd_time_s=fwd, bwd_time_s=bwd))
    suffix = "" if scale == 1 else f"-x{scale:g}"
    return ModelProfile(name=name or f"{model.name}-synthetic{suffix}", layers=tuple(layers),
                        input_desc="synthetic (emulated compute)", measured_batch_size=batch_size,
                        measured_device="emulated", meta={"source": "synthetic", "base_model": model.name,
                                                          "scale": scale})


class _SleepLayer(torch.autograd.Function):
    """Forward: identity on the activation. Backward: sleep, then every parameter's gradient."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, bwd_s: float, *params: torch.Tensor) -> torch.Tensor:
        ctx.bwd_s = bwd_s
        ctx.save_for_backward(*params)
        return h.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        if ctx.bwd_s > 0:
            time.sleep(ctx.bwd_s)
        params = ctx.saved_tensors
        # Depends on the data (g) and each parameter, cheaply: d/dp of mean(g) * sum(p * p) / 2.
        scale = g.mean() / max(1, len(params))
        return (g, None, *[p * scale for p in params])


class _Owner(torch.nn.Module):
    def __init__(self, tensors: tuple[GradTensor, ...], fwd_s: float, bwd_s: float, gen: torch.Generator):
        super().__init__()
        self.fwd_s, self.bwd_s = fwd_s, bwd_s
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(t.numel, generator=gen) * 0.01) for t in tensors)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.fwd_s > 0:
            time.sleep(self.fwd_s)
        return _SleepLayer.apply(h, self.bwd_s, *self.weights)


class SyntheticModel(torch.nn.Module):
    """Parameters mirroring ``profile`` (same fingerprint), compute emulated by sleeping.

    Input: any float tensor (batch, features); output: same shape. Layers
    without parameters add their times to the next layer that has some.
    ``time_scale`` multiplies every sleep.
    """

    def __init__(self, profile: ModelProfile, time_scale: float = 1.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        owners = []
        carry_f = carry_b = 0.0
        for layer in profile.layers:
            carry_f += (layer.fwd_time_s or 0.0) * time_scale
            carry_b += (layer.bwd_time_s or 0.0) * time_scale
            if layer.tensors:
                owners.append(_Owner(layer.tensors, carry_f, carry_b, gen))
                carry_f = carry_b = 0.0
        if not owners:
            raise CommtuneError(f"{profile.name} has no parameter tensors to mirror")
        owners[-1].fwd_s += carry_f
        owners[-1].bwd_s += carry_b
        self.layers = torch.nn.ModuleList(owners)
        self.profile_name = profile.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer(h)
        return h
