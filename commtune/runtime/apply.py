"""Apply tuned knobs to PyTorch DDP: bucket sizes, K streams, wire precision.

How knobs map onto DDP, and which it cannot apply, is
:mod:`commtune.runtime.ddp_plan`; this module builds the DDP from a plan and
checks that a profile fits the job. :func:`wrap` warns and lists what it
cannot apply.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from commtune.errors import CommtuneError
from commtune.knobs import Knobs
from commtune.profiles import Profile, load_profile
from commtune.runtime.ddp_plan import DDPPlan, construct_ddp, plan_for
from commtune.runtime.checks import CommtuneWarning, check_model, check_world_size
from commtune.runtime.hooks import MultiStreamState, multistream_hook, stream_groups


def build_ddp(module: torch.nn.Module, plan: DDPPlan, process_group: Any | None = None,
              hook_options: dict[str, Any] | None = None, always_hook: bool = False,
              **ddp_kwargs: Any) -> DistributedDataParallel:
    """``DistributedDataParallel(module)`` with ``plan`` applied (collective on all ranks).

    ``always_hook``: reduce through commtune's hook even where DDP's built-in
    all-reduce would do (one fp32 stream; the live probe's per-bucket timings).

    The hook state (None without a hook) is kept as ``ddp.commtune_hook_state``
    and the plan as ``ddp.commtune_plan``.
    """
    if not dist.is_initialized():
        raise CommtuneError("torch.distributed is not initialized: call dist.init_process_group first")
    for key in ("bucket_cap_mb", "bucket_cap_mb_list"):
        if key in ddp_kwargs:
            raise CommtuneError(f"{key} comes from the profile (fusion_threshold_bytes / first_bucket_bytes); "
                                f"do not pass it to wrap()")
    ddp = construct_ddp(module, plan, process_group, **ddp_kwargs)
    state = None
    if plan.needs_hook or always_hook:
        groups = stream_groups(plan.num_streams, process_group)
        state = MultiStreamState(groups, plan.stream_mode, plan.wire_precision, **(hook_options or {}))
        ddp.register_comm_hook(state, multistream_hook)
    ddp.commtune_plan = plan
    ddp.commtune_hook_state = state
    return ddp


def wrap(model: torch.nn.Module, profile: Profile | Knobs | str | os.PathLike, process_group: Any | None = None,
         *, stream_mode: str | None = None, strict: bool = False, check_fingerprint: bool = True,
         hook_options: dict[str, Any] | None = None, **ddp_kwargs: Any) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` with a tuned profile applied; a sharded
    profile (``sharding`` grad / full / hybrid) goes to :func:`commtune.runtime.shard.shard` (FSDP2).

    ``profile``: a :class:`Profile`, a path to a profile file, or bare
    :class:`Knobs` (no model/world checks). ``stream_mode``: ``"split"`` or
    ``"round_robin"`` overrides the knobs' ``stream_mode``. Model fingerprint mismatch: CommtuneError. World size mismatch:
    :class:`CommtuneWarning` (CommtuneError with ``strict=True``). Knobs DDP
    cannot apply: a warning listing them. Extra keyword arguments go to DDP.
    """
    if isinstance(profile, (str, os.PathLike)):
        profile = load_profile(profile)
    if isinstance(profile, Profile):
        knobs = profile.knobs
        if check_fingerprint:
            check_model(model, profile)
        if not dist.is_initialized():
            raise CommtuneError("torch.distributed is not initialized: call dist.init_process_group first")
        check_world_size(profile, process_group, strict)
    elif isinstance(profile, Knobs):
        knobs = profile
    else:
        raise CommtuneError(f"wrap() needs a Profile, a profile path or Knobs, got {type(profile).__name__}")
    if knobs.sharding != "none":  # sharded data parallelism: FSDP2, not DDP
        from commtune.runtime.shard import shard

        if stream_mode is not None or hook_options or ddp_kwargs:
            raise CommtuneError("stream_mode, hook_options and DDP keyword arguments apply to all-reduce data "
                                f"parallelism; this profile's sharding is {knobs.sharding}")
        return shard(model, profile, strict=strict, check_fingerprint=check_fingerprint)
    plan = plan_for(knobs, stream_mode)
    if plan.not_applied:
        warnings.warn("DDP cannot apply part of this profile; not applied: " + "; ".join(plan.not_applied),
                      CommtuneWarning, stacklevel=2)
    return build_ddp(model, plan, process_group, hook_options=hook_options, **ddp_kwargs)
