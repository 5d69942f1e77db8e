"""The probe's all-gather / reduce-scatter: shard splits, the per-collective fit (closed form,
held-out sizes), the calibration file, the calibrated model's times and the budget planner."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from commtune.cli import main
from commtune.cluster import load_cluster_file
from commtune.errors import CommtuneError
from commtune.probe.comm import shard_slices
from commtune.probe.fit import fit_collective
from commtune.probe.plan import (MIN_ITERS, PILOT_ITERS, PILOT_SIZES, PLAN_SHARE, LinkEstimate, ProbePlan, estimate_link,
                                 estimate_probe_s, plan_probe, point_runs)
from commtune.probe.probe import (DEFAULT_BUDGET_S, DEFAULT_STREAMS, calibration, parse_collectives, parse_sizes,
                                  write_calibration)
from commtune.probe.refit import refit_calibration
from simulators.calibrated import CalibratedNetwork, CalibratedParams, CollectiveModel, CollectiveParams
from simulators.network import network_for

KiB, MiB = 2**10, 2**20
FIT_SIZES = (4096, MiB, 4 * MiB, 16 * MiB, 64 * MiB)
HELD_OUT = (2 * MiB, 8 * MiB, 32 * MiB, 128 * MiB)


@pytest.mark.parametrize("numel, world, k", [(8, 2, 1), (12, 3, 2), (1000, 4, 3), (4096, 8, 8)])
def test_shard_slices_cover_the_buffer_in_whole_shards(numel, world, k):
    parts = shard_slices(numel, world, k)
    assert len(parts) == k and parts[0][0] == 0 and parts[-1][1] == numel
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    lengths = [b - a for a, b in parts]
    assert all(n % world == 0 and n > 0 for n in lengths) and max(lengths) - min(lengths) <= world


@pytest.mark.parametrize("numel, world, k", [(9, 2, 1), (4, 2, 3), (0, 2, 1)])
def test_shard_slices_refuse_what_does_not_split(numel, world, k):
    with pytest.raises(ValueError, match="cannot split"):
        shard_slices(numel, world, k)


def _params(steps: int) -> CollectiveParams:
    return CollectiveParams(steps, link_Bps=1e9 / 8 * 3, per_flow_Bps=1e9 / 8, alpha_s=80e-6, launch_s=15e-6,
                            small_step_s=400e-6, small_per_stream_s=30e-6)


def _records(model: CollectiveModel, sizes, streams, collective: str = "allgather") -> list[dict]:
    out = []
    for k in streams:
        for s in sizes:
            t = float(model.time_s(s, k))
            out.append({"collective": collective, "streams": k, "size_bytes": int(s), "count": int(s) // 4,
                        "time_s": t, "min_s": t, "mean_s": t, "iters": 3})
    return out


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("weighting", ["absolute", "relative"])
def test_fit_on_some_sizes_predicts_held_out_sizes_exactly(steps, weighting):
    """Data from the model form: the fit recovers every parameter and predicts sizes (and a
    stream count) it never saw, to rounding."""
    n = 4
    truth = CollectiveModel(_params(steps), n)
    fitted, quality = fit_collective(_records(truth, FIT_SIZES, (1, 2, 4, 6)), n, steps, min_size=MiB,
                                     weighting=weighting)
    for field in ("link_Bps", "per_flow_Bps", "alpha_s", "launch_s", "small_step_s", "small_per_stream_s"):
        assert getattr(fitted, field) == pytest.approx(getattr(truth.params, field), rel=1e-6), field
    assert math.isinf(fitted.bound_sharpness) and quality["max_rel_residual"] < 1e-9
    model = CollectiveModel(fitted, n)
    for k in (1, 2, 3, 4, 6):
        for s in HELD_OUT:
            assert float(model.time_s(s, k)) == pytest.approx(float(truth.time_s(s, k)), rel=1e-9)
    # per-host parameters carry over: another world size by the ring formula
    assert float(CollectiveModel(fitted, 8).time_s(8 * MiB, 2)) == pytest.approx(
        float(CollectiveModel(truth.params, 8).time_s(8 * MiB, 2)), rel=1e-9)


def test_ring_form_of_the_collective_model():
    p = CollectiveParams(1, link_Bps=1e9, per_flow_Bps=math.inf, alpha_s=1e-4, launch_s=0.0)
    for n in (2, 4, 16):
        s = 64 * MiB
        assert float(CollectiveModel(p, n).time_s(s, 1)) == pytest.approx((n - 1) * 1e-4 + (n - 1) / n * s / 1e9)
        # gloo's reduce-scatter is an all-reduce of the full buffer: 2(n-1) steps
        p2 = CollectiveParams(2, 1e9, math.inf, 1e-4, 0.0)
        assert float(CollectiveModel(p2, n).time_s(s, 1)) == pytest.approx(2 * (n - 1) * (1e-4 + s / (n * 1e9)))
    assert float(CollectiveModel(p, 1).time_s(s, 1)) == 0.0
    with pytest.raises(ValueError):
        CollectiveParams(3, 1e9, 1e9, 0.0, 0.0)


def _allreduce_result(n=4, ks=(1, 2, 4)):
    recs = []
    for k in ks:
        for s in FIT_SIZES:
            t = 1e-3 + k * 1e-4 + 2 * (n - 1) * s / (n * min(k * 37.5e6, 125e6))
            recs.append({"streams": k, "size_bytes": s, "count": s // 4, "time_s": t, "mean_s": t, "min_s": t, "iters": 3})
    return {"world_size": n, "engine": "gloo", "records": recs}


def test_calibration_file_gains_the_collectives_and_keeps_the_all_reduce_keys(tmp_path):
    n = 4
    base = _allreduce_result(n)
    ag, rs = CollectiveModel(_params(1), n), CollectiveModel(_params(2), n)
    full = {**copy.deepcopy(base), "collectives": {"allgather": _records(ag, FIT_SIZES, (1, 2, 4)),
                                                   "reduce_scatter": _records(rs, FIT_SIZES, (1, 2, 4), "reduce_scatter")}}
    _, old = calibration(base, hosts=4)
    spec, new = calibration(full, hosts=4)
    for e in (old, new):
        e["provenance"].pop("created_at")
    assert {k: v for k, v in new.items() if k in old and k != "fit"} == {k: v for k, v in old.items() if k != "fit"}
    assert {k: v for k, v in new["fit"].items() if k != "collectives"} == old["fit"]
    assert set(new["fit"]["collectives"]) == {"allgather", "reduce_scatter"}
    assert new["fit"]["collectives"]["reduce_scatter"]["params"]["steps_per_peer"] == 2  # gloo
    assert len(new["collective_measurements"]["allgather"]) == 3 * len(FIT_SIZES)

    path = tmp_path / "calib.yaml"
    write_calibration(str(path), spec, new)
    net = network_for(load_cluster_file(path))
    assert isinstance(net, CalibratedNetwork)
    p = new["fit"]["network"]["bound_sharpness"]
    for name, model, fn in (("allgather", ag, net.allgather_time), ("reduce_scatter", rs, net.reduce_scatter_time)):
        stored = CollectiveParams.from_dict(new["fit"]["collectives"][name]["params"])
        assert stored.bound_sharpness == (math.inf if p is None else p)  # the all-reduce's: the simulator's
        for size, k in ((8 * MiB, 3), (64 * KiB, 1), (128 * MiB, 2)):
            assert fn(size, k) == pytest.approx(float(CollectiveModel(stored, n).time_s(size, k)), rel=1e-12)
            assert fn(size, k) == pytest.approx(float(model.time_s(size, k)), rel=0.02)
        # over a shard group of 2 (HSDP), by the ring step count
        a, b, f = net.shard_coeffs(name, 2, 2)
        a2, b2, f2 = stored.coeffs(2, 2)
        assert (float(a), float(b), float(f)) == (float(a2), float(b2), float(f2))
    # re-fit from the stored measurements gives the same collective fits
    _, again = refit_calibration(path)
    assert again["fit"]["collectives"] == new["fit"]["collectives"]


def test_a_measured_collective_replaces_the_derived_one_and_only_that_one():
    params = CalibratedParams(1e9, math.inf, 1e-4, 0.0, 1e-4)
    derived = CalibratedNetwork(params, 4)
    slow = CollectiveParams(1, link_Bps=2e8, per_flow_Bps=math.inf, alpha_s=3e-4, launch_s=0.0)
    measured = CalibratedNetwork(params, 4, collectives={"allgather": slow})
    assert measured.allgather_time(16 * MiB, 1) == pytest.approx(3 * 3e-4 + 3 / 4 * 16 * MiB / 2e8)
    assert derived.allgather_time(16 * MiB, 1) == pytest.approx(3 * 1e-4 + 3 / 4 * 16 * MiB / 1e9)
    assert measured.reduce_scatter_time(16 * MiB, 1) == derived.reduce_scatter_time(16 * MiB, 1)
    assert measured.replace(alpha_s=2e-4).collectives == {"allgather": slow}


def test_parse_collectives():
    assert parse_collectives("reduce_scatter,allreduce") == ["allreduce", "reduce_scatter"]
    for bad, needle in (("allgather", "must include allreduce"), ("allreduce,bcast", "bcast"), ("", "empty")):
        with pytest.raises(CommtuneError, match=needle):
            parse_collectives(bad)


@pytest.mark.parametrize("argv, needle", [
    (["probe", "--ranks", "2", "--collectives", "allgather"], "must include allreduce"),
    (["probe", "--ranks", "2", "--collectives", "allreduce,gather"], "gather"),
    (["probe", "--ranks", "2", "--budget", "-5"], "--budget"),
    (["probe", "--ranks", "2", "--budget", "soon"], "--budget"),
])
def test_bad_collective_and_budget_flags_one_line_exit_2(argv, needle, capsys, tmp_path):
    out = tmp_path / "c.yaml"
    assert main(argv + ["-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()


# --------------------------------------------------------------------------- the budget planner

DEFAULTS = dict(sizes=parse_sizes("4KiB,1MiB,4MiB,16MiB,64MiB"), streams=list(DEFAULT_STREAMS), iters=5, warmup=1,
                collectives=["allreduce", "allgather", "reduce_scatter"], burst_sizes=[10**6, 4 * 10**6],
                burst_count=8, host_sizes=[10**6, 4 * 10**6, 16 * 10**6, 64 * 10**6])
GLOO = {"reduce_scatter": 2}


def test_estimate_link_recovers_the_pilot_link():
    n, alpha, c, B = 3, 200e-6, 100e6 / 8, 250e6 / 8
    recs = [{"streams": k, "size_bytes": s, "time_s": 2 * (n - 1) * alpha + 2 * (n - 1) * s / (n * min(k * c, B))}
            for k in (1, 8) for s in (4096, MiB)]
    est = estimate_link(recs, n)
    assert est.per_flow_Bps == pytest.approx(c) and est.link_Bps == pytest.approx(B)
    assert est.alpha_s == pytest.approx(alpha + 4096 / (n * c))  # the small message's own transfer included
    ag = [{**r, "time_s": r["time_s"] / 2} for r in recs]  # an all-gather: n-1 steps
    one = estimate_link(ag, n, steps_per_peer=1)
    assert (one.per_flow_Bps, one.link_Bps, one.alpha_s) == pytest.approx((est.per_flow_Bps, est.link_Bps, est.alpha_s))
    with pytest.raises(ValueError):
        estimate_link([], n)


def test_estimate_counts_every_run():
    link = LinkEstimate(1e-3, 1e6, 1e6)
    one = estimate_probe_s(link, 2, [MiB], [1], 4, 1, ["allreduce"], [], 8, [])
    runs = point_runs(4, 1)
    assert runs == 4 + 2 + 3
    assert one == pytest.approx(runs * ((2e-3 + MiB / 1e6) + 2e-3))
    assert estimate_probe_s(link, 2, [MiB], [1], 4, 1, ["allreduce", "allgather"], [], 8, []) == pytest.approx(
        one + runs * ((1e-3 + MiB / 2e6) + 2e-3))


def test_a_collective_slower_than_the_ring_formula_is_estimated_from_its_own_pilot():
    ar = LinkEstimate(1e-4, 1e9 / 8, 1e9 / 8)
    slow_ag = LinkEstimate(1e-4, 0.2e9 / 8, 0.2e9 / 8)  # gloo's all-gather on loopback: ~5x below the ring
    args = dict(sizes=[4096, MiB, 64 * MiB], streams=[1, 2], iters=5, warmup=1, collectives=["allreduce", "allgather"],
                burst_sizes=[], burst_count=8, host_sizes=[])
    same = estimate_probe_s(ar, 4, **args)
    slower = estimate_probe_s(ar, 4, **args, links={"allgather": slow_ag})
    only_ag = estimate_probe_s(ar, 4, **{**args, "collectives": ["allgather"]}, links={"allgather": slow_ag})
    only_ag_ring = estimate_probe_s(ar, 4, **{**args, "collectives": ["allgather"]})
    assert slower - same == pytest.approx(only_ag - only_ag_ring) and only_ag > 4 * only_ag_ring
    as_ring = plan_probe(ar, 4, 1.1 * same, **args)
    assert as_ring.fits and not as_ring.dropped
    assert plan_probe(ar, 4, 1.1 * same, **args, links={"allgather": slow_ag}).dropped  # its own pilot: cut to fit


def test_a_fast_link_keeps_the_plan_as_asked():
    plan = plan_probe(LinkEstimate(50e-6, 10e9 / 8, 40e9 / 8), 4, DEFAULT_BUDGET_S, steps=GLOO, **DEFAULTS)
    assert plan.fits and not plan.dropped
    assert list(plan.sizes) == DEFAULTS["sizes"] and plan.iters == 5 and list(plan.burst_sizes) == DEFAULTS["burst_sizes"]
    assert "estimated" in plan.describe() and ProbePlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("per_flow_mbit", [100, 200, 400, 1000, 10_000])
@pytest.mark.parametrize("streams_to_link", [1, 3, 8])
@pytest.mark.parametrize("ranks", [2, 4, 8])
def test_default_plan_fits_five_minutes_on_any_link_of_100mbit_per_flow(per_flow_mbit, streams_to_link, ranks):
    c = per_flow_mbit * 1e6 / 8
    link = LinkEstimate(1e-3, c, c * streams_to_link)  # 1 ms per ring step: a slow, far link
    pilot = estimate_probe_s(link, ranks, PILOT_SIZES, [1, max(DEFAULTS["streams"])], PILOT_ITERS, 1,
                             DEFAULTS["collectives"], [], 8, [], GLOO)
    budget = PLAN_SHARE * (DEFAULT_BUDGET_S - pilot)  # as planned_task plans it
    plan = plan_probe(link, ranks, budget, steps=GLOO, **DEFAULTS)
    assert plan.fits and pilot + plan.estimate_s <= PLAN_SHARE * DEFAULT_BUDGET_S
    assert plan.estimate_s == pytest.approx(estimate_probe_s(link, ranks, plan.sizes, plan.streams, plan.iters,
                                                             plan.warmup, plan.collectives, plan.burst_sizes,
                                                             plan.burst_count, plan.host_sizes, GLOO))
    assert plan.sizes[0] == 4096 and len([s for s in plan.sizes if s >= MiB]) >= 2  # latency + a fit
    assert plan.iters >= MIN_ITERS and tuple(plan.streams) == tuple(DEFAULTS["streams"])


def test_slow_link_drops_the_largest_sizes_first():
    c = 100e6 / 8
    plan = plan_probe(LinkEstimate(100e-6, c, c), 4, DEFAULT_BUDGET_S, steps=GLOO, **DEFAULTS)
    assert plan.sizes == (4096, MiB, 4 * MiB) and plan.iters == 5
    assert plan.dropped[:2] == ("size 64 MiB (the next is link-bound)", "size 16 MiB (the next is link-bound)")


def test_a_budget_too_small_keeps_the_least_a_calibration_needs():
    c = 100e6 / 8
    plan = plan_probe(LinkEstimate(1e-3, c, c), 4, 10.0, steps=GLOO, **DEFAULTS)
    assert not plan.fits and plan.estimate_s > 10.0
    assert plan.sizes == (4096, MiB, 4 * MiB) and plan.iters == MIN_ITERS and plan.burst_sizes == ()
    assert "over budget" in plan.describe() and "iterations 5 -> 2" in plan.dropped
    # a larger budget never gives a smaller plan
    sizes = [len(plan_probe(LinkEstimate(1e-3, c, c), 4, b, steps=GLOO, **DEFAULTS).sizes) for b in (10, 100, 1000, 1e4)]
    assert sizes == sorted(sizes)


def test_planned_points_are_link_bound_where_sizes_were_dropped():
    """Dropping a size for a link-bound one costs no physics: what is left still reaches the line."""
    c = 100e6 / 8
    link = LinkEstimate(100e-6, c, 8 * c)
    plan = plan_probe(link, 4, DEFAULT_BUDGET_S, steps=GLOO, **DEFAULTS)
    largest = max(plan.sizes)
    latency = link.collective_s(2, 0, 1, 4)
    assert link.collective_s(2, largest, 1, 4) - latency >= 4 * latency
    assert np.all(np.diff(plan.sizes) > 0)


@pytest.mark.slow
def test_probe_two_local_ranks_measures_and_predicts_held_out_sizes(tmp_path, capsys):
    out = tmp_path / "calib.yaml"
    rc = main(["probe", "--ranks", "2", "--sizes", "64KiB:16MiB", "--streams", "1,2", "--iters", "5",
               "--fit-min-size", "0", "--burst-sizes", "none", "--host-sizes", "none", "--no-ddp-calibration",
               "--timeout", "120", "-o", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "probe plan: allreduce+allgather+reduce_scatter" in captured.err
    assert "# allgather, streams: 2" in captured.out and "# reduce_scatter, streams: 1" in captured.out
    spec = load_cluster_file(out)
    measured = spec.meta["collective_measurements"]
    assert set(measured) == {"allgather", "reduce_scatter"}
    sizes = parse_sizes("64KiB:16MiB")
    for name, recs in measured.items():
        assert sorted({(r["streams"], r["size_bytes"]) for r in recs}) == sorted((k, s) for k in (1, 2) for s in sizes)
        assert all(r["time_s"] > 0 and r["iters"] >= 5 for r in recs)
        steps = spec.meta["fit"]["collectives"][name]["params"]["steps_per_peer"]
        assert steps == (2 if name == "reduce_scatter" else 1)  # gloo's reduce-scatter is an all-reduce
        held = 4 * MiB
        params, _ = fit_collective([r for r in recs if r["size_bytes"] != held], 2, steps)
        for r in (r for r in recs if r["size_bytes"] == held):
            predicted = float(CollectiveModel(params, 2).time_s(held, r["streams"]))
            # loose: loopback ranks on a shared 2-core host (the closed-form test above is the exact one)
            assert 1 / 3 < predicted / r["time_s"] < 3.0, (name, r["streams"], predicted, r["time_s"])
    net = network_for(spec)
    assert float(net.allgather_time(held, 1)) > 0 and float(net.reduce_scatter_time(held, 2)) > 0
