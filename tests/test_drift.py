"""The drift check of `commtune validate`: anchors, drift figures, when it is skipped (no cluster needed)."""
from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from commtune.probe.ddp_calib import calib_configs, record_knobs
from commtune.probe.drift import DRIFT_WARN, anchor_records, check_drift, drift_for, drift_report, format_drift

MiB = 2**20


def _records(streams=(1, 2, 4, 8), rr=(2, 4, 8), base=0.3):
    """DDP calibration records as the probe stores them (step time grows with K and the small cap)."""
    out = []
    for k in calib_configs(streams, rr_streams=rr):
        small = k.fusion_threshold_bytes == MiB
        out.append({"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes, "stream_mode": k.stream_mode,
                    "step_time_s": base + 0.01 * k.num_streams + (0.05 if small else 0.0), "step_times_s": []})
    return out


def _fake_timer(factor: float, calls: list):
    """Times each configuration at ``factor`` times the record it came from."""
    def timer(launch, configs, steps, warmup, workload, passes):
        calls.append((configs, steps, warmup, passes))
        return [{"step_time_s": factor * (0.3 + 0.01 * k.num_streams + (0.05 if k.fusion_threshold_bytes == MiB else 0.0))}
                for k in configs]
    return timer


def test_anchors_are_split_k1_large_and_kmax_both_caps():
    a = anchor_records(_records())
    assert [(r["streams"], r["bucket_bytes"]) for r in a] == [(1, 8 * MiB), (8, 8 * MiB), (8, MiB)]
    assert all(r["stream_mode"] == "split" for r in a)
    # only round robin or nothing: no anchors
    assert anchor_records([r for r in _records() if r["stream_mode"] == "round_robin"]) == []
    assert anchor_records([]) == []
    # one stream count only: K = 1 large and small, each once
    assert [(r["streams"], r["bucket_bytes"]) for r in anchor_records(_records((1,), ()))] == [(1, 8 * MiB), (1, MiB)]


def test_record_knobs_round_trip():
    for k in calib_configs((1, 3), rr_streams=(2,)):
        rec = {"streams": k.num_streams, "bucket_bytes": k.fusion_threshold_bytes, "stream_mode": k.stream_mode}
        assert record_knobs(rec) == k


def test_drift_is_now_over_then_with_a_robust_median():
    anchors = anchor_records(_records())
    now = [{"step_time_s": a["step_time_s"] * f} for a, f in zip(anchors, (1.01, 1.03, 1.40))]
    d = drift_report(anchors, now)
    assert [round(r["drift"], 6) for r in d["anchors"]] == [0.01, 0.03, 0.4]
    assert d["median"] == pytest.approx(0.03)  # the 40 % outlier does not move it
    assert d["warn"]  # 3 % > 2 %
    quiet = drift_report(anchors, [{"step_time_s": a["step_time_s"] * 0.99} for a in anchors])
    assert quiet["median"] == pytest.approx(-0.01) and not quiet["warn"]
    assert DRIFT_WARN == 0.02
    line = format_drift(d)
    assert "+3.0%" in line and "K=8 1 MiB" in line and "re-run `commtune probe`" in line
    assert "re-run" not in format_drift(quiet)


def test_check_drift_times_the_anchors_as_the_calibration_did():
    calls: list = []
    d = check_drift(None, _records(), steps=6, warmup=2, timer=_fake_timer(1.05, calls))
    (configs, steps, warmup, passes), = calls
    assert [(k.num_streams, k.fusion_threshold_bytes, k.first_bucket_bytes, k.stream_mode) for k in configs] == [
        (1, 8 * MiB, 8 * MiB, "split"), (8, 8 * MiB, 8 * MiB, "split"), (8, MiB, MiB, "split")]
    assert (steps, warmup, passes) == (6, 2, 2)
    assert d["median"] == pytest.approx(0.05)
    assert check_drift(None, [], timer=_fake_timer(1.0, calls)) is None


def _write_calib(path, world: int, records):
    from commtune.cluster import CLUSTER_FORMAT

    doc = {"format": CLUSTER_FORMAT, "nodes": world, "gpus_per_node": 1, "fit": {"world_size": world}}
    if records is not None:
        doc["ddp_calibration_measurements"] = records
    path.write_text(yaml.safe_dump(doc))
    return path


def test_drift_for_skips_what_it_cannot_compare(tmp_path):
    calls: list = []
    launch = SimpleNamespace(world_size=3)
    same = _write_calib(tmp_path / "c3.yaml", 3, _records())
    d = drift_for(launch, same, timer=_fake_timer(0.9, calls))
    assert d["median"] == pytest.approx(-0.1) and len(calls) == 1
    other = drift_for(SimpleNamespace(world_size=6), same, timer=_fake_timer(1.0, calls))
    assert "calibrated on 3 ranks, running 6" in other["skipped"] and len(calls) == 1  # nothing timed
    none = drift_for(launch, _write_calib(tmp_path / "n.yaml", 3, None), timer=_fake_timer(1.0, calls))
    assert "no DDP calibration run" in none["skipped"]
    assert format_drift(other).startswith("drift since calibration not checked: calibrated on 3 ranks")
    assert not math.isnan(d["median"])


def test_validate_cli_has_the_opt_out():
    p = subprocess.run([sys.executable, "-m", "commtune", "validate", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--no-drift-check" in p.stdout


def test_api_validate_checks_drift_for_a_calibration_file(monkeypatch, tmp_path):
    import commtune.api as api
    import commtune.validation as validate

    seen = []
    monkeypatch.setattr(validate, "run_validation", lambda *a, **kw: seen.append(kw["drift_from"]) or {})
    path = str(tmp_path / "calib.yaml")
    api.validate(path, 2)
    api.validate(path, 2, drift_check=False)
    from commtune.cluster import ClusterSpec

    api.validate(ClusterSpec(nodes=2, gpus_per_node=1), 2)  # a ClusterSpec keeps no DDP records
    assert seen == [path, None, None]


def test_validation_stops_its_ranks_before_the_drift_check(monkeypatch):
    """run_validation closes the live evaluator it made (its worker group's ranks exit) before the
    drift check times the anchors on the same hosts; an evaluator passed in stays open."""
    import commtune.evaluators.live as live
    import commtune.probe.drift as drift
    from commtune.cluster import ClusterSpec
    from commtune.knobs import Knobs
    from commtune.probe.ddp_calib import calib_workload
    from commtune.validation import run_validation

    events = []

    class FakeEvaluator:
        workload = calib_workload()
        profile = SimpleNamespace(name="fake")

        def __init__(self, *a, **kw):
            pass

        def evaluate_many(self, configs):
            events.append("timed")
            return [{"step_time_s": 0.3, "step_times_s": [0.3, 0.31], "num_buffers": 2} for _ in configs]

        def close(self):
            events.append("closed")

    monkeypatch.setattr(live, "LiveEvaluator", FakeEvaluator)
    monkeypatch.setattr(drift, "drift_for", lambda launch, path: events.append("drift") or {})
    launch = SimpleNamespace(hosts=2, world_size=2)
    spec = ClusterSpec(nodes=2, gpus_per_node=1)
    res = run_validation(launch, spec, [Knobs(), Knobs(num_streams=2)], drift_from="calib.yaml")
    assert events == ["timed", "closed", "drift"] and len(res["rows"]) == 2

    events.clear()
    run_validation(launch, spec, [Knobs()], evaluator=FakeEvaluator())
    assert events == ["timed"]  # the caller's evaluator: the caller closes it
