"""Horovod: environment variables read by ``hvd.init()`` (horovod/common/operations.cc)."""
from __future__ import annotations

from commtune.exporters.base import Draft, EnvExporter, all_reduce_only


class HorovodExporter(EnvExporter):
    name = "horovod"
    description = "Horovod environment variables (HOROVOD_*)"

    def translate(self, d: Draft) -> None:
        a = d.active
        if not all_reduce_only(d, "Horovod"):
            return
        fp16_wire = a["wire_precision"] == "fp16"
        if a["fusion_policy"] == "dynamic":
            d.apply("fusion_policy", "Horovod's only policy (the background loop fuses ready tensors)")
        else:
            d.unsupported_knob("fusion_policy", "Horovod fuses dynamically only; the bucket cap is exported as "
                                                "HOROVOD_FUSION_THRESHOLD, buckets will not follow the static ready order")
        comment = "fusion buffer in bytes (0 disables fusion); Horovod default 128 MiB"
        if fp16_wire and a["fusion_policy"] == "dynamic":
            comment += "; counts compressed (fp16) bytes, as Horovod does: hvd.Compression.fp16 compresses before fusion"
        elif fp16_wire:
            comment += ("; commtune sized these static buckets in gradient bytes, and hvd.Compression.fp16 compresses "
                        "before fusion, so with compression on halve it to keep the same tensors per buffer")
        d.set("HOROVOD_FUSION_THRESHOLD", int(a["fusion_threshold_bytes"]), "fusion_threshold_bytes", comment)
        if "first_bucket_bytes" in a:
            d.unsupported_knob("first_bucket_bytes", "Horovod has no separate first bucket (dynamic fusion only)")
        if "cycle_time_ms" in a:
            d.set("HOROVOD_CYCLE_TIME", a["cycle_time_ms"], "cycle_time_ms",
                  "background loop period in milliseconds; Horovod default 1")
        d.set("HOROVOD_NUM_NCCL_STREAMS", a["num_streams"], "num_streams",
              "NCCL streams (each with its own communicator and fusion buffer); GPU all-reduce only")
        if a["stream_mode"] == "round_robin" or a["num_streams"] == 1:
            d.apply("stream_mode", "Horovod puts successive fused buffers on successive NCCL streams in turn "
                                   "(round robin, current_nccl_stream + 1 mod HOROVOD_NUM_NCCL_STREAMS)")
        else:
            d.unsupported_knob("stream_mode", "Horovod cannot split one fused buffer over its NCCL streams; it puts "
                                              "successive buffers on successive streams (round robin)")
        if "negotiation" in a:
            if a["negotiation"] == "central":
                d.apply("negotiation", "Horovod's rank-0 coordinator (default)")
            else:
                d.unsupported_knob("negotiation", "Horovod has no decentralized-negotiation switch; its response "
                                                  "cache is the closest (bit-vector all-reduce once all tensors are "
                                                  "cached): keep HOROVOD_CACHE_CAPACITY > 0 (default 1024)")
        d.set("HOROVOD_HIERARCHICAL_ALLREDUCE", int(a["hierarchical"]), "hierarchical",
              "1 = intra-node reduce-scatter, inter-node all-reduce, intra-node all-gather")
        if fp16_wire:
            d.unsupported_knob("wire_precision", "the environment cannot set compression; pass "
                                                 "compression=hvd.Compression.fp16 to hvd.DistributedOptimizer")
        else:
            d.apply("wire_precision", "no compression (Horovod default, hvd.Compression.none)")
