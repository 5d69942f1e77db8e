"""Checks shared by :func:`commtune.runtime.wrap` and :func:`commtune.runtime.shard`:
the profile's model fingerprint and world size against the live job."""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist

from commtune.errors import CommtuneError
from commtune.profiles import Profile
from commtune.runtime.fingerprint import describe_model, module_profile


class CommtuneWarning(UserWarning):
    """A profile applied only in part, or to a job it was not tuned for."""


def check_model(module: torch.nn.Module, profile: Profile) -> None:
    """CommtuneError naming both models when ``module`` is not the profile's model."""
    live = module_profile(module)
    want = profile.model
    if live.fingerprint() == want.get("fingerprint"):
        return
    raise CommtuneError(
        "profile does not match the model: profile is for "
        + describe_model(str(want.get("name")), want.get("num_tensors", "?"), want.get("num_params", "?"),
                         str(want.get("fingerprint")))
        + ", the module is "
        + describe_model(live.name, live.num_tensors, live.num_params, live.fingerprint())
        + " (gradient tensor sizes in ready order differ)"
    )


def check_world_size(profile: Profile, process_group: Any | None = None, strict: bool = False) -> None:
    world = dist.get_world_size(process_group)
    c = profile.cluster
    if world == c.world_size:
        return
    msg = (f"profile was tuned for world size {c.world_size} ({c.nodes} nodes x {c.gpus_per_node} per node, "
           f"cluster {c.name!r}) but this job has {world} ranks")
    if strict:
        raise CommtuneError(msg)
    warnings.warn(msg + "; the knobs may not be the best here (strict=True makes this an error)",
                  CommtuneWarning, stacklevel=3)
