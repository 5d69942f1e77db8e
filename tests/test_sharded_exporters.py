"""Exporters of sharded profiles: FSDP2, DeepSpeed ZeRO, Megatron-Core (exact values, what each cannot express)."""
from __future__ import annotations

import ast
import itertools
import json

import pytest

import commtune.models
from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.exporters import EXPORTERS, get_exporter
from commtune.models.base import GradTensor, Layer, ModelProfile
from commtune.units import MiB

from conftest import make_profile

# root (embedding 1000 + head 500), two blocks of 300 + 200 elements
TOY = ModelProfile("toy", (
    Layer("embed", (GradTensor("embed.weight", 1000),)),
    Layer("blocks.0.attn", (GradTensor("blocks.0.attn.weight", 300),), block="blocks.0"),
    Layer("blocks.0.act", (), block="blocks.0"),
    Layer("blocks.0.mlp", (GradTensor("blocks.0.mlp.weight", 200),), block="blocks.0"),
    Layer("blocks.1.attn", (GradTensor("blocks.1.attn.weight", 300),), block="blocks.1"),
    Layer("blocks.1.mlp", (GradTensor("blocks.1.mlp.weight", 200),), block="blocks.1"),
    Layer("head", (GradTensor("head.weight", 500),)),
))


@pytest.fixture
def toy(monkeypatch):
    """Profiles of TOY on 2 nodes x 4 GPUs; the exporters reload the model by name."""
    monkeypatch.setattr(commtune.models, "load_model", lambda name, input_size=None: TOY)

    def make(fingerprint=TOY.fingerprint(), **knobs):
        p = make_profile(**knobs)
        p.model.update(name="toy", fingerprint=fingerprint)
        return type(p)(**{**p.__dict__, "cluster": ClusterSpec(nodes=2, gpus_per_node=4)})
    return make


def export(fmt, profile):
    r = get_exporter(fmt).export(profile)
    return r, json.loads(r.text)


def reported(r):
    return {u.knob: u.reason for u in r.unsupported}


def test_fsdp2_units_per_block_and_snippet(toy):
    r, d = export("fsdp2", toy(sharding="full", unit_bytes=0, forward_prefetch=2, backward_prefetch=0))
    assert d["units"] == [{"name": "blocks.0", "modules": ["blocks.0"], "numel": 500},
                          {"name": "blocks.1", "modules": ["blocks.1"], "numel": 500}]
    assert d["mesh"] == {"shape": [8]}
    assert d["fully_shard"] == {"reshard_after_forward": True,
                                "mp_policy": {"param_dtype": None, "reduce_dtype": "float32"}}
    assert d["forward_prefetch"] == 2 and d["backward_prefetch"] == 0
    code = d["snippet"]
    ast.parse(code)  # valid Python
    assert "UNITS = [['blocks.0'], ['blocks.1']]" in code and "fully_shard(model, **{**kw, 'reshard_after_forward': None})" in code
    assert "units[i + 1:i + 3]" in code and "units[max(0, i - 0):i][::-1]" in code
    assert set(reported(r)) == set()  # the all-reduce knobs are inactive under sharding


def test_fsdp2_greedy_units_hybrid_mesh_bf16(toy):
    # cap 500 elements: ready order head(500) | blocks.1 (500) | blocks.0 (500) | embed
    r, d = export("fsdp2", toy(sharding="hybrid", shard_group_size=4, unit_bytes=2000, reshard_after_forward=2,
                               reduce_precision="bf16", num_streams=2, stream_mode="split"))
    assert [u["modules"] for u in d["units"]] == [["embed"], ["blocks.0.attn", "blocks.0.mlp"],
                                                  ["blocks.1.attn", "blocks.1.mlp"], ["head"]]
    assert d["mesh"] == {"shape": [2, 4], "dim_names": ["replicate", "shard"]}
    assert d["fully_shard"]["reshard_after_forward"] == 2
    assert d["fully_shard"]["mp_policy"]["reduce_dtype"] == "bfloat16"
    assert "init_device_mesh('cuda', (2, 4), mesh_dim_names=('replicate', 'shard'))" in d["snippet"]
    assert not {"num_streams", "stream_mode"} & (set(reported(r)) | set(r.applied))  # inactive under sharding


def test_fsdp2_grad_and_prefetch_zero(toy):
    r, d = export("fsdp2", toy(sharding="grad", forward_prefetch=0, precision="bf16"))
    assert d["fully_shard"]["reshard_after_forward"] is False and "backward_prefetch" not in d
    assert d["fully_shard"]["mp_policy"]["param_dtype"] == "bfloat16"
    assert "implicit prefetch" in reported(r)["forward_prefetch"]


def test_fsdp2_unknown_model_exports_unit_size_only():
    p = make_profile(sharding="full", unit_bytes=64 * MiB)  # fingerprint of no real model
    r, d = export("fsdp2", p)
    assert d["units"] is None and d["unit_bytes"] == 64 * MiB
    assert any("fingerprint" in n and "unit size, not the units" in n for n in d["_notes"])
    assert "UNITS = ..." in d["snippet"]


def test_fsdp2_refuses_sharding_none():
    with pytest.raises(CommtuneError, match="sharding none.*--format ddp") as exc:
        get_exporter("fsdp2").export(make_profile())
    assert "\n" not in str(exc.value)


def test_deepspeed_zero_stages(toy):
    _, d = export("deepspeed", toy(sharding="grad", unit_bytes=64 * MiB))
    z = d["zero_optimization"]
    assert z == {"stage": 2, "reduce_bucket_size": 16 * MiB, "allgather_bucket_size": 16 * MiB,
                 "overlap_comm": True, "communication_data_type": "fp32"}
    r, d = export("deepspeed", toy(sharding="full", unit_bytes=400, forward_prefetch=3, backward_prefetch=3,
                                   reshard_after_forward=4, reduce_precision="bf16"))
    z = d["zero_optimization"]
    assert (z["stage"], z["reduce_bucket_size"], z["stage3_prefetch_bucket_size"]) == (3, 100, 300)
    assert z["zero_hpz_partition_size"] == 4 and z["communication_data_type"] == "bf16"
    assert z["stage3_param_persistence_threshold"] == 100_000
    assert "backward_prefetch" in r.applied and "reshard_after_forward" in r.applied
    r, d = export("deepspeed", toy(sharding="hybrid", reshard_after_forward=False, backward_prefetch=2))
    z = d["zero_optimization"]
    assert z["mics_shard_size"] == 4 and z["reduce_bucket_size"] == 1500  # unit_bytes 0: the largest unit
    assert {"unit_bytes", "reshard_after_forward", "backward_prefetch"} <= set(reported(r))


def test_deepspeed_sharding_none_unchanged():
    a = get_exporter("deepspeed").export(make_profile(sharding="none")).text
    assert "stage" not in json.loads(a)["zero_optimization"]


def test_megatron_configs(toy):
    _, d = export("megatron", make_profile(fusion_policy="static", fusion_threshold_bytes=100 * MiB))
    assert d["ddp_config"] == {"use_distributed_optimizer": False, "bucket_size": 25 * MiB,
                               "grad_reduce_in_fp32": True, "overlap_grad_reduce": True}
    assert "DistributedDataParallelConfig(use_distributed_optimizer=False, bucket_size=26214400" in d["snippet"]
    ast.parse(d["snippet"])
    r, d = export("megatron", toy(sharding="grad", unit_bytes=400))
    assert d["ddp_config"] == {"use_distributed_optimizer": True, "bucket_size": 100, "overlap_grad_reduce": True,
                               "overlap_param_gather": True, "grad_reduce_in_fp32": True}
    r, d = export("megatron", toy(sharding="hybrid", unit_bytes=400, reduce_precision="bf16"))
    c = d["ddp_config"]
    assert c["use_megatron_fsdp"] and c["data_parallel_sharding_strategy"] == "optim_grads_params"
    assert c["suggested_communication_unit_size"] == 100 and c["num_distributed_optimizer_instances"] == 2
    assert {"reduce_precision", "reshard_after_forward", "backward_prefetch"} <= set(reported(r))


SHARDED = [dict(zip(("sharding", "unit_bytes", "forward_prefetch", "reduce_precision", "num_streams"), v))
           for v in itertools.product(("grad", "full", "hybrid"), (0, 1200), (0, 1), ("fp32", "bf16"), (1, 2))]


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_every_active_sharded_knob_is_applied_or_reported(fmt, toy):
    for cfg in SHARDED:
        p = toy(**cfg)
        if fmt in ("ddp", "horovod", "nccl"):  # all-reduce DP only: nothing of a sharded profile is expressible
            with pytest.raises(CommtuneError, match=f"the {fmt} format cannot express any tuned knob.*sharding="):
                get_exporter(fmt).export(p)
            continue
        r = get_exporter(fmt).export(p)
        active = set(p.knobs.active())
        got = {u.knob for u in r.unsupported}
        assert set(r.applied) | got == active and not set(r.applied) & got, cfg


def test_exporters_check_the_layout(toy):
    with pytest.raises(CommtuneError, match="shard_group_size 3 does not divide the world size 8"):
        get_exporter("fsdp2").export(toy(sharding="hybrid", shard_group_size=3))
    with pytest.raises(CommtuneError, match="backward_prefetch 3: toy has 3 sharding unit"):
        get_exporter("deepspeed").export(toy(sharding="full", backward_prefetch=3))
