"""Model descriptions: the built-in zoo, profile files and recording from torch.

``load_model(spec)`` is the one entry point the rest of commtune uses: ``spec``
is a zoo name (see :func:`model_names`) or a path to a profile file.

Layer: just above the foundation modules, below ``simulators`` (whose workload is
built from a :class:`ModelProfile`); nothing here imports the simulator. Fitting DDP's
per-bucket costs of a recorded module is a calibration: :mod:`commtune.probe.ddp_costs`.
Layers: ``tests/test_architecture.py``.
"""
from __future__ import annotations

from pathlib import Path

from commtune.errors import CommtuneError, did_you_mean
from commtune.models import profile_file
from commtune.models.base import GradTensor, Layer, ModelProfile
from commtune.models.zoo import ZOO, ZooEntry, find_entry, model_names

__all__ = ["GradTensor", "Layer", "ModelProfile", "ZOO", "ZooEntry", "load_model",
           "model_names", "save_profile", "load_profile"]

load_profile = profile_file.load
save_profile = profile_file.save


def load_model(spec: str, input_size: int | None = None) -> ModelProfile:
    """A zoo model by name (case-insensitive, aliases allowed) or a profile file.

    ``input_size`` (image side or sequence length) applies to zoo models only;
    ``None`` means the model's default.
    """
    entry = find_entry(spec)
    if entry is not None:
        return entry.build(input_size)
    if Path(spec).exists() or profile_file.is_profile_path(spec):
        if input_size is not None:
            raise CommtuneError(f"input size {input_size} applies to built-in models only; "
                                f"{spec} is a profile file with its own sizes")
        return profile_file.load(spec)
    raise CommtuneError(f"unknown model {spec!r}{did_you_mean(spec.lower(), model_names())}; "
                        f"choose one of: {', '.join(model_names())} "
                        f"or give a .yaml/.json profile file")
