"""Live fidelity of the calibrated simulator on the emulated 4-host cluster.

For each shaping (1 Gbit/s links; with and without a 300 Mbit/s per-stream
cap): bring the emulated cluster up, probe all-reduce (calibration file),
time real DDP steps of a synthetic ResNet-50 (element counts x0.25, forward
100 ms, backward 200 ms emulated by sleeps split by FLOPs) over buckets
1/5/25/100 MiB x streams 1/2/4, simulate the same configurations with the
calibration, print MAPE, Spearman and the pick gap. Needs root. Prints figures;
not a timed test.

    PYTHONPATH=. python experiments/live_fidelity.py [--out experiments/results]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from commtune.emulation import EmulatedCluster, emulated_cluster
from commtune.probe.launch import LaunchSpec
from commtune.probe.probe import calibration, format_table, parse_sizes, run_probe, summary, write_calibration
from commtune.probe.validate import format_report, grid_configs, plot, run_validation

SETTINGS = {"1gbit": dict(bw="1gbit"), "1gbit-300mbit-per-stream": dict(bw="1gbit", per_stream="300mbit")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--mode", default="split", choices=("split", "round_robin"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--prefix", default="ctp")
    ap.add_argument("--fit-min-size", type=int, default=2**20, help="fit sizes >= this (bytes; default 1 MiB)")
    ap.add_argument("--weighting", default="absolute", choices=("relative", "absolute"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    all_res = {}
    for name in args.settings.split(","):
        s = SETTINGS[name]
        spec = EmulatedCluster.parse(args.hosts, s["bw"], s.get("per_stream"), prefix=args.prefix)
        t0 = time.time()
        with emulated_cluster(spec, replace=True) as state:
            launch = LaunchSpec(state=state, timeout_s=900)
            probe = run_probe(launch, parse_sizes("256KB:64MB"), [1, 2, 4], iters=3, warmup=1)
            cs, extra = calibration(probe, hosts=args.hosts, name=f"calib-{name}", source=spec.describe(),
                                    min_fit_size=args.fit_min_size, weighting=args.weighting)
            calib_path = os.path.join(args.out, f"calib-{name}.yaml")
            write_calibration(calib_path, cs, extra)
            print(f"== {name}: {spec.describe()}")
            print(format_table(probe["records"], probe["world_size"]))
            print(summary(cs, extra))
            res = run_validation(launch, calib_path, grid_configs(), "resnet50", scale=0.25, forward_s=0.1,
                                 backward_s=0.2, steps=args.steps, warmup=2, mode=args.mode)
        res["setting"] = name
        res["wall_s"] = time.time() - t0
        print(format_report(res))
        plot(res, os.path.join(args.out, f"live_fidelity-{name}.png"), title=f"{name}: {res['summary']['mape']:.1%} MAPE")
        all_res[name] = res
        sys.stdout.flush()
    with open(os.path.join(args.out, f"live_fidelity-{args.mode}.json"), "w") as fh:
        json.dump(all_res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
