"""The generalised calibrated network: closed forms for any K and world size,
interpolation between probed stream counts, extrapolation flags, the fit that
recovers the physical parameters, and the search report carrying the flags."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from commtune.knobs import DDP_DEFAULT
from commtune.probe.fit import fit_gap_model, fit_rates
from commtune.probe.probe import calibration
from simulators.calibrated import (MIN_CONTROL_LATENCY_S, CalibratedNetwork, CalibratedParams, CalibratedRange,
                                   unmodelled)
from simulators.network import network_for

MiB = 2**20
B, C = 125e6, 37.5e6  # 1 Gbit/s link, 300 Mbit/s per flow
PARAMS = CalibratedParams(link_Bps=B, per_flow_Bps=C, alpha_s=2e-4, launch_s=1e-4, control_latency_s=3e-4,
                          inflight_per_stream=2, gap0_s=1e-3, gap_per_stream_s=2e-4)
RANGE = CalibratedRange((1, 2, 4, 8), 1 * MiB, 64 * MiB, 4, True)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
@pytest.mark.parametrize("n", [2, 4, 6])
def test_k_streams_under_a_per_flow_cap_closed_form(k, n):
    a, b = CalibratedNetwork(PARAMS, n, RANGE).coeffs(k, False)
    steps = 2 * (n - 1)
    assert float(a) == pytest.approx(steps * 2e-4 + k * 1e-4, rel=1e-12)
    assert float(b) == pytest.approx(steps / (n * min(k * C, B)), rel=1e-12)


def test_no_cap_every_k_moves_the_link_rate():
    net = CalibratedNetwork(dataclasses.replace(PARAMS, per_flow_Bps=math.inf), 4, RANGE)
    _, b = net.coeffs(np.arange(1, 9), False)
    assert np.allclose(b, 6 / (4 * B))


def test_gap_is_a_linear_model_in_k_never_negative():
    m, g = CalibratedNetwork(PARAMS, 4, RANGE).pipelining(np.array([1, 3, 5, 7]))
    assert m.tolist() == [2] * 4
    assert g == pytest.approx([1.2e-3, 1.6e-3, 2e-3, 2.4e-3])
    _, g = CalibratedNetwork(dataclasses.replace(PARAMS, gap0_s=1e-4, gap_per_stream_s=-1e-4), 4, RANGE).pipelining([3])
    assert g.tolist() == [0.0]


def test_unprobed_k_is_interpolated_not_the_nearest_probed():
    net = CalibratedNetwork(PARAMS, 4, RANGE)
    a, b = net.coeffs(np.array([2, 3, 4]), False)
    assert a[0] < a[1] < a[2] and b[0] > b[1] > b[2]  # 3 streams differ from 2 and 4


def test_zero_latency_fit_does_not_make_negotiation_free():
    p = dataclasses.replace(PARAMS, control_latency_s=0.0, alpha_s=0.0)
    net = CalibratedNetwork(p, 4, RANGE)
    assert net.control_latency_s() == MIN_CONTROL_LATENCY_S > 0
    from commtune.knobs import HOROVOD_DEFAULT
    from simulators import Simulator, synthetic_workload

    w = synthetic_workload(np.array([0.01, 0.02]), np.array([1000, 1000]), forward_s=0.0, backward_s=0.02)
    sim = Simulator(w, dataclasses.replace(__import__("commtune.cluster", fromlist=["ClusterSpec"]).ClusterSpec(),
                                           nodes=4, gpus_per_node=1), network=net)
    r = sim.run(dataclasses.replace(HOROVOD_DEFAULT, negotiation="decentralized"))
    assert r.negotiation_s > 0


def _flags(net, **knobs):
    return net.extrapolation(dataclasses.replace(DDP_DEFAULT, **knobs))


def test_extrapolation_flags():
    net = CalibratedNetwork(PARAMS, 4, RANGE)
    assert _flags(net, num_streams=4, fusion_threshold_bytes=25 * MiB) == []
    f = _flags(net, num_streams=3, fusion_threshold_bytes=25 * MiB)
    assert [x["kind"] for x in f] == ["streams"] and f[0]["modelled"]  # interpolated, not a warning
    f = _flags(net, num_streams=12, fusion_threshold_bytes=25 * MiB)
    assert f[0]["kind"] == "streams" and f[0]["modelled"]  # the link was reached: rate known
    unsat = CalibratedNetwork(PARAMS, 4, dataclasses.replace(RANGE, streams=(1, 2), link_saturated=False))
    f = _flags(unsat, num_streams=6)
    assert unmodelled(f) and f[0]["kind"] == "streams"
    f = _flags(net, num_streams=1, fusion_threshold_bytes=512 * MiB)
    assert f[0]["kind"] == "size" and f[0]["modelled"]  # 64 MiB was link-bound
    slow = CalibratedNetwork(dataclasses.replace(PARAMS, alpha_s=1.0), 4, RANGE)
    assert unmodelled(_flags(slow, num_streams=1, fusion_threshold_bytes=512 * MiB))
    assert _flags(net, num_streams=1, hierarchical=True) == []  # one rank per node: hierarchical is the flat ring
    assert unmodelled(_flags(CalibratedNetwork(PARAMS, 8, RANGE, ranks_per_node=2), num_streams=1, hierarchical=True))
    f = _flags(CalibratedNetwork(PARAMS, 6, RANGE), num_streams=1)
    assert [x["kind"] for x in f] == ["world_size"]
    assert f[0]["kind"] == "world_size" and f[0]["modelled"]
    assert unmodelled(CalibratedNetwork(PARAMS, 4, None).extrapolation(DDP_DEFAULT))


@pytest.mark.parametrize("rates, cap", [
    ({1: 37.5e6, 2: 75e6, 3: 112.5e6, 4: 125e6, 6: 125e6, 8: 125e6}, 37.5e6),
    ({1: 125e6, 2: 125e6, 4: 125e6}, math.inf),
])
def test_fit_rates_recovers_link_and_cap(rates, cap):
    link, c, saturated, rms = fit_rates(rates)
    assert link == pytest.approx(125e6, rel=1e-9) and saturated and rms < 1e-9
    assert c == cap if math.isinf(cap) else c == pytest.approx(cap, rel=1e-9)


def test_fit_rates_all_capped_leaves_the_link_unknown():
    link, c, saturated, _ = fit_rates({1: 37.5e6, 2: 75e6})
    assert math.isinf(link) and c == pytest.approx(37.5e6) and not saturated
    assert not fit_rates({1: 125e6})[2]  # one K: cannot tell a cap from the link


def test_fit_gap_model():
    assert fit_gap_model({1: 1e-3, 2: 1.5e-3, 4: 2.5e-3}) == pytest.approx((5e-4, 5e-4))
    assert fit_gap_model({2: 3e-3}) == (3e-3, 0.0)


def _records(n, ks, sizes=(4096, MiB, 4 * MiB, 16 * MiB, 64 * MiB), p=PARAMS):
    net = CalibratedNetwork(p, n, None)
    recs = []
    for k in ks:
        a, b = net.coeffs(k, False)
        for s in sizes:
            t = float(a + b * s)
            recs.append({"streams": k, "size_bytes": s, "count": s // 4, "time_s": t, "mean_s": t, "min_s": t, "iters": 3})
    return {"world_size": n, "engine": "gloo", "records": recs}


def test_calibration_recovers_the_physics_and_predicts_another_world_size(tmp_path):
    from commtune.cluster import load_cluster_file
    from commtune.probe.probe import write_calibration

    spec, extra = calibration(_records(3, (1, 2, 3, 4, 6, 8)), hosts=3)
    net = network_for(spec)
    assert isinstance(net, CalibratedNetwork)
    p = net.params
    assert p.link_Bps == pytest.approx(B, rel=1e-6) and p.per_flow_Bps == pytest.approx(C, rel=1e-6)
    assert p.alpha_s == pytest.approx(2e-4, rel=1e-6) and p.launch_s == pytest.approx(1e-4, rel=1e-6)
    assert extra["fit"]["quality"]["r2"] > 0.9999 and extra["fit"]["warnings"] == []
    assert extra["fit"]["calibrated"]["min_size_bytes"] == MiB  # 4 KB only for the control latency
    # control latency: the 4 KB all-reduce over its 2(n-1) steps
    a1, b1 = CalibratedNetwork(PARAMS, 3, None).coeffs(1, False)
    assert p.control_latency_s == pytest.approx(float(a1 + b1 * 4096) / 4, rel=1e-9)
    path = tmp_path / "c.yaml"
    write_calibration(str(path), spec, extra)
    six = dataclasses.replace(load_cluster_file(path), nodes=6)
    big = network_for(six)
    truth = CalibratedNetwork(PARAMS, 6, None)
    for k in (1, 5, 8):
        assert np.allclose(big.coeffs(k, False), truth.coeffs(k, False), rtol=1e-6)


def test_calibration_warns_on_a_poor_fit():
    res = _records(4, (1, 2))
    rng = np.random.default_rng(0)
    for r in res["records"]:
        r["time_s"] *= float(rng.uniform(0.5, 1.5))
    _, extra = calibration(res, hosts=4)
    assert any("poor fit" in w or "off the fitted model" in w for w in extra["fit"]["warnings"])


def test_search_report_carries_extrapolation_flags():
    from commtune.tuning import extrapolation_report

    net = CalibratedNetwork(PARAMS, 4, dataclasses.replace(RANGE, streams=(1, 2), link_saturated=False))

    class Obj:
        class simulator:
            network = net

    rep = extrapolation_report(Obj, dataclasses.replace(DDP_DEFAULT, num_streams=6))
    assert rep["warnings"] and rep["warnings"][0]["kind"] == "streams"
    assert extrapolation_report(Obj, dataclasses.replace(DDP_DEFAULT, num_streams=2))["warnings"] == []


@pytest.mark.parametrize("n", [2, 3, 6])
def test_latency_bound_closed_form_roofline(n):
    p = dataclasses.replace(PARAMS, small_step_s=3e-3, small_per_stream_s=5e-4)
    net = CalibratedNetwork(p, n, RANGE)
    for k in (1, 3, 5, 8, 16):  # probed, interpolated and beyond the probed K alike
        f = 2 * (n - 1) * 3e-3 + k * 5e-4
        assert float(net.min_collective_s(k)) == pytest.approx(f, rel=1e-12)
        a, b = net.coeffs(k, False)
        for s in (4096, MiB, 8 * MiB, 64 * MiB):
            assert net.allreduce_time(s, k) == pytest.approx(max(float(a + b * s), f), rel=1e-12)
    assert float(CalibratedNetwork(PARAMS, n, RANGE).min_collective_s(8)) == 0.0  # none measured: the line alone


def test_probe_fits_the_latency_bound_from_the_small_message():
    n, step, per_stream = 3, 3e-3, 4e-4
    res = _records(n, (1, 2, 3, 4, 6, 8))
    for r in res["records"]:
        if r["size_bytes"] < MiB:  # a small message pays the latency bound, not the line's intercept
            r["min_s"] = 2 * (n - 1) * step + r["streams"] * per_stream
            r["time_s"] = 1.5 * r["min_s"]  # a busy core slows the median, not the fastest iteration
    spec, extra = calibration(res, hosts=n)
    p = network_for(spec).params
    assert p.small_step_s == pytest.approx(step, rel=1e-9) and p.small_per_stream_s == pytest.approx(per_stream, rel=1e-9)
    assert p.alpha_s == pytest.approx(2e-4, rel=1e-6)  # the line is fitted on >= 1 MiB only
    assert extra["fit"]["latency_bound"]["measured_s"][8] == pytest.approx(2 * (n - 1) * step + 8 * per_stream)


def test_latency_bound_fit_is_non_negative_and_empty_without_small_messages():
    from commtune.probe.fit import fit_latency_bound

    falling = [{"streams": k, "size_bytes": 4096, "time_s": t} for k, t in ((1, 9e-3), (2, 8e-3), (4, 7e-3))]
    step, per_stream, _ = fit_latency_bound(falling, 4, MiB)
    assert per_stream == 0.0 and 0 < step * 6 < 9e-3  # a weighted mean, not a negative slope
    assert fit_latency_bound([{"streams": 1, "size_bytes": MiB, "time_s": 1.0}], 4, MiB) == (0.0, 0.0, {})


def test_refit_reproduces_a_calibration_from_its_stored_measurements(tmp_path):
    from commtune.errors import CommtuneError
    from commtune.probe.probe import write_calibration
    from commtune.probe.refit import refit_calibration

    spec, extra = calibration(_records(4, (1, 2, 4)), hosts=4, name="c")
    path = tmp_path / "c.yaml"
    write_calibration(str(path), spec, extra)
    spec2, extra2 = refit_calibration(path)
    assert CalibratedParams.from_dict(extra2["fit"]["network"]) == CalibratedParams.from_dict(extra["fit"]["network"])
    assert extra2["provenance"]["refit_of"]["path"] == str(path)
    plain = tmp_path / "plain.yaml"
    plain.write_text("nodes: 2\n")
    with pytest.raises(CommtuneError, match="no stored probe measurements"):
        refit_calibration(plain)


def test_soft_roofline_closed_forms():
    from simulators.network import latency_bounded

    t, f = np.array([3.0, 4.0, 0.5]), np.array([4.0, 3.0, 0.0])
    assert latency_bounded(t, f).tolist() == [4.0, 4.0, 0.5]  # p = inf: max; f = 0: the line
    assert latency_bounded(t, f, 2.0)[:2] == pytest.approx([5.0, 5.0], rel=1e-12)  # p = 2: hypot
    assert float(latency_bounded(3.0, 4.0, 1.0)) == pytest.approx(7.0, rel=1e-12)  # p = 1: the sum
    net = CalibratedNetwork(dataclasses.replace(PARAMS, small_step_s=1e-3, small_per_stream_s=0.0,
                                                bound_sharpness=3.0), 3, RANGE)
    a, b = net.coeffs(2, False)
    line = float(a + b * MiB)
    assert net.allreduce_time(MiB, 2) == pytest.approx((line ** 3 + 4e-3 ** 3) ** (1 / 3), rel=1e-12)


def test_scalar_soft_roofline_is_the_array_one():
    """The reference scheduler's per-buffer form gives what the batch engine's array form gives."""
    from simulators.network import latency_bounded, latency_bounded_scalar

    for p in (1.0, 1.5, 3.0, 8.0, math.inf):
        for t in (0.0, 1e-4, 2e-3, 5e-3, 0.2):
            for f in (0.0, 1e-4, 3e-3):
                assert latency_bounded_scalar(t, f, p) == pytest.approx(float(latency_bounded(t, f, p)), rel=1e-14)


@pytest.mark.parametrize("p", [1.5, 3.0, 6.0, math.inf])
def test_probe_fits_the_soft_roofline_sharpness(p):
    from simulators.network import latency_bounded

    n, step, per_stream = 3, 3e-3, 4e-4
    truth = CalibratedNetwork(dataclasses.replace(PARAMS, small_step_s=step, small_per_stream_s=per_stream), n)
    recs = []
    for k in (1, 2, 3, 4, 6, 8):
        a, b = truth.coeffs(k, False)
        f = float(truth.min_collective_s(k))
        recs.append({"streams": k, "size_bytes": 4096, "time_s": f, "min_s": f})  # the bound itself
        for s in (MiB // 4, MiB, 4 * MiB, 16 * MiB, 32 * MiB, 64 * MiB):
            # the line where the probe fits it (>= 16 MiB here), the roofline where the regimes meet
            t = float(latency_bounded(a + b * s, f, p)) if s <= 4 * MiB else float(a + b * s)
            recs.append({"streams": k, "size_bytes": s, "count": s // 4, "time_s": t, "mean_s": t, "min_s": t})
    spec, extra = calibration({"world_size": n, "engine": "gloo", "records": recs}, hosts=n, min_fit_size=16 * MiB)
    assert network_for(spec).params.bound_sharpness == p
