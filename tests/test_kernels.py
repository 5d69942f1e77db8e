"""The compiled scheduler (simulators.kernels) against the Python reference scheduler.

``Simulator.run`` and ``Simulator.run_batch`` both run the compiled kernel, so these tests hold
each of them to :func:`simulators.system.schedule` (the reference, plain Python) directly, and
the scalar :func:`~simulators.system.system_row` to :func:`~simulators.system.system_params`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import simulators.kernels as kmod
from commtune.cluster import ClusterSpec
from commtune.knobs import Knobs
from simulators import KnobArrays, Simulator, synthetic_workload
from simulators.calibrated import CalibratedNetwork, CalibratedParams
from simulators.system import schedule, system_params, system_row

VPC = ClusterSpec(nodes=16, gpus_per_node=8, inter_bw_Bps=4e9, per_stream_Bps=1.25e9, inter_latency_s=3e-5)

CLUSTERS = {
    "vpc": VPC,
    "pipelined": dataclasses.replace(VPC, nodes=8, inflight_per_stream=3, buffer_gap_s=5e-4,
                                     host_pre_s_per_byte=1e-10, host_post_s_per_byte=2e-10),
    "gpu-side": dataclasses.replace(VPC, nodes=64, gpus_per_node=4, inflight_per_stream=2, buffer_gap_s=1e-4,
                                    host_post_s_per_byte=1e-10, bucket_cost_s=5e-5, comm_sm_share=0.1,
                                    nccl_tree=True, collective_jitter_s=5e-5),
    "waiting-loop": dataclasses.replace(VPC, nodes=32, gpus_per_node=4, loop_waits=True, bucket_cost_s=3e-5,
                                        comm_sm_share=0.2, comm_gpu_s_per_byte=1e-11, response_cache=True,
                                        tensor_hook_s=1e-6, rank_skew=0.05, last_bucket_delay_s=2e-4),
    "one-gpu": dataclasses.replace(VPC, nodes=1, gpus_per_node=1, bucket_cost_s=1e-5),
}
CAL = CalibratedParams(link_Bps=1.25e8, per_flow_Bps=3.75e7, alpha_s=5e-4, launch_s=2e-4, control_latency_s=1e-4,
                       inflight_per_stream=2, gap0_s=3e-4, gap_per_stream_s=2e-4, rr_gap0_s=1e-4,
                       rr_gap_per_stream_s=5e-5, small_step_s=2e-3, small_per_stream_s=1e-3, bound_sharpness=3.0)


def workload():
    rng = np.random.default_rng(0)
    numel = rng.integers(1_000, 300_000, 160)
    return synthetic_workload(np.sort(rng.uniform(0.0, 0.12, 160)), numel, forward_s=0.06, optimizer_s=2e-3)


def random_knobs(rng: np.random.Generator, n: int) -> list[Knobs]:
    """Both stream modes (round robin on K >= 2 for half), both fusion policies, hierarchical, fp16."""
    return [Knobs(
        fusion_policy=str(rng.choice(["dynamic", "static"])),
        fusion_threshold_bytes=int(rng.choice([0, int(2 ** rng.uniform(10, 28))])),
        first_bucket_bytes=int(rng.integers(0, 2**25)),
        cycle_time_ms=float(rng.choice([0.0, rng.uniform(0, 30)])),
        num_streams=int(rng.integers(1, 9)),
        stream_mode=str(rng.choice(["split", "round_robin"])),
        negotiation=str(rng.choice(["central", "decentralized"])),
        hierarchical=bool(rng.integers(0, 2)),
        wire_precision=str(rng.choice(["fp32", "fp16"])),
    ) for _ in range(n)]


def simulators_under_test():
    w = workload()
    sims = {name: Simulator(w, c) for name, c in CLUSTERS.items()}
    cluster = dataclasses.replace(VPC, nodes=4, gpus_per_node=1, host_post_s_per_byte=2e-10)
    for sharpness in (math.inf, 3.0):
        net = CalibratedNetwork(dataclasses.replace(CAL, bound_sharpness=sharpness), 4)
        sims[f"calibrated-p{sharpness}"] = Simulator(w, cluster, network=net)
    return sims


SIMS = simulators_under_test()


def reference(sim: Simulator, knobs: Knobs):
    """The Python reference scheduler's buffers, rounds, busy time and delay for ``knobs``."""
    row = system_params(KnobArrays.from_knobs([knobs]), sim.workload, sim.network, sim.cluster).row(0)
    return schedule(sim._ready_arr.tolist(), sim._bytes.tolist(), row), row


@pytest.mark.parametrize("name", sorted(SIMS))
def test_scalar_row_is_system_params_row(name):
    sim = SIMS[name]
    configs = random_knobs(np.random.default_rng(1), 300)
    params = system_params(KnobArrays.from_knobs(configs), sim.workload, sim.network, sim.cluster)
    rr = 0
    for i, k in enumerate(configs):
        row = system_row(k, sim._terms)
        assert row == params.row(i), k
        assert [type(x) for x in row] == [type(x) for x in params.row(i)]
        rr += row[12] > 1
    assert rr > 50  # round robin rows were drawn


@pytest.mark.parametrize("name", sorted(SIMS))
def test_run_and_batch_equal_the_python_reference(name):
    sim = SIMS[name]
    configs = random_knobs(np.random.default_rng(2), 250)
    configs += [dataclasses.replace(k, stream_mode="round_robin", num_streams=max(2, k.num_streams))
                for k in configs[:50]]
    batch = sim.run_batch(configs)
    mine, ref = [], []  # (figure, reference figure) pairs, compared at the end
    for i, k in enumerate(configs):
        (buffers, rounds, busy, delay), row = reference(sim, k)
        got = sim.run(k)
        assert got.num_buffers == len(buffers) == batch["num_buffers"][i]
        assert [b[:2] for b in got.buffers] == [b[:2] for b in buffers]  # tensors first..last
        assert got.negotiation_msgs_rank0 == batch["negotiation_msgs_rank0"][i] == rounds * row[5]
        step = float(sim._finish(buffers[-1].done_s, busy, len(buffers), rounds, row[4], row[5], delay)["step_time_s"])
        mine += [x for b in got.buffers for x in b[2:]]
        ref += [x for b in buffers for x in b[2:]]
        mine += [got.comm_time_s, batch["comm_time_s"][i], batch["negotiation_s"][i], got.step_time_s,
                 batch["step_time_s"][i], got.interference_s]
        ref += [busy, busy, rounds * row[4], step, step, batch["interference_s"][i]]
    np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-15)


def test_a_row_holds_every_system_param():
    from dataclasses import fields

    from simulators.system import SystemParams

    params = system_params(KnobArrays.from_knobs(random_knobs(np.random.default_rng(4), 5)), SIMS["vpc"].workload,
                           SIMS["vpc"].network)
    assert len(fields(SystemParams)) == kmod.NPARAM == params.matrix().shape[1] == len(params.row(0))
    assert params.matrix()[3].tolist() == [float(x) for x in params.row(3)]


def test_no_tensors_is_one_empty_buffer():
    sim = Simulator(synthetic_workload(np.zeros(0), np.zeros(0, dtype=np.int64), forward_s=0.01, backward_s=0.02), VPC)
    for k in (Knobs(), Knobs(stream_mode="round_robin", num_streams=4), Knobs(fusion_policy="static")):
        (buffers, rounds, busy, delay), _ = reference(sim, k)
        assert sim.run(k).buffers == tuple(buffers)
        assert sim.run_batch([k])["step_time_s"][0] == sim.run(k).step_time_s


def test_interpreted_kernel_equals_compiled(monkeypatch):
    """Where numba does not import the same functions run as Python: same figures."""
    sim = SIMS["gpu-side"]
    configs = random_knobs(np.random.default_rng(3), 12)
    configs += [dataclasses.replace(k, stream_mode="round_robin", num_streams=max(2, k.num_streams)) for k in configs]
    params = system_params(KnobArrays.from_knobs(configs), sim.workload, sim.network, sim.cluster).matrix()
    compiled = np.zeros((len(configs), 5))
    kmod.kernels().schedule_rows(sim._ready_arr, sim._bytes, params, compiled)
    for name, fn in (("_bounded", kmod.latency_bounded_scalar), ("_fluid", kmod.fluid), ("_row", kmod.schedule_row)):
        monkeypatch.setattr(kmod, name, fn)
    interpreted = np.zeros_like(compiled)
    kmod.schedule_rows(sim._ready_arr, sim._bytes, params, interpreted)
    np.testing.assert_allclose(interpreted, compiled, rtol=1e-12, atol=1e-15)
