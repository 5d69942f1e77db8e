"""How much the same configuration's step time moves between runs: the noise floor of live fidelity (no cluster).

Every stored calibration in ``experiments/results/live_fidelity/`` timed the same DDP calibration
configurations (split at K = 1, 2, 3, 4, 6, 8, round robin at K = 2, 4, 8; bucket caps 1 and 8 MiB;
16 x 1 MiB tensors over 50 ms of backward). Across the runs of one cluster shape they are the same
measurement made at other times, so their spread is what no calibration made at one time can
predict below. Printed per shape and configuration: the runs, the median step time, the median
absolute deviation (MAD / median) and the range ((max - min) / median). Then, from the held-out
points of every stored run, how often one live measurement's own passes (the same configuration,
minutes apart) are spread by more than the worst-point target.

    PYTHONPATH=. python experiments/investigations/noise_floor.py [RESULTS_DIR]
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the other investigations, then experiments/ (live_fidelity)
from refit_stored_runs import RESULTS  # noqa: E402
#: a run's tag: q4 ... q18, u2, and variants (q14c, q15n0); untagged files are from before the runs
TAG = re.compile(r"^[qu]\d+[a-z0-9]*$")
#: the worst-point target of the fidelity issue
WORST_TARGET = 0.08


def shape_and_tag(path: str) -> tuple[str, str] | None:
    """``calib-SHAPE-TAG.yaml`` -> (SHAPE, TAG); a run's second quiet calibration
    (``calib-SHAPE-quiet2-TAG.yaml``) is the same shape, tag ``TAG/quiet2``; None for an untagged file."""
    stem = os.path.basename(path)[len("calib-"):-len(".yaml")]
    shape, _, tag = stem.rpartition("-")
    if not shape or not TAG.match(tag):
        return None
    if shape.endswith("-quiet2"):
        return shape[: -len("-quiet2")], f"{tag}/quiet2"
    return shape, tag


def _run_order(path: str) -> tuple:
    """Files in run order: q4 before q10 (the number, then the rest of the name)."""
    m = re.search(r"-([qu])(\d+)([a-z0-9]*)\.yaml$", path)
    return (m.group(1), int(m.group(2)), m.group(3), path) if m else ("", 0, "", path)


def calibration_runs(results: str = RESULTS) -> dict[str, list[dict]]:
    """Per shape, the DDP calibration records of each distinct probe (a file re-fitted from
    another run's measurements, same ``created_at``, counts once)."""
    out: dict[str, list[dict]] = {}
    seen: set[tuple[str, str]] = set()
    for path in sorted(glob.glob(os.path.join(results, "calib-*.yaml")), key=_run_order):
        st = shape_and_tag(path)
        if st is None:
            continue
        with open(path) as fh:
            doc = yaml.safe_load(fh)
        records = doc.get("ddp_calibration_measurements") or []
        created = str((doc.get("provenance") or {}).get("created_at", path))
        if not records or (st[0], created) in seen:
            continue
        seen.add((st[0], created))
        out.setdefault(st[0], []).append({"tag": st[1], "records": records})
    return out


def spread_table(runs: list[dict]) -> list[dict]:
    """Per configuration (mode, K, cap) over ``runs``: n, median (s), MAD / median, (max - min) / median."""
    by: dict[tuple[str, int, int], list[float]] = {}
    for run in runs:
        for r in run["records"]:
            key = (r.get("stream_mode", "split"), int(r["streams"]), int(r["bucket_bytes"]))
            by.setdefault(key, []).append(float(r["step_time_s"]))
    rows = []
    for (mode, k, cap), v in sorted(by.items()):
        t = np.array(v)
        med = float(np.median(t))
        rows.append({"mode": mode, "streams": k, "bucket_bytes": cap, "n": len(t), "median_s": med,
                     "mad": float(np.median(np.abs(t - med)) / med), "range": float((t.max() - t.min()) / med)})
    return rows


def pass_disagreement(results: str = RESULTS, limit: float = WORST_TARGET) -> dict[str, dict]:
    """Per shape over every stored run's held-out points: how many were measured in two or more
    passes, and how many of those had a pass spread (:func:`commtune.stats.relative_spread` of the
    pass medians, as ``commtune validate`` reports it) above ``limit``."""
    from commtune.stats import relative_spread

    out: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(results, "live_fidelity-*.json"))):
        with open(path) as fh:
            d = json.load(fh)
        for shape, v in (d.get("shapes") or {}).items():
            agg = out.setdefault(shape, {"points": 0, "beyond": 0})
            for res in v.get("models", {}).values():
                for row in res.get("rows", []):
                    pm = row.get("pass_medians_s") or []
                    if len(pm) < 2:
                        continue
                    agg["points"] += 1
                    agg["beyond"] += int(relative_spread(pm) > limit)
    return out


def main() -> int:
    results = sys.argv[1] if len(sys.argv) > 1 else RESULTS
    if not os.path.isdir(results):
        print(f"{results!r} is not a directory (expected the live_fidelity results, default {RESULTS})", file=sys.stderr)
        return 2
    print("# The noise floor of live fidelity on the machine that made the stored runs\n")
    for shape, runs in sorted(calibration_runs(results).items()):
        print(f"## {shape}: {len(runs)} probes ({', '.join(r['tag'] for r in runs)})\n")
        print("| mode | K | bucket cap | runs | median | MAD / median | (max - min) / median |")
        print("|---|---|---|---|---|---|---|")
        for r in spread_table(runs):
            print(f"| {r['mode']} | {r['streams']} | {r['bucket_bytes'] / 2**20:g} MiB | {r['n']} | "
                  f"{r['median_s'] * 1e3:.0f} ms | {r['mad']:.1%} | {r['range']:.1%} |")
        print()
    print(f"## Held-out points whose own passes are spread by more than {WORST_TARGET:.0%}\n")
    print("| shape | points measured in >= 2 passes | pass spread > 8 % |")
    print("|---|---|---|")
    for shape, a in sorted(pass_disagreement(results).items()):
        if a["points"]:
            print(f"| {shape} | {a['points']} | {a['beyond']} ({a['beyond'] / a['points']:.1%}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
