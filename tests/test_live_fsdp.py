"""Live FSDP2 steps: the dispatch between DDP and FSDP2 trials (fast) and, on 2 gloo ranks
(slow), a worker group that re-shards a fresh copy of the model on the same ranks, and
``commtune search --objective live|multi`` over a sharded space."""
from __future__ import annotations

import json
import os
import time

import pytest

from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, FSDP2_DEFAULT, Knobs
from commtune.models.base import GradTensor, Layer, ModelProfile
from commtune.runtime.ddp_plan import DDPPlan, check_space, live_applicable, live_key
from commtune.search.space import load_space

#: what the fsdp space of issue 26 varies (its bundled file has base fsdp2_default)
FSDP_SPACE = ("name: fsdptest\nknobs:\n  sharding: full\n"
              "  unit_bytes: {choices: [0, 16MiB, 4GiB]}\n  forward_prefetch: {low: 1, high: 4}\n"
              "  backward_prefetch: {low: 0, high: 4}\n  reshard_after_forward: {choices: [true, false]}\n"
              "  reduce_precision: {choices: [fp32, bf16]}\n")


def _space(tmp_path, text, name="s.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return load_space(f)


def _blocked_profile() -> ModelProfile:
    """embedding, three blocks (the first of two layers), head: 4 units at unit_bytes 0."""
    def layer(name, block, numel=3000):
        return Layer(name, (GradTensor(name + ".w", numel),), fwd_time_s=0.002, bwd_time_s=0.004, block=block)
    return ModelProfile("blocked", (layer("emb", None), layer("b0.a", "b0"), layer("b0.b", "b0"), layer("b1.a", "b1"),
                                    layer("b2.a", "b2"), layer("head", None, 5000)), measured_batch_size=1)


# --------------------------------------------------------------------------- fast: dispatch

def test_live_key_keeps_active_sharded_knobs_only():
    k = Knobs.from_dict({"sharding": "grad", "unit_bytes": 2**20, "forward_prefetch": 2, "backward_prefetch": 3,
                         "num_streams": 4, "fusion_policy": "dynamic"})
    key = live_key(k)
    assert (key.sharding, key.unit_bytes, key.forward_prefetch) == ("grad", 2**20, 2)
    assert key.backward_prefetch == Knobs().backward_prefetch  # inactive under grad sharding
    assert (key.num_streams, key.fusion_policy) == (1, "static")  # all-reduce knobs: DDP's defaults
    assert live_key(dataclasses_replace(k, num_streams=8)) == key  # they do not change the trial
    assert live_key(dataclasses_replace(k, forward_prefetch=1)) != key
    assert live_key(DDP_DEFAULT) == DDP_DEFAULT and live_key(FSDP2_DEFAULT).sharding == "full"


def dataclasses_replace(k, **kw):
    import dataclasses

    return dataclasses.replace(k, **kw)


def test_live_applicable_accepts_sharded_and_static_ddp_only():
    assert live_applicable(FSDP2_DEFAULT) and live_applicable(DDP_DEFAULT)
    assert live_applicable(Knobs(sharding="hybrid"))  # dynamic fusion is inactive under sharding
    assert not live_applicable(Knobs())  # sharding none, dynamic fusion: Horovod's, not DDP's


def test_trial_plan_dispatches_on_sharding():
    from commtune.runtime.worker_loop import ShardSpec, same_ddp, trial_plan

    p = trial_plan(DDP_DEFAULT, "round_robin")
    assert isinstance(p, DDPPlan) and p.stream_mode == "round_robin"
    s = trial_plan(Knobs.from_dict({"num_streams": 4}, base=FSDP2_DEFAULT), "split", gpus_per_node=2)
    assert isinstance(s, ShardSpec) and s.gpus_per_node == 2 and s.knobs == live_key(FSDP2_DEFAULT)
    assert not same_ddp(s, p) and not same_ddp(p, s)


def test_live_space_check_accepts_sharded_spaces(tmp_path):
    check_space(_space(tmp_path, FSDP_SPACE))  # base Knobs(): fusion dynamic, inactive under full sharding
    check_space(_space(tmp_path, "name: mix\nbase: ddp_default\nknobs:\n  sharding: {choices: [none, full]}\n"
                                 "  fusion_threshold_bytes: {low: 1MiB, high: 64MiB}\n  unit_bytes: {choices: [0, 4MiB]}\n"))
    check_space(_space(tmp_path, "name: h\nknobs:\n  sharding: {choices: [grad, hybrid]}\n  shard_group_size: 2\n"))
    # a space that can yield sharding none must still fix DDP's static fusion
    with pytest.raises(CommtuneError, match="where sharding is none.*fixes fusion_policy=dynamic"):
        check_space(_space(tmp_path, "name: m\nknobs:\n  sharding: {choices: [none, full]}\n"))
    with pytest.raises(CommtuneError, match="cannot apply cycle_time_ms"):
        check_space(_space(tmp_path, "name: c\nknobs:\n  sharding: full\n  cycle_time_ms: {low: 1, high: 5}\n"))


def test_plan_shard_caps_prefetch_for_live_trials_only():
    torch = pytest.importorskip("torch")
    from commtune.runtime.shard import plan_shard
    from commtune.runtime.synthetic import build_model, layer_specs

    model = build_model(layer_specs(_blocked_profile()), "emulated")
    k = Knobs.from_dict({"unit_bytes": 2**30, "forward_prefetch": 3, "backward_prefetch": 2}, base=FSDP2_DEFAULT)
    with pytest.raises(CommtuneError, match="forward_prefetch 3: this model has 1 units"):
        plan_shard(model, k, 2)
    plan = plan_shard(model, k, 2, cap_prefetch=True)
    assert (len(plan.units), plan.forward_prefetch, plan.backward_prefetch) == (1, 1, 1)
    plan = plan_shard(model, Knobs.from_dict({"forward_prefetch": 4}, base=FSDP2_DEFAULT), 2, cap_prefetch=True)
    assert (len(plan.units), plan.forward_prefetch) == (4, 3)
    del torch


def test_synthetic_mirror_blocks_are_fsdp_units_and_keep_the_fingerprint():
    pytest.importorskip("torch")
    from commtune.models.units import group_units
    from commtune.runtime.fingerprint import module_profile
    from commtune.runtime.shard import block_modules
    from commtune.runtime.synthetic import build_model, layer_specs, synthetic_profile

    prof = _blocked_profile()
    model = build_model(layer_specs(prof), "emulated")
    assert block_modules(model) == ["blocks.0", "blocks.1", "blocks.2"]
    assert [n for n, _ in model.named_parameters()][:2] == ["layer0.p0", "blocks.0.layers.0.p0"]  # profile order
    assert module_profile(model).fingerprint() == prof.fingerprint()
    assert len(group_units(prof, 0)) == 4  # three blocks and the root (embedding + head)
    mirrored = synthetic_profile(prof, 0.5, 0.01, 0.02)
    assert [la.block for la in mirrored.layers] == [la.block for la in prof.layers]  # the mirror keeps blocks
    import dataclasses

    plain = dataclasses.replace(prof, layers=tuple(dataclasses.replace(la, block=None) for la in prof.layers))
    assert len(block_modules(build_model(layer_specs(plain), "real"))) == len(prof.layers)  # no blocks: one per layer
    r50 = synthetic_profile("resnet50", 0.01)  # the zoo's bottlenecks are its blocks
    assert len(block_modules(build_model(layer_specs(r50), "emulated"))) == len({la.block for la in r50.layers} - {None})


def test_reconfigurer_without_fresh_refuses_sharded_plans():
    pytest.importorskip("torch")
    from commtune.runtime.worker_loop import Reconfigurer, trial_plan

    r = Reconfigurer(object())
    with pytest.raises(CommtuneError, match="fresh copy"):
        r.apply(trial_plan(FSDP2_DEFAULT))


# --------------------------------------------------------------------------- slow: 2 gloo ranks

@pytest.mark.slow
def test_group_reshards_on_the_same_ranks_and_gradients_equal_all_reduce():
    from commtune.probe.launch import LaunchSpec
    from commtune.probe.live_group import WorkerGroup
    from commtune.runtime.synthetic import layer_specs

    task = {"layers": layer_specs(_blocked_profile()), "compute": "emulated", "mode": None, "steps": 2, "warmup": 1,
            "check_grads": True, "gpus_per_node": 2}
    big = Knobs.from_dict({"unit_bytes": 2**30, "forward_prefetch": 3}, base=FSDP2_DEFAULT)
    configs = [DDP_DEFAULT, FSDP2_DEFAULT, FSDP2_DEFAULT, big, Knobs.from_dict({"sharding": "grad"}, base=FSDP2_DEFAULT),
               Knobs.from_dict({"sharding": "hybrid", "reduce_precision": "bf16"}, base=FSDP2_DEFAULT),
               Knobs.from_dict({"reshard_after_forward": False, "backward_prefetch": 0}, base=FSDP2_DEFAULT),
               DDP_DEFAULT]
    with WorkerGroup(LaunchSpec(ranks=2, timeout_s=120), task) as g:
        results = [g.trial(live_key(k)) for k in configs]
    assert g.trials == len(configs)
    for k, r in zip(configs, results):
        assert r["grad_check"]["allclose"], (k.describe(), r["grad_check"])  # FSDP2's shards gathered, or DDP's
        assert len(r["step_times_s"]) == 2 and len(r["warmup_times_s"]) == 1 and not r["pruned"]
        assert ("shard" in r) == (k.sharding != "none")
    assert [r["rebuilt"] for r in results] == [False, True, False, True, True, True, True, True]
    assert [r["shard"]["units"] for r in results[1:7]] == [4, 4, 1, 4, 4, 4]
    assert results[3]["shard"]["forward_prefetch"] == 1  # 3 ahead of 1 unit: capped
    assert results[5]["shard"]["mesh_shape"] == [1, 2]  # hybrid, shard group = the 2 ranks per node
    assert results[1]["buckets"] == [] and results[-1]["buckets"]  # DDP buckets only under DDP


def _run_json(capsys, argv):
    from commtune.cli import main as run_cli

    rc = run_cli(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


LIVE = ["search", "--model", "resnet50", "--quiet", "--live-scale", "0.02", "--live-forward-ms", "20",
        "--live-backward-ms", "40", "--ranks", "2", "--live-steps", "2"]


@pytest.mark.slow
def test_live_search_over_a_sharded_space_writes_a_sharded_profile(tmp_path, capsys):
    from commtune.profiles import load_profile

    f = tmp_path / "fsdptest.yaml"
    f.write_text(FSDP_SPACE)
    out = tmp_path / "fsdp.json"
    d = _run_json(capsys, [*LIVE, "--objective", "live", "--space", str(f), "--trials", "3", "--workdir",
                           str(tmp_path), "-o", str(out), "--json"])
    assert d["objective"] == "live" and d["measured"]["step_time_s"] > 0
    best = Knobs.from_dict(d["best"])
    assert best.sharding == "full"
    prof = load_profile(out)
    assert prof.knobs.sharding == "full" and prof.measured["step_time_s"] > 0


@pytest.mark.slow
def test_multi_fidelity_confirms_sharded_configurations_live(tmp_path, capsys):
    f = tmp_path / "fsdptest.yaml"
    f.write_text(FSDP_SPACE)
    d = _run_json(capsys, [*LIVE, "--objective", "multi", "--confirm", "2", "--space", str(f), "--trials", "6",
                           "--workdir", str(tmp_path), "--no-profile", "--json"])
    rows = d["confirmed"]
    assert len(rows) == 2 and all(Knobs.from_dict(r["knobs"]).sharding == "full" for r in rows)
    assert all(r["measured_step_time_s"] > 0 for r in rows)


@pytest.mark.slow
def test_live_fsdp_search_of_the_users_model_gives_a_profile_shard_plans(tmp_path, capsys):
    from commtune.models.record import build_module
    from commtune.profiles import load_profile
    from commtune.runtime.checks import check_model
    from commtune.runtime.shard import plan_shard

    src = tmp_path / "mydecoder.py"
    src.write_text("import torch\nfrom torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                   "        super().__init__()\n        self.inp = nn.Linear(8, 32)\n"
                   "        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU()) for _ in range(4))\n"
                   "        self.head = nn.Linear(32, 4)\n\n    def forward(self, x):\n        x = self.inp(x)\n"
                   "        for block in self.layers:\n            x = block(x)\n        return self.head(x)\n\n"
                   "def make_model():\n    return Net()\n")
    f = tmp_path / "fsdpuser.yaml"
    f.write_text("name: fsdpuser\nknobs:\n  sharding: full\n  unit_bytes: {choices: [0, 4KiB]}\n"
                 "  forward_prefetch: {low: 1, high: 2}\n  reshard_after_forward: {choices: [true, false]}\n")
    spec = f"{src}:make_model"
    d = _run_json(capsys, ["search", "--objective", "live", "--model-factory", spec, "--input-shape", "8",
                           "--batch-size", "4", "--ranks", "2", "--space", str(f), "--trials", "3", "--live-steps", "2",
                           "--pruner", "none", "--workdir", str(tmp_path / "w"), "--json", "--quiet"])
    assert d["trials"] == 3 and d["measured"]["live"]["model_factory"] == spec
    assert d["measured"]["num_units"] >= 2  # FSDP2 units of the user's model, not DDP buckets
    prof = load_profile(d["profile_path"])
    assert prof.knobs.sharding == "full"
    model = build_module(spec)
    check_model(model, prof)  # the user's model's fingerprint
    assert len(plan_shard(model, prof.knobs, 2).units) == d["measured"]["num_units"]  # shard() applies it as measured
    assert set(d["measured"]["baselines"]) == {"ddp_default", "fsdp2_default"}  # measured on the same ranks


def test_autotuner_refuses_sharded_knobs_with_one_line():
    pytest.importorskip("torch")
    from commtune.runtime.tuner import _as_config, parse_space

    with pytest.raises(CommtuneError, match="'unit_bytes' is a sharded knob.*--space fsdp"):
        parse_space({"unit_bytes": [0, 2**20]})
    for item in (FSDP2_DEFAULT, {"sharding": "full"}):
        with pytest.raises(CommtuneError, match="sharded.*commtune.runtime.shard"):
            _as_config(item, DDP_DEFAULT)
    assert _as_config(DDP_DEFAULT, DDP_DEFAULT).knobs == DDP_DEFAULT


def _mirror(fwd=(0.01, 0.01, 0.01), bwd=(0.02, 0.02, 0.02)):
    pytest.importorskip("torch")
    from commtune.runtime.synthetic import build_model

    specs = [[f"l{i}", [4], f, b, None] for i, (f, b) in enumerate(zip(fwd, bwd))]
    return build_model(specs, "emulated")


def _step(model):
    torch = pytest.importorskip("torch")
    x = torch.randn(2, 8)
    out = model(x)
    fwd_end = model.clock.t
    out.sum().backward()
    return fwd_end


def test_mirror_compute_runs_on_the_device_timeline_and_host_blocking_overlaps_it():
    """No gate (DDP): each layer starts when the device's previous one ends, whatever the host
    does in between (here a 40 ms block before the last layer): the forward ends at t0 + 30 ms."""
    model = _mirror()
    model.blocks[2].register_forward_pre_hook(lambda *_: time.sleep(0.04))
    fwd_end = _step(model)
    c = model.clock
    assert fwd_end == pytest.approx(c.fwd_t0 + 0.03, abs=1e-9)
    assert c.bwd_t0 == fwd_end and c.t == pytest.approx(c.bwd_t0 + 0.06, abs=1e-9)


def test_mirror_layer_waits_for_its_units_gather():
    """A gated layer starts no earlier than its gate (its unit's all-gather completing), and the
    delay carries to the layers after it, as a GPU's compute stream waits on the all-gather stream."""
    from commtune.runtime.synthetic import _Gate

    model = _mirror()
    gate = _Gate()
    model.blocks[1].gate = gate
    gate.ready = time.perf_counter() + 0.05  # later than layer 0's end (~10 ms after the forward starts)
    fwd_end = _step(model)
    assert fwd_end == pytest.approx(gate.ready + 0.02, abs=1e-9)  # layers 1 and 2 after the gather
    assert model.clock.t == pytest.approx(fwd_end + 0.06, abs=1e-9)  # the backward's gather was earlier


def test_wait_for_gathers_gates_every_mirror_layer_by_its_nearest_unit():
    pytest.importorskip("torch")
    import torch.distributed as dist

    from commtune.probe.launch import free_port
    from commtune.runtime.shard import apply_plan, plan_shard
    from commtune.runtime.synthetic import build_model, layer_specs, synthetic_profile, wait_for_gathers

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        prof = synthetic_profile("gpt2", 0.001, 0.0, 0.0)
        model = build_model(layer_specs(prof), "emulated")
        plan = plan_shard(model, Knobs(sharding="full"), 1)
        model = apply_plan(model, plan)
        assert wait_for_gathers(model) == len(plan.units)
        layers = [m for m in model.modules() if hasattr(m, "compute")]
        assert all(layer.gate is not None for layer in layers)
        assert len({id(layer.gate) for layer in layers}) == len(plan.units)
        assert wait_for_gathers(model) == 0  # already gated
    finally:
        dist.destroy_process_group()
