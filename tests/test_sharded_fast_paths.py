"""The sharded simulator's fast paths agree exactly with their references: the compiled greedy
unit grouping with ``group_units``, the compiled timeline (``Simulator.run`` and ``run_batch``)
with the reference scheduler ``schedule_sharded``, the tabulated shard coefficients with the
network model; ``StepResult.collectives`` is built only when read; the caches stay bounded."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.knobs import Knobs
from commtune.models.base import GradTensor, Layer, ModelProfile
from commtune.models.units import group_units
from simulators import CalibratedNetwork, KnobArrays, Simulator, build_workload
from simulators import engine
from simulators.calibrated import CalibratedParams
from simulators.network import SHARD_OPS
from simulators.sharded import (UnitPlan, _compiled, _greedy_units, _timeline, collective_lines,
                                reference_collectives, schedule_sharded, shard_coeff_table, sharded_params, timeline,
                                unit_times)


def _random_model(rng: np.random.Generator, blocks: bool) -> ModelProfile:
    """1-40 layers, some without parameters (never all), a few far larger than the rest; random times."""
    sizes = [0 if kind < 0.2 else int(rng.integers(1, 5_000_000 if kind < 0.9 else 80_000_000))
             for kind in rng.random(int(rng.integers(1, 41)))]
    sizes[int(rng.integers(0, len(sizes)))] = int(rng.integers(1, 5_000_000))
    layers = []
    for i, n in enumerate(sizes):
        block = (f"b{i // int(rng.integers(1, 4))}" if rng.random() < 0.8 else None) if blocks else None
        layers.append(Layer(f"l{i}", (GradTensor(f"w{i}", n),) if n else (), fwd_time_s=float(rng.uniform(1e-5, 3e-3)),
                            bwd_time_s=float(rng.uniform(1e-5, 6e-3)), block=block))
    return ModelProfile("random", tuple(layers), measured_batch_size=1)


def _cluster(rng: np.random.Generator) -> ClusterSpec:
    return ClusterSpec(nodes=int(rng.choice([1, 2, 4])), gpus_per_node=int(rng.choice([1, 2, 4, 8])),
                       inter_bw_Bps=float(rng.uniform(1e9, 12e9)), per_stream_Bps=float(rng.uniform(0.5e9, 4e9)),
                       intra_bw_Bps=float(rng.uniform(20e9, 200e9)), inter_latency_s=float(rng.uniform(5e-6, 5e-5)),
                       intra_latency_s=float(rng.uniform(1e-6, 1e-5)), collective_jitter_s=float(rng.choice([0, 4e-6])))


def _configs(rng: np.random.Generator, n: int, world: int, gpn: int) -> list[Knobs]:
    divisors = [d for d in (0, 1, 2, 4, 8, 16, 32) if d == 0 or (d <= world and world % d == 0)]
    return [Knobs(
        sharding=str(rng.choice(["grad", "full", "hybrid"])), shard_group_size=int(rng.choice(divisors)),
        unit_bytes=int(rng.choice([0, int(2 ** rng.uniform(2, 30))])),
        forward_prefetch=int(rng.integers(0, 5)), backward_prefetch=int(rng.integers(0, 5)),
        reshard_after_forward=[True, False, 2, gpn][int(rng.integers(0, 4))],
        reduce_precision=str(rng.choice(["fp32", "bf16"])), num_streams=int(rng.integers(1, 9)),
    ) for _ in range(n)]


def _calibrated(sim: Simulator) -> Simulator:
    p = CalibratedParams(link_Bps=3e9, per_flow_Bps=1e9, alpha_s=40e-6, launch_s=15e-6, control_latency_s=1e-4,
                         small_step_s=60e-6, small_per_stream_s=20e-6, bound_sharpness=3.0)
    return Simulator(sim.workload, sim.cluster, CalibratedNetwork(p, sim.cluster.world_size))


def _plan_arrays(plan: UnitPlan) -> list:
    return [plan.names, plan.numel.tolist(), plan.unit_of.tolist(), plan.fwd_reach.tolist(), plan.bwd_reach.tolist(),
            plan.grads_ready.tolist(), plan.kept.tolist(), plan.regather_order.tolist()]


# unit grouping ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_greedy_plan_equals_group_units(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        model = _random_model(rng, blocks=bool(rng.integers(0, 2)))
        w = build_workload(model, "V100", 1, "fp32")
        total = model.num_params * 4
        for unit_bytes in {1, 3, 4, 5, int(rng.integers(1, max(total, 2))), int(2 ** rng.uniform(10, 30)), total,
                           2 * total + 8}:
            fast = UnitPlan.build(w, unit_bytes)
            ref = UnitPlan.from_units(group_units(model, unit_bytes), len(model.layers))
            assert _plan_arrays(fast) == _plan_arrays(ref), unit_bytes


def test_greedy_kernel_uncompiled_equals_compiled():
    rng = np.random.default_rng(11)
    for _ in range(200):
        numel = rng.integers(0, 1000, size=int(rng.integers(1, 30)))
        numel[rng.random(len(numel)) < 0.3] = 0
        cap = int(rng.integers(1, 3000))
        outs = []
        for fn in (_greedy_units, _compiled(_greedy_units)):
            arrays = (np.empty(len(numel), np.int64), np.empty(len(numel), np.bool_), np.empty(len(numel), np.bool_),
                      np.zeros(len(numel), np.int64))
            units = fn(numel.astype(np.int64), cap, *arrays)
            outs.append((units, *(a.tolist() for a in arrays)))
        assert outs[0] == outs[1]


# the compiled timeline against the reference scheduler ---------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("calibrated", [False, True])
def test_run_and_batch_equal_reference_scheduler(seed, calibrated):
    rng = np.random.default_rng(100 + seed)
    for _ in range(6):
        cluster = _cluster(rng)
        sim = Simulator(build_workload(_random_model(rng, blocks=True), "V100", 1, "amp"), cluster)
        sim = _calibrated(sim) if calibrated else sim
        configs = _configs(rng, 25, cluster.world_size, cluster.gpus_per_node)
        batch = sim.run_batch(configs)
        arrays = KnobArrays.from_knobs(configs)
        params = sharded_params(arrays, sim.workload, sim.cluster)
        lines = collective_lines(arrays, params, sim.workload, sim.network, sim.cluster)
        for i, k in enumerate(configs):
            plan = sim.unit_plan(k.unit_bytes)
            times = unit_times(plan, lines[i:i + 1], sim._sharpness)
            _, compute_end, comm_end, busy = schedule_sharded(
                plan, sim._layer_fwd.tolist(), sim._layer_bwd.tolist(), *times[0].tolist(), bool(params.regather[i]),
                bool(params.hybrid[i]), k.forward_prefetch, k.backward_prefetch)
            step = max(compute_end, comm_end) + float(params.optimizer_s[i]) + cluster.step_overhead_s
            r = sim.run(k)
            assert (r.step_time_s, r.comm_time_s) == (step, busy), k
            for key, value in r.to_dict().items():
                if key in batch:
                    assert batch[key][i] == value, (key, k)


def test_timeline_uncompiled_equals_compiled():
    rng = np.random.default_rng(7)
    cluster = _cluster(rng)
    sim = Simulator(build_workload(_random_model(rng, blocks=True), "V100", 1, "amp"), cluster)
    configs = _configs(rng, 40, cluster.world_size, cluster.gpus_per_node)
    arrays = KnobArrays.from_knobs(configs)
    params = sharded_params(arrays, sim.workload, sim.cluster)
    lines = collective_lines(arrays, params, sim.workload, sim.network, sim.cluster)
    plan = sim.unit_plan(0)
    times = np.ascontiguousarray(unit_times(plan, lines, sim._sharpness))
    outs = []
    for fn in (_timeline, _compiled(_timeline)):
        out = np.empty((3, len(configs)))
        fn(sim._layer_fwd, sim._layer_bwd, plan.unit_of, plan.fwd_reach, plan.bwd_reach, plan.grads_ready, plan.kept,
           plan.regather_order, times, params.regather, params.hybrid, params.forward_prefetch,
           params.backward_prefetch, *out)
        outs.append(out.tolist())
    assert outs[0] == outs[1]
    assert np.asarray(timeline(plan, sim._layer_fwd, sim._layer_bwd, times, params.regather, params.hybrid,
                               params.forward_prefetch, params.backward_prefetch)).tolist() == outs[0]


def test_shard_coeff_table_is_the_network_model():
    rng = np.random.default_rng(3)
    for net in (Simulator(build_workload(_random_model(rng, True), "V100", 1), _cluster(rng)).network,
                _calibrated(Simulator(build_workload(_random_model(rng, True), "V100", 1), _cluster(rng))).network):
        for group in range(1, net.world_size + 1):
            table = shard_coeff_table(net, group)
            for j, op in enumerate(SHARD_OPS):
                for k in range(1, table.shape[-1] + 1):
                    want = [float(x) for x in net.shard_coeffs(op, float(k), group)]
                    assert table[j, :, k - 1].tolist() == want, (op, group, k)
        assert shard_coeff_table(net, 1) is shard_coeff_table(net, 1)  # computed once


# collectives on demand, bounded caches -----------------------------------------------------------------------

def _small_sim() -> Simulator:
    rng = np.random.default_rng(21)
    return Simulator(build_workload(_random_model(rng, blocks=True), "V100", 1, "amp"),
                     ClusterSpec(nodes=2, gpus_per_node=4, inter_bw_Bps=4e9, intra_bw_Bps=100e9))


def test_collectives_built_when_read_and_kept_out_of_metrics():
    sim = _small_sim()
    k = Knobs(sharding="hybrid", forward_prefetch=2, backward_prefetch=1)
    r = sim.run(k)
    assert "collectives" not in r.__dict__  # not built yet
    assert set(r.to_dict()) == set(engine.METRICS) | {"forward_s", "backward_s", "optimizer_s", "interference_s"}
    kinds = {c.kind for c in r.collectives}
    assert kinds == {"allgather", "regather", "reduce_scatter", "replica_allreduce"}
    assert r.collectives is r.collectives  # built once
    assert max(c.end_s for c in r.collectives) + r.optimizer_s + sim.cluster.step_overhead_s <= r.step_time_s
    again = pickle.loads(pickle.dumps(sim.run(k)))
    assert again.collectives == r.collectives and again == r
    plan = sim.unit_plan(0)
    assert r.collectives == reference_collectives(
        plan, sim._layer_fwd, sim._layer_bwd,
        unit_times(plan, sim._entries[(1, "hybrid", 0, True, "fp32")].lines, sim._sharpness), True, True, 2, 1)
    assert sim.run(Knobs()).collectives == ()


def test_caches_are_bounded(monkeypatch):
    monkeypatch.setattr(engine, "PLAN_CACHE", 4)
    monkeypatch.setattr(engine, "LINE_CACHE", 3)
    sim = _small_sim()
    configs = [Knobs(sharding="full", unit_bytes=2**20 * (1 + i), num_streams=1 + i % 8) for i in range(20)]
    first = [sim.run(k).step_time_s for k in configs]
    assert len(sim._plans) <= 4 and len(sim._entries) <= 3
    assert [sim.run(k).step_time_s for k in configs] == first  # evicted entries rebuilt the same
    assert sim.run_batch(configs)["step_time_s"].tolist() == first


def test_bad_group_not_cached():
    sim = _small_sim()
    for _ in range(2):  # the error is raised again, not hidden by a cache
        with pytest.raises(CommtuneError, match="shard_group_size 3 does not divide the world size 8"):
            sim.run(Knobs(sharding="hybrid", shard_group_size=3))
    assert sim.run(Knobs(sharding="hybrid", shard_group_size=4)).step_time_s > 0
