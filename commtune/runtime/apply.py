"""Apply tuned knobs to PyTorch DDP: bucket sizes, K streams, wire precision.

What maps onto DDP:

* ``fusion_threshold_bytes`` -> the bucket cap (``bucket_cap_mb`` = bytes/2**20);
* ``first_bucket_bytes`` -> the first (earliest-ready) bucket's cap. DDP reads
  the private ``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES`` at
  construction; we set it around construction and restore it. Since torch 2.6
  or so DDP only uses that value when ``bucket_cap_mb`` is *not* given (else the
  first bucket gets the full cap), so where DDP takes ``bucket_cap_mb_list`` we
  pass ``[first, cap]`` (per-bucket caps: first bucket, then every other), which
  holds for the initial buckets and the rebuild after the first step;
* ``num_streams`` K and ``wire_precision`` -> :mod:`commtune.runtime.hooks`
  (K process groups, split or round-robin; fp16 compression). K = 1 with fp32
  keeps DDP's built-in all-reduce (no Python hook).

What does not: the dynamic fusion policy (Horovod's cycle-based fusion), its
cycle time and negotiation, hierarchical all-reduce. :func:`wrap` warns and
lists them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from commtune.errors import CommtuneError
from commtune.knobs import KNOBS, Knobs
from commtune.profiles import Profile
from commtune.profiles import load_profile as _load_profile
from commtune.runtime.fingerprint import describe_model, module_profile
from commtune.units import format_size
from commtune.runtime.hooks import MultiStreamState, multistream_hook, stream_groups

MiB = 2**20


class CommtuneWarning(UserWarning):
    """A profile applied only in part, or to a job it was not tuned for."""


@dataclass(frozen=True)
class DDPPlan:
    """How one knob configuration maps onto DDP."""

    bucket_cap_bytes: int
    first_bucket_bytes: int
    num_streams: int
    wire_precision: str
    stream_mode: str
    not_applied: tuple[str, ...] = field(default=())

    @property
    def needs_hook(self) -> bool:
        return self.num_streams > 1 or self.wire_precision != "fp32"

    def describe(self) -> str:
        s = (f"bucket {format_size(self.bucket_cap_bytes)}, first bucket {format_size(self.first_bucket_bytes)}, "
             f"{self.num_streams} stream{'s' if self.num_streams > 1 else ''}")
        if self.num_streams > 1:
            s += f" ({self.stream_mode})"
        return s + f", wire {self.wire_precision}"


def plan_for(knobs: Knobs, stream_mode: str | None = None) -> DDPPlan:
    """The DDP settings for ``knobs`` (``stream_mode``, when given, overrides
    ``knobs.stream_mode``) and the knobs DDP cannot apply."""
    if stream_mode is not None:
        knobs = dataclasses.replace(knobs, stream_mode=stream_mode)  # the registry checks the value
    not_applied = []
    if knobs.fusion_policy != "static":
        not_applied.append(f"fusion_policy={knobs.fusion_policy} (DDP buckets statically; "
                           f"fusion_threshold_bytes used as the bucket cap)")
        for name in ("cycle_time_ms", "negotiation"):
            not_applied.append(f"{name}={KNOBS[name].show(getattr(knobs, name))}")
    if knobs.hierarchical:
        not_applied.append("hierarchical=True (DDP has no hierarchical all-reduce)")
    return DDPPlan(
        bucket_cap_bytes=int(knobs.fusion_threshold_bytes),
        first_bucket_bytes=int(knobs.first_bucket_bytes),
        num_streams=int(knobs.num_streams),
        wire_precision=knobs.wire_precision,
        stream_mode=knobs.stream_mode,
        not_applied=tuple(not_applied),
    )


def load_profile(path: str | os.PathLike) -> tuple[Knobs, Profile]:
    """Read and validate a profile file; ``(knobs, profile)``. Bad files: one-line CommtuneError."""
    profile = _load_profile(path)
    return profile.knobs, profile


@contextlib.contextmanager
def first_bucket_bytes(nbytes: int) -> Iterator[None]:
    """Set DDP's (private) first-bucket cap for the block, then restore it."""
    has = hasattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES")
    old = getattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES", None)
    dist._DEFAULT_FIRST_BUCKET_BYTES = int(nbytes)
    try:
        yield
    finally:
        if has:
            dist._DEFAULT_FIRST_BUCKET_BYTES = old
        else:
            del dist._DEFAULT_FIRST_BUCKET_BYTES


_DDP_PARAMS = set(inspect.signature(DistributedDataParallel.__init__).parameters)


def build_ddp(module: torch.nn.Module, plan: DDPPlan, process_group: Any | None = None,
              hook_options: dict[str, Any] | None = None, **ddp_kwargs: Any) -> DistributedDataParallel:
    """``DistributedDataParallel(module)`` with ``plan`` applied (collective on all ranks).

    The hook state (None without a hook) is kept as ``ddp.commtune_hook_state``
    and the plan as ``ddp.commtune_plan``.
    """
    if not dist.is_initialized():
        raise CommtuneError("torch.distributed is not initialized: call dist.init_process_group first")
    for key in ("bucket_cap_mb", "bucket_cap_mb_list"):
        if key in ddp_kwargs:
            raise CommtuneError(f"{key} comes from the profile (fusion_threshold_bytes / first_bucket_bytes); "
                                f"do not pass it to wrap()")
    cap_mb = plan.bucket_cap_bytes / MiB
    kwargs = dict(ddp_kwargs)
    if "bucket_cap_mb_list" in _DDP_PARAMS and plan.first_bucket_bytes != plan.bucket_cap_bytes:
        kwargs["bucket_cap_mb_list"] = [plan.first_bucket_bytes / MiB, cap_mb]
    else:
        kwargs["bucket_cap_mb"] = cap_mb
    with first_bucket_bytes(plan.first_bucket_bytes):
        ddp = DistributedDataParallel(module, process_group=process_group, **kwargs)
    state = None
    if plan.needs_hook:
        groups = stream_groups(plan.num_streams, process_group)
        state = MultiStreamState(groups, plan.stream_mode, plan.wire_precision, **(hook_options or {}))
        ddp.register_comm_hook(state, multistream_hook)
    ddp.commtune_plan = plan
    ddp.commtune_hook_state = state
    return ddp


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


def wrap(model: torch.nn.Module, profile: Profile | Knobs | str | os.PathLike, process_group: Any | None = None,
         *, stream_mode: str | None = None, strict: bool = False, check_fingerprint: bool = True,
         hook_options: dict[str, Any] | None = None, **ddp_kwargs: Any) -> DistributedDataParallel:
    """``DistributedDataParallel(model)`` with a tuned profile applied.

    ``profile``: a :class:`Profile`, a path to a profile file, or bare
    :class:`Knobs` (no model/world checks). ``stream_mode``: ``"split"`` or
    ``"round_robin"`` overrides the knobs' ``stream_mode``. Model fingerprint mismatch: CommtuneError. World size mismatch:
    :class:`CommtuneWarning` (CommtuneError with ``strict=True``). Knobs DDP
    cannot apply: a warning listing them. Extra keyword arguments go to DDP.
    """
    if isinstance(profile, (str, os.PathLike)):
        profile = _load_profile(profile)
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
    plan = plan_for(knobs, stream_mode)
    if plan.not_applied:
        warnings.warn("DDP cannot apply part of this profile; not applied: " + "; ".join(plan.not_applied),
                      CommtuneWarning, stacklevel=2)
    return build_ddp(model, plan, process_group, hook_options=hook_options, **ddp_kwargs)
