"""`commtune validate` configuration lists: the held-out draw, --configs, the summary figures."""
from __future__ import annotations

import dataclasses

import pytest

from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.validation import compare, held_out_configs, parse_configs

MiB = 2**20


def _calib(streams=(1, 2, 3, 4, 6, 8)):
    return dataclasses.replace(ClusterSpec(nodes=4, gpus_per_node=1),
                               meta={"fit": {"calibrated": {"streams": list(streams)}}})


def test_held_out_draw_avoids_what_calibration_used():
    configs = held_out_configs(_calib(), 12, seed=3, max_bucket_bytes=40 * MiB)
    assert len(configs) == 12
    ks = [k.num_streams for k in configs]
    assert all(1 <= k <= 8 for k in ks)
    assert sum(k in (5, 7) for k in ks) >= 6  # every other point at an unprobed stream count
    buckets = [k.fusion_threshold_bytes for k in configs]
    assert all(MiB <= b <= 40 * MiB for b in buckets)
    assert not set(buckets) & {MiB, 8 * MiB}  # not the DDP calibration's caps
    assert held_out_configs(_calib(), 12, seed=3, max_bucket_bytes=40 * MiB) == configs  # seeded
    assert held_out_configs(_calib(), 12, seed=4, max_bucket_bytes=40 * MiB) != configs
    assert {k.stream_mode for k in configs} == {"split", "round_robin"}


def test_held_out_draw_without_unprobed_counts():
    configs = held_out_configs(_calib(range(1, 9)), 6, seed=0)
    assert all(1 <= k.num_streams <= 8 for k in configs)


def test_parse_configs():
    c = parse_configs("25MiB:2, 4MiB:3:round_robin")
    assert [(k.fusion_threshold_bytes, k.num_streams, k.stream_mode) for k in c] == [
        (25 * MiB, 2, "split"), (4 * MiB, 3, "round_robin")]
    assert all(k.fusion_policy == "static" for k in c)
    for bad, needle in [("25MiB", "BUCKET:STREAMS"), ("25MiB:x", "integer"), ("25MiB:0", "1-64"),
                        ("25MiB:2:zigzag", "split or round_robin"), ("", "empty")]:
        with pytest.raises(CommtuneError, match=needle):
            parse_configs(bad)


def test_compare_reports_worst_and_pick_gap():
    s = compare([1.0, 2.1, 3.0], [1.1, 2.0, 3.0])
    assert s["worst"] == pytest.approx(0.1 / 1.1) and s["worst_index"] == 0
    assert s["mape"] == pytest.approx((0.1 / 1.1 + 0.05) / 3)
    assert s["sim_best"] == 0 and s["live_best"] == 0 and s["pick_gap"] == 0.0


def test_noisy_configurations_are_measured_again_and_robustly():
    """Pass medians 2 % apart or more get extra passes (at most ``repeat_noisy``); the value
    is the median of the pass medians, so one disturbed pass does not move it."""
    import dataclasses

    from commtune.evaluators.live import LiveEvaluator, LiveSettings, pass_disagreement
    from commtune.knobs import DDP_DEFAULT
    from commtune.probe.launch import LaunchSpec

    quiet, noisy = DDP_DEFAULT, dataclasses.replace(DDP_DEFAULT, num_streams=2)
    script = {quiet: [0.100, 0.1005], noisy: [0.100, 0.130, 0.101, 0.1002]}  # per pass, in the order run
    ev = LiveEvaluator("resnet50", LiveSettings(launch=LaunchSpec(ranks=2), scale=0.02, passes=2, repeat_noisy=2))
    ran: list = []

    def trial(k):
        ran.append(k)
        t = script[k][sum(x == k for x in ran) - 1]
        return {"step_times_s": [t, t, t], "buckets": [1], "knobs": k.to_dict()}

    ev._trial = trial
    a, b = ev.evaluate_many([quiet, noisy])
    assert ran.count(quiet) == 2 and ran.count(noisy) == 4  # 2 passes + at most 2 extra, only for the noisy one
    assert a["step_time_s"] == pytest.approx(0.10025)
    assert b["pass_medians_s"] == [0.100, 0.130, 0.101, 0.1002]
    assert b["step_time_s"] == pytest.approx((0.1002 + 0.101) / 2)  # the 130 ms pass does not move it
    assert pass_disagreement([{"step_times_s": [1.0]}, {"step_times_s": [1.02]}]) == pytest.approx(0.02 / 1.01)
    no_repeat = LiveEvaluator("resnet50", LiveSettings(launch=LaunchSpec(ranks=2), scale=0.02, passes=2))
    ran.clear()
    script[noisy] = [0.100, 0.130]
    no_repeat._trial = trial
    no_repeat.evaluate_many([noisy])
    assert ran.count(noisy) == 2


def test_resolved_concordance_ignores_pairs_within_the_noise():
    from commtune.stats import resolved_concordance

    measured = [1.00, 1.01, 1.50, 2.00]  # the first two are tied within 2 %
    predicted = [1.02, 1.00, 1.40, 2.10]  # their order swapped; every resolved pair kept
    assert resolved_concordance(predicted, measured, [0, 0, 0, 0]) == (1.0, 5, 6)
    assert resolved_concordance([1.0, 1.1, 2.2, 1.9], measured, [0, 0, 0, 0]) == (pytest.approx(4 / 5), 5, 6)
    # a point whose passes disagreed by 60 % resolves no pair with anything closer than that
    assert resolved_concordance(predicted, measured, [0, 0, 0.6, 0]) == (1.0, 2, 6)
    s = compare(predicted, measured, None, [0, 0, 0, 0])
    assert (s["concordance"], s["resolved_pairs"], s["pairs"]) == (1.0, 5, 6)
