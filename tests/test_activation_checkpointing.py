"""Activation checkpointing as a workload flag: each block's forward again in backward."""
from __future__ import annotations

import pytest

from commtune.cli import build_parser
from commtune.cli.common import scenario_from_args
from commtune.cluster import preset
from commtune.knobs import FSDP2_DEFAULT, Knobs
from commtune.models import load_model
from commtune.models.units import group_units
from commtune.scenario import Scenario
from simulators import build_workload


def test_recompute_adds_each_block_forward_to_backward() -> None:
    model = load_model("gpt2", 256)
    plain = build_workload(model, "V100", 4, "amp")
    ckpt = build_workload(model, "V100", 4, "amp", activation_checkpointing=True)
    flops_per_s = 26.5e12
    block_fwd = sum(l.fwd_flops for l in model.layers if l.block) * 4 / flops_per_s
    assert ckpt.backward_s == pytest.approx(plain.backward_s + block_fwd, rel=1e-12)
    assert ckpt.forward_s == plain.forward_s and ckpt.activation_checkpointing
    recompute = [s for s in ckpt.layer_backward if s[0].endswith("(recompute)")]
    assert [s[0] for s in recompute] == [f"h.{i} (recompute)" for i in reversed(range(12))]
    # ln_f (outside every block) is not recomputed: its gradient is ready at the same time
    assert ckpt.ready_s[0] == plain.ready_s[0] and ckpt.ready_s[-1] > plain.ready_s[-1]
    # h.11's tensors wait for h.11's recompute
    first_block = next(i for i, n in enumerate(ckpt.names) if n.startswith("h.11."))
    h11 = sum(l.fwd_flops for l in model.layers if l.block == "h.11") * 4 / flops_per_s
    assert ckpt.ready_s[first_block] - plain.ready_s[first_block] == pytest.approx(h11, rel=1e-9)


def test_no_blocks_nothing_recomputed() -> None:
    model = load_model("vgg16", 64)
    a, b = build_workload(model, "V100", 2), build_workload(model, "V100", 2, activation_checkpointing=True)
    assert a.backward_s == b.backward_s and list(a.ready_s) == list(b.ready_s)


def test_scenario_and_flag() -> None:
    args = build_parser().parse_args(["simulate", "--model", "gpt2", "--bw", "32gbit",
                                      "--activation-checkpointing", "--batch-size", "2"])
    sc = scenario_from_args(args)
    assert sc.activation_checkpointing and sc.workload.activation_checkpointing
    assert "activation checkpointing" in sc.describe()
    plain = Scenario(sc.model, sc.cluster, batch_size=2)
    assert sc.memory(Knobs()).activations < plain.memory(Knobs()).activations
    assert sc.simulator.run(Knobs()).step_time_s > plain.simulator.run(Knobs()).step_time_s
    off = scenario_from_args(build_parser().parse_args(["simulate", "--model", "gpt2", "--bw", "32gbit"]))
    assert not off.activation_checkpointing


def test_scenario_memory_uses_the_cluster() -> None:
    sc = Scenario(load_model("llama3.2-1b", 2048), preset("vpc-32gbit", 2, 8), batch_size=1, precision="bf16")
    full = sc.memory(FSDP2_DEFAULT)
    assert full.shard_degree == 16
    assert full.params == 2 * sum(-(-u.numel // 16) for u in group_units(sc.model))
