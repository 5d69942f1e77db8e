"""Where scale prediction loses: the network, or the hosts' shared cores?

A calibration made on ``--from`` emulated hosts predicts ``--to`` hosts
(``validate`` resizes it; ``experiments/live_fidelity.py``'s scale part). On
each of the two cluster sizes this script times, against that one calibration
resized to the size:

1. **the raw network**: a short all-reduce sweep (``commtune probe`` with
   sizes 1/4/16 MiB, streams 1,2,3,5,8, no DDP run): each record against the
   calibrated network's prediction, and the link rate the sweep itself fits;
2. **DDP on the calibration workload** (16 x 1 MiB tensors over 50 ms of
   backward; split K = 1,3,5,8 with 1 and 8 MiB buckets, round robin K = 4, 8):
   measured against simulated steps, with the busy cores of the whole machine
   over each configuration's timed steps (``commtune.host_load``; every
   emulated host shares this machine's cores).

At ``--from`` hosts both are the calibration's own kind of points (a fit
residual); at ``--to`` hosts they are held out. Needs root. Prints figures and
writes ``--out`` (JSON); not a timed test.

    PYTHONPATH=. python experiments/scale_cpu.py --calib calib-scale-3h.yaml \
        --bw 300mbit --per-stream 120mbit [--from 3 --to 6]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

SWEEP = ["--sizes", "1MiB,4MiB,16MiB", "--streams", "1,2,3,5,8", "--no-ddp-calibration",
         "--burst-sizes", "none", "--host-sizes", "none"]


def ct(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "commtune", *args], capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"commtune {' '.join(args)} failed: {p.stderr[-1500:]}")
    return p.stdout


def raw_network(prefix: str, calib: str, hosts: int) -> dict:
    """The sweep's records against the calibration's network at ``hosts`` ranks."""
    import yaml

    from simulators.calibrated import calibrated_network
    from simulators.network import latency_bounded_scalar

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sweep.yaml")
        ct("probe", "--emulated", "--prefix", prefix, *SWEEP, "-o", out, "--timeout", "900")
        sweep = yaml.safe_load(open(out))
    net = calibrated_network(yaml.safe_load(open(calib))["fit"], hosts)
    rows = []
    for r in sweep["measurements"]:
        k, size = int(r["streams"]), float(r["size_bytes"])
        a, b = net.coeffs(k, False)
        pred = latency_bounded_scalar(float(a) + float(b) * size, float(net.min_collective_s(k)), net.bound_sharpness)
        rows.append({"streams": k, "size_bytes": size, "measured_s": float(r["time_s"]), "predicted_s": pred,
                     "error": pred / float(r["time_s"]) - 1})
    return {"rows": rows, "link_Mbps": sweep["fit"]["derived"]["link_Bps"] * 8e-6,
            "per_flow_Mbps": sweep["fit"]["derived"]["per_stream_Bps"] * 8e-6}


def ddp_points(prefix: str, calib: str, hosts: int) -> list[dict]:
    """DDP on the calibration workload, live (with busy cores) and simulated at ``hosts`` ranks."""
    from commtune.emulation import status
    from commtune.probe.ddp_calib import calib_configs, calib_workload, record_knobs, time_calib_configs
    from commtune.probe.launch import LaunchSpec
    from commtune.probe.validate import sim_cluster
    from simulators import Simulator

    recs = time_calib_configs(LaunchSpec(state=status(prefix), timeout_s=900),
                              calib_configs([1, 3, 5, 8], rr_streams=[4, 8]), steps=6, warmup=2, passes=2)
    sim = Simulator(calib_workload(), sim_cluster(calib, hosts, hosts))
    out = []
    for r in recs:
        pred = sim.run(record_knobs(r)).step_time_s
        out.append({"streams": r["streams"], "bucket_bytes": r["bucket_bytes"], "stream_mode": r["stream_mode"],
                    "buckets": r["num_buckets"], "measured_s": r["step_time_s"], "predicted_s": pred,
                    "error": pred / r["step_time_s"] - 1, "host_busy_cores": r["host_busy_cores"]})
    return out


def show(hosts: int, res: dict) -> None:
    raw = res["raw"]
    errs = np.array([r["error"] for r in raw["rows"]])
    big = np.array([r["error"] for r in raw["rows"] if r["size_bytes"] >= 16 * 2**20])
    print(f"-- {hosts} hosts: raw all-reduce, {len(errs)} records: MAPE {np.mean(np.abs(errs)):.2%}, "
          f"bias {np.mean(errs):+.2%}; 16 MiB bias {np.mean(big):+.2%}; the sweep fits link "
          f"{raw['link_Mbps']:.1f} Mbit/s, per-flow {raw['per_flow_Mbps']:.1f} Mbit/s")
    print(f"   {'DDP config':<24} {'buckets':>7} {'measured':>9} {'predicted':>9} {'error':>7} {'busy cores':>10}")
    for r in res["ddp"]:
        name = f"{r['stream_mode']} K={r['streams']} {r['bucket_bytes'] >> 20} MiB"
        busy = "n/a" if r["host_busy_cores"] is None else f"{r['host_busy_cores']:.2f}"
        print(f"   {name:<24} {r['buckets']:>7} {r['measured_s'] * 1e3:>7.0f}ms {r['predicted_s'] * 1e3:>7.0f}ms "
              f"{r['error']:>+7.1%} {busy:>10}")
    e = np.array([r["error"] for r in res["ddp"]])
    print(f"   DDP MAPE {np.mean(np.abs(e)):.2%}, bias {np.mean(e):+.2%} (machine: {os.cpu_count()} cores)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", required=True, help="calibration file made on --from hosts")
    ap.add_argument("--from", dest="n_from", type=int, default=3)
    ap.add_argument("--to", dest="n_to", type=int, default=6)
    ap.add_argument("--bw", required=True)
    ap.add_argument("--per-stream")
    ap.add_argument("--prefix", default="sc")
    ap.add_argument("--out", default="experiments/results/scale_cpu.json")
    args = ap.parse_args()
    results = {"calib": os.path.basename(args.calib), "bw": args.bw, "per_stream": args.per_stream,
               "cores": os.cpu_count(), "sizes": {}}
    try:
        for hosts in (args.n_from, args.n_to):
            up = ["cluster", "up", "--prefix", args.prefix, "--hosts", str(hosts), "--bw", args.bw, "--replace"]
            ct(*(up + (["--per-stream", args.per_stream] if args.per_stream else [])))
            res = {"raw": raw_network(args.prefix, args.calib, hosts), "ddp": ddp_points(args.prefix, args.calib, hosts)}
            results["sizes"][str(hosts)] = res
            show(hosts, res)
    finally:
        subprocess.run([sys.executable, "-m", "commtune", "cluster", "down", "--prefix", args.prefix], capture_output=True)
    from commtune.io import atomic_write_text

    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
