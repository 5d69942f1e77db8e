"""Probe arithmetic: busbw, the t = a + b*S fit, link derivation, sizes, calibration -> simulator."""
from __future__ import annotations

import math

import numpy as np
import pytest

from commtune.cluster import load_cluster_file
from commtune.errors import CommtuneError
from commtune.probe.fit import algbw, busbw, derive_link, fit_linear, fit_measurements
from commtune.probe.probe import calibration, format_table, parse_sizes, write_calibration
from simulators.network import AnalyticalNetwork, CalibratedNetwork, network_for


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
    spec, extra = calibration(res, hosts=4)
    path = tmp_path / "calib.yaml"
    write_calibration(str(path), spec, extra)
    loaded = load_cluster_file(path)
    assert (loaded.nodes, loaded.gpus_per_node) == (4, 1)
    assert loaded.per_stream_Bps == pytest.approx(37.5e6, rel=1e-6)
    assert loaded.inter_bw_Bps == pytest.approx(125e6, rel=1e-6)
    net = network_for(loaded)
    assert isinstance(net, CalibratedNetwork)
    a, b = net.coeffs(2, False)
    fit2 = extra["fit"]["per_stream_fits"][2]
    assert float(a) == pytest.approx(fit2["a_s"]) and float(b) == pytest.approx(fit2["b_s_per_byte"])
    assert extra["fit"]["r2_min"] > 0.999 and extra["fit"]["max_rel_residual"] < 1e-6
    assert len(extra["measurements"]) == 12
    # a different world size extrapolates analytically from the derived link parameters
    import dataclasses

    assert isinstance(network_for(dataclasses.replace(loaded, nodes=8)), AnalyticalNetwork)
    table = format_table(res["records"], 4)
    assert "busbw(GB/s)" in table and "# streams: 4" in table


def test_calibration_single_host_uses_intra_path():
    spec, _ = calibration(_synthetic_result(2), hosts=1)
    assert spec.nodes == 1 and spec.gpus_per_node == 2 and spec.intra_bw_Bps == spec.inter_bw_Bps
