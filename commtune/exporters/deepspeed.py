"""DeepSpeed: a config fragment for ``deepspeed.initialize(config=...)``.

DeepSpeed counts bucket sizes in ELEMENTS (runtime/zero/config.py:
``reduce_bucket_size``, default 5e8). Under ``sharding: none`` bytes are
divided by the bytes of one gradient element: 4 for fp32 and AMP (fp32
gradients), 2 for fp16/bf16. Under sharding the unit is ``unit_bytes`` of
fp32 parameters, so elements = ``unit_bytes / 4`` whatever the precision
(:mod:`commtune.exporters.zero`).
"""
from __future__ import annotations

from commtune.devices import PRECISIONS, grad_bytes_per_element
from commtune.errors import CommtuneError
from commtune.exporters.base import Draft, JsonExporter, all_reduce_only
from commtune.exporters.zero import zero_stage


class DeepSpeedExporter(JsonExporter):
    name = "deepspeed"
    description = "DeepSpeed config fragment (zero_optimization buckets, overlap_comm; ZeRO stage 2/3 when sharded)"

    def translate(self, d: Draft) -> None:
        a = d.active
        if a["sharding"] != "none":
            zero_stage(d)
            return
        all_reduce_only(d, "DeepSpeed without ZeRO")
        precision = d.profile.model.get("precision")
        if precision not in PRECISIONS:
            raise CommtuneError(f"profile model precision {precision!r} is not one of {', '.join(PRECISIONS)}; "
                                "DeepSpeed bucket sizes need the gradient element size")
        bpe = grad_bytes_per_element(precision)
        elements = int(a["fusion_threshold_bytes"]) // bpe
        if a["fusion_policy"] == "static":
            d.apply("fusion_policy", "DeepSpeed's buckets are static, filled in ready order")
        else:
            d.unsupported_knob("fusion_policy", "DeepSpeed has fixed-size buckets only; the fusion threshold is "
                                                "exported as reduce_bucket_size")
        d.set("zero_optimization.reduce_bucket_size", elements, "fusion_threshold_bytes",
              f"elements = {a['fusion_threshold_bytes']} bytes / {bpe} bytes per {precision} gradient element")
        d.set("zero_optimization.allgather_bucket_size", elements, "fusion_threshold_bytes",
              "same size for the ZeRO parameter all-gather (not modelled by commtune)")
        d.set("zero_optimization.overlap_comm", True, comment="overlap reduction with backward, as commtune models it "
                                                              "(DeepSpeed default is true only for ZeRO stage 3)")
        if "first_bucket_bytes" in a:
            d.unsupported_knob("first_bucket_bytes", "DeepSpeed uses one bucket size for every bucket")
        if "cycle_time_ms" in a:
            d.unsupported_knob("cycle_time_ms", "DeepSpeed reduces a bucket when it is full; there is no cycle")
        if "negotiation" in a:
            d.unsupported_knob("negotiation", "DeepSpeed does not negotiate readiness; all ranks reduce the same "
                                              "buckets in the same order")
        d.unsupported_knob("num_streams", "DeepSpeed reduces buckets on a single reduction stream")
        if a["num_streams"] == 1:
            d.apply("stream_mode", "one stream: the stream mode has no effect")
        else:
            d.unsupported_knob("stream_mode", "DeepSpeed reduces buckets on a single reduction stream")
        if a["hierarchical"]:
            d.unsupported_knob("hierarchical", "DeepSpeed calls a flat torch.distributed collective per bucket; "
                                               "NCCL picks the algorithm")
        else:
            d.apply("hierarchical", "DeepSpeed's flat collective per bucket")
        if a["wire_precision"] == "fp16":
            d.set("communication_data_type", "fp16", "wire_precision", "gradients cast to fp16 for communication")
        else:
            d.apply("wire_precision", "gradients communicated in their own dtype (DeepSpeed default)")
