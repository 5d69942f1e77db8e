"""Memory model: closed-form per-GPU peaks for a small model under each sharding."""
from __future__ import annotations

import dataclasses

import pytest

from commtune.devices import get_device
from commtune.errors import CommtuneError
from commtune.knobs import FSDP2_DEFAULT, Knobs, ZERO2_DEFAULT
from commtune.models import GradTensor, Layer, ModelProfile, load_model
from simulators.memory import (
    RESERVE_BYTES, ParamBytes, activation_bytes, bytes_per_param, peak_memory, require_fit, shard_degree,
)


def _model() -> ModelProfile:
    """Units (unit_bytes 0): root = emb + head (112 elements), b0 (44), b1 (44); 200 in all."""
    def layer(name: str, numel: int, block: str | None, act: int, inp: int = 0) -> Layer:
        return Layer(name, (GradTensor(f"{name}.w", numel),), 1.0, 2.0, block=block,
                     act_bytes=act, input_bytes=inp)
    return ModelProfile("toy", (
        layer("emb", 100, None, 10), layer("b0.fc", 40, "b0", 20, 8), layer("b0.ln", 4, "b0", 6, 5),
        layer("b1.fc", 40, "b1", 20, 8), layer("b1.ln", 4, "b1", 6, 5), layer("head", 12, None, 30)))


def _peak(knobs: Knobs, **kw):
    args = dict(world_size=4, gpus_per_node=2, batch_size=3, precision="bf16", reserve_bytes=0)
    return peak_memory(_model(), knobs, **{**args, **kw})


ACT = 3 * (10 + 20 + 6 + 20 + 6 + 30)  # batch 3 x every layer's activations


def test_bytes_per_param() -> None:
    assert bytes_per_param("bf16") == bytes_per_param("fp16") == ParamBytes(2, 2, 12)  # ZeRO's 2 + 2 + 12
    assert bytes_per_param("fp32") == bytes_per_param("amp") == ParamBytes(4, 4, 8)
    assert bytes_per_param("fp32", "sgd") == ParamBytes(4, 4, 4)
    assert bytes_per_param("bf16", "sgd") == ParamBytes(2, 2, 8)
    with pytest.raises(CommtuneError, match="unknown optimizer 'lamb'; choose one of: adam, sgd"):
        bytes_per_param("bf16", "lamb")


def test_no_sharding_is_ddp() -> None:
    m = _peak(Knobs())
    assert (m.params, m.grads, m.optimizer_states) == (400, 400, 2400)
    assert m.ddp_buckets == 400 and m.gathered_params == m.unit_grads == 0  # second gradient copy
    assert m.activations == ACT and m.shard_degree == 1
    assert m.allocated == m.peak == 400 + 400 + 2400 + 400 + ACT


def test_grad_sharding_is_zero2() -> None:
    m = _peak(dataclasses.replace(ZERO2_DEFAULT, unit_bytes=0))
    shard = 28 + 11 + 11  # ceil(112/4) + 2 x 44/4
    assert (m.params, m.grads, m.optimizer_states) == (400, 2 * shard, 12 * shard)  # parameters replicated
    assert m.unit_grads == 112 * 4 and m.gathered_params == 0 and m.ddp_buckets == 0
    assert m.allocated == 400 + 100 + 600 + 448 + ACT


def test_full_sharding_fsdp2_defaults() -> None:
    m = _peak(FSDP2_DEFAULT)
    assert (m.params, m.grads, m.optimizer_states) == (100, 100, 600)
    # root (224 B gathered) and b0 (88 B): one unit + one prefetched; the root's fp32 gradient
    assert m.gathered_params == 224 + 88 and m.unit_grads == 112 * 4
    assert m.allocated == 100 + 100 + 600 + 312 + 448 + ACT and m.shard_degree == 4


def test_prefetch_reshard_and_reduce_precision() -> None:
    full = dataclasses.replace(FSDP2_DEFAULT, reshard_after_forward=False)
    assert _peak(full).gathered_params == 224 + 88 + 88  # every unit gathered at the turn
    m = _peak(dataclasses.replace(FSDP2_DEFAULT, forward_prefetch=0, backward_prefetch=0,
                                  reduce_precision="bf16"))
    assert (m.gathered_params, m.unit_grads) == (224, 112 * 2)
    m = _peak(dataclasses.replace(FSDP2_DEFAULT, forward_prefetch=2, backward_prefetch=0,
                                  reduce_precision="bf16"))
    assert (m.gathered_params, m.unit_grads) == (224, 224)  # backward's root + its grad beat forward's 400
    m = _peak(dataclasses.replace(FSDP2_DEFAULT, forward_prefetch=2, backward_prefetch=0,
                                  reduce_precision="bf16"), precision="amp")  # 4-byte parameters
    assert (m.gathered_params, m.unit_grads) == (800, 0)  # forward's three units beat 448 + 224
    m = _peak(dataclasses.replace(FSDP2_DEFAULT, reshard_after_forward=2))  # 2-way shards kept
    assert m.gathered_params == 312 + 2 * (56 + 22 + 22)
    assert _peak(dataclasses.replace(FSDP2_DEFAULT, reshard_after_forward=4)) == _peak(FSDP2_DEFAULT)


def test_hybrid_shards_over_the_group() -> None:
    m = _peak(dataclasses.replace(FSDP2_DEFAULT, sharding="hybrid"))  # 0 = GPUs per node (2)
    assert m.shard_degree == 2 and (m.params, m.grads, m.optimizer_states) == (200, 200, 1200)
    assert _peak(dataclasses.replace(FSDP2_DEFAULT, sharding="hybrid", shard_group_size=4)).params == 100
    with pytest.raises(CommtuneError, match="^shard group size 3 does not divide the world size 4"):
        shard_degree(dataclasses.replace(FSDP2_DEFAULT, sharding="hybrid", shard_group_size=3), 4, 2)


def test_units_by_size() -> None:
    """unit_bytes 200 (50 elements): each unit a flat buffer padded to the shard degree."""
    m = _peak(dataclasses.replace(FSDP2_DEFAULT, unit_bytes=200))  # units emb | b0.fc | b0.ln+b1.fc | b1.ln+head
    assert m.params == 2 * (25 + 10 + 11 + 4) and m.unit_grads == 4 * 100
    assert m.gathered_params == 2 * (100 + 40)


def test_fp32_and_checkpointing() -> None:
    m = _peak(Knobs(), precision="fp32")
    assert (m.params, m.grads, m.optimizer_states, m.ddp_buckets) == (800, 800, 1600, 800)
    assert m.activations == 2 * ACT
    # checkpointing: root layers keep theirs (10 + 30), each block its input (8), one block in full (26)
    assert activation_bytes(_model(), 3, "bf16", checkpointing=True) == 3 * (40 + 8 + 8 + 26)
    assert _peak(Knobs(), activation_checkpointing=True, precision="fp32").activations == 6 * 82
    vgg = load_model("vgg16", 64)  # no blocks: nothing to checkpoint
    assert activation_bytes(vgg, 2, checkpointing=True) == activation_bytes(vgg, 2)


def test_reserve_and_the_device_limit() -> None:
    model = load_model("llama3-8b", 4096)
    args = dict(world_size=128, gpus_per_node=8, batch_size=1, precision="bf16")
    ddp = peak_memory(model, Knobs(), **args)
    assert ddp.reserve == RESERVE_BYTES and ddp.peak == ddp.allocated + RESERVE_BYTES
    assert ddp.params + ddp.grads + ddp.optimizer_states == 16 * 8_030_261_248
    h100 = get_device("H100")
    with pytest.raises(CommtuneError) as err:
        require_fit(ddp, h100)
    msg = str(err.value)
    assert "\n" not in msg and f"({ddp.peak} bytes)" in msg and "device H100 has 80 GiB" in msg
    fsdp = peak_memory(model, FSDP2_DEFAULT, activation_checkpointing=True, **args)
    require_fit(fsdp, h100)  # 8B fully sharded over 128 GPUs fits
    assert fsdp.peak < 20 * 2**30 < ddp.peak
