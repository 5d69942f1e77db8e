"""Where a DDP step's tail goes: live against the calibrated simulator on two small workloads.

A reproducer for the per-step miss left on the oversubscribed emulated shapes (README,
"Errors left"). Each workload has 8 tensors of 2 MiB ready evenly over a 200 ms backward,
then 512 KiB at its end, as 1 tensor or as 100 small ones (same bytes and timeline,
different tensor counts in the last bucket). Each is timed live at K = 1 and K = 8
streams (2 MiB buckets, two launches, median of the median steps) and simulated on the
calibration. Printed per case: the step live and simulated, the miss, and rank 0's last
bucket (launch and end, ms from the start of backward) against the simulator's.

Needs a running emulated cluster and a calibration of it (root):

    commtune cluster up --prefix dg --hosts 3 --bw 2gbit --latency 1ms
    commtune probe --emulated --prefix dg -o calib.yaml
    PYTHONPATH=. python experiments/investigations/ddp_tail.py --prefix dg --cluster calib.yaml
    commtune cluster down --prefix dg

Seen on 3 hosts (2 Gbit/s, 1 ms) with the q9 calibration, two runs: K = 1 missed +7.1 / +8.6 ms
(1 tensor) and +12.6 / +15.5 ms (100 tensors: the last bucket launched 3-8 ms late); K = 8
missed +38 / +45 ms (1 tensor) and +30 / +26 ms (100), 8-14 % of the step, where the held-out
ResNet-50 and GPT-2 points at K = 7-8 missed 1-4 %; the last bucket alone took 21-28 ms live
against 13-17 ms simulated.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics

import numpy as np

MiB = 2**20


def workload(n_last: int):
    """8 x 2 MiB tensors over 200 ms of backward, then 512 KiB in ``n_last`` tensors at its end."""
    from simulators.workload import synthetic_workload

    ready = list(np.linspace(0.025, 0.175, 8)) + [0.2] * n_last
    elements = [2 * MiB // 4] * 8 + [512 * 1024 // 4 // n_last] * n_last
    return synthetic_workload(np.array(ready), np.array(elements), forward_s=0.1, backward_s=0.2)


def main() -> int:
    from commtune.emulation import status
    from commtune.knobs import DDP_DEFAULT
    from commtune.probe.ddp_step import time_ddp_configs
    from commtune.probe.launch import LaunchSpec
    from commtune.validation import sim_cluster
    from simulators import Simulator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", required=True, help="the emulated cluster that is up")
    ap.add_argument("--cluster", required=True, help="its calibration file")
    ap.add_argument("--streams", default="1,8")
    args = ap.parse_args()
    state = status(args.prefix)
    if state is None:
        raise SystemExit(f"no emulated cluster {args.prefix!r} is up (commtune cluster up --prefix {args.prefix} ...)")
    launch = LaunchSpec(state=state, timeout_s=600)
    spec = sim_cluster(args.cluster, launch.hosts, launch.world_size)
    for k in (int(x) for x in args.streams.split(",")):
        knobs = dataclasses.replace(DDP_DEFAULT, fusion_threshold_bytes=2 * MiB, first_bucket_bytes=MiB, num_streams=k)
        for n_last in (1, 100):
            w = workload(n_last)
            runs = [time_ddp_configs(w, [knobs], launch, 10, 2)[0] for _ in range(2)]
            measured = statistics.median(statistics.median(r["step_times_s"]) for r in runs)
            sim = Simulator(w, spec).run(knobs)
            live_last, sim_last = runs[-1]["buckets"][-1], sim.buffers[-1]
            print(f"K={k} last bucket of {n_last:3d} tensor(s): step live {measured * 1e3:6.1f} ms, "
                  f"simulated {sim.step_time_s * 1e3:6.1f} ms, miss {(measured - sim.step_time_s) * 1e3:+5.1f} ms; "
                  f"last bucket live {live_last['start_s'] * 1e3:.1f}-{live_last['end_s'] * 1e3:.1f}, "
                  f"simulated {sim_last.start_s * 1e3:.1f}-{sim_last.end_s * 1e3:.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
