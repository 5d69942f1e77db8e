"""PyTorch DDP: settings for ``commtune.runtime`` or a plain
``DistributedDataParallel(...)`` call (values from :mod:`commtune.runtime.ddp_plan`)."""
from __future__ import annotations

from commtune.exporters.base import Draft, JsonExporter, all_reduce_only
from commtune.runtime.ddp_plan import FIXED, plan_for, runtime_only
from commtune.units import MiB

FP16_HOOK = "torch.distributed.algorithms.ddp_comm_hooks.default_hooks.fp16_compress_hook"


class DdpExporter(JsonExporter):
    name = "ddp"
    description = "PyTorch DistributedDataParallel settings (JSON for commtune.runtime)"

    def translate(self, d: Draft) -> None:
        a = d.active
        if not all_reduce_only(d, "PyTorch DDP"):
            return
        plan = plan_for(d.profile.knobs)
        if a["fusion_policy"] == FIXED["fusion_policy"]:
            d.apply("fusion_policy", "DDP's only policy (static buckets in ready order)")
        else:
            d.unsupported_knob("fusion_policy", "DDP has static buckets only; the fusion threshold is exported as "
                                                "bucket_cap_mb")
        d.set("bucket_cap_mb", plan.bucket_cap_bytes / MiB, "fusion_threshold_bytes",
              "DistributedDataParallel(bucket_cap_mb=...), MiB of gradients per bucket; DDP default 25")
        if "first_bucket_bytes" in a:
            d.set("first_bucket_bytes", plan.first_bucket_bytes, "first_bucket_bytes",
                  "assign torch.distributed._DEFAULT_FIRST_BUCKET_BYTES (private, read when DDP is constructed; "
                  "default 1 MiB) before wrapping the model")
        streams = "commtune.runtime runs one process group per stream; plain DDP uses a single NCCL stream and ignores this"
        mode = ("commtune.runtime: 'split' spreads each bucket over the process groups, 'round_robin' sends bucket b "
                "whole on group b mod num_streams; plain DDP ignores it")
        if plan.num_streams > 1:  # kept for commtune.runtime.wrap, unsupported by plain DistributedDataParallel
            d.set("num_streams", plan.num_streams, comment=streams)
            d.set("stream_mode", plan.stream_mode, comment=mode)
            reason = runtime_only(d.profile.knobs)[0].split(": ", 1)[1]
            d.unsupported_knob("num_streams", reason)
            if "stream_mode" in a:
                d.unsupported_knob("stream_mode", "plain DDP has one stream; only commtune.runtime.wrap spreads "
                                                  "buckets over several")
        else:
            d.set("num_streams", plan.num_streams, "num_streams", "one stream: what plain DDP does")
            if "stream_mode" in a:
                d.apply("stream_mode", "one stream: the mode has no effect")
        if "cycle_time_ms" in a:
            d.unsupported_knob("cycle_time_ms", "DDP launches a bucket as soon as it is full; there is no "
                                                "background cycle")
        if "negotiation" in a:
            d.unsupported_knob("negotiation", "DDP does not negotiate: every rank fills the same buckets in the "
                                              "same order, fixed at construction")
        if a["hierarchical"] != FIXED["hierarchical"]:
            d.unsupported_knob("hierarchical", "DDP issues one flat all-reduce per bucket (NCCL picks its "
                                               "algorithm); a two-level all-reduce needs a custom comm hook")
        else:
            d.apply("hierarchical", "DDP's flat all-reduce per bucket")
        d.set("wire_precision", plan.wire_precision, "wire_precision")
        d.set("comm_hook", FP16_HOOK if plan.wire_precision == "fp16" else None, "wire_precision",
              "model.register_comm_hook(None, hook) for fp16 on the wire; null = plain all-reduce")
        d.set("gradient_as_bucket_view", True, comment="DistributedDataParallel(gradient_as_bucket_view=True): "
                                                       "saves a gradient copy")
