"""A module mirroring a model profile's parameter tensors, with emulated compute.

Thin public wrapper over the probe's synthetic model
(:mod:`commtune.probe.ddp_step`): one module per profile layer owning tensors
of the profile's sizes (so the module's fingerprint is the profile's), forward
and backward sleeping to each layer's scheduled end (sleep releases the GIL, so
several ranks on a few cores overlap compute and communication as GPUs would).
:func:`synthetic_profile` derives the profile to mirror (tensors scaled, given
forward/backward totals spread over the layers); save it with
:func:`commtune.models.save_profile` and ``commtune search --model`` that file:
the search then sees the same tensors and the same compute timeline.
"""
from __future__ import annotations

from typing import Any

from commtune.models.base import ModelProfile
from commtune.probe.ddp_step import _build_model, _layer_specs, synthetic_profile

__all__ = ["SyntheticModel", "synthetic_profile"]


def SyntheticModel(profile: ModelProfile, compute: str = "emulated", seed: int = 0) -> Any:  # noqa: N802
    """The ``nn.Module`` for ``profile`` (``compute``: ``"emulated"`` sleeps, ``"real"`` CPU work).

    Input: a float tensor (batch, features); output: the same shape.
    """
    return _build_model(_layer_specs(profile), compute, seed)
