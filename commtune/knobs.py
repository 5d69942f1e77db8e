"""The one definition of every communication knob.

Each :class:`Knob` says name, type, unit, default and valid range. The CLI
flags, the search-space validation, the profile schema and the exporters all
read :data:`KNOBS`; a new knob is one entry here plus the code that uses it.

:class:`Knobs` is one configuration (a frozen dataclass with one field per
knob). Two reference configurations are the baselines every search reports:
:data:`DDP_DEFAULT` and :data:`HOROVOD_DEFAULT`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from commtune.errors import CommtuneError
from commtune.units import MiB, format_size, parse_size



@dataclass(frozen=True)
class Knob:
    """Definition of one knob.

    ``kind`` is ``"size"`` (bytes, int), ``"float"``, ``"int"``, ``"bool"``,
    ``"choice"`` or ``"bool_or_int"`` (true, false or an integer in
    ``[low, high]``, as FSDP2's ``reshard_after_forward`` takes; 0 and 1 read
    as false and true). ``low``/``high`` bound numeric kinds (inclusive); ``choices``
    lists the values of a choice knob. ``applies_when`` names another knob and
    the values under which this one matters (e.g. cycle time only for the
    dynamic fusion policy, the all-reduce knobs only without sharding); a knob
    matters only where its parent does too (parents come first in :data:`KNOBS`).
    """

    name: str
    kind: str
    unit: str
    default: Any
    help: str
    flag: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    applies_when: tuple[str, tuple[Any, ...]] | None = None

    def parse(self, value: Any) -> Any:
        """Convert ``value`` (from a CLI flag, YAML or JSON) and check its range."""
        if self.kind == "size" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if self.kind == "size":
            v: Any = parse_size(value, what=self.name) if isinstance(value, (str, int)) else None
            if v is None:
                raise CommtuneError(f"knob {self.name}: {value!r} is not a size in bytes (e.g. 25MB, 64MiB)")
        elif self.kind == "int":
            try:
                v = int(value)
                if isinstance(value, float) and value != v:
                    raise ValueError
            except (TypeError, ValueError):
                raise CommtuneError(f"knob {self.name}: {value!r} is not an integer; give {self.accepted()}") from None
        elif self.kind == "float":
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise CommtuneError(f"knob {self.name}: {value!r} is not a number; give {self.accepted()}") from None
            if not math.isfinite(v):
                raise CommtuneError(f"knob {self.name}: {value!r} is not a finite number; give {self.accepted()}")
        elif self.kind == "bool_or_int":
            v = _bool_or_int(value)
            if v is None:
                raise CommtuneError(f"knob {self.name}: {value!r} is not true, false or an integer; give {self.accepted()}")
            if isinstance(v, bool):
                return v
            if v in (0, 1):  # 0/1 read as false/true, as for bool knobs (and in batch arrays)
                return bool(v)
        elif self.kind == "bool":
            if isinstance(value, bool):
                v = value
            elif str(value).lower() in ("true", "on", "yes", "1"):
                v = True
            elif str(value).lower() in ("false", "off", "no", "0"):
                v = False
            else:
                raise CommtuneError(f"knob {self.name}: {value!r} is not true/false")
        else:
            if value not in self.choices:
                raise CommtuneError(
                    f"knob {self.name}: {value!r} is not one of {', '.join(map(str, self.choices))}"
                )
            v = value
        if self.low is not None and v < self.low or self.high is not None and v > self.high:
            raise CommtuneError(f"knob {self.name}: {self.show(v)} is out of range; give {self.accepted()}")
        return v

    def accepted(self) -> str:
        """What this knob accepts, for error messages and help."""
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "bool":
            return "true or false"
        if self.kind == "bool_or_int":
            return f"true, false or an integer in [{self.show(self.low)}, {self.show(self.high)}]"
        what = {"size": "a size", "int": "an integer", "float": "a number"}[self.kind]
        return f"{what} in [{self.show(self.low)}, {self.show(self.high)}]"

    def show(self, value: Any) -> str:
        """Human-readable value with unit."""
        if self.kind == "size":
            return format_size(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.kind in ("float", "int") and self.unit:
            return f"{value:g} {self.unit}"
        return str(value)

def _bool_or_int(value: Any) -> bool | int | None:
    """true/false (also on/off, yes/no) or an integer; None when it is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip().lower()
    if text in ("true", "on", "yes"):
        return True
    if text in ("false", "off", "no"):
        return False
    try:
        return int(text)
    except ValueError:
        return None


#: Values of ``sharding`` under which the sharded knobs apply.
SHARDED = ("grad", "full", "hybrid")

_KNOB_LIST = [
    Knob(
        "sharding", "choice", "", "none",
        "data-parallel sharding: 'none' (all-reduce DP: PyTorch DDP, Horovod), 'grad' (gradients and optimizer "
        "states sharded, parameters gathered once per step: ZeRO-1/2, FSDP SHARD_GRAD_OP), 'full' (parameters "
        "too: FSDP2 fully_shard, ZeRO-3) or 'hybrid' (HSDP: full sharding inside a shard group, replicas across "
        "groups)", flag="--sharding",
        choices=("none", *SHARDED),
    ),
    Knob(
        "fusion_policy", "choice", "", "dynamic",
        "how gradients are fused: 'dynamic' (Horovod: each cycle fuses what is ready, up to the "
        "threshold) or 'static' (PyTorch DDP: fixed buckets in ready order)", flag="--fusion-policy",
        choices=("dynamic", "static"), applies_when=("sharding", ("none",)),
    ),
    Knob(
        "fusion_threshold_bytes", "size", "bytes", 128 * MiB,
        "fusion buffer size (dynamic) or bucket size cap (static); 0 disables fusion", flag="--fusion",
        low=0, high=2**31, applies_when=("sharding", ("none",)),
    ),
    Knob(
        "first_bucket_bytes", "size", "bytes", 1 * MiB,
        "size cap of the first (earliest-ready) bucket under the static policy", flag="--first-bucket",
        low=0, high=2**31, applies_when=("fusion_policy", ("static",)),
    ),
    Knob(
        "cycle_time_ms", "float", "ms", 1.0,
        "interval of the background loop that negotiates and fuses ready gradients (dynamic policy)", flag="--cycle-ms",
        low=0.0, high=1000.0, applies_when=("fusion_policy", ("dynamic",)),
    ),
    Knob(
        "num_streams", "int", "", 1,
        "concurrent communication streams (communicators); see stream_mode for how buffers use them", flag="--streams",
        low=1, high=16, applies_when=("sharding", ("none",)),
    ),
    Knob(
        "stream_mode", "choice", "", "split",
        "how K streams carry the fused buffers: 'split' (each buffer split evenly over the K streams) or "
        "'round_robin' (buffer j goes whole onto stream j mod K); no effect with one stream", flag="--stream-mode",
        choices=("split", "round_robin"), applies_when=("sharding", ("none",)),
    ),
    Knob(
        "negotiation", "choice", "", "central",
        "readiness negotiation: 'central' (rank-0 coordinator) or 'decentralized' (bit-vector all-reduce)", flag="--negotiation",
        choices=("central", "decentralized"), applies_when=("fusion_policy", ("dynamic",)),
    ),
    Knob(
        "hierarchical", "bool", "", False,
        "hierarchical all-reduce: intra-node reduce-scatter, inter-node all-reduce, intra-node all-gather", flag="--hierarchical",
        applies_when=("sharding", ("none",)),
    ),
    Knob(
        "wire_precision", "choice", "", "fp32",
        "precision of gradients on the wire (fp16 compression halves the bytes of fp32 gradients)", flag="--wire-precision",
        choices=("fp32", "fp16"), applies_when=("sharding", ("none",)),
    ),
    Knob(
        "shard_group_size", "int", "", 0,
        "ranks per shard group under hybrid sharding (HSDP); 0 = the GPUs per node; must divide the world size",
        flag="--shard-group-size", low=0, high=2**20, applies_when=("sharding", ("hybrid",)),
    ),
    Knob(
        "unit_bytes", "size", "bytes", 0,
        "parameter bytes (fp32, numel x 4) per sharding unit: consecutive layers in ready order grouped up to "
        "this size share one all-gather and one reduce-scatter; 0 = one unit per model block (what FSDP users "
        "wrap: one transformer block)", flag="--unit-bytes",
        low=0, high=2**36, applies_when=("sharding", SHARDED),
    ),
    Knob(
        "forward_prefetch", "int", "units", 1,
        "units all-gathered ahead of forward compute (FSDP2 set_modules_to_forward_prefetch)",
        flag="--forward-prefetch", low=0, high=4, applies_when=("sharding", SHARDED),
    ),
    Knob(
        "backward_prefetch", "int", "units", 1,
        "units re-gathered ahead of backward compute (FSDP2 set_modules_to_backward_prefetch)",
        flag="--backward-prefetch", low=0, high=4, applies_when=("sharding", ("full", "hybrid")),
    ),
    Knob(
        "reshard_after_forward", "bool_or_int", "", True,
        "free each unit's gathered parameters after forward (re-gathered in backward): true, false, or an "
        "intra-node group size to reshard to (FSDP2 takes an int)", flag="--reshard-after-forward",
        low=2, high=64, applies_when=("sharding", ("full", "hybrid")),
    ),
    Knob(
        "reduce_precision", "choice", "", "fp32",
        "precision of the gradient reduce-scatter (FSDP2 MixedPrecisionPolicy reduce_dtype)",
        flag="--reduce-precision", choices=("fp32", "bf16"), applies_when=("sharding", SHARDED),
    ),
]

KNOBS: dict[str, Knob] = {k.name: k for k in _KNOB_LIST}


@dataclass(frozen=True)
class Knobs:
    """One configuration of every knob (defaults from :data:`KNOBS`)."""

    fusion_policy: str = KNOBS["fusion_policy"].default
    fusion_threshold_bytes: int = KNOBS["fusion_threshold_bytes"].default
    first_bucket_bytes: int = KNOBS["first_bucket_bytes"].default
    cycle_time_ms: float = KNOBS["cycle_time_ms"].default
    num_streams: int = KNOBS["num_streams"].default
    stream_mode: str = KNOBS["stream_mode"].default
    negotiation: str = KNOBS["negotiation"].default
    hierarchical: bool = KNOBS["hierarchical"].default
    wire_precision: str = KNOBS["wire_precision"].default
    sharding: str = KNOBS["sharding"].default
    shard_group_size: int = KNOBS["shard_group_size"].default
    unit_bytes: int = KNOBS["unit_bytes"].default
    forward_prefetch: int = KNOBS["forward_prefetch"].default
    backward_prefetch: int = KNOBS["backward_prefetch"].default
    reshard_after_forward: bool | int = KNOBS["reshard_after_forward"].default
    reduce_precision: str = KNOBS["reduce_precision"].default

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = KNOBS[f.name].parse(getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "Knobs | None" = None) -> "Knobs":
        """Build from a mapping of knob name to value; unknown names are an error."""
        unknown = [k for k in values if k not in KNOBS]
        if unknown:
            raise CommtuneError(
                f"unknown knob {unknown[0]!r}; knobs are: {', '.join(KNOBS)}"
            )
        return dataclasses.replace(base or cls(), **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` without the sharded knobs when ``sharding`` is ``none``: what
        fingerprints (study spaces) hash, so all-reduce studies keep their identity."""
        d = self.to_dict()
        if self.sharding == "none":
            for name in SHARDING_KNOBS:
                d.pop(name)
        return d

    def active(self) -> dict[str, Any]:
        """The knobs that matter for this configuration (conditions applied)."""
        out = {}
        for name in KNOBS:  # registry order: parents before children
            cond = KNOBS[name].applies_when
            if cond is None or cond[0] in out and getattr(self, cond[0]) in cond[1]:
                out[name] = getattr(self, name)
        return out

    def describe(self) -> str:
        return ", ".join(f"{k}={KNOBS[k].show(v)}" for k, v in self.active().items())


#: PyTorch DDP defaults: 25 MiB buckets, 1 MiB first bucket, one stream (split: commtune.runtime's default)
#: (torch/csrc/distributed/c10d/reducer.hpp kDefaultBucketBytesCap, kDefaultFirstBucketBytes).
DDP_DEFAULT = Knobs(
    fusion_policy="static", fusion_threshold_bytes=25 * MiB, first_bucket_bytes=1 * MiB,
    num_streams=1, hierarchical=False, wire_precision="fp32",
)

#: Horovod defaults: 128 MiB fusion, 1 ms cycle, one NCCL stream, rank-0 coordinator
#: (horovod/common/operations.cc since v0.21.0, PR #2468; global_state.h num_nccl_streams=1).
#: Horovod's only stream mode is round robin: each fused response goes to
#: ``current_nccl_stream``, then ``current_nccl_stream + 1 mod num_nccl_streams``
#: (ops/gpu_operations.cc, GPUAllreduce::Execute).
HOROVOD_DEFAULT = Knobs(
    fusion_policy="dynamic", fusion_threshold_bytes=128 * MiB, cycle_time_ms=1.0,
    num_streams=1, stream_mode="round_robin", negotiation="central", hierarchical=False, wire_precision="fp32",
)

BASELINES: dict[str, Knobs] = {"ddp_default": DDP_DEFAULT, "horovod_default": HOROVOD_DEFAULT}

#: PyTorch FSDP2's defaults: ``fully_shard`` per transformer block (one unit per model block),
#: ``reshard_after_forward=True``, one unit prefetched each way (FSDP2's implicit prefetch),
#: fp32 reduction (no ``MixedPrecisionPolicy``) (torch/distributed/fsdp/_fully_shard/_fully_shard.py).
FSDP2_DEFAULT = Knobs(
    sharding="full", unit_bytes=0, forward_prefetch=1, backward_prefetch=1,
    reshard_after_forward=True, reduce_precision="fp32",
)

#: DeepSpeed ZeRO-3's defaults: ``reduce_bucket_size`` and ``allgather_bucket_size`` of 5e8
#: elements (counted here as fp32 bytes, 4 per element), ``overlap_comm`` on
#: (deepspeed/runtime/zero/config.py ZERO_OPTIMIZATION defaults).
ZERO3_DEFAULT = Knobs(
    sharding="full", unit_bytes=int(5e8) * 4, forward_prefetch=1, backward_prefetch=1,
    reshard_after_forward=True, reduce_precision="fp32",
)

#: DeepSpeed ZeRO-2's defaults: gradients and optimizer states sharded, 5e8-element buckets.
ZERO2_DEFAULT = Knobs(sharding="grad", unit_bytes=int(5e8) * 4, forward_prefetch=1, reduce_precision="fp32")

#: The sharded frameworks' defaults, beside :data:`BASELINES` (all-reduce DP).
SHARDED_BASELINES: dict[str, Knobs] = {
    "fsdp2_default": FSDP2_DEFAULT, "zero3_default": ZERO3_DEFAULT, "zero2_default": ZERO2_DEFAULT,
}

#: The knobs added with sharded data parallelism; at ``sharding: none`` they are left out of
#: :meth:`Knobs.identity`, so fingerprints of all-reduce configurations stay what they were.
SHARDING_KNOBS = ("sharding", "shard_group_size", "unit_bytes", "forward_prefetch", "backward_prefetch",
                  "reshard_after_forward", "reduce_precision")
