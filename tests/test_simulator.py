"""Closed forms, effects and properties of the step simulator."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commtune.cluster import ClusterSpec
from commtune.knobs import Knobs
from simulators import AnalyticalNetwork, KnobArrays, Simulator, synthetic_workload
from simulators.bounds import step_lower_bound_s
from simulators.system import negotiation_time_s
from commtune.units import MiB



def bare_cluster(**kw) -> ClusterSpec:
    """A cluster with no launch or coordinator overheads (pure alpha-beta)."""
    base = dict(nodes=4, gpus_per_node=1, inter_bw_Bps=1e9, inter_latency_s=1e-5,
                launch_overhead_s=0.0, coord_msg_s=0.0)
    base.update(kw)
    return ClusterSpec(**base)


ONE_BUFFER = Knobs(fusion_policy="static", fusion_threshold_bytes=2**31, first_bucket_bytes=2**31)


def test_one_tensor_no_compute_is_ring_formula():
    n, alpha, B, S = 4, 1e-5, 1e9, 4e6
    sim = Simulator(synthetic_workload([0.0], [int(S / 4)], forward_s=0.0, backward_s=0.0), bare_cluster())
    expected = 2 * (n - 1) * (alpha + S / (n * B))
    assert sim.run(ONE_BUFFER).step_time_s == pytest.approx(expected, rel=1e-12)


def test_single_node_uses_intra_fabric():
    c = bare_cluster(nodes=1, gpus_per_node=8, intra_bw_Bps=100e9, intra_latency_s=2e-6)
    S = 8e6
    sim = Simulator(synthetic_workload([0.0], [int(S / 4)], backward_s=0.0), c)
    assert sim.run(ONE_BUFFER).step_time_s == pytest.approx(2 * 7 * (2e-6 + S / (8 * 100e9)))


def test_infinite_bandwidth_gives_compute_time():
    w = synthetic_workload(np.linspace(0.001, 0.1, 50), np.full(50, 10**6), forward_s=0.05, backward_s=0.1)
    c = bare_cluster(inter_bw_Bps=1e30, inter_latency_s=0.0, intra_bw_Bps=1e30, intra_latency_s=0.0)
    for knobs in (ONE_BUFFER, Knobs(), Knobs(num_streams=4, hierarchical=True)):
        assert Simulator(w, c).run(knobs).step_time_s == pytest.approx(w.compute_s)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 8])
def test_streams_move_data_at_min_k_cap_link(k):
    c = bare_cluster(per_stream_Bps=3e8, inter_bw_Bps=1e9)
    n = c.world_size
    _, b = AnalyticalNetwork(c).coeffs(k, False)
    assert float(b) == pytest.approx(2 * (n - 1) / (n * min(k * 3e8, 1e9)))


def test_hierarchical_matches_formula():
    N, g, k = 16, 8, 2
    c = ClusterSpec(nodes=N, gpus_per_node=g, inter_bw_Bps=4e9, per_stream_Bps=1.25e9, inter_latency_s=3e-5,
                    intra_bw_Bps=130e9, intra_latency_s=5e-6, launch_overhead_s=1e-5)
    S = 50e6
    ring_rate = min(k * 1.25e9, 4e9 / g)
    expected = (2 * (g - 1) * (5e-6 + S / (g * 130e9)) + 2 * (N - 1) * (3e-5 + S / (g * N * ring_rate))
                + k * 1e-5)
    assert AnalyticalNetwork(c).allreduce_time(S, num_streams=k, hierarchical=True) == pytest.approx(expected)
    # Flat ring: 2(n-N) intra-node hops, 2(N-1) inter-node hops (NCCL tuning.cc), bytes at the slowest rate.
    n = N * g
    flat = 2 * (n - N) * 5e-6 + 2 * (N - 1) * 3e-5 + k * 1e-5 + 2 * (n - 1) / n * S / min(k * 1.25e9, 4e9)
    assert AnalyticalNetwork(c).allreduce_time(S, num_streams=k, hierarchical=False) == pytest.approx(flat)
    # The old closed form (every hop at the inter-node latency) when both latencies are equal.
    same = dataclasses.replace(c, intra_latency_s=3e-5)
    old = 2 * (n - 1) * 3e-5 + k * 1e-5 + 2 * (n - 1) / n * S / min(k * 1.25e9, 4e9)
    assert AnalyticalNetwork(same).allreduce_time(S, num_streams=k, hierarchical=False) == pytest.approx(old)


def test_ddp_static_buckets_follow_reducer_rule():
    # Buckets close once they hold >= cap; the first bucket has its own cap.
    sizes = [100, 100, 100, 300, 50, 50, 500]  # elements, 4 bytes each
    w = synthetic_workload(np.arange(1, 8) * 1e-3, sizes)
    knobs = Knobs(fusion_policy="static", first_bucket_bytes=800, fusion_threshold_bytes=1600)
    bufs = Simulator(w, bare_cluster()).run(knobs).buffers
    assert [(b.first, b.last) for b in bufs] == [(0, 1), (2, 3), (4, 6)]
    assert [b.dispatch_s for b in bufs] == pytest.approx([2e-3, 4e-3, 7e-3])


def test_dynamic_fusion_groups_by_cycle_and_threshold():
    w = synthetic_workload([0.001, 0.002, 0.0035, 0.004, 0.0041], [250] * 5)  # 1000 B each
    c = bare_cluster(nodes=1, gpus_per_node=1)  # one rank: no negotiation, no comm cost
    knobs = Knobs(fusion_policy="dynamic", cycle_time_ms=2.0, fusion_threshold_bytes=2500)
    bufs = Simulator(w, c).run(knobs).buffers
    # ticks at 2 ms (t0, t1) and 4 ms (t2, t3); t4 at 6 ms.
    assert [(b.first, b.last) for b in bufs] == [(0, 1), (2, 3), (4, 4)]
    assert [b.dispatch_s for b in bufs] == pytest.approx([0.002, 0.004, 0.006])
    knobs = dataclasses.replace(knobs, cycle_time_ms=10.0, fusion_threshold_bytes=2000)
    bufs = Simulator(w, c).run(knobs).buffers
    assert [(b.first, b.last) for b in bufs] == [(0, 1), (2, 3), (4, 4)]
    assert all(b.dispatch_s == pytest.approx(0.01) for b in bufs)


def resnet_like():
    rng = np.random.default_rng(0)
    numel = rng.integers(1_000, 300_000, 160)  # ~24M parameters, like ResNet-50
    ready = np.sort(rng.uniform(0.0, 0.12, 160))
    return synthetic_workload(ready, numel, forward_s=0.06)


VPC = ClusterSpec(nodes=16, gpus_per_node=8, inter_bw_Bps=4e9, per_stream_Bps=1.25e9, inter_latency_s=3e-5)


def test_small_buffers_pay_latency_and_large_ones_start_late():
    w = resnet_like()
    sim = Simulator(w, dataclasses.replace(VPC, nodes=8, gpus_per_node=1, per_stream_Bps=math.inf))
    step = {thr: sim.run(Knobs(fusion_policy="static", fusion_threshold_bytes=thr, first_bucket_bytes=thr,
                               wire_precision="fp16")).step_time_s
            for thr in (0, 8 * MiB, 2**31)}
    assert step[8 * MiB] < step[0]  # per-buffer latency of 160 tiny all-reduces
    assert step[8 * MiB] < step[2**31]  # one buffer cannot start before backward ends
    one = sim.run(Knobs(fusion_policy="static", fusion_threshold_bytes=2**31, first_bucket_bytes=2**31))
    assert one.exposed_comm_s == pytest.approx(one.comm_time_s)  # nothing overlaps


def test_cycle_time_adds_waiting():
    sim = Simulator(resnet_like(), dataclasses.replace(VPC, inter_latency_s=1e-6))
    steps = [sim.run(Knobs(cycle_time_ms=c, num_streams=4, fusion_threshold_bytes=32 * MiB,
                           negotiation="decentralized")).step_time_s
             for c in (2.0, 20.0, 80.0)]
    assert steps[0] < steps[1] < steps[2]


def test_coordinator_hot_spot_grows_with_ranks_decentralized_does_not():
    central = [float(negotiation_time_s(True, n, 3e-5, 5e-6)) for n in (8, 128, 1024)]
    decentral = [float(negotiation_time_s(False, n, 3e-5, 5e-6)) for n in (8, 128, 1024)]
    assert central[2] / central[0] > 50  # linear in ranks
    assert decentral[2] / decentral[0] < 4  # logarithmic
    assert central[1] / decentral[1] > 3
    w = resnet_like()
    big = dataclasses.replace(VPC, nodes=128)
    runs = {neg: Simulator(w, big).run(Knobs(negotiation=neg, cycle_time_ms=20, hierarchical=True))
            for neg in ("central", "decentralized")}
    assert runs["central"].step_time_s > runs["decentralized"].step_time_s
    assert runs["central"].negotiation_msgs_rank0 > 10 * runs["decentralized"].negotiation_msgs_rank0


def test_streams_help_only_when_the_cap_binds():
    w = resnet_like()
    capped = Simulator(w, VPC)
    uncapped = Simulator(w, dataclasses.replace(VPC, per_stream_Bps=math.inf))
    k = lambda s: Knobs(num_streams=s, fusion_threshold_bytes=16 * MiB)  # noqa: E731
    c = [capped.run(k(s)).step_time_s for s in (1, 2, 3, 4, 8)]
    u = [uncapped.run(k(s)).step_time_s for s in (1, 2, 4)]
    assert c[0] > c[1] > c[2] > c[3]  # up to K*c = link rate (3.2 streams)
    assert c[4] >= c[3]  # beyond the link rate: only launch overhead
    assert u[0] <= u[1] <= u[2]


def random_knobs(rng: np.random.Generator, n: int) -> list[Knobs]:
    return [Knobs(
        fusion_policy=str(rng.choice(["dynamic", "static"])),
        fusion_threshold_bytes=int(rng.choice([0, int(rng.integers(1, 2**28))])),
        first_bucket_bytes=int(rng.integers(0, 2**25)),
        cycle_time_ms=float(rng.choice([0.0, rng.uniform(0, 30)])),
        num_streams=int(rng.integers(1, 9)),
        stream_mode=str(rng.choice(["split", "round_robin"])),
        negotiation=str(rng.choice(["central", "decentralized"])),
        hierarchical=bool(rng.integers(0, 2)),
        wire_precision=str(rng.choice(["fp32", "fp16"])),
    ) for _ in range(n)]


def assert_batch_equals_reference(sim: Simulator, configs: list) -> None:
    """The vectorised engine gives the reference scheduler's figures for every configuration."""
    batch = sim.run_batch(KnobArrays.from_knobs(configs))
    for i, k in enumerate(configs):
        r = sim.run(k)
        for name in ("step_time_s", "comm_time_s", "exposed_comm_s", "negotiation_s"):
            assert batch[name][i] == pytest.approx(getattr(r, name), rel=1e-12, abs=1e-15), (name, k)
        assert batch["num_buffers"][i] == r.num_buffers
        assert batch["negotiation_msgs_rank0"][i] == r.negotiation_msgs_rank0


def test_batch_engine_equals_reference_scheduler():
    assert_batch_equals_reference(Simulator(resnet_like(), VPC), random_knobs(np.random.default_rng(1), 400))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), bw1=st.floats(1e8, 1e11), factor=st.floats(1.0, 100.0),
       cap=st.one_of(st.none(), st.floats(1e8, 1e10)))
def test_step_time_never_rises_with_bandwidth(seed, bw1, factor, cap):
    w = resnet_like()
    configs = KnobArrays.from_knobs(random_knobs(np.random.default_rng(seed), 20))
    base = dataclasses.replace(VPC, per_stream_Bps=math.inf if cap is None else cap)
    slow = Simulator(w, dataclasses.replace(base, inter_bw_Bps=bw1)).run_batch(configs)["step_time_s"]
    fast = Simulator(w, dataclasses.replace(base, inter_bw_Bps=bw1 * factor)).run_batch(configs)["step_time_s"]
    assert np.all(fast <= slow * (1 + 1e-12))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_lower_bound_holds_for_every_configuration(seed):
    w = resnet_like()
    sim = Simulator(w, VPC)
    configs = KnobArrays.from_knobs(random_knobs(np.random.default_rng(seed), 50))
    lb = step_lower_bound_s(w, sim.network)
    assert np.all(sim.run_batch(configs)["step_time_s"] >= lb * (1 - 1e-12))
    assert lb >= w.compute_s


def test_metrics_are_consistent():
    r = Simulator(resnet_like(), VPC).run(Knobs())
    assert r.step_time_s == pytest.approx(r.compute_time_s + r.exposed_comm_s)
    assert r.scaling_efficiency == pytest.approx(r.compute_time_s / r.step_time_s)
    assert r.samples_per_s == pytest.approx(128 * 1 / r.step_time_s)
    assert r.compute_time_s == pytest.approx(r.forward_s + r.backward_s)
    assert r.num_buffers == len(r.buffers)


# --------------------------------------------------------------------------- pipelining and host work

EACH_ALONE = Knobs(fusion_policy="static", fusion_threshold_bytes=1, first_bucket_bytes=1)


def burst(m: int, gap: float, count: int = 6, S: float = 4e6, alpha: float = 1e-3, **kw):
    """``count`` buffers of S bytes, all ready at t=0, on 2 ranks (a = 2*alpha, b = 1/B)."""
    c = bare_cluster(nodes=2, inter_bw_Bps=1e9, inter_latency_s=alpha, inflight_per_stream=m, buffer_gap_s=gap, **kw)
    w = synthetic_workload(np.zeros(count), np.full(count, int(S / 4)), forward_s=0.0, backward_s=0.0)
    return Simulator(w, c).run(EACH_ALONE), 2 * alpha, S / 1e9


@pytest.mark.parametrize("gap", [0.0, 1e-4, 2e-3])
def test_one_in_flight_is_strict_fifo_whatever_a_smaller_gap(gap):
    r, a, bS = burst(1, gap)
    assert [b.end_s for b in r.buffers] == pytest.approx([(j + 1) * (a + bS) for j in range(6)], rel=1e-12)
    assert r.comm_time_s == pytest.approx(6 * (a + bS), rel=1e-12)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_link_bound_pipeline_hides_latency_behind_the_previous_transfer(m):
    # a <= 2g + bS: each buffer's transfer follows the previous one plus the gap.
    r, a, bS = burst(m, 5e-4, alpha=2e-3)
    assert a <= 2 * 5e-4 + bS
    assert [b.end_s for b in r.buffers] == pytest.approx([a + bS + j * (5e-4 + bS) for j in range(6)], rel=1e-12)
    assert r.step_time_s == pytest.approx(a + bS + 5 * (5e-4 + bS), rel=1e-12)
    # the network is busy from the first start to the last end (intervals overlap)
    assert r.comm_time_s == pytest.approx(r.buffers[-1].end_s, rel=1e-12)


def test_latency_bound_pipeline_runs_two_buffers_per_latency():
    # g = 0, a >> bS, m = 2: buffer 2i ends at (i+1)(a+bS), buffer 2i+1 at (i+1)a + (i+2)bS.
    r, a, bS = burst(2, 0.0, count=6, S=4e5, alpha=5e-3)
    expected = []
    for j in range(6):
        i = j // 2
        expected.append((i + 1) * (a + bS) if j % 2 == 0 else (i + 1) * a + (i + 2) * bS)
    assert [b.end_s for b in r.buffers] == pytest.approx(expected, rel=1e-12)
    fifo, _, _ = burst(1, 0.0, count=6, S=4e5, alpha=5e-3)
    assert r.step_time_s < 0.6 * fifo.step_time_s


def test_host_work_delays_dispatch_and_copies_back_after_backward():
    # Two buffers: tensor 0 (S0, ready at 1 ms) and tensor 1 (S1, ready at 50 ms = end of backward).
    h_pre, h_post, alpha, B = 2e-9, 3e-9, 1e-4, 1e9
    c = bare_cluster(nodes=2, inter_bw_Bps=B, inter_latency_s=alpha, host_pre_s_per_byte=h_pre,
                     host_post_s_per_byte=h_post)
    S0, S1 = 4e6, 8e6
    w = synthetic_workload([0.001, 0.05], [int(S0 / 4), int(S1 / 4)], forward_s=0.01, backward_s=0.05)
    r = Simulator(w, c).run(EACH_ALONE)
    a = 2 * alpha
    end0 = 0.001 + h_pre * S0 + a + S0 / B
    assert end0 < 0.05
    assert r.buffers[0].end_s == pytest.approx(end0, rel=1e-12)
    assert r.buffers[0].done_s == pytest.approx(0.05 + h_post * S0, rel=1e-12)  # DDP finalize: after backward
    end1 = 0.05 + h_pre * S1 + a + S1 / B
    assert r.buffers[1].end_s == pytest.approx(end1, rel=1e-12)
    assert r.step_time_s == pytest.approx(0.01 + end1 + h_post * S1, rel=1e-12)
    # Dynamic fusion (Horovod): copy-out right after each all-reduce, no wait for backward.
    dyn = Simulator(w, c).run(Knobs(fusion_policy="dynamic", cycle_time_ms=0.0, fusion_threshold_bytes=1))
    assert dyn.buffers[0].done_s == pytest.approx(dyn.buffers[0].end_s + h_post * S0, rel=1e-12)


def test_defaults_keep_the_plain_model():
    c = ClusterSpec()
    assert (c.inflight_per_stream, c.buffer_gap_s, c.host_pre_s_per_byte, c.host_post_s_per_byte) == (1, 0.0, 0.0, 0.0)
    w = resnet_like()
    configs = random_knobs(np.random.default_rng(3), 50)
    explicit = dataclasses.replace(VPC, inflight_per_stream=1, buffer_gap_s=0.0)
    a = Simulator(w, VPC).run_batch(configs)["step_time_s"]
    b = Simulator(w, explicit).run_batch(configs)["step_time_s"]
    assert np.array_equal(a, b)


PIPELINE_CLUSTERS = [
    dataclasses.replace(VPC, inflight_per_stream=2, buffer_gap_s=2e-4),
    dataclasses.replace(VPC, nodes=4, gpus_per_node=1, inflight_per_stream=3, buffer_gap_s=0.0,
                        host_pre_s_per_byte=1e-10, host_post_s_per_byte=3e-10),
    dataclasses.replace(VPC, inflight_per_stream=1, buffer_gap_s=5e-3, host_post_s_per_byte=1e-10),
]


@pytest.mark.parametrize("cluster", PIPELINE_CLUSTERS)
def test_batch_engine_equals_reference_scheduler_with_pipelining_and_host_work(cluster):
    assert_batch_equals_reference(Simulator(resnet_like(), cluster), random_knobs(np.random.default_rng(7), 200))


def test_batch_equals_reference_with_calibrated_per_stream_gaps():
    from simulators.calibrated import CalibratedNetwork, CalibratedParams

    p = CalibratedParams(link_Bps=1.25e8, per_flow_Bps=3.75e7, alpha_s=5e-4, launch_s=2e-4, control_latency_s=1e-4,
                         inflight_per_stream=2, gap0_s=3e-4, gap_per_stream_s=2e-4)
    net = CalibratedNetwork(p, 4)
    m, g = net.pipelining(np.array([1, 2, 3, 4, 8]))
    assert m.tolist() == [2] * 5 and g == pytest.approx([5e-4, 7e-4, 9e-4, 1.1e-3, 1.9e-3])
    cluster = dataclasses.replace(VPC, nodes=4, gpus_per_node=1, host_post_s_per_byte=2e-10)
    sim = Simulator(resnet_like(), cluster, network=net)
    configs = random_knobs(np.random.default_rng(11), 150)
    batch = sim.run_batch(configs)
    for i, k in enumerate(configs):
        assert batch["step_time_s"][i] == pytest.approx(sim.run(k).step_time_s, rel=1e-12)
    # with a latency bound that binds for small buffers (split and round robin)
    for sharpness in (math.inf, 3.0):
        bound = CalibratedNetwork(dataclasses.replace(p, small_step_s=2e-3, small_per_stream_s=1e-3,
                                                      bound_sharpness=sharpness), 4)
        sim = Simulator(resnet_like(), cluster, network=bound)
        batch = sim.run_batch(configs)
        slower = 0
        for i, k in enumerate(configs):
            assert batch["step_time_s"][i] == pytest.approx(sim.run(k).step_time_s, rel=1e-12)
            slower += sim.run(k).step_time_s > Simulator(resnet_like(), cluster, network=net).run(k).step_time_s
        assert slower > 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), m=st.integers(1, 4), gap=st.floats(0, 5e-3))
def test_lower_bound_holds_with_pipelining(seed, m, gap):
    w = resnet_like()
    sim = Simulator(w, dataclasses.replace(VPC, inflight_per_stream=m, buffer_gap_s=gap))
    configs = KnobArrays.from_knobs(random_knobs(np.random.default_rng(seed), 30))
    assert np.all(sim.run_batch(configs)["step_time_s"] >= step_lower_bound_s(w, sim.network) * (1 - 1e-12))


# --------------------------------------------------------------------------- GPU-cluster physics (issue 14)

def test_tree_matches_nccl_latency_model_and_is_picked_when_faster():
    N, g = 64, 4
    c = bare_cluster(nodes=N, gpus_per_node=g, inter_bw_Bps=3e9, inter_latency_s=1e-5, intra_bw_Bps=100e9,
                     intra_latency_s=2e-6, nccl_tree=True)
    net = AnalyticalNetwork(c)
    a2, b2 = net.alt_coeffs(1, False)
    assert float(a2) == pytest.approx(2 * ((g - 1) * 2e-6 + 6 * 1e-5))  # 2((g-1) intraLat + log2(N) interLat)
    assert float(b2) == pytest.approx(2 / (0.9 * 3e9))  # algorithm bw = 0.5 * 0.9 * bus bw
    a, b = net.coeffs(1, False)
    n = N * g
    assert float(a) == pytest.approx(2 * (n - N) * 2e-6 + 2 * (N - 1) * 1e-5)
    for S in (64e3, 1e6, 100e6):
        assert net.allreduce_time(S) == pytest.approx(min(float(a + b * S), float(a2 + b2 * S)))
    assert float(a2 + b2 * 64e3) < float(a + b * 64e3)  # small buffers: tree (latency-bound)
    assert float(a2 + b2 * 100e6) > float(a + b * 100e6)  # large buffers: ring (bandwidth)
    assert np.isinf(net.alt_coeffs(1, True)[0])  # hierarchical keeps its ring
    assert np.isinf(AnalyticalNetwork(dataclasses.replace(c, nccl_tree=False)).alt_coeffs(1, False)[0])
    # the simulator takes the faster algorithm per buffer
    S = 64e3
    sim = Simulator(synthetic_workload([0.0], [int(S / 4)], backward_s=0.0), c)
    assert sim.run(ONE_BUFFER).step_time_s == pytest.approx(float(a2 + b2 * S), rel=1e-12)


def test_per_bucket_cost_on_one_gpu_is_k_costs_and_no_network():
    # n == 1: no network, but each of the K buckets costs c on the training thread.
    cost, K = 2e-4, 4
    c = bare_cluster(nodes=1, gpus_per_node=1, bucket_cost_s=cost)
    w = synthetic_workload([0.01, 0.02, 0.03, 0.04], [1000] * 4, forward_s=0.02, backward_s=0.04)
    r = Simulator(w, c).run(EACH_ALONE)
    assert r.num_buffers == K and r.comm_time_s == 0.0
    assert r.step_time_s == pytest.approx(0.02 + 0.04 + K * cost, rel=1e-12)
    assert r.interference_s == pytest.approx((K - 1) * cost, rel=1e-12)
    assert Simulator(w, c).run(ONE_BUFFER).step_time_s == pytest.approx(0.06 + cost, rel=1e-12)


def test_interference_delays_backward_by_each_early_collective():
    # 2 ranks, 3 buffers of S ready at 10/20/30 ms: buffers 0 and 1 run during backward and each
    # delays the rest of backward by c + sigma*(a + b*S) + kappa*S (sigma: the SMs its kernels hold for
    # the collective's whole duration); buffer 2 starts at the end of backward + c.
    alpha, B, S, cost, sigma, kappa = 1e-4, 1e9, 4e6, 5e-5, 0.25, 1e-11
    c = bare_cluster(nodes=2, inter_bw_Bps=B, inter_latency_s=alpha, bucket_cost_s=cost, comm_sm_share=sigma,
                     comm_gpu_s_per_byte=kappa)
    w = synthetic_workload([0.01, 0.02, 0.03], [int(S / 4)] * 3, forward_s=0.005, backward_s=0.03)
    r = Simulator(w, c).run(EACH_ALONE)
    a = 2 * alpha  # ring on 2 ranks: 2(n-1)(alpha + S/(nB))
    t = a + S / B
    d = cost + sigma * t + kappa * S
    assert r.interference_s == pytest.approx(2 * d, rel=1e-12)
    assert [b.dispatch_s for b in r.buffers] == pytest.approx([0.01, 0.02 + d, 0.03 + 2 * d], rel=1e-12)
    assert r.step_time_s == pytest.approx(0.005 + 0.03 + 2 * d + cost + t, rel=1e-12)
    # fp16 on the wire halves the bytes the GPU reduces
    half = Simulator(w, c).run(dataclasses.replace(EACH_ALONE, wire_precision="fp16"))
    assert half.interference_s == pytest.approx(2 * (cost + sigma * (a + S / (2 * B)) + kappa * S / 2), rel=1e-12)
    # with the three terms zero the old schedule comes back exactly
    plain = Simulator(w, dataclasses.replace(c, bucket_cost_s=0.0, comm_sm_share=0.0, comm_gpu_s_per_byte=0.0))
    assert plain.run(EACH_ALONE).step_time_s == pytest.approx(0.005 + 0.03 + t, rel=1e-12)


def test_small_bucket_penalty_grows_with_gpu_count():
    # The direction the PyTorch DDP benchmark measures (1 MB vs 25 MB buckets, 2 -> 16 GPUs).
    w = resnet_like()
    small = Knobs(fusion_policy="static", fusion_threshold_bytes=1 * MiB, first_bucket_bytes=1 * MiB)
    large = Knobs(fusion_policy="static", fusion_threshold_bytes=25 * MiB, first_bucket_bytes=1 * MiB)
    gaps = []
    for n in (2, 4, 8):
        c = bare_cluster(nodes=1, gpus_per_node=n, intra_bw_Bps=100e9, intra_latency_s=5e-6,
                         bucket_cost_s=5e-6, comm_sm_share=0.5)
        sim = Simulator(w, c)
        gaps.append(sim.run(small).step_time_s - sim.run(large).step_time_s)
    assert 0 < gaps[0] < gaps[1] < gaps[2]


def test_hooks_optimizer_and_step_overhead_add_their_closed_forms():
    hook, over, opt = 3e-6, 1.5e-3, 4e-3
    c = bare_cluster(nodes=1, gpus_per_node=1, tensor_hook_s=hook, step_overhead_s=over)
    w = synthetic_workload(np.linspace(0.001, 0.05, 20), [1000] * 20, forward_s=0.02, backward_s=0.05,
                           optimizer_s=opt)
    r = Simulator(w, c).run(ONE_BUFFER)
    assert r.compute_time_s == pytest.approx(0.02 + 0.05 + opt)
    assert r.step_time_s == pytest.approx(0.02 + 0.05 + 20 * hook + opt + over, rel=1e-12)
    assert r.scaling_efficiency == pytest.approx(r.compute_time_s / r.step_time_s)


def test_rank_skew_stretches_compute_only_with_several_ranks():
    w = synthetic_workload([0.05], [1000], forward_s=0.02, backward_s=0.05)
    free = dict(inter_bw_Bps=1e30, inter_latency_s=0.0, intra_bw_Bps=1e30, intra_latency_s=0.0, rank_skew=0.04)
    one = Simulator(w, bare_cluster(nodes=1, **free)).run(ONE_BUFFER)
    four = Simulator(w, bare_cluster(nodes=4, **free)).run(ONE_BUFFER)
    assert one.step_time_s == pytest.approx(0.07)
    assert four.step_time_s == pytest.approx(0.07 * 1.04)
    assert four.scaling_efficiency == pytest.approx(1 / 1.04)


def test_collective_jitter_waits_for_the_slowest_of_n_ranks_per_collective():
    """Closed form: w = j*sqrt(2 ln n) adds to each collective's a (n > 1); with sigma it stalls backward
    by sigma*w per buffer launched during backward; j = 0 or one rank changes nothing."""
    from simulators.system import sync_wait_s

    assert sync_wait_s(1e-4, 1) == 0.0 and sync_wait_s(0.0, 16) == 0.0
    assert sync_wait_s(1e-4, 16) == pytest.approx(1e-4 * math.sqrt(2 * math.log(16)))
    w = synthetic_workload([0.01, 0.03], [1000, 1000], forward_s=0.0, backward_s=0.031)
    free = dict(inter_bw_Bps=1e30, inter_latency_s=0.0, intra_bw_Bps=1e30, intra_latency_s=0.0,
                launch_overhead_s=0.0, comm_sm_share=0.5)
    knobs = Knobs(fusion_policy="static", fusion_threshold_bytes=1000, first_bucket_bytes=1000)
    j = 2e-3
    for nodes in (1, 2, 8):
        plain = Simulator(w, bare_cluster(nodes=nodes, **free)).run(knobs)
        jit = Simulator(w, bare_cluster(nodes=nodes, collective_jitter_s=j, **free)).run(knobs)
        wait = j * math.sqrt(2 * math.log(nodes)) if nodes > 1 else 0.0
        assert [b.end_s - b.start_s for b in jit.buffers] == pytest.approx([wait, wait], abs=1e-15)
        # buffer 0 launches during backward: backward ends sigma*w later; buffer 1 ends at B + sigma*w + w
        assert jit.step_time_s == pytest.approx(max(0.031 + 0.5 * wait, 0.03 + 0.5 * wait + wait), abs=1e-15)
        assert jit.interference_s == pytest.approx(0.5 * wait, abs=1e-15)
        assert plain.step_time_s == pytest.approx(0.031)


def test_waiting_loop_restarts_its_ticks_at_the_last_collective_end():
    # 2 ranks, a = 2 ms, b = 0, nu = 2 ms (decentralized, 2*ceil(log2 2)*alpha), P = max(1 ms, nu) = 2 ms.
    c = bare_cluster(nodes=2, inter_latency_s=1e-3, inter_bw_Bps=1e30, loop_waits=True)
    w = synthetic_workload([0.5e-3, 2.5e-3, 3.5e-3, 5.0e-3], [10] * 4, backward_s=5e-3)
    knobs = Knobs(fusion_policy="dynamic", cycle_time_ms=1.0, negotiation="decentralized",
                  fusion_threshold_bytes=2**30)
    # free-running grid: ticks 2, 4, 4, 6 ms -> dispatched at 4, 6, 8 ms
    free = Simulator(w, dataclasses.replace(c, loop_waits=False)).run(knobs).buffers
    assert [(b.first, b.last) for b in free] == [(0, 0), (1, 2), (3, 3)]
    assert [b.dispatch_s for b in free] == pytest.approx([4e-3, 6e-3, 8e-3])
    # waiting loop: buffer 0 ends at 4 + 2 = 6 ms; the ticks restart there, so tensors 1-3
    # (ready by 6 ms) fuse into one buffer dispatched at 6 + nu = 8 ms
    bufs = Simulator(w, c).run(knobs).buffers
    assert [(b.first, b.last) for b in bufs] == [(0, 0), (1, 3)]
    assert [b.dispatch_s for b in bufs] == pytest.approx([4e-3, 8e-3])


def test_response_cache_makes_central_negotiation_a_bitvector_allreduce():
    for n in (2, 128, 512):
        cached = float(negotiation_time_s(True, n, 3e-5, 5e-6, cached=True))
        assert cached == pytest.approx(2 * math.ceil(math.log2(n)) * 3e-5)
        assert cached == pytest.approx(float(negotiation_time_s(False, n, 3e-5, 5e-6)))
    w = resnet_like()
    knobs = Knobs(fusion_policy="dynamic", negotiation="central", cycle_time_ms=1.0)
    big = dataclasses.replace(VPC, nodes=128, gpus_per_node=4)
    uncached = Simulator(w, big).run(knobs)
    cached = Simulator(w, dataclasses.replace(big, response_cache=True)).run(knobs)
    assert cached.negotiation_msgs_rank0 < uncached.negotiation_msgs_rank0
    # the loop period is no longer floored by rank 0's 2(n-1) messages (5.1 ms here)
    assert cached.buffers[1].dispatch_s - cached.buffers[0].dispatch_s < 5e-3 < (
        uncached.buffers[1].dispatch_s - uncached.buffers[0].dispatch_s)


GPU_CLUSTERS = [
    dataclasses.replace(VPC, bucket_cost_s=2e-5, comm_sm_share=0.3, tensor_hook_s=2e-6, step_overhead_s=1e-3,
                        comm_gpu_s_per_byte=2e-11,
                        nccl_tree=True, response_cache=True, intra_latency_s=3e-6, rank_skew=0.03,
                        collective_jitter_s=2e-4),
    dataclasses.replace(VPC, nodes=64, gpus_per_node=4, inflight_per_stream=2, buffer_gap_s=1e-4,
                        host_post_s_per_byte=1e-10, bucket_cost_s=5e-5, comm_sm_share=0.1, nccl_tree=True,
                        collective_jitter_s=5e-5),
    dataclasses.replace(VPC, nodes=1, gpus_per_node=1, bucket_cost_s=1e-5, tensor_hook_s=1e-6),
    dataclasses.replace(VPC, nodes=32, gpus_per_node=4, loop_waits=True, bucket_cost_s=3e-5, comm_sm_share=0.2,
                        intra_latency_s=5.7e-6, comm_gpu_s_per_byte=1e-11),
]


@pytest.mark.parametrize("cluster", GPU_CLUSTERS)
def test_batch_engine_equals_reference_with_interference_and_tree(cluster):
    w = synthetic_workload(resnet_like().ready_s, resnet_like().numel, forward_s=0.06, optimizer_s=2e-3)
    assert_batch_equals_reference(Simulator(w, cluster), random_knobs(np.random.default_rng(5), 200))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), idx=st.integers(0, len(GPU_CLUSTERS) - 1))
def test_lower_bound_holds_with_gpu_physics(seed, idx):
    w = synthetic_workload(resnet_like().ready_s, resnet_like().numel, forward_s=0.06, optimizer_s=2e-3)
    sim = Simulator(w, GPU_CLUSTERS[idx])
    configs = KnobArrays.from_knobs(random_knobs(np.random.default_rng(seed), 30))
    assert np.all(sim.run_batch(configs)["step_time_s"] >= step_lower_bound_s(w, sim.network) * (1 - 1e-12))


# ------------------------------------------------------------------ stream mode

TWO_HOSTS = dict(nodes=2, gpus_per_node=1, launch_overhead_s=0.0, coord_msg_s=0.0)


def each_tensor_a_bucket(stream_mode: str, k: int) -> Knobs:
    return Knobs(fusion_policy="static", fusion_threshold_bytes=1, first_bucket_bytes=1, num_streams=k,
                 stream_mode=stream_mode)


@pytest.mark.parametrize("B", [1e9, 5e8])  # c < B/2 (streams bound) and B/2 < c < B (link bound)
def test_round_robin_two_equal_buffers_closed_form(B):
    """Two buffers of S bytes ready at 0 on 2 streams, per-stream cap c: round robin runs them
    concurrently, each at its fair share min(c, B/2): both end at a(1) + max(S/c, 2S/B).
    Split sends them one after the other at min(2c, B), paying the latency twice."""
    alpha, c, S = 1e-4, 3e8, 8e6
    cluster = ClusterSpec(inter_bw_Bps=B, per_stream_Bps=c, inter_latency_s=alpha, **TWO_HOSTS)
    sim = Simulator(synthetic_workload([0.0, 0.0], [int(S / 4)] * 2, backward_s=0.0), cluster)
    # two ranks: a = 2(n-1)*alpha = 2*alpha, b = 2(n-1)/(n*R) = 1/R
    rr = sim.run(each_tensor_a_bucket("round_robin", 2))
    assert [(x.start_s, x.grad_bytes) for x in rr.buffers] == [(0.0, S), (0.0, S)]
    assert rr.buffers[0].end_s == pytest.approx(2 * alpha + max(S / c, 2 * S / B), rel=1e-12)
    assert rr.buffers[1].end_s == pytest.approx(2 * alpha + max(S / c, 2 * S / B), rel=1e-12)
    assert rr.step_time_s == pytest.approx(2 * alpha + max(S / c, 2 * S / B), rel=1e-12)
    split = sim.run(each_tensor_a_bucket("split", 2))
    assert split.step_time_s == pytest.approx(2 * (2 * alpha) + 2 * S / min(2 * c, B), rel=1e-12)
    # without latency both modes move the same bytes at the same aggregate rate
    no_lat = Simulator(sim.workload, dataclasses.replace(cluster, inter_latency_s=0.0))
    if 2 * c <= B:
        assert no_lat.run(each_tensor_a_bucket("round_robin", 2)).step_time_s == \
            pytest.approx(no_lat.run(each_tensor_a_bucket("split", 2)).step_time_s, rel=1e-12)


def test_round_robin_uses_each_stream_in_turn():
    """Three equal buffers on 2 streams, link not binding (2c <= B): buffers 0 and 1 run
    concurrently, buffer 2 follows buffer 0 on stream 0 (one collective in flight per stream)."""
    c, S = 2e8, 4e6
    cluster = ClusterSpec(inter_bw_Bps=1e9, per_stream_Bps=c, inter_latency_s=0.0, **TWO_HOSTS)
    sim = Simulator(synthetic_workload([0.0] * 3, [int(S / 4)] * 3, backward_s=0.0), cluster)
    ends = [x.end_s for x in sim.run(each_tensor_a_bucket("round_robin", 2)).buffers]
    assert ends == pytest.approx([S / c, S / c, 2 * S / c], rel=1e-12)
    # a buffer alone on the network runs at one stream's rate min(c, B), not the K-stream rate
    alone = Simulator(synthetic_workload([0.0], [int(S / 4)], backward_s=0.0), cluster)
    assert alone.run(each_tensor_a_bucket("round_robin", 4)).step_time_s == pytest.approx(S / c, rel=1e-12)
    assert alone.run(each_tensor_a_bucket("split", 4)).step_time_s == pytest.approx(S / min(4 * c, 1e9), rel=1e-12)


def test_round_robin_link_gap_closed_form():
    """Calibrated round-robin link gap g_rr(K) = rr_gap0 + rr_gap_per_stream*K, link time lost per
    collective: two equal link-bound buffers (2c > B) on 2 streams share the link fairly and it
    loses g_rr(2) for each, so both end at a(1) + 2S/B + 2*g_rr(2); split and K = 1 ignore it;
    the batch engine equals the reference scheduler."""
    from simulators.calibrated import CalibratedNetwork, CalibratedParams

    B, c, S, n = 1.25e8, 1e8, 8e6, 2
    p = CalibratedParams(link_Bps=B, per_flow_Bps=c, alpha_s=1e-4, launch_s=0.0, control_latency_s=1e-4,
                         rr_gap0_s=1e-3, rr_gap_per_stream_s=5e-4)
    cluster = ClusterSpec(inter_bw_Bps=B, per_stream_Bps=c, inter_latency_s=1e-4, **TWO_HOSTS)
    w = synthetic_workload([0.0, 0.0], [int(S / 4)] * 2, backward_s=0.0)
    net = CalibratedNetwork(p, n)
    assert net.round_robin_gap(np.array([2, 4])) == pytest.approx([2e-3, 3e-3])
    sim = Simulator(w, cluster, network=net)
    a1 = 2 * 1e-4
    ends = [x.end_s for x in sim.run(each_tensor_a_bucket("round_robin", 2)).buffers]
    assert ends == pytest.approx([a1 + 2 * S / B + 2 * 2e-3] * 2, rel=1e-12)
    plain = Simulator(w, cluster, network=net.replace(rr_gap0_s=0.0, rr_gap_per_stream_s=0.0))
    for knobs in (each_tensor_a_bucket("split", 2), each_tensor_a_bucket("round_robin", 1)):
        assert sim.run(knobs).step_time_s == plain.run(knobs).step_time_s
    big = Simulator(resnet_like(), dataclasses.replace(VPC, nodes=4, gpus_per_node=1),
                    network=CalibratedNetwork(dataclasses.replace(p, inflight_per_stream=2, gap0_s=3e-4), 4))
    configs = random_knobs(np.random.default_rng(12), 40)
    configs += [dataclasses.replace(k, stream_mode="round_robin", num_streams=max(2, k.num_streams)) for k in configs]
    assert_batch_equals_reference(big, configs)


def test_round_robin_uneven_streams_share_the_link_fairly():
    """Streams with S and 3S bytes from t = 0, link R = B/c = 1.5 streams: both transfer at
    R/2 = 0.75 of a stream's rate until the small one is done at (S/c)/0.75; the big one then
    runs alone at its cap c (the rest of the link idle) and ends 2S/c later, not at
    max(3S/c, 4S/B) as a first-come first-served link would have it; batch = reference."""
    from simulators.calibrated import CalibratedNetwork, CalibratedParams

    B, c, S = 1.5e8, 1e8, 4e6
    net = CalibratedNetwork(CalibratedParams(link_Bps=B, per_flow_Bps=c, alpha_s=0.0, launch_s=0.0,
                                             control_latency_s=1e-4), 2)
    w = synthetic_workload([0.0, 0.0, 0.0], [int(S / 4), int(3 * S / 4), 0], backward_s=0.0)
    cluster = ClusterSpec(inter_bw_Bps=B, per_stream_Bps=c, inter_latency_s=0.0, **TWO_HOSTS)
    sim = Simulator(w, cluster, network=net)
    knobs = dataclasses.replace(each_tensor_a_bucket("round_robin", 2), fusion_threshold_bytes=int(S))
    ends = [x.end_s for x in sim.run(knobs).buffers]
    assert ends[:2] == pytest.approx([S / c / 0.75, S / c / 0.75 + 2 * S / c], rel=1e-9)
    assert_batch_equals_reference(sim, [knobs, each_tensor_a_bucket("round_robin", 2)])


def test_fair_share_schedule_closed_forms():
    """The fluid model itself: two collectives in flight on one stream split its rate; a third
    waits for a slot (m = 2); the latency part uses no link."""
    from simulators.fairshare import fair_share_schedule

    start, end = fair_share_schedule([0.0, 0.0], [0.0, 0.0], [1.0, 1.0], streams=1, inflight=2, link_streams=1.0)
    assert end == pytest.approx([2.0, 2.0]) and start == [0.0, 0.0]
    start, end = fair_share_schedule([0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [1.0, 1.0, 1.0], streams=1, inflight=2,
                                     link_streams=1.0)
    # buffer 1 alone at full rate during buffer 0's latency (0.5 of its work), then they share: it ends
    # at 1.5; buffer 2 takes its slot there and shares with buffer 0 (done at 2.5), then runs alone
    assert end == pytest.approx([2.5, 1.5, 3.0]) and start == pytest.approx([0.0, 0.0, 1.5])
    # a link of R streams: K = 4 equal streams from t = 0 each get R/4; R >= 4: each at its cap
    _, end = fair_share_schedule([0.0] * 4, [0.0] * 4, [1.0] * 4, streams=4, inflight=1, link_streams=2.0)
    assert end == pytest.approx([2.0] * 4)
    _, end = fair_share_schedule([0.0] * 4, [0.0] * 4, [1.0] * 4, streams=4, inflight=1, link_streams=4.0)
    assert end == pytest.approx([1.0] * 4)


def test_one_stream_both_modes_identical():
    w = resnet_like()
    for cluster in (VPC, *PIPELINE_CLUSTERS):
        sim = Simulator(w, cluster)
        for k in random_knobs(np.random.default_rng(5), 40):
            split = dataclasses.replace(k, num_streams=1, stream_mode="split")
            rr = dataclasses.replace(split, stream_mode="round_robin")
            assert sim.run(split).to_dict() == sim.run(rr).to_dict()
            assert sim.run(split).buffers == sim.run(rr).buffers
        batch = sim.run_batch([dataclasses.replace(k, num_streams=1, stream_mode=mode)
                               for k in random_knobs(np.random.default_rng(6), 20) for mode in ("split", "round_robin")])
        assert np.array_equal(batch["step_time_s"][0::2], batch["step_time_s"][1::2])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), m=st.integers(1, 3), gap=st.floats(0, 2e-3),
       cap=st.one_of(st.none(), st.floats(1e8, 1e10)), post=st.sampled_from([0.0, 2e-10]))
def test_batch_equals_reference_both_stream_modes(seed, m, gap, cap, post):
    rng = np.random.default_rng(seed)
    cluster = dataclasses.replace(VPC, nodes=int(rng.integers(2, 9)), inflight_per_stream=m, buffer_gap_s=gap,
                                  per_stream_Bps=math.inf if cap is None else cap, host_post_s_per_byte=post)
    configs = random_knobs(rng, 30)
    configs += [dataclasses.replace(k, stream_mode="round_robin", num_streams=max(2, k.num_streams)) for k in configs[:10]]
    assert_batch_equals_reference(Simulator(resnet_like(), cluster), configs)
