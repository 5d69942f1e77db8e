"""Matmul shapes (Layer.matmul, the Llama builder's opt-in) and the workload's per-tile matmul cost
(``build_workload(matmul_k0=...)``), and checkpointing a fraction of the blocks: closed forms, and
the built-in zoo's workloads unchanged."""
from __future__ import annotations

import math

import numpy as np
import pytest

from commtune.devices import get_device
from commtune.errors import CommtuneError
from commtune.models import ModelProfile, load_model
from commtune.models.base import GradTensor, Layer
from commtune.models.zoo import _LLAMA3_8B, _llama
from simulators.workload import build_workload, checkpointed_blocks, matmul_time_factors


def _one_linear(m: int, k: int, n: int) -> ModelProfile:
    mm = 2.0 * m * k * n
    layer = Layer("fc", (GradTensor("fc.weight", k * n),), mm + 7.0, 2 * mm + 7.0, matmul=(m, k, n))
    return ModelProfile("one-linear", (layer,))


def test_matmul_time_factors_closed_form():
    fwd, bwd = matmul_time_factors((16, 64, 32), 2, 100.0)
    mm = 2.0 * 16 * 64 * 32
    assert fwd == pytest.approx(mm * 100 / 64)
    assert bwd == pytest.approx(mm * (100 / 32 + 100 / (2 * 16)))


def test_a_layers_time_under_the_tile_cost():
    """fwd = (F + 2MKN·k0/K)·b/R; bwd = (B + 2MKN·(k0/N + k0/(b·M)))·b/R."""
    m, k, n, b, k0 = 128, 4096, 1024, 2, 4096.0
    rate = get_device("A100").flops_per_s("bf16")
    w = build_workload(_one_linear(m, k, n), "A100", batch_size=b, precision="bf16", optimizer=False, matmul_k0=k0)
    mm = 2.0 * m * k * n
    assert w.forward_s == pytest.approx((mm + 7 + mm * k0 / k) * b / rate, rel=1e-12)
    assert w.backward_s == pytest.approx((2 * mm + 7 + mm * (k0 / n + k0 / (b * m))) * b / rate, rel=1e-12)
    # K = k0: the forward matmul at half the rate
    w0 = build_workload(_one_linear(m, k, n), "A100", batch_size=b, precision="bf16", optimizer=False)
    assert w.forward_s - w0.forward_s == pytest.approx(mm * b / rate, rel=1e-9)


def test_zoo_models_declare_no_shapes_and_keep_their_times():
    for name in ("resnet50", "bert-base", "gpt2", "llama3-8b"):
        model = load_model(name)
        assert all(layer.matmul is None for layer in model.layers)
        a = build_workload(model, "H100", batch_size=2, precision="bf16")
        b = build_workload(model, "H100", batch_size=2, precision="bf16", matmul_k0=8192.0)
        assert a.forward_s == b.forward_s and a.backward_s == b.backward_s
        assert np.array_equal(a.ready_s, b.ready_s) and np.array_equal(a.layer_backward_s, b.layer_backward_s)


def test_llama_shapes_are_the_linear_layers_and_change_nothing_else():
    plain, shaped = _llama(_LLAMA3_8B, 512), _llama(_LLAMA3_8B, 512, matmul_shapes=True)
    assert plain == shaped  # matmul is not part of equality; FLOPs and tensors are the same
    assert [layer.fwd_flops for layer in plain] == [layer.fwd_flops for layer in shaped]
    declared = [layer for layer in shaped if layer.matmul is not None]
    assert len(declared) == 7 * 32 + 1  # q, k, v, o, gate, up, down per block and the LM head
    q = next(layer for layer in shaped if layer.name.endswith("0.self_attn.q_proj"))
    assert q.matmul == (512, 4096, 4096)
    for layer in declared:
        m, k, n = layer.matmul
        assert 2 * m * k * n <= layer.fwd_flops and 4 * m * k * n <= layer.bwd_flops
        assert math.prod(layer.tensors[0].shape) == k * n


def test_checkpointed_blocks_follow_fms_fsdps_rule():
    model = load_model("llama3.2-1b", 128)
    blocks = [f"model.layers.{i}" for i in range(16)]
    assert checkpointed_blocks(model, 1.0) == set(blocks)
    assert checkpointed_blocks(model, 0.0) == set()
    assert checkpointed_blocks(model, 0.5) == set(blocks[0::2])  # [ac, no-ac, ac, no-ac, ...]
    assert checkpointed_blocks(model, 1 / 3) == set(blocks[1::3])  # [no-ac, ac, no-ac, ...]


def test_true_is_every_block_exactly_and_half_recomputes_half():
    model = load_model("llama3.2-1b", 256)
    full = build_workload(model, "H100", batch_size=1, precision="bf16", activation_checkpointing=True)
    one = build_workload(model, "H100", batch_size=1, precision="bf16", activation_checkpointing=1.0)
    none = build_workload(model, "H100", batch_size=1, precision="bf16")
    half = build_workload(model, "H100", batch_size=1, precision="bf16", activation_checkpointing=0.5)
    assert full.backward_s == one.backward_s and np.array_equal(full.ready_s, one.ready_s)
    assert half.backward_s - none.backward_s == pytest.approx((full.backward_s - none.backward_s) / 2, rel=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"activation_checkpointing": 1.5}, "activation checkpointing 1.5"),
    ({"activation_checkpointing": "yes"}, "activation checkpointing 'yes'"),
    ({"matmul_k0": -1.0}, "matmul_k0 -1.0"),
    ({"matmul_k0": math.inf}, "matmul_k0 inf"),
])
def test_bad_values_are_one_line(kwargs, message):
    with pytest.raises(CommtuneError) as e:
        build_workload(load_model("gpt2", 64), "H100", batch_size=1, precision="bf16", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
