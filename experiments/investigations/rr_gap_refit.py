"""The round-robin link gap, measured on held-out points already timed live.

For each saved ``experiments/live_fidelity.py`` run (its JSON) and each shape
whose calibration file holds the DDP calibration run's round-robin points:
refit the calibration's round-robin link gap ``g_rr(K)`` from those points
only (:func:`commtune.probe.ddp_calib.fit_round_robin_gap`; nothing of the
held-out points is used), then predict the run's held-out configurations
again and compare with the same live step times: MAPE, worst, Spearman and
pick gap before (this checkout's simulator without the gap; the run's
recorded figure in brackets) and after, also per stream mode. The live
measurements are unchanged; only the model differs.

    PYTHONPATH=. python experiments/investigations/rr_gap_refit.py [RESULTS.json ...]

Without arguments: every saved run, written to ``experiments/investigations/results/rr_gap_refit.json``.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
#: the stored runs of ``experiments/live_fidelity.py`` (read) and where this investigation writes
RUNS = os.path.join(os.path.dirname(HERE), "results", "live_fidelity")
OUT = os.path.join(HERE, "results")


def _copy_fit(spec) -> dict:
    return {"fit": dict(spec.meta["fit"], network=dict(spec.meta["fit"]["network"]))}


def refit(calib_path: str):
    """(calibration without a round-robin gap, the same with the gap refitted, the fit)."""
    from commtune.cluster import load_cluster_file
    from commtune.probe.ddp_calib import apply_round_robin_gap, fit_round_robin_gap
    import yaml

    with open(calib_path) as fh:
        raw = yaml.safe_load(fh)
    recs = raw.get("ddp_calibration_measurements") or []
    if not any(r.get("stream_mode") == "round_robin" for r in recs):
        return None, None, None
    spec = load_cluster_file(calib_path)
    none = apply_round_robin_gap(spec, _copy_fit(spec), {"rr_gap0_s": 0.0, "rr_gap_per_stream_s": 0.0, "by_streams": {}})
    fitted = fit_round_robin_gap(recs, none)
    return none, apply_round_robin_gap(none, _copy_fit(none), fitted), fitted


def main(paths: list[str], write: bool = True) -> int:
    from commtune.knobs import Knobs
    from commtune.runtime.synthetic import sim_workload, synthetic_profile
    from commtune.validation import compare, sim_cluster
    from simulators import Simulator

    out = []
    for path in paths:
        with open(path) as fh:
            res = json.load(fh)
        tag = os.path.basename(path)[len("live_fidelity"):-len(".json")]
        for shape, entry in res.get("shapes", {}).items():
            calib = os.path.join(os.path.dirname(path), f"calib-{shape}{tag}.yaml")
            if not os.path.exists(calib):
                continue
            spec0, spec, fitted = refit(calib)
            if spec is None:
                print(f"{os.path.basename(path)} {shape}: calibration has no round-robin points")
                continue
            print(f"== {os.path.basename(path)} {shape}: g_rr(K) = {fitted['rr_gap0_s'] * 1e3:.3f} ms + "
                  f"{fitted['rr_gap_per_stream_s'] * 1e3:.3f} ms*K (per K: "
                  + ", ".join(f"{k}: {v['gap_s'] * 1e3:.2f} ms" for k, v in fitted["by_streams"].items()) + ")")
            hosts = int(entry["shape"]["hosts"])
            for m, r in entry.get("models", {}).items():
                model, scale = res["models"][m]
                w = sim_workload(synthetic_profile(model, scale, 0.1, 0.2))
                rows = r["rows"]
                meas = [x["measured_s"] for x in rows]
                knobs = [Knobs.from_dict(x["knobs"]) for x in rows]
                sim = Simulator(w, sim_cluster(spec0, hosts, hosts))  # this checkout's simulator, no round-robin gap
                old = [sim.run(k).step_time_s for k in knobs]
                sim = Simulator(w, sim_cluster(spec, hosts, hosts))
                new = [sim.run(k).step_time_s for k in knobs]
                recorded = compare([x["predicted_s"] for x in rows], meas)
                a, b = compare(old, meas), compare(new, meas)
                line = {"run": os.path.basename(path), "shape": shape, "model": m, "recorded": recorded,
                        "before": a, "after": b,
                        "rr_gap0_s": fitted["rr_gap0_s"], "rr_gap_per_stream_s": fitted["rr_gap_per_stream_s"]}
                for mode in ("split", "round_robin"):
                    idx = [i for i, x in enumerate(rows) if x["knobs"].get("stream_mode") == mode]
                    e_old = [abs(old[i] / meas[i] - 1) for i in idx]
                    e_new = [abs(new[i] / meas[i] - 1) for i in idx]
                    line[mode] = {"n": len(idx), "mape_before": float(np.mean(e_old)) if idx else float("nan"),
                                  "mape_after": float(np.mean(e_new)) if idx else float("nan")}
                out.append(line)
                print(f"  {m:<14} (recorded MAPE {recorded['mape']:.2%}) MAPE {a['mape']:.2%} -> {b['mape']:.2%}, worst {a['worst']:.2%} -> {b['worst']:.2%}, "
                      f"Spearman {a['spearman']:.3f} -> {b['spearman']:.3f}, pick gap {a['pick_gap']:.2%} -> "
                      f"{b['pick_gap']:.2%}; round robin ({line['round_robin']['n']} pts) "
                      f"{line['round_robin']['mape_before']:.2%} -> {line['round_robin']['mape_after']:.2%}, "
                      f"split {line['split']['mape_before']:.2%} -> {line['split']['mape_after']:.2%}")
    from commtune.io import atomic_write_text

    if write:
        atomic_write_text(os.path.join(OUT, "rr_gap_refit.json"), json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    args = sys.argv[1:] or [os.path.join(RUNS, f) for f in sorted(os.listdir(RUNS))
                            if f.startswith("live_fidelity") and f.endswith(".json")]
    sys.exit(main(args, write=not sys.argv[1:]))  # the results file covers every saved run
