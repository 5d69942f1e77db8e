"""Every stored live-fidelity point, predicted again by this checkout's model (no cluster needed).

For each run ``experiments/results/live_fidelity/live_fidelity-TAG.json``: its
calibration files are re-fitted from their stored measurements
(:func:`commtune.probe.refit.refit_calibration`, what ``commtune probe --refit``
does), and every held-out configuration it measured live is predicted again.
Printed per run, shape and model: MAPE / worst as the run reported them and as
this checkout predicts them, the mean signed error (bias) and the pick gap;
then the same over all points. A model change is checked here against every
live point on record before a new live run; runs whose points were looked at
while the change was made are not held out for it (say which in the notes).

    PYTHONPATH=. python experiments/investigations/refit_stored_runs.py [TAG ...]
"""
from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the other investigations, then experiments/ (live_fidelity)
from live_fidelity import predictions, run_model  # noqa: E402

#: the stored runs of ``experiments/live_fidelity.py`` that the investigations read
RESULTS = os.path.join(os.path.dirname(HERE), "results", "live_fidelity")


def refitted(path: str):
    """The calibration at ``path`` re-fitted (a ClusterSpec carrying its fit; nothing written)."""
    from commtune.probe.refit import refit_calibration

    return refit_calibration(path)[0]


def run_items(d: dict, tag: str) -> list[tuple[str, int, dict, str]]:
    """(shape, hosts, {model: validation}, calibration path) for every validated part of a run."""
    items = [(name, v["shape"]["hosts"], v["models"], os.path.join(RESULTS, f"calib-{name}-{tag}.yaml"))
             for name, v in d.get("shapes", {}).items()]
    s = d.get("scale") or {}
    if s.get("validation") and s.get("calibration"):
        items.append((f"scale {s['from']}->{s['to']}", s["to"], {"conv": s["validation"]},
                      os.path.join(RESULTS, s["calibration"])))
    return [it for it in items if os.path.exists(it[3])]


def main() -> int:
    tags = sys.argv[1:] or sorted(os.path.basename(p)[len("live_fidelity-"):-5]
                                  for p in glob.glob(os.path.join(RESULTS, "live_fidelity-*.json")))
    every: list[float] = []
    print(f"{'run':<7} {'shape':<16} {'model':<14} {'as run (MAPE/worst)':>20} {'now (MAPE/worst)':>17} {'bias':>7} {'pick gap':>9}")
    for tag in tags:
        with open(os.path.join(RESULTS, f"live_fidelity-{tag}.json")) as fh:
            d = json.load(fh)
        for shape, hosts, models, calib in run_items(d, tag):
            try:
                new = refitted(calib)
            except Exception as exc:  # an old file without the stored measurements
                print(f"{tag:<7} {shape:<16} cannot re-fit {os.path.basename(calib)}: {exc}")
                continue
            for m, res in models.items():
                rows = res["rows"]
                pred = np.array(predictions(new, hosts, [r["knobs"] for r in rows], *run_model(d, m)))
                meas = np.array([r["measured_s"] for r in rows])
                was = np.array([r["predicted_s"] for r in rows]) / meas - 1
                now = pred / meas - 1
                every += now.tolist()
                print(f"{tag:<7} {shape:<16} {m:<14} {np.mean(abs(was)):>10.2%} / {max(abs(was)):>6.2%} "
                      f"{np.mean(abs(now)):>8.2%} / {max(abs(now)):>6.2%} {np.mean(now):>+7.2%} "
                      f"{meas[np.argmin(pred)] / meas.min() - 1:>9.2%}")
    e = np.array(every)
    print(f"all {len(e)} points: MAPE {np.mean(abs(e)):.2%}, worst {np.max(abs(e)):.2%}, bias {np.mean(e):+.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
