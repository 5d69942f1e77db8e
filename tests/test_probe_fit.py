"""Probe arithmetic: busbw, the t = a + b*S fit, link derivation, sizes, calibration -> simulator."""
from __future__ import annotations

import math

import numpy as np
import pytest

from commtune.cluster import load_cluster_file
from commtune.errors import CommtuneError
from commtune.probe.fit import (LinearFit, algbw, burst_time_s, busbw, derive_link, fit_host, fit_linear,
                                fit_measurements, fit_pipelining)
from commtune.probe.probe import calibration, format_table, parse_sizes, write_calibration
from simulators.calibrated import CalibratedNetwork
from simulators.network import network_for


def test_busbw_formula_exact():
    assert algbw(1e6, 0.5) == 2e6
    for n in (2, 4, 8, 16):
        assert busbw(1e6, 0.5, n) == 2e6 * 2 * (n - 1) / n
    assert busbw(4e6, 1.0, 2) == 4e6  # n=2: busbw = algbw


def test_fit_recovers_a_b_exactly():
    sizes = [2.0**k for k in range(10, 29, 2)]
    a, b = 123e-6, 1 / 3.7e9
    f = fit_linear(sizes, [a + b * s for s in sizes])
    assert f.a_s == pytest.approx(a, rel=1e-9)
    assert f.b_s_per_byte == pytest.approx(b, rel=1e-9)
    assert f.r2 == pytest.approx(1.0)
    assert f.max_rel_residual < 1e-9


def test_fit_negative_intercept_clamped():
    f = fit_linear([1e6, 2e6, 4e6], [0.0009, 0.002, 0.0041])
    assert f.a_s == 0.0 and f.b_s_per_byte > 0


def test_derive_link_recovers_alpha_launch_cap_and_rate():
    n, alpha, launch, c, B = 4, 50e-6, 20e-6, 300e6 / 8, 1e9 / 8
    recs = []
    for k in (1, 2, 4, 8):
        rate = min(k * c, B)
        for s in (2**20, 2**22, 2**24):
            recs.append({"streams": k, "size_bytes": s, "time_s": 2 * (n - 1) * alpha + k * launch + 2 * (n - 1) * s / (n * rate)})
    fits = fit_measurements(recs, n)
    link = derive_link(fits, n)
    assert link.alpha_s == pytest.approx(alpha, rel=1e-6)
    assert link.launch_s == pytest.approx(launch, rel=1e-6)
    assert link.link_Bps == pytest.approx(B, rel=1e-9)
    assert link.per_stream_Bps == pytest.approx(c, rel=1e-9)  # K=1 and 2 are capped
    # no cap: every K reaches the link rate
    flat = derive_link({k: fits[8] for k in (1, 2, 4)}, n)
    assert math.isinf(flat.per_stream_Bps)


def test_parse_sizes():
    assert parse_sizes("1KB:256MB") == [4**k * 1024 for k in range(10)]
    assert parse_sizes("1KB:16KB", step=2) == [1024, 2048, 4096, 8192, 16384]
    assert parse_sizes("1MB,4MB") == [1_000_000, 4_000_000]
    for bad in ("16MB:1MB", "", "xx", "0:1MB", "1MB:-3"):
        with pytest.raises(CommtuneError):
            parse_sizes(bad)
    with pytest.raises(CommtuneError):
        parse_sizes("1KB:1MB", step=3)


def _synthetic_result(n=4, ks=(1, 2, 4)):
    recs = []
    for k in ks:
        for s in (2**18, 2**20, 2**22, 2**24):
            t = 1e-3 + k * 1e-4 + 2 * (n - 1) * s / (n * min(k * 37.5e6, 125e6))
            recs.append({"streams": k, "size_bytes": s, "count": s // 4, "time_s": t, "mean_s": t, "min_s": t, "iters": 3})
    return {"world_size": n, "engine": "gloo", "records": recs}


def test_calibration_file_roundtrip_and_simulator(tmp_path):
    res = _synthetic_result()
    spec, extra = calibration(res, hosts=4, min_fit_size=0)
    path = tmp_path / "calib.yaml"
    write_calibration(str(path), spec, extra)
    loaded = load_cluster_file(path)
    assert (loaded.nodes, loaded.gpus_per_node) == (4, 1)
    assert loaded.per_stream_Bps == pytest.approx(37.5e6, rel=1e-6)
    assert loaded.inter_bw_Bps == pytest.approx(125e6, rel=1e-6)
    net = network_for(loaded)
    assert isinstance(net, CalibratedNetwork)
    for k in (1, 2, 3, 4):  # one model for every K, probed (1, 2, 4) or not (3)
        a, b = net.coeffs(k, False)
        assert float(a) == pytest.approx(1e-3 + k * 1e-4, rel=1e-6)
        assert float(b) == pytest.approx(6 / (4 * min(k * 37.5e6, 125e6)), rel=1e-6)
    assert extra["fit"]["r2_min"] > 0.999 and extra["fit"]["max_rel_residual"] < 1e-6
    assert len(extra["measurements"]) == 12
    # a different world size: the same per-host parameters through the ring formula
    import dataclasses

    big = network_for(dataclasses.replace(loaded, nodes=8))
    assert isinstance(big, CalibratedNetwork) and big.world_size == 8
    assert float(big.coeffs(1, False)[1]) == pytest.approx(14 / (8 * 37.5e6), rel=1e-6)
    table = format_table(res["records"], 4)
    assert "busbw(GB/s)" in table and "# streams: 4" in table


def test_calibration_single_host_uses_intra_path():
    spec, _ = calibration(_synthetic_result(2), hosts=1)
    assert spec.nodes == 1 and spec.gpus_per_node == 2 and spec.intra_bw_Bps == spec.inter_bw_Bps


def _fits(ab: dict) -> dict:
    return {k: LinearFit(a, b, 1.0, 0.0, 4) for k, (a, b) in ab.items()}


@pytest.mark.parametrize("m, gaps", [(1, {1: 0.0, 2: 0.0}), (2, {1: 1e-3, 2: 4e-4}), (2, {1: 0.0, 2: 0.0}),
                                     (4, {1: 0.0, 2: 2e-4})])
def test_fit_pipelining_recovers_inflight_and_gaps(m, gaps):
    ab = {1: (8e-3, 1.3e-8), 2: (12e-3, 0.7e-8)}  # latency-heavy: a_K > b_K * 256 KiB
    bursts = [{"streams": k, "size_bytes": s, "count": 8,
               "time_s": burst_time_s(*ab[k], s, 8, m, gaps[k])} for k in ab for s in (2**18, 2**20, 2**22)]
    p = fit_pipelining(bursts, _fits(ab))
    assert p.inflight == m
    for k in ab:
        assert p.gaps_s[k] == pytest.approx(gaps[k], abs=2e-6)
        assert max(abs(r) for r in p.residuals[k]) < 1e-3


def test_fit_pipelining_keeps_one_in_flight_when_bursts_are_serial():
    # Each buffer costs more than a + bS after the previous one (a serial gap g > a): m = 1 explains it.
    ab = {1: (2e-3, 1e-8)}
    bursts = [{"streams": 1, "size_bytes": s, "count": 6, "time_s": 2e-3 + 1e-8 * s + 5 * (3e-3 + 1e-8 * s)}
              for s in (2**20, 2**22)]
    p = fit_pipelining(bursts, _fits(ab))
    assert p.inflight == 1 and p.gaps_s[1] == pytest.approx(3e-3, rel=1e-3)


def test_burst_time_closed_forms():
    a, b, S = 5e-3, 1e-8, 2**20
    assert burst_time_s(a, b, S, 5, 1, 0.0) == pytest.approx(5 * (a + b * S))
    # link-bound (a <= 2g + bS): a + bS + (M-1)(g + bS)
    assert burst_time_s(a, b, S, 5, 2, 3e-3) == pytest.approx(a + b * S + 4 * (3e-3 + b * S))
    # a latency bound f above a + bS: every collective takes f (serial: M*f)
    f = 40e-3
    assert burst_time_s(a, b, S, 5, 1, 0.0, f) == pytest.approx(5 * f)
    assert burst_time_s(a, b, S, 1, 1, 0.0, 1e-3) == pytest.approx(a + b * S)  # below the line: no effect


def test_fit_host_slopes():
    recs = [{"size_bytes": s, "pre_s": 1e-5 + 0.4e-9 * s, "post_s": 2e-5 + 0.7e-9 * s} for s in (2**20, 2**22, 2**24)]
    h = fit_host(recs)
    assert h.pre_s_per_byte == pytest.approx(0.4e-9, rel=1e-6)
    assert h.post_s_per_byte == pytest.approx(0.7e-9, rel=1e-6)


def test_calibration_with_bursts_and_host_work_round_trips(tmp_path):
    n = 4
    ab = {1: (3e-3, 1.27e-8), 2: (4e-3, 1.27e-8), 4: (6e-3, 1.3e-8)}
    records = [{"streams": k, "size_bytes": s, "count": s // 4, "time_s": a + b * s, "mean_s": a + b * s,
                "min_s": a + b * s, "iters": 3} for k, (a, b) in ab.items() for s in (2**20, 2**22, 2**24)]
    bursts = [{"streams": k, "size_bytes": s, "count": 8, "time_s": burst_time_s(*ab[k], s, 8, 2, 5e-4 * k)}
              for k in ab for s in (2**20, 2**22)]
    host = [{"size_bytes": s, "pre_s": 0.3e-9 * s, "post_s": 0.5e-9 * s} for s in (2**20, 2**24)]
    result = {"world_size": n, "engine": "gloo", "records": records, "bursts": bursts, "host": host}
    spec, extra = calibration(result, hosts=4, name="c")
    assert spec.inflight_per_stream == 2
    assert spec.buffer_gap_s == pytest.approx(5e-4, abs=2e-6)  # g(1) of the linear gap model
    assert spec.host_pre_s_per_byte == pytest.approx(0.3e-9, rel=1e-6)
    assert spec.host_post_s_per_byte == pytest.approx(0.5e-9, rel=1e-6)
    path = tmp_path / "c.yaml"
    write_calibration(str(path), spec, extra)
    back = load_cluster_file(path)
    assert back == spec
    net = network_for(back)
    assert isinstance(net, CalibratedNetwork)
    m, g = net.pipelining(np.array([1, 2, 3, 4]))
    assert m.tolist() == [2, 2, 2, 2]
    # per-K burst gaps 0.5, 1, 2 ms -> g(K) = gap0 + gap_per_stream*K by least squares (3 interpolated)
    g0, g1 = np.polyfit([1, 2, 4], [5e-4, 1e-3, 2e-3], 1)[::-1]
    assert g == pytest.approx([g0 + g1 * k for k in (1, 2, 3, 4)], abs=5e-6)
    # resized to another world size: same per-host pipelining
    import dataclasses

    other = network_for(dataclasses.replace(back, nodes=8))
    assert other.pipelining([1])[0].tolist() == [2] and other.pipelining([3])[1][0] == pytest.approx(g[2])


def test_ddp_gap_fit_recovers_the_gap_the_measurements_came_from():
    import dataclasses

    from commtune.probe.ddp_calib import apply_ddp_gaps, calib_configs, calib_workload, fit_ddp_gaps
    from simulators import Simulator

    res = _synthetic_result(4, (1, 2, 4))
    spec, extra = calibration(res, hosts=4)
    extra["fit"]["network"]["inflight_per_stream"] = 2  # with m = 1 and g <= a the gap never binds
    spec = dataclasses.replace(spec, host_post_s_per_byte=4e-10)
    base = network_for(spec)
    w = calib_workload()
    true = {1: 4e-4, 2: 6e-4, 4: 1e-3}  # g(K) = 2e-4 + 2e-4*K
    records = []
    for k in calib_configs([1, 2, 4]):
        net = base.replace(gap0_s=2e-4, gap_per_stream_s=2e-4)
        records.append({"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes,
                        "step_time_s": Simulator(w, spec, network=net).run(k).step_time_s})
    gaps = fit_ddp_gaps(records, spec, w)
    for k in (1, 2, 4):
        assert gaps[k]["gap_s"] == pytest.approx(true[k], rel=1e-6)
    new = apply_ddp_gaps(spec, extra, gaps, records)
    assert extra["fit"]["network"]["gap0_s"] == pytest.approx(2e-4, rel=1e-5)
    assert extra["fit"]["network"]["gap_per_stream_s"] == pytest.approx(2e-4, rel=1e-5)
    assert new.buffer_gap_s == pytest.approx(4e-4, rel=1e-5)
    assert network_for(new).pipelining([3])[1][0] == pytest.approx(8e-4, rel=1e-5)  # interpolated


def test_ddp_gap_fit_finds_gaps_beyond_its_first_bracket_and_warns_at_its_bound():
    """A saturated host: per-bucket gaps of 26-44 ms (above the first 20 ms bracket) are found;
    a difference no gap up to GAP_MAX_S explains is capped there, flagged and warned about."""
    import dataclasses

    from commtune.probe.ddp_calib import GAP_MAX_S, apply_ddp_gaps, calib_configs, calib_workload, fit_ddp_gaps
    from simulators import Simulator

    spec, extra = calibration(_synthetic_result(4, (1, 2, 4)), hosts=4)
    extra["fit"]["network"]["inflight_per_stream"] = 2
    spec = dataclasses.replace(spec, meta={**spec.meta, "fit": extra["fit"]})
    w = calib_workload()
    net = network_for(spec).replace(gap0_s=0.02, gap_per_stream_s=0.006)
    records = [{"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes,
                "step_time_s": Simulator(w, spec, network=net).run(k).step_time_s} for k in calib_configs([1, 2, 4])]
    gaps = fit_ddp_gaps(records, spec, w)
    for k in (1, 2, 4):
        assert gaps[k]["gap_s"] == pytest.approx(0.02 + 0.006 * k, rel=1e-6) and not gaps[k]["at_bound"]
    records[-2]["step_time_s"] += 1000.0  # K = 4, the small buckets: no gap explains it
    gaps = fit_ddp_gaps(records, spec, w)
    assert gaps[4]["gap_s"] == GAP_MAX_S and gaps[4]["at_bound"] and not gaps[2]["at_bound"]
    apply_ddp_gaps(spec, extra, gaps, records)
    assert any("K=4: even a gap of 1 s" in x for x in extra["fit"]["warnings"])


def test_solve_rising_doubles_its_bracket_up_to_the_bound():
    from commtune.probe.ddp_calib import solve_rising

    assert solve_rising(lambda x: x, 5.0, 1.0, max_hi=8.0) == pytest.approx(5.0, abs=1e-9)
    assert solve_rising(lambda x: x, 5.0, 1.0, max_hi=4.0) == 4.0
    assert solve_rising(lambda x: x, 5.0, 1.0) == 1.0  # no bound given: the bracket is the bound


def test_round_robin_gap_fit_recovers_the_link_gap_the_measurements_came_from():
    """Round-robin calibration points simulated with g_rr(K) = 1 ms + 0.25 ms*K: the fit
    finds each K's gap and the linear model; the check then reports ~0 error."""
    from commtune.probe.ddp_calib import (apply_round_robin_gap, calib_configs, calib_workload,
                                          fit_round_robin_gap, round_robin_check)
    from simulators import Simulator

    spec, extra = calibration(_synthetic_result(4, (1, 2, 4, 8)), hosts=4)
    w = calib_workload()
    true = network_for(spec).replace(rr_gap0_s=1e-3, rr_gap_per_stream_s=2.5e-4)
    sim = Simulator(w, spec, network=true)
    recs = [{"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes, "stream_mode": k.stream_mode,
             "step_time_s": sim.run(k).step_time_s} for k in calib_configs([1, 2, 4, 8], rr_streams=[2, 4, 8])]
    assert round_robin_check(recs, spec, w)["mape"] > 0.01  # without the term the points are off
    fitted = fit_round_robin_gap(recs, spec, w)
    for k in (2, 4, 8):
        assert fitted["by_streams"][k]["gap_s"] == pytest.approx(1e-3 + 2.5e-4 * k, rel=1e-6)
    assert fitted["rr_gap0_s"] == pytest.approx(1e-3, rel=1e-5)
    assert fitted["rr_gap_per_stream_s"] == pytest.approx(2.5e-4, rel=1e-5)
    new = apply_round_robin_gap(spec, extra, fitted)
    assert network_for(new).round_robin_gap([6]) == pytest.approx([2.5e-3], rel=1e-5)  # interpolated
    assert round_robin_check(recs, new, w)["mape"] < 1e-6
    split_only = [r for r in recs if r["stream_mode"] == "split"]
    assert fit_round_robin_gap(split_only, spec, w) == {"rr_gap0_s": 0.0, "rr_gap_per_stream_s": 0.0, "by_streams": {}}


def test_round_robin_check_compares_unfitted_round_robin_points():
    from commtune.probe.ddp_calib import calib_configs, calib_workload, fit_ddp_gaps, round_robin_check
    from simulators import Simulator

    spec, _ = calibration(_synthetic_result(4, (1, 2, 4)), hosts=4)
    configs = calib_configs([1, 2, 4], rr_streams=[2, 4])
    assert [k.stream_mode for k in configs].count("round_robin") == 4
    w = calib_workload()
    sim = Simulator(w, spec)
    recs = [{"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes, "stream_mode": k.stream_mode,
             "step_time_s": sim.run(k).step_time_s} for k in configs]
    assert set(fit_ddp_gaps(recs, spec, w)) == {1, 2, 4}  # the split points only
    chk = round_robin_check(recs, spec, w)
    assert len(chk["points"]) == 4 and not chk["needed"] and chk["mape"] < 1e-9
    slow = [dict(r, step_time_s=r["step_time_s"] * 1.2) if r["stream_mode"] == "round_robin" else r for r in recs]
    assert round_robin_check(slow, spec, w)["needed"]


def test_sweep_spreads_iterations_over_passes_and_remeasures_a_disturbed_point(monkeypatch):
    """Points are visited in passes of alternating order; a point slowed down in one pass
    (pass medians 2x apart) gets one more pass, and its time is the median of the pass medians."""
    from commtune.probe import allreduce

    clock = [0.0]
    visits: list = []
    monkeypatch.setattr(allreduce, "now", lambda: clock[0])

    class Comm:
        rank = 0

        def stream_groups(self, n):
            return list(range(n))

        def buffer(self, numel):
            return list(range(numel))

        def split(self, buf, k):
            return [buf] * k

        def barrier(self):
            pass

        def max(self, times):
            return list(times)

        def allreduce_parts(self, parts, groups):
            k, size = len(groups), len(parts[0])
            visits.append((k, size))
            slow = 2.0 if (k, size) == (1, 1024) and len(visits) <= 6 else 1.0  # disturbed in the first pass only
            clock[0] += slow * size * 1e-6 / k

    recs = allreduce.measure_allreduce(Comm(), [4096], [1, 2], iters=4, warmup=1)
    firsts = [v for i, v in enumerate(visits) if i % 3 == 0]  # each visit: 1 warm-up + 2 timed
    assert firsts[:4] == [(1, 1024), (2, 1024), (2, 1024), (1, 1024)]  # pass 1 forward, pass 2 reversed
    one, two = recs
    assert one["pass_medians_s"] == pytest.approx([2 * 1024e-6, 1024e-6, 1024e-6])  # one more pass: it was noisy
    assert one["time_s"] == pytest.approx(1024e-6) and one["iters"] == 6
    assert two["pass_medians_s"] == pytest.approx([512e-6, 512e-6]) and two["iters"] == 4
