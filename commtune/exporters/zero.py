"""DeepSpeed ZeRO settings for a sharded profile (the ``deepspeed`` format's sharded half).

Keys and defaults from ``deepspeed/runtime/zero/config.py`` (DeepSpeedZeroConfig):
``stage``, ``reduce_bucket_size`` and ``allgather_bucket_size`` (5e8
elements), ``stage3_prefetch_bucket_size`` (5e7), ``stage3_param_persistence_threshold``
(1e5), ``overlap_comm``, ``zero_hpz_partition_size`` (ZeRO++ hpZ: a secondary
parameter copy sharded over that many ranks serves backward's all-gather) and
``mics_shard_size`` (MiCS: parameters sharded inside groups, replicated across
them: DeepSpeed's HSDP). Mapping:

- ``grad`` -> stage 2, ``full`` -> stage 3, ``hybrid`` -> stage 3 with ``mics_shard_size``;
- ``unit_bytes`` -> both bucket sizes in elements (``unit_bytes / 4``: fp32 bytes);
- ``forward_prefetch`` -> ``stage3_prefetch_bucket_size`` = prefetch x unit elements;
- an integer ``reshard_after_forward`` -> ``zero_hpz_partition_size``;
- ``reduce_precision`` -> ``communication_data_type``.
"""
from __future__ import annotations

from commtune.exporters.base import Draft
from commtune.exporters.sharded import (
    ProfileModel, largest_unit_elements, profile_model, sharded_layout, unit_elements,
)

STAGE = {"grad": 2, "full": 3, "hybrid": 3}
PERSISTENCE_THRESHOLD = 100_000  # DeepSpeed's default stage3_param_persistence_threshold (elements)


def zero_stage(d: Draft) -> None:
    """Fill ``d`` with the ``zero_optimization`` of a sharded profile."""
    a = d.active
    pm = profile_model(d.profile)
    layout = sharded_layout(d, pm, "DeepSpeed ZeRO")
    stage = STAGE[a["sharding"]]
    z = "zero_optimization."
    d.set(z + "stage", stage, "sharding", {2: "ZeRO-2: gradients and optimizer states sharded",
                                           3: "ZeRO-3: parameters sharded too"}[stage])
    if a["sharding"] == "hybrid":
        d.set(z + "mics_shard_size", layout.group, "shard_group_size",
              f"MiCS: parameters sharded inside groups of {layout.group} ranks, {layout.replicas} replicas "
              "(build the model under deepspeed.zero.MiCS_Init)")
    elements = _bucket(d, pm)
    d.set(z + "overlap_comm", True, comment="overlap reduction with backward, as commtune models it")
    d.set(z + "communication_data_type", a["reduce_precision"], "reduce_precision",
          "dtype of the gradient reduce-scatter")
    fwd = a["forward_prefetch"]
    if stage == 2:
        d.unsupported_knob("forward_prefetch", "ZeRO-2 all-gathers the updated parameters right after the optimizer "
                                               "step (allgather_bucket_size buckets); there is no forward prefetch")
    elif elements is None:
        d.unsupported_knob("forward_prefetch", "stage3_prefetch_bucket_size counts elements, and the unit size is "
                                               "unknown here; DeepSpeed's default kept")
    else:
        d.set(z + "stage3_prefetch_bucket_size", fwd * elements, "forward_prefetch",
              f"{fwd} unit(s) of {elements} elements gathered ahead")
    if "backward_prefetch" in a:
        if elements is not None and a["backward_prefetch"] == fwd:
            d.apply("backward_prefetch", "ZeRO-3's one prefetch bucket serves backward too")
        else:
            d.unsupported_knob("backward_prefetch", "ZeRO-3 has one prefetch bucket for forward and backward "
                                                    "(stage3_prefetch_bucket_size, set from forward_prefetch)")
    if "reshard_after_forward" in a:
        raf = a["reshard_after_forward"]
        if raf is True:
            d.apply("reshard_after_forward", "ZeRO-3 releases each module's parameters after use and re-gathers "
                                             "them in backward")
        elif raf is False:
            d.unsupported_knob("reshard_after_forward", "ZeRO-3 has no per-unit switch to keep parameters gathered "
                                                        "(raising stage3_max_live_parameters and "
                                                        "stage3_max_reuse_distance comes close)")
        else:
            d.set(z + "zero_hpz_partition_size", raf, "reshard_after_forward",
                  f"ZeRO++ hpZ: after forward a copy sharded over {raf} ranks serves backward's all-gather")
    if stage == 3:
        d.set(z + "stage3_param_persistence_threshold", PERSISTENCE_THRESHOLD, comment=_persistence_comment(pm))


def _bucket(d: Draft, pm: ProfileModel) -> int | None:
    """Set both bucket sizes; the unit's elements (None when unknown)."""
    z = "zero_optimization."
    unit_bytes = d.active["unit_bytes"]
    if unit_bytes:
        elements = unit_elements(unit_bytes)
        how = f"elements = {unit_bytes} fp32 bytes / 4"
        d.set(z + "reduce_bucket_size", elements, "unit_bytes", how)
        d.set(z + "allgather_bucket_size", elements, "unit_bytes", how + " (ZeRO-1/2's parameter all-gather)")
        return elements
    largest = largest_unit_elements(pm)
    if largest is None:
        d.unsupported_knob("unit_bytes", f"DeepSpeed buckets by size, not per block, and the blocks are unknown "
                                         f"({pm.reason}); DeepSpeed's 5e8-element buckets kept")
        return None
    d.unsupported_knob("unit_bytes", "DeepSpeed buckets by size, not per block; buckets set to the largest unit")
    d.set(z + "reduce_bucket_size", largest, comment=f"the largest of the {len(pm.units)} units: {largest} elements")
    d.set(z + "allgather_bucket_size", largest)
    return largest


def _persistence_comment(pm: ProfileModel) -> str:
    text = ("DeepSpeed's default: parameters under this many elements stay unsharded, where commtune "
            "models every parameter sharded")
    if pm.model is None:
        return text
    small = sum(t.numel for t in pm.model.tensors() if t.numel < PERSISTENCE_THRESHOLD)
    return f"{text} ({small} of {pm.model.num_params} parameters here)"
