"""The probe's FSDP calibration run (``commtune.probe.fsdp_calib``): its model, its configurations,
and the fit of the per-collective host cost (``ClusterSpec.unit_host_s``, ``unit_host_s_per_byte``)."""
from __future__ import annotations

import dataclasses

import pytest

from commtune.cluster import ClusterSpec
from commtune.probe.fsdp_calib import (BLOCKS, GROUP, H0_MAX_S, H1_MAX_S, MAX_BLOCK, MIN_BLOCK, TARGET_STEP_S, _simulated,
                                       apply_fsdp_calibration, calib_block_bytes, calib_configs, calib_profile,
                                       fit_unit_host)
from commtune.probe.probe import calibration
from simulators.sharded import UnitPlan
from tests.test_calibrated import _records

KiB = 2**10


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    spec, _ = calibration(_records(3, (1, 2, 4)), hosts=3)
    return spec


def _records_at(spec: ClusterSpec, h0: float, h1: float, block: int = 256 * KiB) -> list[dict]:
    """Calibration records whose step times are the simulator's at ``(h0, h1)``."""
    recs = [{"unit_bytes": k.unit_bytes, "block_bytes": block, "blocks": BLOCKS} for k in calib_configs(block)]
    for r, t in zip(recs, _simulated(recs, spec, h0, h1)):
        r["step_time_s"] = float(t)
    return recs


def test_block_size_follows_the_link_within_bounds():
    def at(bw: float, nodes: int = 3) -> int:
        return calib_block_bytes(ClusterSpec(nodes=nodes, gpus_per_node=1, inter_bw_Bps=bw))

    mid = at(62.5e6)  # 500 Mbit/s, 3 ranks: a step of ~TARGET_STEP_S
    assert mid == pytest.approx(TARGET_STEP_S * 62.5e6 / (4 * 2 / 3) / BLOCKS, rel=0.02) and mid % (4 * KiB) == 0
    assert at(1e12) == MAX_BLOCK and at(1e5) == MIN_BLOCK
    assert at(12.5e6) < mid < at(125e6)
    capped = ClusterSpec(nodes=3, gpus_per_node=1, inter_bw_Bps=87.5e6, per_stream_Bps=31.25e6)
    assert calib_block_bytes(capped) == at(31.25e6)  # one stream: the per-flow cap binds


def test_estimate_sizes_blocks_at_the_one_stream_rate():
    """A pilot that overestimates the link (many streams of 1 MiB) does not inflate the FSDP run's
    estimate: its collectives run on one stream."""
    from commtune.probe.fsdp_calib import block_bytes_for, estimate_fsdp_calibration_s
    from commtune.probe.link_estimate import LinkEstimate

    over = LinkEstimate(alpha_s=1e-3, per_flow_Bps=36e6, link_Bps=1.5e9)
    exact = LinkEstimate(alpha_s=1e-3, per_flow_Bps=36e6, link_Bps=36e6)
    assert estimate_fsdp_calibration_s(over, 3) == pytest.approx(estimate_fsdp_calibration_s(exact, 3), rel=1e-9)
    assert estimate_fsdp_calibration_s(over, 3) == pytest.approx(
        estimate_fsdp_calibration_s(over, 3, block_bytes=block_bytes_for(36e6, 3)), rel=1e-9)


def test_calibration_model_and_its_two_unit_sizes():
    block = 256 * KiB
    prof = calib_profile(block)
    assert len(prof.layers) == BLOCKS and {layer.block for layer in prof.layers} == {f"block{i}" for i in range(BLOCKS)}
    assert all(layer.fwd_time_s == 0.0 and layer.bwd_time_s == 0.0 for layer in prof.layers)
    from commtune.runtime.synthetic import sim_workload

    small, large = calib_configs(block)
    wl = sim_workload(prof)
    assert len(UnitPlan.build(wl, small.unit_bytes).numel) == BLOCKS
    assert len(UnitPlan.build(wl, large.unit_bytes).numel) == BLOCKS // GROUP
    assert small.sharding == large.sharding == "full" and small.reshard_after_forward is True


@pytest.mark.parametrize("h0,h1", [(5e-4, 1e-9), (2e-3, 0.0), (0.0, 3e-9)])
def test_fit_recovers_the_host_cost_that_made_the_step_times(spec, h0, h1):
    fit = fit_unit_host(_records_at(spec, h0, h1), spec)
    assert fit["unit_host_s"] == pytest.approx(h0, abs=2e-6)
    assert fit["unit_host_s_per_byte"] == pytest.approx(h1, abs=2e-12)
    assert fit["simulated_s"] == pytest.approx(fit["measured_s"], rel=1e-4) and not fit["at_bound"]


def test_fit_is_zero_when_the_bare_collectives_explain_the_steps_and_capped_at_its_bound(spec):
    faster = _records_at(spec, 0.0, 0.0)
    for r in faster:
        r["step_time_s"] *= 0.9
    fit = fit_unit_host(faster, spec)
    assert fit["unit_host_s"] == 0.0 and fit["unit_host_s_per_byte"] == 0.0
    slow = _records_at(spec, 0.0, 0.0)
    for r in slow:
        r["step_time_s"] += 100.0
    capped = fit_unit_host(slow, spec)
    assert capped["at_bound"] and (capped["unit_host_s"] == H0_MAX_S or capped["unit_host_s_per_byte"] == H1_MAX_S)


def test_calibration_file_carries_the_fit_and_refit_reproduces_it(tmp_path, spec):
    from commtune.cluster import load_cluster_file
    from commtune.probe.probe import summary, write_calibration
    from commtune.probe.refit import refit_calibration

    base, extra = calibration(_records(3, (1, 2, 4)), hosts=3)
    recs = _records_at(base, 6e-4, 1.5e-9)
    fitted = apply_fsdp_calibration(base, extra, recs)
    assert fitted.unit_host_s == pytest.approx(6e-4, abs=2e-6)
    assert "host cost per sharded collective 600" in summary(fitted, extra)
    path = tmp_path / "c.yaml"
    write_calibration(str(path), fitted, extra)
    loaded = load_cluster_file(path)
    assert (loaded.unit_host_s, loaded.unit_host_s_per_byte) == (fitted.unit_host_s, fitted.unit_host_s_per_byte)
    again, extra2 = refit_calibration(path)
    assert again.unit_host_s == pytest.approx(fitted.unit_host_s, rel=1e-9)
    assert extra2["fsdp_calibration_measurements"] == recs
    assert dataclasses.replace(again, meta={}) == dataclasses.replace(fitted, meta={})
