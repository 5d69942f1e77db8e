"""Apply a sharded profile to a PyTorch model with FSDP2 (``fully_shard``).

:func:`shard` is :func:`commtune.runtime.wrap`'s counterpart for the sharded
knobs (``sharding`` grad / full / hybrid): it groups the model's layers into
units as the simulator does (:func:`commtune.models.units.group_units` on the
live module), calls ``fully_shard`` once per unit bottom-up and once on the
root, and sets

- ``reshard_after_forward`` on every unit but the root (``grad`` sharding:
  ``False``, parameters are gathered once per step as FSDP's SHARD_GRAD_OP /
  ZeRO-2 keep them); the root keeps FSDP2's default, gathered from the forward
  into the backward that needs it first, as the simulator's root unit;
- the forward and backward prefetch lists (``set_modules_to_forward_prefetch``
  and ``set_modules_to_backward_prefetch``, ``forward_prefetch`` /
  ``backward_prefetch`` units ahead; a backward prefetch of 0 lists the unit
  itself, since an empty list is FSDP2's implicit prefetch of one unit);
- the reduce dtype (``MixedPrecisionPolicy(reduce_dtype=...)``);
- for ``hybrid``, a 2-D device mesh ``(replicas, shard group)`` (HSDP).

Blocks (the units of ``unit_bytes: 0``) are the children of the model's
outermost ``nn.ModuleList`` s (``model.layers`` of a decoder), or the modules
the caller passes as ``blocks``. The all-reduce knobs (buckets, streams,
wire precision) do not apply under sharding (they are inactive there), so
every active knob has an FSDP2 setting.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from commtune.errors import CommtuneError
from commtune.knobs import SHARDED, Knobs
from commtune.models.base import ModelProfile
from commtune.models.record import ROOT_LAYER
from commtune.models.units import ROOT_UNIT, group_units
from commtune.profiles import Profile, load_profile
from commtune.runtime.checks import check_model, check_world_size
from commtune.runtime.fingerprint import module_profile
from commtune.sharding_checks import prefetch_limit

_REDUCE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """What :func:`shard` applies: the units (owner module names per unit, forward order) and the settings."""

    units: tuple[tuple[str, ...], ...]
    reshard_after_forward: bool | int
    forward_prefetch: int
    backward_prefetch: int
    reduce_dtype: torch.dtype
    mesh_shape: tuple[int, ...]  # (world,) or (replicas, shard group)
    root: int | None = None  # the unit of the layers outside every block: the root call's (kept after forward)


def block_modules(model: nn.Module) -> list[str]:
    """Names of the blocks FSDP users wrap: children of the outermost ``nn.ModuleList`` s."""
    lists = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    outer = [n for n in lists if not any(n != o and n.startswith(o + ".") for o in lists)]
    return [f"{n}.{child}" if n else child for n in outer for child, _ in model.get_submodule(n).named_children()]


def annotated_profile(model: nn.Module, blocks: Iterable[str]) -> ModelProfile:
    """:func:`module_profile` of ``model`` with each layer's :attr:`Layer.block` set from ``blocks``."""
    prof = module_profile(model)
    names = sorted(blocks, key=len, reverse=True)

    def block_of(owner: str) -> str | None:
        return next((b for b in names if owner == b or owner.startswith(b + ".")), None)

    layers = tuple(dataclasses.replace(layer, block=block_of(layer.name)) for layer in prof.layers)
    return dataclasses.replace(prof, layers=layers)


def plan_shard(model: nn.Module, knobs: Knobs, world_size: int, gpus_per_node: int | None = None,
               blocks: Iterable[nn.Module] | None = None, cap_prefetch: bool = False) -> ShardPlan:
    """The units and FSDP2 settings ``knobs`` give for ``model`` on ``world_size`` ranks (torch-light, no collective).

    ``cap_prefetch``: prefetch beyond the units there are is capped to them (a live trial of a
    searched configuration: FSDP2's prefetch lists are the same) instead of refused."""
    if knobs.sharding not in SHARDED:
        raise CommtuneError(f"sharding {knobs.sharding!r}: shard() applies {', '.join(SHARDED)}; "
                            f"use commtune.runtime.wrap for all-reduce data parallelism (sharding none)")
    if blocks is None:
        block_names = block_modules(model)
    else:
        ids = {id(m): n for n, m in model.named_modules()}
        block_names = []
        for m in blocks:
            if id(m) not in ids:
                raise CommtuneError(f"blocks: a {type(m).__name__} given as a block is not a submodule of the model")
            block_names.append(ids[id(m)])
    prof = annotated_profile(model, block_names)
    units = group_units(prof, knobs.unit_bytes)
    if knobs.sharding == "grad":
        reshard: bool | int = False
    else:
        reshard = knobs.reshard_after_forward
    if knobs.sharding == "hybrid":
        group = knobs.shard_group_size or gpus_per_node or world_size
        if world_size % group:
            raise CommtuneError(f"shard_group_size {group} does not divide the world size {world_size}; "
                                f"give a divisor of {world_size}")
        mesh_shape: tuple[int, ...] = (world_size // group, group)
    else:
        mesh_shape = (world_size,)
        group = world_size
    if not isinstance(reshard, bool) and group % reshard:
        raise CommtuneError(f"reshard_after_forward {reshard} does not divide the shard group of {group} ranks; "
                            f"give true, false or a divisor of {group}")
    most = prefetch_limit(len(units))
    prefetch = {"forward_prefetch": knobs.forward_prefetch, "backward_prefetch": knobs.backward_prefetch}
    for name, value in prefetch.items():
        if value > most and cap_prefetch:
            prefetch[name] = most
        elif value > most:
            raise CommtuneError(f"{name} {value}: this model has {len(units)} units under unit_bytes "
                                f"{knobs.unit_bytes}, so at most {most} can be ahead; give 0 to {most}")
    return ShardPlan(
        units=tuple(tuple(prof.layers[i].name for i in u.layers) for u in units),
        reshard_after_forward=reshard, forward_prefetch=prefetch["forward_prefetch"],
        backward_prefetch=prefetch["backward_prefetch"], reduce_dtype=_REDUCE_DTYPES[knobs.reduce_precision],
        mesh_shape=mesh_shape, root=next((u for u, unit in enumerate(units) if unit.name == ROOT_UNIT), None),
    )


def _depth(name: str) -> int:
    return 0 if name == ROOT_LAYER else name.count(".") + 1


def apply_plan(model: nn.Module, plan: ShardPlan, mesh: Any | None = None) -> nn.Module:
    """``fully_shard`` ``model`` as ``plan`` says (collective on all ranks); returns the root module."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if mesh is None:
        from torch.distributed.device_mesh import init_device_mesh

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        names = ("replicate", "shard") if len(plan.mesh_shape) == 2 else ("shard",)
        mesh = init_device_mesh(device, plan.mesh_shape, mesh_dim_names=names)
    options = {"mesh": mesh, "reshard_after_forward": plan.reshard_after_forward,
               "mp_policy": MixedPrecisionPolicy(reduce_dtype=plan.reduce_dtype)}
    assigned: set[int] = set()
    handles: list[nn.Module | None] = [None] * len(plan.units)
    # bottom-up: deeper units first, so a unit never takes a descendant's parameters
    order = sorted(range(len(plan.units)), key=lambda u: -max(_depth(n) for n in plan.units[u]))
    for u in order:
        owners = [n for n in plan.units[u] if n != ROOT_LAYER]
        if u == plan.root or len(owners) < len(plan.units[u]):
            continue  # the root's unit, or parameters directly on the root: the root call below takes them
        modules = [model.get_submodule(n) for n in owners]
        own = {id(p) for n in owners for p in model.get_submodule(n).parameters(recurse=False) if p.requires_grad}
        taken = {id(p) for m in modules for p in m.parameters() if p.requires_grad} - assigned
        if taken != own:
            raise CommtuneError(f"unit {u} ({', '.join(owners[:3])}{', ...' if len(owners) > 3 else ''}) cannot be "
                                f"applied: fully_shard would also take parameters of submodules in other units; "
                                f"use unit_bytes 0 (one unit per block) or a larger unit_bytes")
        assigned |= taken
        fully_shard(modules if len(modules) > 1 else modules[0], **options)
        handles[u] = modules[0]
    # the root as FSDP2 shards it by default (reshard_after_forward None): kept gathered from the
    # forward into the backward, which needs it first (the simulator's root unit)
    fully_shard(model, **{**options, "reshard_after_forward": None})
    handles = [model if h is None else h for h in handles]
    for u, h in enumerate(handles):
        ahead = [m for m in handles[u + 1:u + 1 + plan.forward_prefetch] if m is not h]
        behind = [m for m in reversed(handles[max(0, u - plan.backward_prefetch):u]) if m is not h]
        h.set_modules_to_forward_prefetch(ahead)
        if plan.reshard_after_forward is not False:
            # an empty list is FSDP2's implicit prefetch of the previous unit; a unit listing only
            # itself prefetches nothing (it is gathered already when its backward starts)
            h.set_modules_to_backward_prefetch(behind or [h])
    model.commtune_shard_plan = plan
    return model


def shard(model: nn.Module, profile: Profile | Knobs | str | os.PathLike, *, mesh: Any | None = None,
          blocks: Iterable[nn.Module] | None = None, strict: bool = False,
          check_fingerprint: bool = True) -> nn.Module:
    """``model`` sharded with FSDP2 as the profile's sharded knobs say (collective on all ranks).

    ``profile``: a :class:`Profile`, a path to one, or bare :class:`Knobs`
    (no model or world checks). ``mesh``: a device mesh to use instead of
    the one built from the knobs. ``blocks``: the modules that
    ``unit_bytes: 0`` makes one unit each (default: children of the outermost
    ``nn.ModuleList`` s). Model fingerprint mismatch: CommtuneError; world size
    mismatch: :class:`CommtuneWarning` (CommtuneError with ``strict=True``).
    """
    if isinstance(profile, (str, os.PathLike)):
        profile = load_profile(profile)
    if not dist.is_initialized():
        raise CommtuneError("torch.distributed is not initialized: call dist.init_process_group first")
    gpus_per_node = None
    if isinstance(profile, Profile):
        knobs = profile.knobs
        if check_fingerprint:
            check_model(model, profile)
        check_world_size(profile, None, strict)
        gpus_per_node = profile.cluster.gpus_per_node
    elif isinstance(profile, Knobs):
        knobs = profile
        gpus_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or None
    else:
        raise CommtuneError(f"shard() needs a Profile, a profile path or Knobs, got {type(profile).__name__}")
    plan = plan_shard(model, knobs, dist.get_world_size(), gpus_per_node, blocks)
    return apply_plan(model, plan, mesh)


__all__ = ["ShardPlan", "annotated_profile", "apply_plan", "block_modules", "plan_shard", "shard"]
