"""Does the cluster still run as it did when it was calibrated? Re-time the calibration's anchors.

The probe's DDP calibration run (:mod:`commtune.probe.ddp_calib`) times known
configurations of a known workload and stores their step times in the
calibration file. :func:`check_drift` times three of them again, the *anchors*,
in the session of a validation: split at K = 1 with the largest bucket cap
(the per-flow rate), at the largest K with the largest cap (the link rate) and
with the smallest cap (the per-bucket costs). Drift is ``now / then - 1`` per
anchor; the median over the anchors is reported (one noisy anchor does not
move it: many small collectives on many streams are the most sensitive to a
busy host; seen on 4 emulated hosts minutes after the probe: +15.8 % where the
other two moved +3.0 % and -3.7 %).

A drift beyond :data:`DRIFT_WARN` means the network or the hosts run at
another speed than when they were probed (other jobs, a neighbour on the
link, a host's CPU shared): the simulator's predictions are of the calibrated
cluster, and a validation's errors then include the drift. The remedy is a new
``commtune probe``; drift never corrects a prediction. (Seen on the emulated
cluster: the same configurations measured 3-6 % slower during one validation
than 2 hours later, when the calibration predicted them within 0.9 %.)
"""
from __future__ import annotations

import statistics
from typing import Callable, Sequence

from commtune.probe.ddp_calib import calib_workload, record_knobs, records_tensor_bytes, time_calib_configs
from commtune.units import format_size

#: drift beyond this (the repeatability target of two calibrations) gets a warning
DRIFT_WARN = 0.02


def anchor_records(records: Sequence[dict]) -> list[dict]:
    """The anchors among a calibration's DDP calibration records (split only, each once):
    K = 1 at its largest bucket cap (the per-flow rate), the largest K at its largest cap
    (the link rate) and at its smallest cap (the per-bucket costs)."""
    split = [r for r in records if r.get("stream_mode", "split") == "split"]
    if not split:
        return []
    kmax = max(int(r["streams"]) for r in split)
    top = [r for r in split if int(r["streams"]) == kmax]
    k1 = [r for r in split if int(r["streams"]) == 1]
    picks = ([max(k1, key=lambda r: int(r["bucket_bytes"]))] if k1 else []) + [
        max(top, key=lambda r: int(r["bucket_bytes"])), min(top, key=lambda r: int(r["bucket_bytes"]))]
    out: list[dict] = []
    for r in picks:
        if not any(r is o for o in out):
            out.append(r)
    return out


def drift_report(anchors: Sequence[dict], now: Sequence[dict]) -> dict:
    """Per anchor the step time then (calibration) and now, ``drift = now / then - 1``;
    ``median`` over the anchors and ``warn`` (|median| > :data:`DRIFT_WARN`)."""
    rows = []
    for a, n in zip(anchors, now):
        then_s, now_s = float(a["step_time_s"]), float(n["step_time_s"])
        rows.append({"streams": int(a["streams"]), "bucket_bytes": int(a["bucket_bytes"]),
                     "then_s": then_s, "now_s": now_s, "drift": now_s / then_s - 1})
    med = statistics.median(r["drift"] for r in rows) if rows else float("nan")
    return {"anchors": rows, "median": med, "warn": bool(rows) and abs(med) > DRIFT_WARN}


def check_drift(launch, records: Sequence[dict], steps: int = 6, warmup: int = 2, passes: int = 2,
                timer: Callable[..., list[dict]] = time_calib_configs) -> dict | None:
    """Re-time the anchors of ``records`` (a calibration's ``ddp_calibration_measurements``)
    on ``launch``; None when there are none. ``timer(launch, configs, steps, warmup, workload, passes)``
    times configurations on the calibration workload of the records' tensor size (tests pass a fake)."""
    anchors = anchor_records(records)
    if not anchors:
        return None
    workload = calib_workload(tensor_bytes=records_tensor_bytes(anchors))
    now = timer(launch, [record_knobs(a) for a in anchors], steps, warmup, workload, passes)
    return drift_report(anchors, now)


def drift_for(launch, calib_path, steps: int = 6, warmup: int = 2, timer: Callable[..., list[dict]] = time_calib_configs) -> dict:
    """:func:`check_drift` of the calibration file at ``calib_path`` on ``launch``, or
    ``{"skipped": why}`` (no DDP calibration records, or another world size than calibrated)."""
    from commtune.cluster import read_cluster_doc

    doc = read_cluster_doc(calib_path)
    records = doc.get("ddp_calibration_measurements") or []
    world = int((doc.get("fit") or {}).get("world_size") or 0)
    if not anchor_records(records):
        return {"skipped": "the calibration has no DDP calibration run (probe --no-ddp-calibration or an older file)"}
    if world != launch.world_size:
        return {"skipped": f"calibrated on {world} ranks, running {launch.world_size}: the anchors are not comparable"}
    return check_drift(launch, records, steps, warmup, timer=timer)


def format_drift(d: dict) -> str:
    """One line: the median drift and each anchor's then -> now (or why it was not checked)."""
    if "skipped" in d:
        return f"drift since calibration not checked: {d['skipped']}"
    parts = ", ".join(f"K={a['streams']} {format_size(a['bucket_bytes'])} {a['then_s'] * 1e3:.1f} -> {a['now_s'] * 1e3:.1f} ms"
                      for a in d["anchors"])
    line = f"drift since calibration: the anchors run {d['median']:+.1%} ({parts})"
    if d["warn"]:
        line += (f"; beyond {DRIFT_WARN:.0%}: the cluster does not run as calibrated, errors above include it "
                 "(re-run `commtune probe`)")
    return line
