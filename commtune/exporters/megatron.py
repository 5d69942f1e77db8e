"""Megatron-Core: fields of ``DistributedDataParallelConfig`` plus a snippet.

Fields as in ``megatron/core/distributed/distributed_data_parallel_config.py``
(NVIDIA/Megatron-LM): ``bucket_size`` (parameters per bucket; default
``max(4e7, 1e6 x dp)``), ``overlap_grad_reduce``, ``overlap_param_gather``,
``use_distributed_optimizer`` (reduce-scatter gradients, shard optimizer
states: ``sharding: grad``), ``grad_reduce_in_fp32``,
``num_distributed_optimizer_instances`` (replicas of a partial distributed
optimizer) and, in newer versions, Megatron-FSDP: ``use_megatron_fsdp`` with
``data_parallel_sharding_strategy='optim_grads_params'`` (``full``), and
``outer_dp_sharding_strategy`` for its hybrid form, with
``suggested_communication_unit_size`` (elements per collective). Unit
elements are ``unit_bytes / 4`` (fp32 bytes); under ``sharding: none`` the
bucket is ``fusion_threshold_bytes`` over the gradient element size.
"""
from __future__ import annotations

import json

from commtune.devices import PRECISIONS, grad_bytes_per_element
from commtune.errors import CommtuneError
from commtune.exporters.base import Draft, JsonExporter
from commtune.exporters.sharded import profile_model, sharded_layout, unit_elements

C = "ddp_config."


class MegatronExporter(JsonExporter):
    name = "megatron"
    description = "Megatron-Core DistributedDataParallelConfig fields (JSON + Python snippet)"

    def translate(self, d: Draft) -> None:
        if d.active["sharding"] == "none":
            self._all_reduce(d)
        else:
            self._sharded(d)
        fields = {k[len(C):]: v for k, v in d.settings.items() if k.startswith(C)}
        args = ", ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v!r}" for k, v in fields.items())
        d.set("snippet", "from megatron.core.distributed import DistributedDataParallel, "
                         "DistributedDataParallelConfig\n"
                         f"ddp_config = DistributedDataParallelConfig({args})\n"
                         "model = DistributedDataParallel(config=transformer_config, ddp_config=ddp_config, "
                         "module=model)\n")

    def _all_reduce(self, d: Draft) -> None:
        a = d.active
        precision = d.profile.model.get("precision")
        if precision not in PRECISIONS:
            raise CommtuneError(f"profile model precision {precision!r} is not one of {', '.join(PRECISIONS)}; "
                                "Megatron's bucket_size needs the gradient element size")
        bpe = grad_bytes_per_element(precision)
        d.apply("sharding", "Megatron's DDP: gradients all-reduced in buckets")
        d.set(C + "use_distributed_optimizer", False, comment="all-reduce data parallelism")
        d.set(C + "bucket_size", int(a["fusion_threshold_bytes"]) // bpe, "fusion_threshold_bytes",
              f"elements = {a['fusion_threshold_bytes']} bytes / {bpe} bytes per {precision} gradient element")
        d.set(C + "grad_reduce_in_fp32", bpe == 4, comment="gradients reduced in their own dtype")
        d.set(C + "overlap_grad_reduce", True, comment="overlap the all-reduce with backward, as commtune models it")
        if a["fusion_policy"] == "static":
            d.apply("fusion_policy", "Megatron's buckets are static, filled in ready order")
        else:
            d.unsupported_knob("fusion_policy", "Megatron has fixed-size buckets only; the fusion threshold is "
                                                "exported as bucket_size")
        for knob, why in (("first_bucket_bytes", "Megatron uses one bucket size for every bucket"),
                          ("cycle_time_ms", "Megatron reduces a bucket when it is full; there is no cycle"),
                          ("negotiation", "Megatron does not negotiate readiness; every rank fills the same buckets")):
            if knob in a:
                d.unsupported_knob(knob, why)
        if a["num_streams"] == 1:
            d.apply("num_streams", "Megatron's one communication stream")
            d.apply("stream_mode", "one stream: the stream mode has no effect")
        else:
            d.unsupported_knob("num_streams", "Megatron reduces buckets on one communication stream")
            d.unsupported_knob("stream_mode", "Megatron reduces buckets on one communication stream")
        if a["hierarchical"]:
            d.unsupported_knob("hierarchical", "Megatron issues a flat collective per bucket; NCCL picks the algorithm")
        else:
            d.apply("hierarchical", "Megatron's flat collective per bucket")
        if a["wire_precision"] == "fp16":
            d.unsupported_knob("wire_precision", "Megatron reduces gradients in their dtype (or fp32 with "
                                                 "grad_reduce_in_fp32); no fp16 compression")
        else:
            d.apply("wire_precision", "gradients reduced in their own dtype")

    def _sharded(self, d: Draft) -> None:
        a = d.active
        pm = profile_model(d.profile)
        layout = sharded_layout(d, pm, "Megatron-Core")
        unit_bytes = a["unit_bytes"]
        elements = unit_elements(unit_bytes) if unit_bytes else None
        if a["sharding"] == "grad":
            d.set(C + "use_distributed_optimizer", True, "sharding",
                  "distributed optimizer: gradients reduce-scattered, optimizer states sharded, parameters "
                  "all-gathered after the step")
            key = C + "bucket_size"
        else:
            d.set(C + "use_megatron_fsdp", True, "sharding", "Megatron-FSDP (newer Megatron-Core)")
            d.set(C + "data_parallel_sharding_strategy", "optim_grads_params",
                  comment="parameters, gradients and optimizer states sharded")
            key = C + "suggested_communication_unit_size"
        if elements is None:
            d.unsupported_knob("unit_bytes", "Megatron buckets by size, not per block; its default size kept")
        else:
            d.set(key, elements, "unit_bytes", f"elements = {unit_bytes} fp32 bytes / 4")
        if a["sharding"] == "hybrid":
            d.set(C + "outer_dp_sharding_strategy", "no_shard", comment="hybrid: replicas across shard groups")
            d.set(C + "num_distributed_optimizer_instances", layout.replicas, "shard_group_size",
                  f"{layout.replicas} replicas of shard groups of {layout.group} ranks")
        d.set(C + "overlap_grad_reduce", True, comment="overlap the reduce-scatter with backward")
        fwd = a["forward_prefetch"]
        if a["sharding"] == "grad" and fwd <= 1:
            d.set(C + "overlap_param_gather", fwd == 1, "forward_prefetch",
                  "the next bucket's parameter all-gather overlaps forward (one ahead)")
        else:
            d.set(C + "overlap_param_gather", True, comment="parameter all-gathers overlap forward")
            d.unsupported_knob("forward_prefetch", "Megatron overlaps the parameter all-gather one bucket ahead; "
                                                   "there is no prefetch count (Megatron-FSDP: "
                                                   "suggested_communication_unit_size sets its prefetch)")
        for knob in ("backward_prefetch", "reshard_after_forward"):
            if knob in a:
                d.unsupported_knob(knob, f"DistributedDataParallelConfig has no {knob} setting")
        precision = d.profile.model.get("precision")
        if a["reduce_precision"] == "fp32":
            d.set(C + "grad_reduce_in_fp32", True, "reduce_precision")
        elif precision == "bf16":
            d.set(C + "grad_reduce_in_fp32", False, "reduce_precision", "bf16 parameters: gradients reduced in bf16")
        else:
            d.unsupported_knob("reduce_precision", f"Megatron reduces in the parameters' dtype ({precision} "
                                                   "here) or fp32; bf16 reduction needs bf16 training")
