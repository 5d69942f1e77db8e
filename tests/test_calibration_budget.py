"""The probe's budget covers its calibration runs: their estimates, the link-sized DDP
calibration workload, the planner's reserve and the driver's cuts (no processes)."""
from __future__ import annotations

import dataclasses

import pytest

from commtune.probe import ddp_calib
from commtune.probe.ddp_calib import (LARGE_TENSORS, LAUNCH_S, MAX_TENSOR, MIN_TENSOR, RR_STREAMS, calib_configs,
                                      calib_workload, calibrate_ddp, ddp_tensor_bytes, estimate_ddp_calibration_s,
                                      fit_ddp_gaps, fit_last_bucket_delay, records_tensor_bytes, stream_priority,
                                      streams_within, tail_backward_s, tail_workload)
from commtune.probe.fsdp_calib import block_bytes_for, estimate_fsdp_calibration_s, steps_within
from commtune.probe.plan import (PILOT_ITERS, PILOT_SIZES, PLAN_SHARE, LinkEstimate, ProbePlan, calibration_reserve,
                                 estimate_probe_s, plan_probe)
from commtune.probe.probe import DEFAULT_BUDGET_S, calibration, probe_task
from commtune.units import KiB, MiB
from simulators import Simulator
from simulators.network import network_for
from tests.test_probe_collectives import DEFAULTS, GLOO
from tests.test_probe_fit import _synthetic_result


def _flat(mbit: float, alpha: float = 0.0) -> LinkEstimate:
    c = mbit * 1e6 / 8
    return LinkEstimate(alpha, c, c)


# --------------------------------------------------------------------------- the DDP calibration workload

@pytest.mark.parametrize("ranks", [2, 3, 4, 8, 64])
def test_ddp_tensors_are_today_s_1mib_from_1gbit_per_flow(ranks):
    for mbit in (1000, 10_000, float("inf")):
        assert ddp_tensor_bytes(_flat(mbit), ranks) == MiB


def test_ddp_tensors_shrink_on_a_slow_link_within_bounds():
    t = ddp_tensor_bytes(_flat(100), 3)
    assert MIN_TENSOR < t < MAX_TENSOR and t % (4 * KiB) == 0
    assert t == pytest.approx(ddp_calib.TARGET_STEP_S * 12.5e6 * 3 / 4 / 16, abs=4 * KiB)  # TARGET_STEP_S of link time, one stream
    assert ddp_tensor_bytes(_flat(1), 3) == MIN_TENSOR
    capped = LinkEstimate(1e-4, 100e6 / 8, 10e9 / 8)  # the per-flow cap sizes it: the slowest configuration
    assert ddp_tensor_bytes(capped, 3) == t


def test_old_records_mean_1mib_and_new_ones_rebuild_their_workload():
    spec, extra = calibration(_synthetic_result(4, (1, 2, 4)), hosts=4)
    extra["fit"]["network"]["inflight_per_stream"] = 2
    spec = dataclasses.replace(spec, meta={**spec.meta, "fit": extra["fit"]})
    net = network_for(spec).replace(gap0_s=2e-4, gap_per_stream_s=2e-4)

    def records(tensor: int) -> list[dict]:
        sim = Simulator(calib_workload(tensor_bytes=tensor), spec, network=net)
        return [{"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes,
                 "step_time_s": sim.run(k).step_time_s}
                for k in calib_configs([1, 2, 4], tensor, LARGE_TENSORS * tensor)]

    old = records(MiB)  # an older file: no tensor_bytes
    assert records_tensor_bytes(old) == MiB
    assert fit_ddp_gaps(old, spec) == fit_ddp_gaps(old, spec, calib_workload())
    small = [{**r, "tensor_bytes": 256 * KiB} for r in records(256 * KiB)]
    gaps = fit_ddp_gaps(small, spec)  # the workload rebuilt from the records
    assert {k: v["gap_s"] for k, v in gaps.items()} == pytest.approx({1: 4e-4, 2: 6e-4, 4: 1e-3}, rel=1e-6)
    ddp_calib.apply_ddp_gaps(spec, extra, gaps, small)
    assert "16 x 256 KiB tensors" in extra["fit"]["ddp_gap"]["method"]
    assert "256 KiB and 2 MiB" in extra["fit"]["ddp_gap"]["method"]
    with pytest.raises(ValueError):
        records_tensor_bytes(old[:1] + small[:1])


def test_tail_records_without_a_tensor_size_fit_as_1mib():
    spec, _ = calibration(_synthetic_result(4, (1, 2, 4)), hosts=4)
    backward = tail_backward_s(spec)
    knobs = ddp_calib.calib_knobs(1, MiB)
    t = Simulator(tail_workload(backward), dataclasses.replace(spec, last_bucket_delay_s=0.01)).run(knobs).step_time_s
    old = [{"streams": 1, "bucket_bytes": MiB, "stream_mode": "split", "step_time_s": t, "backward_s": backward}]
    assert fit_last_bucket_delay(old, spec) == fit_last_bucket_delay([{**old[0], "tensor_bytes": MiB}], spec)
    assert fit_last_bucket_delay(old, spec)["delay_s"] == pytest.approx(0.01, rel=1e-4)


# --------------------------------------------------------------------------- the estimates

def test_ddp_estimate_is_the_step_formula_times_the_steps():
    c, t = 1e6, 64 * KiB  # 2 ranks, no latency: an all-reduce of S takes S / c
    small = max(0.05 + t / c, 0.05 / 16 + 16 * t / c)
    large = max(0.05 + 8 * t / c, 0.05 / 2 + 2 * 8 * t / c)
    tail = 0.05 + max(0.2, 16 * t / c) + 2 * t / c
    est = estimate_ddp_calibration_s(LinkEstimate(0.0, c, c), 2, [1], [], steps=6, tensor_bytes=t)
    assert est == pytest.approx(2 * LAUNCH_S + 2 * (2 + 6) * (small + large) + (2 + 6 + 2) * tail)


def test_fsdp_estimate_is_the_step_formula_times_the_steps():
    c = 1e8
    block = block_bytes_for(c, 2)
    step = 16 * (2 * block / (2 * c) + 2 * block / (2 * c))  # per block: two all-gathers, an all-reduce
    assert step == pytest.approx(0.3, rel=0.05)  # the block aims at TARGET_STEP_S
    est = estimate_fsdp_calibration_s(LinkEstimate(0.0, c, c), 2, steps=6)
    assert est == pytest.approx(LAUNCH_S + 2 * (2 + 6) * 2 * step)


@pytest.mark.parametrize("ranks", [2, 3, 8])
def test_estimates_fall_as_the_link_gets_faster(ranks):
    rates = [100, 200, 500, 1000, 10_000]
    ddp = [estimate_ddp_calibration_s(_flat(m, 1e-4), ranks, [1, 2, 4, 8], [2, 4, 8], tensor_bytes=256 * KiB)
           for m in rates]
    fsdp = [estimate_fsdp_calibration_s(_flat(m, 1e-4), ranks, block_bytes=256 * KiB) for m in rates]
    assert ddp == sorted(ddp, reverse=True) and fsdp == sorted(fsdp, reverse=True)
    # the link-sized workload keeps the DDP run near its size on any link (1 MiB tensors: minutes at 100 Mbit/s)
    fixed = estimate_ddp_calibration_s(_flat(100, 1e-4), ranks, [1, 2, 3, 4, 6, 8], RR_STREAMS, tensor_bytes=MiB)
    sized = estimate_ddp_calibration_s(_flat(100, 1e-4), ranks, [1, 2, 3, 4, 6, 8], RR_STREAMS)
    assert sized < fixed / 3 and sized < 150


# --------------------------------------------------------------------------- the planner's reserve

def test_the_plan_keeps_the_calibration_runs_time():
    link = _flat(100, 1e-3)
    reserve = calibration_reserve(link, 4, ["ddp", "fsdp"], DEFAULTS["streams"], 6, 2)
    assert set(reserve) == {"ddp", "fsdp"} and calibration_reserve(link, 4, [], DEFAULTS["streams"]) == {}
    assert reserve["ddp"] == pytest.approx(estimate_ddp_calibration_s(link, 4, DEFAULTS["streams"], [2, 4, 8], 6))
    without = plan_probe(link, 4, PLAN_SHARE * DEFAULT_BUDGET_S, steps=GLOO, **DEFAULTS)
    within = plan_probe(link, 4, PLAN_SHARE * (DEFAULT_BUDGET_S - sum(reserve.values())), steps=GLOO, **DEFAULTS,
                        reserve=reserve)
    assert within.estimate_s < without.estimate_s and within.fits
    assert "reserved for the calibration runs" in within.describe() and "DDP" in within.describe()
    assert ProbePlan.from_dict(within.to_dict()) == within
    old = {k: v for k, v in without.to_dict().items() if k != "reserve"}  # a plan stored before the reserve
    assert ProbePlan.from_dict(old) == without and "reserved" not in without.describe()


@pytest.mark.parametrize("per_flow_mbit", [100, 500, 1000, 10_000])
@pytest.mark.parametrize("ranks", [2, 3, 8])
def test_the_default_probe_with_its_calibration_runs_fits_five_minutes(per_flow_mbit, ranks):
    link = _flat(per_flow_mbit, 1e-3)
    pilot = estimate_probe_s(link, ranks, PILOT_SIZES, [1, 8], PILOT_ITERS, 1, DEFAULTS["collectives"], [], 8, [], GLOO)
    reserve = calibration_reserve(link, ranks, ["ddp", "fsdp"], DEFAULTS["streams"], 6, 2)
    plan = plan_probe(link, ranks, PLAN_SHARE * (DEFAULT_BUDGET_S - pilot - sum(reserve.values())), steps=GLOO,
                      **DEFAULTS, reserve=reserve)
    assert plan.fits and pilot + plan.estimate_s + sum(reserve.values()) <= DEFAULT_BUDGET_S


def test_the_probe_task_says_which_calibration_runs_follow():
    task = probe_task([MiB], [1], 3, 1, calibration_runs=["ddp"], ddp_steps=4)
    assert task["calibration_runs"] == ["ddp"] and task["ddp_steps"] == 4
    with pytest.raises(Exception, match="zero"):
        probe_task([MiB], [1], 3, 1, calibration_runs=["zero"])


# --------------------------------------------------------------------------- the driver's cuts

def test_stream_cuts_keep_one_the_most_and_spread_the_rest():
    assert stream_priority([1, 2, 3, 4, 6, 8]) == [1, 8, 4, 6, 2, 3]
    assert stream_priority([2, 4, 8]) == [2, 8, 4]
    link, ks = _flat(100, 1e-3), [1, 2, 3, 4, 6, 8]
    assert streams_within(link, 3, ks, [2, 4, 8], 1e9)[:2] == (ks, [2, 4, 8])
    kept, rr, est = streams_within(link, 3, ks, [2, 4, 8], 0.0)
    assert (kept, rr) == ([1, 8], [8]) and est > 0  # the least the line g(K) needs, over budget
    sizes = [len(streams_within(link, 3, ks, [2, 4, 8], b)[0]) for b in (0, 30, 60, 90, 1e9)]
    assert sizes == sorted(sizes) and all(n >= 2 for n in sizes)
    for b in (30, 60, 90):
        got, got_rr, est = streams_within(link, 3, ks, [2, 4, 8], b)
        assert len(got) == 2 or est <= b
        assert {1, 8} <= set(got) and set(got_rr) == {k for k in (2, 4, 8) if k in got}


def test_calibrate_ddp_times_fewer_streams_when_the_budget_is_short(monkeypatch):
    spec, extra = calibration(_synthetic_result(4, (1, 2, 4, 8)), hosts=4)
    timed: list = []

    def fake(launch, configs, steps, warmup, workload, passes):
        timed.append([(k.num_streams, k.stream_mode, k.fusion_threshold_bytes) for k in configs])
        sim = Simulator(workload, spec)
        return [{"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes, "stream_mode": k.stream_mode,
                 "step_time_s": sim.run(k).step_time_s} for k in configs]

    monkeypatch.setattr(ddp_calib, "time_calib_configs", fake)
    tensor = ddp_tensor_bytes(ddp_calib.cluster_link(spec), 4)
    assert tensor < MiB  # 300 Mbit/s per flow
    calibrate_ddp(None, spec, extra, steps=2, budget_s=1.0)
    assert {k for k, _, _ in timed[0]} == {1, 8} and {k for k, m, _ in timed[0] if m == "round_robin"} == {8}
    assert {c for _, _, c in timed[0]} == {tensor, LARGE_TENSORS * tensor} and timed[1] == [(1, "split", tensor)]
    assert all(r["tensor_bytes"] == tensor for r in extra["ddp_calibration_measurements"] + extra["ddp_tail_measurements"])
    assert any("DDP calibration run cut to fit the budget: streams 1,8 of 1,2,4,8" in w for w in extra["fit"]["warnings"])
    timed.clear()
    spec2, extra2 = calibration(_synthetic_result(4, (1, 2, 4, 8)), hosts=4)
    calibrate_ddp(None, spec2, extra2, steps=2)  # no budget (--budget 0): every K
    assert {k for k, _, _ in timed[0]} == {1, 2, 4, 8} and not any("cut" in w for w in extra2["fit"]["warnings"])


def test_fsdp_steps_shrink_to_what_is_left():
    link = _flat(100, 1e-3)
    assert steps_within(link, 3, 1e9, 6) == 6 and steps_within(link, 3, 0.0, 6) == 2
    mid = estimate_fsdp_calibration_s(link, 3, 4)
    assert steps_within(link, 3, mid, 6) == 4
    # a reduce-scatter of one ring step per peer (NCCL, MPI) takes less: more steps fit the same seconds
    assert estimate_fsdp_calibration_s(link, 3, 5, rs_steps=1) < mid
    assert steps_within(link, 3, mid, 6, rs_steps=1) > 4


@pytest.mark.parametrize("budget, bounded", [("300", True), ("0", False)])
def test_the_cli_reserves_and_hands_what_is_left_to_the_calibration_runs(monkeypatch, tmp_path, budget, bounded):
    from commtune.cli import main
    from commtune.probe import fsdp_calib, probe

    seen: dict = {}

    def fake_probe(launch, sizes, streams, iters, warmup, **kw):
        seen["probe"] = kw
        res = _synthetic_result(2, (1, 2, 4))
        return {**res, "collectives": {c: res["records"] for c in kw["collectives"] if c != "allreduce"}}

    def fake(name):
        def run(launch, spec, extra, steps=6, budget_s=None, **kw):
            seen[name] = budget_s
            seen[name + "_kw"] = kw
            return spec
        return run

    monkeypatch.setattr(probe, "run_probe", fake_probe)
    monkeypatch.setattr(ddp_calib, "calibrate_ddp", fake("ddp"))
    monkeypatch.setattr(fsdp_calib, "calibrate_fsdp", fake("fsdp"))
    assert main(["probe", "--ranks", "2", "--budget", budget, "-o", str(tmp_path / "c.yaml")]) == 0
    assert seen["probe"]["calibration_runs"] == ["ddp", "fsdp"] and seen["probe"]["ddp_steps"] == 6
    assert seen["probe"]["budget_s"] == (300.0 if bounded else None)
    assert seen["fsdp_kw"] == {"rs_steps": 2}  # gloo's reduce-scatter: an all-reduce, as the reserve estimated it
    if bounded:  # what is left of the budget, the DDP run's less the FSDP run's estimate
        assert 0 < seen["ddp"] < 300 - fsdp_calib.LAUNCH_S < seen["fsdp"] < 300
    else:
        assert seen["ddp"] is None and seen["fsdp"] is None
    seen.clear()
    main(["probe", "--ranks", "2", "--no-fsdp-calibration", "--collectives", "allreduce", "-o", str(tmp_path / "d.yaml")])
    assert seen["probe"]["calibration_runs"] == ["ddp"]
