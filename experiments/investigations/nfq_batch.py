"""The latency helper's cost and the steps it shapes: one verdict per packet against batch verdicts.

The emulated cluster's latency (``--latency``) is a user-space NFQUEUE program
(``commtune/emulation/nfq_delay.c``) that shares this machine's cores with the emulated hosts.
This experiment builds the helper from two sources, the baseline (a git revision: one
verdict per packet) and the checkout's (one batch verdict per queue for every due packet),
brings up one emulated cluster, and alternates the two helpers on it, ``--rounds`` times
each, timing the DDP calibration configurations (:func:`commtune.probe.ddp_calib.time_calib_configs`:
16 x 1 MiB tensors; split over K streams with 1 or 8 MiB buckets) under each. Printed: the helper's CPU
use (cores) and, per configuration, the median step time over the rounds, its MAD and range.

    PYTHONPATH=. python experiments/investigations/nfq_batch.py [--baseline-rev 059c7b6] [--rounds 5]   # root
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SOURCE = "commtune/emulation/nfq_delay.c"


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    from commtune.emulation import EmulatedCluster, emulated_cluster, native
    from commtune.emulation.topology import _kill, _start_delay_helper  # started and stopped as `cluster up/down` do
    from commtune.probe.ddp_calib import calib_knobs, time_calib_configs
    from commtune.probe.launch import LaunchSpec
    from commtune.units import MiB

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-rev", default="059c7b6", help="git revision of the per-packet helper")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--bw", default="2gbit")
    ap.add_argument("--latency", default="1ms")
    ap.add_argument("--prefix", default="nb")
    args = ap.parse_args()
    if args.rounds < 1:
        print(f"--rounds must be at least 1, got {args.rounds}", file=sys.stderr)
        return 2
    git = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline_rev}:{SOURCE}"], capture_output=True)
    if git.returncode != 0:
        print(f"--baseline-rev {args.baseline_rev!r}: no {SOURCE} there ({git.stderr.decode().strip()[:200]})",
              file=sys.stderr)
        return 2
    base_src = git.stdout
    configs = [calib_knobs(k, c * MiB) for k, c in ((8, 1), (6, 1), (4, 1), (8, 8), (1, 8), (1, 1))]
    with tempfile.TemporaryDirectory() as tmp:
        helpers = {f"per-packet ({args.baseline_rev})": native.nfq_delay(Path(tmp), source=base_src),
                   "batch (this checkout)": native.nfq_delay(Path(tmp))}
        steps: dict[str, list[list[float]]] = {name: [] for name in helpers}
        cores: dict[str, list[float]] = {name: [] for name in helpers}
        spec = EmulatedCluster.parse(args.hosts, args.bw, None, args.latency, prefix=args.prefix)
        with emulated_cluster(spec) as state:
            _kill(state.helper_pids)  # the cluster's own helper makes way for the two under test
            for r in range(args.rounds):
                for name, binary in helpers.items():
                    pid = _start_delay_helper(binary, spec)
                    try:
                        c0, t0 = cpu_s(pid), time.monotonic()
                        res = time_calib_configs(LaunchSpec(state=state), configs, steps=6, warmup=2, passes=2)
                        cores[name].append((cpu_s(pid) - c0) / (time.monotonic() - t0))
                    finally:
                        _kill([pid])
                    steps[name].append([x["step_time_s"] for x in res])
                    print(f"round {r + 1} {name}: helper {cores[name][-1]:.2f} cores; "
                          + " ".join(f"{t * 1e3:.0f}" for t in steps[name][-1]) + " ms", file=sys.stderr, flush=True)
    print(f"# Latency helper: per-packet against batch verdicts ({args.hosts} hosts x {args.bw}, {args.latency}, "
          f"{args.rounds} alternating rounds)\n")
    print("| helper | helper CPU (cores) | " + " | ".join(
        f"K={k.num_streams} {k.fusion_threshold_bytes // MiB} MiB: median / MAD / range" for k in configs) + " |")
    print("|---|---|" + "---|" * len(configs))
    for name in helpers:
        t = np.array(steps[name])
        med = np.median(t, axis=0)
        mad = np.median(np.abs(t - med), axis=0) / med
        rng = (t.max(axis=0) - t.min(axis=0)) / med
        print(f"| {name} | {np.median(cores[name]):.2f} | " + " | ".join(
            f"{m * 1e3:.0f} ms / {a:.1%} / {g:.0%}" for m, a, g in zip(med, mad, rng)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
