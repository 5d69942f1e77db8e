"""The sharded step simulator (issue 26 §2): closed forms of the sharded collectives, a
hand-computed 2-unit timeline, HSDP's all-reduce, the batch engine against the reference
scheduler, sharding: none unchanged, monotonic sanity."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from commtune.cluster import ClusterSpec, preset
from commtune.errors import CommtuneError
from commtune.knobs import FSDP2_DEFAULT, Knobs
from commtune.models import load_model
from commtune.models.base import GradTensor, Layer, ModelProfile
from simulators import AnalyticalNetwork, CalibratedNetwork, KnobArrays, Simulator, build_workload
from simulators.calibrated import CalibratedParams
from simulators.network import ring_allgather_time, ring_allreduce_time


def _gpt2_blocks() -> ModelProfile:
    """gpt2 with FSDP's wrapping: one unit per transformer block ``h.N``, the rest the root."""
    m = load_model("gpt2")
    layers = tuple(dataclasses.replace(layer, block=".".join(layer.name.split(".")[:2]))
                   if layer.name.startswith("h.") else layer for layer in m.layers)
    return dataclasses.replace(m, layers=layers)


@pytest.fixture(scope="module")
def gpt2_sim() -> Simulator:
    return Simulator(build_workload(_gpt2_blocks(), "V100", 8, "amp"), preset("vpc-32gbit", nodes=4, gpus_per_node=8))


def _flat(nodes: int, g: int, alpha: float = 20e-6, bw: float = 1e9) -> ClusterSpec:
    """One link rate and one hop latency everywhere, no launch cost: the plain ring."""
    return ClusterSpec(nodes=nodes, gpus_per_node=g, inter_bw_Bps=bw, intra_bw_Bps=bw, inter_latency_s=alpha,
                       intra_latency_s=alpha, launch_overhead_s=0.0)


# closed forms -----------------------------------------------------------------------------------------

def test_ring_allgather_formula():
    assert ring_allgather_time(8e6, 4, 1e-5, 1e9) == pytest.approx(3 * 1e-5 + 0.75 * 8e6 / 1e9, rel=1e-15)
    assert ring_allgather_time(8e6, 1, 1e-5, 1e9) == 0.0


@pytest.mark.parametrize("nodes,g", [(1, 8), (4, 2), (8, 1)])
def test_analytical_allgather_reduce_scatter_are_the_ring(nodes, g):
    net = AnalyticalNetwork(_flat(nodes, g))
    n, S = nodes * g, 64e6
    want = ring_allgather_time(S, n, 20e-6, 1e9)
    assert net.allgather_time(S) == pytest.approx(want, rel=1e-12)
    assert net.reduce_scatter_time(S) == pytest.approx(want, rel=1e-12)
    # each is half of the ring all-reduce's 2(n-1) steps
    assert 2 * net.allgather_time(S) == pytest.approx(ring_allreduce_time(S, n, 20e-6, 1e9), rel=1e-12)


def test_analytical_topology_hops_and_caps():
    c = ClusterSpec(nodes=4, gpus_per_node=8, inter_bw_Bps=4e9, per_stream_Bps=1.25e9, intra_bw_Bps=100e9,
                    inter_latency_s=30e-6, intra_latency_s=5e-6, launch_overhead_s=10e-6)
    net = AnalyticalNetwork(c)
    S = 1e8
    # world: 32 ranks on 4 nodes, 3 inter-node hops, 28 intra, rate min(K*c, B)
    k = 2
    want = 28 * 5e-6 + 3 * 30e-6 + k * 10e-6 + 31 / 32 * S / min(k * 1.25e9, 4e9)
    assert net.allgather_time(S, k) == pytest.approx(want, rel=1e-12)
    # a group inside one node: the intra-node fabric only
    assert net.reduce_scatter_time(S, k, 8) == pytest.approx(7 * 5e-6 + k * 10e-6 + 7 / 8 * S / 100e9, rel=1e-12)
    # HSDP: 8 concurrent rings of 4 ranks (one per node) on each NIC, each at min(K*c, B/8), of S/8 bytes
    rate = min(k * 1.25e9, 4e9 / 8)
    want = 2 * 3 * 30e-6 + k * 10e-6 + 2 * 3 / (4 * rate) * S / 8
    assert net.replica_allreduce_time(S, k, 8) == pytest.approx(want, rel=1e-12)
    assert net.replica_allreduce_time(S, k, 32) == 0.0


def test_analytical_replica_allreduce_closed_form():
    net = AnalyticalNetwork(_flat(4, 2))
    S = 32e6
    # groups of 2 = one node each; 4 replica rings (2 per NIC) over the 4 nodes
    assert net.replica_allreduce_time(S, 1, 2) == pytest.approx(ring_allreduce_time(S / 2, 4, 20e-6, 1e9 / 2),
                                                                rel=1e-12)


def test_calibrated_sharded_collectives():
    p = CalibratedParams(link_Bps=1e9, per_flow_Bps=math.inf, alpha_s=1e-4, launch_s=0.0, control_latency_s=1e-4)
    net = CalibratedNetwork(p, 6)
    S = 12e6
    assert net.allgather_time(S) == pytest.approx(ring_allgather_time(S, 6, 1e-4, 1e9), rel=1e-12)
    assert net.reduce_scatter_time(S, 1, 3) == pytest.approx(ring_allgather_time(S, 3, 1e-4, 1e9), rel=1e-12)
    assert net.replica_allreduce_time(S, 1, 3) == pytest.approx(ring_allreduce_time(S / 3, 2, 1e-4, 1e9), rel=1e-12)
    # the latency bound scales with the ring's steps like the all-reduce's f(K)
    q = net.replace(small_step_s=1e-3)
    assert q.allgather_time(1.0) == pytest.approx(5e-3, rel=1e-6)


# the hand-computed 2-unit timeline ---------------------------------------------------------------------

F, B_, N = 1e-3, 2e-3, 1_000_000  # forward and backward per layer, elements per layer


def _two_units(nodes: int = 2, g: int = 1) -> Simulator:
    layers = tuple(Layer(f"l{i}", (GradTensor(f"w{i}", N),), fwd_time_s=F, bwd_time_s=B_) for i in range(2))
    model = ModelProfile("two", layers, measured_batch_size=1)
    return Simulator(build_workload(model, "V100", 1, "fp32", optimizer=False), _flat(nodes, g, alpha=0.0))


def test_two_unit_collective_times():
    sim = _two_units()
    assert sim.network.allgather_time(4 * N) == pytest.approx(0.5 * 4 * N / 1e9)  # 2 ms


@pytest.mark.parametrize("prefetch", [0, 1])
def test_two_unit_full_reshard(prefetch):
    sim = _two_units()
    G = R = sim.network.allgather_time(4 * N)
    r = sim.run(Knobs(sharding="full", forward_prefetch=prefetch, backward_prefetch=prefetch))
    if prefetch == 0:
        # gather u0, f, gather u1, f | regather u1, b, RS u1, regather u0 (behind RS u1 on the link), b, RS u0
        tf = 2 * G + 2 * F
        step = tf + G + B_ + R + G + B_ + R
    else:
        tf = max(G + F, 2 * G) + F
        t1 = tf + G + B_  # u1's backward (its regather issued first)
        link = max(t1, tf + 2 * G) + R  # RS u1 behind the regather of u0
        t0 = max(t1, tf + 2 * G) + B_
        step = max(t0, link) + R
    assert r.step_time_s == pytest.approx(step, rel=1e-12)
    kinds = ["allgather", "allgather", "regather", "reduce_scatter", "regather", "reduce_scatter"]
    if prefetch == 1:  # u0's regather is issued before u1's reduce-scatter
        kinds[3:5] = ["regather", "reduce_scatter"]
    assert [c.kind for c in r.collectives] == kinds
    assert r.num_buffers == 2 and r.negotiation_s == 0.0
    assert r.comm_time_s == pytest.approx(4 * G + 2 * R, rel=1e-12)


def test_two_unit_no_reshard_and_grad():
    sim = _two_units()
    G = R = sim.network.allgather_time(4 * N)
    tf = max(G + F, 2 * G) + F
    t0 = tf + 2 * B_
    step = max(t0, tf + B_ + R) + R
    keep = sim.run(Knobs(sharding="full", reshard_after_forward=False))
    grad = sim.run(Knobs(sharding="grad"))
    assert keep.step_time_s == pytest.approx(step, rel=1e-12)
    assert grad.step_time_s == keep.step_time_s
    assert [c.kind for c in grad.collectives].count("regather") == 0


def test_unit_host_cost_adds_to_every_sharded_collective():
    """ClusterSpec.unit_host_s + unit_host_s_per_byte * S lengthens each collective by exactly that."""
    base = _two_units()
    h0, h1 = 3e-4, 2e-9
    host = Simulator(base.workload, dataclasses.replace(base.cluster, unit_host_s=h0, unit_host_s_per_byte=h1))
    k = Knobs(sharding="full", reduce_precision="bf16")
    plain, costly = base.run(k).collectives, host.run(k).collectives
    assert [c.kind for c in plain] == [c.kind for c in costly]
    for a, b in zip(plain, costly):
        size = (2 if a.kind == "reduce_scatter" else 4) * N  # fp32 parameters, a bf16 reduction
        assert b.end_s - b.start_s == pytest.approx(a.end_s - a.start_s + h0 + h1 * size, rel=1e-12)
    with pytest.raises(CommtuneError, match="unit_host_s must be a non-negative time"):
        dataclasses.replace(base.cluster, unit_host_s=-1.0)


def test_bf16_reduce_halves_reduce_scatter():
    sim = _two_units()
    r32 = sim.run(Knobs(sharding="grad", reduce_precision="fp32")).collectives
    r16 = sim.run(Knobs(sharding="grad", reduce_precision="bf16")).collectives
    d = lambda cs: [c.end_s - c.start_s for c in cs if c.kind == "reduce_scatter"]  # noqa: E731
    assert d(r16) == pytest.approx([x / 2 for x in d(r32)], rel=1e-12)


def test_hybrid_adds_replica_allreduce():
    sim = _two_units(nodes=2, g=2)
    r = sim.run(Knobs(sharding="hybrid", shard_group_size=2))
    rs = [c for c in r.collectives if c.kind == "reduce_scatter"]
    ar = [c for c in r.collectives if c.kind == "replica_allreduce"]
    assert [c.unit for c in ar] == [c.unit for c in rs] == [1, 0]
    t_ar = sim.network.replica_allreduce_time(4 * N, 1, 2)
    assert t_ar > 0
    for a, s in zip(ar, rs):
        assert a.start_s >= s.end_s and a.end_s - a.start_s == pytest.approx(t_ar)
    assert ar[0].start_s == rs[0].end_s
    assert r.step_time_s == pytest.approx(max(ar[-1].end_s, rs[-1].end_s), rel=1e-12)
    # the in-node reduce-scatter is over 2 ranks on the intra-node fabric
    assert rs[0].end_s - rs[0].start_s == pytest.approx(sim.network.reduce_scatter_time(4 * N, 1, 2))
    assert r.optimizer_s == 0.0


def test_root_unit_kept_for_backward(gpt2_sim):
    r = gpt2_sim.run(FSDP2_DEFAULT)
    plan = gpt2_sim.unit_plan(0)
    assert r.num_buffers == 13 and plan.names[0] == "root"  # first in forward (wte)
    root = plan.names.index("root")
    regathered = {c.unit for c in r.collectives if c.kind == "regather"}
    assert root not in regathered and len(regathered) == 12


def test_optimizer_on_the_shard(gpt2_sim):
    w = gpt2_sim.workload
    assert gpt2_sim.run(Knobs(sharding="full")).optimizer_s == pytest.approx(w.optimizer_s / 32)
    assert gpt2_sim.run(Knobs(sharding="hybrid")).optimizer_s == pytest.approx(w.optimizer_s / 8)


def test_bad_shard_group_size(gpt2_sim):
    with pytest.raises(CommtuneError, match="shard_group_size 5 does not divide the world size 32"):
        gpt2_sim.run(Knobs(sharding="hybrid", shard_group_size=5))


# batch engine == reference; sharding none unchanged ----------------------------------------------------

def _random_sharded(n: int, seed: int = 1) -> list[Knobs]:
    rng = np.random.default_rng(seed)
    return [Knobs(
        sharding=str(rng.choice(["grad", "full", "hybrid"])),
        shard_group_size=int(rng.choice([0, 4, 16, 32])),
        unit_bytes=int(rng.choice([0, 0, 2**20, 8 * 2**20, 64 * 2**20])),
        forward_prefetch=int(rng.integers(0, 5)), backward_prefetch=int(rng.integers(0, 5)),
        reshard_after_forward=[True, False, 2, 8][int(rng.integers(0, 4))],
        reduce_precision=str(rng.choice(["fp32", "bf16"])),
        num_streams=int(rng.integers(1, 5)),
    ) for _ in range(n)]


def _calibrated(sim: Simulator) -> Simulator:
    p = CalibratedParams(link_Bps=3e9, per_flow_Bps=1e9, alpha_s=40e-6, launch_s=15e-6, control_latency_s=1e-4,
                         small_step_s=60e-6, small_per_stream_s=20e-6, bound_sharpness=3.0)
    return Simulator(sim.workload, sim.cluster, CalibratedNetwork(p, sim.cluster.world_size))


@pytest.mark.parametrize("calibrated", [False, True])
def test_batch_equals_reference(gpt2_sim, calibrated):
    sim = _calibrated(gpt2_sim) if calibrated else gpt2_sim
    configs = _random_sharded(60)
    batch = sim.run_batch(configs)
    for i, k in enumerate(configs):
        r = sim.run(k).to_dict()
        for key in ("step_time_s", "comm_time_s", "exposed_comm_s", "scaling_efficiency", "samples_per_s"):
            assert batch[key][i] == pytest.approx(r[key], rel=1e-9, abs=0), (key, k)
        assert batch["num_buffers"][i] == r["num_buffers"]


#: ``Simulator.run(k).step_time_s`` of ResNet-50 on vpc-32gbit 16x8, computed on main before sharding was simulated
BEFORE = [
    (Knobs(), 0.28051910033476796),
    (Knobs(fusion_policy="static", fusion_threshold_bytes=25 * 2**20), 0.20410576817270085),
    (Knobs(num_streams=4, stream_mode="round_robin", hierarchical=True), 0.09373672480956265),
    (Knobs(num_streams=3, wire_precision="fp16"), 0.13601896490605506),
]


def test_sharding_none_unchanged():
    from commtune.scenario import Scenario

    sim = Scenario(load_model("resnet50"), preset("vpc-32gbit")).simulator
    for k, step in BEFORE:
        assert sim.run(k).step_time_s == step
        assert sim.run(k).collectives == ()
    assert sim.run_batch([k for k, _ in BEFORE])["step_time_s"].tolist() == [s for _, s in BEFORE]


def test_mixed_batch_keeps_allreduce_rows(gpt2_sim):
    plain = [Knobs(), Knobs(num_streams=3, stream_mode="round_robin"), Knobs(fusion_policy="static")]
    sharded = _random_sharded(3)
    alone = gpt2_sim.run_batch(plain)
    alone_sharded = gpt2_sim.run_batch(sharded)
    mixed = gpt2_sim.run_batch([plain[0], *sharded, plain[1], plain[2]])
    assert set(mixed) == set(alone)
    for key, val in alone.items():
        assert mixed[key][[0, 4, 5]].tolist() == val.tolist(), key
        assert mixed[key][[1, 2, 3]].tolist() == alone_sharded[key].tolist(), key


# monotonic sanity --------------------------------------------------------------------------------------

def test_more_bandwidth_never_slower():
    model = _gpt2_blocks()
    w = build_workload(model, "V100", 8, "amp")
    configs = _random_sharded(40, seed=7)
    steps = []
    for gbit in (5, 10, 25, 100):
        c = dataclasses.replace(preset("vpc-32gbit", nodes=4, gpus_per_node=8), inter_bw_Bps=gbit * 1e9 / 8,
                                per_stream_Bps=math.inf)
        steps.append(Simulator(w, c).run_batch(configs)["step_time_s"])
    for slow, fast in zip(steps, steps[1:]):
        assert np.all(fast <= slow * (1 + 1e-12))


def test_prefetch_helps_when_comm_bound(gpt2_sim):
    for sharding in ("full", "hybrid", "grad"):
        p0 = gpt2_sim.run(Knobs(sharding=sharding, forward_prefetch=0, backward_prefetch=0))
        p1 = gpt2_sim.run(Knobs(sharding=sharding, forward_prefetch=1, backward_prefetch=1))
        assert p0.exposed_comm_s > 0.1 * p0.compute_time_s  # comm-bound at 32 Gbit/s
        assert p1.step_time_s <= p0.step_time_s
    full0 = gpt2_sim.run(Knobs(sharding="full", forward_prefetch=0, backward_prefetch=0))
    full1 = gpt2_sim.run(Knobs(sharding="full", forward_prefetch=1, backward_prefetch=1))
    assert full1.step_time_s < full0.step_time_s
