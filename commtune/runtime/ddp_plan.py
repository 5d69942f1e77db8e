"""How knobs map onto PyTorch DDP: the one place that says it.

* ``fusion_threshold_bytes`` -> the bucket cap (``bucket_cap_mb`` = bytes/2**20);
* ``first_bucket_bytes`` -> the first (earliest-ready) bucket's cap. DDP reads
  the private ``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES`` at
  construction (:func:`first_bucket_bytes` sets it around construction and
  restores it). Since torch 2.6 or so DDP only uses that value when
  ``bucket_cap_mb`` is *not* given (else the first bucket gets the full cap),
  so where DDP takes ``bucket_cap_mb_list`` we pass ``[first, cap]`` (the C++
  reducer repeats the last limit), which holds for the initial buckets and the
  rebuild after the first step (:func:`bucket_kwargs`). Both are private/new
  API: check on upgrades (the probe's per-bucket timings show the sizes DDP used);
* ``num_streams`` K, ``stream_mode`` (split / round robin) and
  ``wire_precision`` -> the comm hook of :mod:`commtune.runtime.hooks` (K
  process groups, fp16 compression);
* not applied: the dynamic fusion policy (Horovod's cycle-based fusion), its
  cycle time and negotiation, hierarchical all-reduce (:data:`FIXED`: the
  values DDP behaves as).

The runtime (:func:`commtune.runtime.wrap`), the live evaluator, the AutoTuner
and the DDP exporter ask this module; it imports torch only inside the
functions that construct DDP. A live trial whose ``sharding`` is not ``none``
runs FSDP2 instead (:func:`commtune.runtime.shard`, which applies every
sharded knob): :data:`LIVE_APPLIES`, :func:`live_key`, :func:`live_applicable`
and :func:`check_space` say what a live trial of either kind applies.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, KNOBS, SHARDED, SHARDING_KNOBS, Knobs
from commtune.units import MiB, format_size

STREAM_MODES = KNOBS["stream_mode"].choices
#: knobs DDP applies
APPLIES: tuple[str, ...] = ("fusion_threshold_bytes", "first_bucket_bytes", "num_streams", "stream_mode",
                            "wire_precision")
#: knobs DDP cannot vary, with the value it behaves as
FIXED: dict[str, Any] = {"fusion_policy": "static", "hierarchical": False}
#: knobs a live trial applies: DDP's (``sharding: none``) and the sharded ones FSDP2 applies
LIVE_APPLIES: tuple[str, ...] = (*APPLIES, *SHARDING_KNOBS)


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
    if knobs.fusion_policy != FIXED["fusion_policy"]:
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


def runtime_only(knobs: Knobs) -> list[str]:
    """What plain ``DistributedDataParallel(...)`` cannot apply but
    :func:`commtune.runtime.wrap` does, one line each (empty: plain DDP applies
    every knob it can)."""
    if knobs.num_streams <= 1:
        return []
    how = "each bucket split over them" if knobs.stream_mode == "split" else "bucket b on stream b mod K"
    return [f"num_streams={knobs.num_streams} ({how}): plain DDP sends each bucket on one stream; only "
            f"commtune.runtime.wrap applies it (one process group per stream, through a comm hook)"]


def applicable(knobs: Knobs) -> bool:
    """Can DDP apply ``knobs`` exactly (static fusion, flat all-reduce)?"""
    return all(getattr(knobs, k) == v for k, v in FIXED.items())


def ddp_key(knobs: Knobs) -> Knobs:
    """What a DDP run depends on: the applied knobs, every other knob at DDP's default."""
    return Knobs.from_dict({n: getattr(knobs, n) for n in APPLIES}, base=DDP_DEFAULT)


def live_applicable(knobs: Knobs) -> bool:
    """Can a live trial apply ``knobs``: DDP exactly (:func:`applicable`), or FSDP2 (any sharded configuration)?"""
    return knobs.sharding in SHARDED or applicable(knobs)


def live_key(knobs: Knobs) -> Knobs:
    """What a live trial depends on: :func:`ddp_key` under ``sharding: none``; else the
    active sharded knobs, every other knob at DDP's default (the all-reduce knobs do not
    apply under sharding)."""
    if knobs.sharding not in SHARDED:
        return ddp_key(knobs)
    return Knobs.from_dict({n: v for n, v in knobs.active().items() if n in SHARDING_KNOBS}, base=DDP_DEFAULT)


def _space_values(space, name: str) -> list[Any]:
    p = next((p for p in space.params if p.name == name), None)
    if p is None:
        return [getattr(space.base, name)]
    return list(p.choices) if p.kind == "choice" else [None]  # None: a range (not a choice knob)


def check_space(space, what: str = "a live trial") -> None:
    """One-line CommtuneError if the search space varies (or fixes) knobs a live trial cannot apply.

    Configurations with ``sharding: none`` run DDP (static buckets, flat all-reduce);
    sharded ones run FSDP2, which applies every sharded knob. A space may vary the
    DDP knobs and the sharded ones; it must fix DDP's :data:`FIXED` values unless it
    never yields ``sharding: none``."""
    varied = [p.name for p in space.params
              if p.name not in LIVE_APPLIES
              and not (p.name in FIXED and p.kind == "choice" and list(p.choices) == [FIXED[p.name]])]
    if varied:
        raise CommtuneError(f"{what} measures PyTorch DDP or FSDP2, which cannot apply {', '.join(varied)} "
                            f"(space {space.name!r} varies them); use --space ddp or fsdp, or fix them in the space")
    if all(v in SHARDED for v in _space_values(space, "sharding")):
        return  # FSDP2 only: the all-reduce knobs do not apply
    bad = [f"{k}={getattr(space.base, k)}" for k, v in FIXED.items()
           if k not in space.param_names and getattr(space.base, k) != v]
    if bad:
        raise CommtuneError(f"{what} measures PyTorch DDP (static buckets, flat all-reduce) where sharding is none; "
                            f"space {space.name!r} fixes {', '.join(bad)}; use --space ddp")


def bucket_kwargs(first_bucket_bytes: int, bucket_cap_bytes: int) -> dict[str, Any]:
    """DDP constructor arguments for a bucket cap and a first-bucket cap (see the module doc)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    cap_mb = max(int(bucket_cap_bytes), 1) / MiB
    if first_bucket_bytes != bucket_cap_bytes \
            and "bucket_cap_mb_list" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"bucket_cap_mb_list": [max(int(first_bucket_bytes), 1) / MiB, cap_mb]}
    return {"bucket_cap_mb": cap_mb}


@contextlib.contextmanager
def first_bucket_bytes(nbytes: int) -> Iterator[None]:
    """Set DDP's (private) first-bucket cap for the block, then restore it."""
    import torch.distributed as dist

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


def construct_ddp(module, plan: DDPPlan, process_group: Any | None = None, **ddp_kwargs: Any):
    """``DistributedDataParallel(module)`` with the plan's bucket caps (no hook; collective)."""
    from torch.nn.parallel import DistributedDataParallel

    with first_bucket_bytes(plan.first_bucket_bytes):
        return DistributedDataParallel(module, process_group=process_group, **ddp_kwargs,
                                       **bucket_kwargs(plan.first_bucket_bytes, plan.bucket_cap_bytes))
