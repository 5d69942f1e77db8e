"""Live fidelity of the calibrated simulator on the emulated 4-host cluster.

For each shaping (1 Gbit/s links; with and without a 300 Mbit/s per-stream
cap): bring the emulated cluster up, probe all-reduce (calibration file),
time real DDP steps of a synthetic ResNet-50 (element counts x0.25, forward
100 ms, backward 200 ms emulated by sleeps split by FLOPs) over buckets
1/5/25/100 MiB x streams 1/2/4, simulate the same configurations with the
calibration, print MAPE, Spearman and the pick gap. The probe also times
back-to-back bursts (fits collectives in flight per stream and the gap) and
DDP's host work per byte; a short DDP calibration run (16 x 1 MiB tensors,
bucket caps 1 vs 8 MiB; not the validated model) fits the per-bucket gap per
stream count; the DDP configurations are timed in ``--passes``
passes of ``--steps`` steps, alternating order, pooled. The same live data
are also simulated with the plain model (before those parameters). Needs root. Prints figures;
not a timed test.

    PYTHONPATH=. python experiments/live_fidelity.py [--out experiments/results]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import dataclasses

from commtune.cluster import load_cluster_file
from commtune.emulation import EmulatedCluster, emulated_cluster
from commtune.probe.launch import LaunchSpec
from commtune.probe.probe import calibration, format_table, parse_sizes, run_probe, summary, write_calibration
from commtune.probe.validate import compare, format_report, grid_configs, plot, run_validation, sim_cluster
from commtune.units import MiB

SETTINGS = {"1gbit": dict(bw="1gbit"), "1gbit-300mbit-per-stream": dict(bw="1gbit", per_stream="300mbit")}


def plain_predictions(res: dict, calib_path: str, hosts: int) -> list[float]:
    """The same configurations under the plain model (one collective per stream at a
    time, no gap, no host work): the simulator before the pipelining/host parameters."""
    from commtune.knobs import Knobs
    from commtune.runtime.synthetic import sim_workload, synthetic_profile
    from simulators import Simulator

    spec = load_cluster_file(calib_path)
    fit = dict(spec.meta["fit"])
    fit["per_stream_fits"] = {k: {kk: vv for kk, vv in v.items() if kk != "gap_s"}
                              for k, v in fit["per_stream_fits"].items()}
    plain = dataclasses.replace(spec, inflight_per_stream=1, buffer_gap_s=0.0, host_pre_s_per_byte=0.0,
                                host_post_s_per_byte=0.0, meta={**spec.meta, "fit": fit})
    cluster = sim_cluster(plain, hosts, hosts)
    sim = Simulator(sim_workload(synthetic_profile("resnet50", 0.25, 0.1, 0.2)), cluster)
    return [sim.run(Knobs.from_dict(r["knobs"])).step_time_s for r in res["rows"]]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--mode", default="split", choices=("split", "round_robin"))
    ap.add_argument("--steps", type=int, default=8, help="timed steps per configuration per pass")
    ap.add_argument("--passes", type=int, default=2,
                    help="passes over the configurations in one launch, alternating order; steps pooled")
    ap.add_argument("--probe-iters", type=int, default=5)
    ap.add_argument("--prefix", default="ctp")
    ap.add_argument("--fit-min-size", type=int, default=2**20, help="fit sizes >= this (bytes; default 1 MiB)")
    ap.add_argument("--weighting", default="absolute", choices=("relative", "absolute"))
    ap.add_argument("--no-ddp-gap", dest="ddp_gap", action="store_false",
                    help="skip the DDP calibration run that fits the per-bucket gap")
    ap.add_argument("--tag", default="", help="suffix of the output files (default none)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    all_res = {}
    for name in args.settings.split(","):
        s = SETTINGS[name]
        spec = EmulatedCluster.parse(args.hosts, s["bw"], s.get("per_stream"), prefix=args.prefix)
        t0 = time.time()
        load_before = os.getloadavg()
        with emulated_cluster(spec, replace=True) as state:
            launch = LaunchSpec(state=state, timeout_s=900)
            probe = run_probe(launch, parse_sizes("256KB:64MB"), [1, 2, 4], iters=args.probe_iters, warmup=1,
                              burst_sizes=[1 * MiB, 4 * MiB], burst_count=8,
                              host_sizes=[1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB])
            cs, extra = calibration(probe, hosts=args.hosts, name=f"calib-{name}", source=spec.describe(),
                                    min_fit_size=args.fit_min_size, weighting=args.weighting)
            calib_path = os.path.join(args.out, f"calib-{name}{args.tag}.yaml")
            if args.ddp_gap:
                # per-bucket cost of DDP's path from a calibration workload (not the validated one)
                from commtune.probe.ddp_calib import apply_ddp_gaps, fit_ddp_gaps, run_ddp_gap_calibration

                recs = run_ddp_gap_calibration(launch, [1, 2, 4], steps=args.steps, warmup=2)
                gaps = fit_ddp_gaps(recs, cs)
                cs = apply_ddp_gaps(cs, extra, gaps, recs)
            write_calibration(calib_path, cs, extra)
            print(f"== {name}: {spec.describe()}")
            print(format_table(probe["records"], probe["world_size"]))
            print(summary(cs, extra))
            if "ddp_gap" in extra["fit"]:
                for k, v in extra["fit"]["ddp_gap"]["by_streams"].items():
                    print(f"  DDP calibration K={k}: 1 MiB - 8 MiB buckets measured {v['measured_diff_s'] * 1e3:.1f} ms, "
                          f"simulated at g=0 {v['simulated_diff_at_0_s'] * 1e3:.1f} ms -> gap {v['gap_s'] * 1e3:.3f} ms")
            sys.stdout.flush()
            load_mid = os.getloadavg()
            res = run_validation(launch, calib_path, grid_configs(), "resnet50", scale=0.25, forward_s=0.1,
                                 backward_s=0.2, steps=args.steps, warmup=2, mode=args.mode, passes=args.passes)
        res["setting"] = name
        res["wall_s"] = time.time() - t0
        res["loadavg"] = {"before_probe": load_before, "before_ddp": load_mid, "after": os.getloadavg()}
        res["steps"], res["passes"], res["probe_iters"] = args.steps, args.passes, args.probe_iters
        plain = plain_predictions(res, calib_path, args.hosts)
        for r, p in zip(res["rows"], plain):
            r["predicted_plain_s"] = p
        res["summary_plain"] = compare(plain, [r["measured_s"] for r in res["rows"]], [r["spread"] for r in res["rows"]])
        print(format_report(res))
        sp = res["summary_plain"]
        print(f"plain model (m=1, no gap, no host work), same live data: MAPE {sp['mape']:.2%}, "
              f"Spearman {sp['spearman']:.3f}, pick gap {sp['pick_gap']:.2%}")
        print(f"load average (1/5/15 min): before probe {load_before}, before DDP {load_mid}, after {res['loadavg']['after']}")
        plot(res, os.path.join(args.out, f"live_fidelity-{name}{args.tag}.png"),
             title=f"{name}: {res['summary']['mape']:.1%} MAPE, rho {res['summary']['spearman']:.2f}")
        all_res[name] = res
        sys.stdout.flush()
    with open(os.path.join(args.out, f"live_fidelity-{args.mode}{args.tag}.json"), "w") as fh:
        json.dump(all_res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
