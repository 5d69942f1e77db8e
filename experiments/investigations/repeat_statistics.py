"""How the DDP calibration's statistic changes repeatability and fidelity, on the stored runs (no cluster).

For every stored quiet / busy-core calibration pair of ``live_fidelity.py``'s repeatability part
(``calib-4h-1g-cap300m-TAG.yaml`` / ``calib-4h-1g-cap300m-busy-TAG.yaml`` with the run's
``live_fidelity-TAG.json``), both files are re-fitted (:func:`commtune.probe.refit.refit_calibration`)
after one change to their DDP calibration records, and the run's repeatability configurations are
predicted by both: median and max |difference|. The same change applied to every stored run's
calibrations gives the MAPE / bias over every live held-out point on record. Variants:

* ``median`` (what the probe does), ``p25``, ``lowhalf`` (mean of the fastest half), ``min``: the
  statistic of each DDP calibration / tail record's steps;
* ``k<=4``: the median, with the split records at K > 4 left out of the gap model's fit.

    PYTHONPATH=. python experiments/investigations/repeat_statistics.py [VARIANT ...]
"""
from __future__ import annotations

import glob
import json
import os
import sys
import tempfile

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the other investigations, then experiments/ (live_fidelity)
from live_fidelity import MODELS, predictions, run_model  # noqa: E402
from refit_stored_runs import RESULTS, run_items  # noqa: E402

SHAPE = "4h-1g-cap300m"  # the repeatability shape
STATISTICS = {
    "median": np.median,
    "p25": lambda t: np.percentile(t, 25),
    "lowhalf": lambda t: np.mean(np.sort(t)[: max(1, len(t) // 2)]),
    "min": np.min,
}
VARIANTS = {**{name: (name, None) for name in STATISTICS}, "k<=4": ("median", 4)}


def refit_with(path: str, variant: str):
    """The calibration at ``path`` re-fitted with ``variant``'s DDP records (nothing written beside it)."""
    from commtune.probe.refit import refit_calibration

    stat, kmax = VARIANTS[variant]
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    for key in ("ddp_calibration_measurements", "ddp_tail_measurements"):
        for r in doc.get(key) or []:
            r["step_time_s"] = float(STATISTICS[stat](np.asarray(r["step_times_s"])))
    if kmax is not None:
        doc["ddp_calibration_measurements"] = [r for r in doc.get("ddp_calibration_measurements") or []
                                               if r.get("stream_mode") != "split" or r["streams"] <= kmax]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(doc, fh)
    try:
        return refit_calibration(fh.name)[0]
    finally:
        os.unlink(fh.name)


def repeat_pairs() -> list[tuple[str, str, str, list[dict]]]:
    """(tag, quiet calibration, busy calibration, repeatability rows) of every stored pair."""
    out = []
    for busy in sorted(glob.glob(os.path.join(RESULTS, f"calib-{SHAPE}-busy-*.yaml"))):
        tag = os.path.basename(busy)[len(f"calib-{SHAPE}-busy-"):-5]
        quiet = os.path.join(RESULTS, f"calib-{SHAPE}-{tag}.yaml")
        run = os.path.join(RESULTS, f"live_fidelity-{tag}.json")
        if not (os.path.exists(quiet) and os.path.exists(run)):
            continue
        with open(run) as fh:
            rows = (json.load(fh).get("repeat") or {}).get("rows")
        if rows:
            out.append((tag, quiet, busy, rows))
    return out


def repeatability(variant: str, pairs) -> dict[str, np.ndarray]:
    """Per pair: |busy / quiet - 1| of the predictions of its repeatability configurations."""
    out = {}
    for tag, quiet, busy, rows in pairs:
        a, b = refit_with(quiet, variant), refit_with(busy, variant)
        diffs = []
        for m, (model, scale) in MODELS.items():
            knobs = [r["knobs"] for r in rows if r["model"] == m]
            diffs += list(np.array(predictions(b, 4, knobs, model, scale)) / np.array(predictions(a, 4, knobs, model, scale)) - 1)
        out[tag] = np.abs(diffs)
    return out


def fidelity(variant: str) -> np.ndarray:
    """Signed errors of every stored live held-out point, its calibration re-fitted with ``variant``."""
    errs: list[float] = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "live_fidelity-*.json"))):
        tag = os.path.basename(path)[len("live_fidelity-"):-5]
        with open(path) as fh:
            d = json.load(fh)
        for _, hosts, models, calib in run_items(d, tag):
            try:
                spec = refit_with(calib, variant)
            except Exception:  # an old file without the stored measurements (refit_stored_runs skips it too)
                continue
            for m, res in models.items():
                pred = np.array(predictions(spec, hosts, [r["knobs"] for r in res["rows"]], *run_model(d, m)))
                errs += list(pred / np.array([r["measured_s"] for r in res["rows"]]) - 1)
    return np.array(errs)


def main() -> int:
    variants = sys.argv[1:] or list(VARIANTS)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"unknown variant {bad[0]!r}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    pairs = repeat_pairs()
    print(f"{len(pairs)} quiet / busy pairs: {', '.join(p[0] for p in pairs)}")
    print(f"{'variant':<8} {'repeat median':>13} {'repeat max':>10}  per-pair max  | live points MAPE, bias")
    for v in variants:
        rep = repeatability(v, pairs)
        pooled = np.concatenate(list(rep.values()))
        e = fidelity(v)
        per = " ".join(f"{t}:{d.max():.1%}" for t, d in rep.items())
        print(f"{v:<8} {np.median(pooled):>13.2%} {pooled.max():>10.2%}  {per}  | {len(e)} points "
              f"MAPE {np.mean(np.abs(e)):.2%}, bias {np.mean(e):+.2%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
