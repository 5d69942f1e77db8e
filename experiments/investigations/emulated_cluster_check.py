"""Measure the emulated cluster: TCP throughput vs parallel flows, RTT vs injected latency.

Run as root:  PYTHONPATH=. python experiments/investigations/emulated_cluster_check.py [--bw 1gbit] [--per-stream 300mbit]
Uses its own namespace prefix ("ctx") and always tears the cluster down.
"""
from __future__ import annotations

import argparse
import json
import sys

from commtune.emulation import EmulatedCluster, emulated_cluster, run_on_hosts
from commtune.emulation.netbench import measure_rtt, measure_throughput

GLOO = r"""
import os, time, torch, torch.distributed as dist
dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
n = int(os.environ["NBYTES"]) // 4
x = torch.ones(n)
for _ in range(2):
    dist.all_reduce(x)
dist.barrier()
t = time.perf_counter(); reps = 5
for _ in range(reps):
    dist.all_reduce(x)
dt = (time.perf_counter() - t) / reps
w = dist.get_world_size()
assert float(x[0]) == w ** 7, float(x[0])
dist.barrier()
if dist.get_rank() == 0:
    print(dt, 4 * n / dt * 2 * (w - 1) / w)
dist.destroy_process_group()
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bw", default="1gbit")
    p.add_argument("--per-stream", default="300mbit")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--latencies", default="0,100us,500us,1ms")
    p.add_argument("--gloo", action="store_true", help="also time a 4-rank gloo all-reduce (needs torch)")
    a = p.parse_args()

    rows = []
    for per_stream in (None, a.per_stream):
        spec = EmulatedCluster.parse(4, a.bw, per_stream, prefix="ctx")
        with emulated_cluster(spec) as state:
            for flows in (1, 2, 4, 8):
                r = measure_throughput(state, flows=flows, seconds=a.seconds)
                rows.append({"link": a.bw, "per_stream": per_stream or "-", "flows": flows,
                             "mbit_s": round(r["rate_Bps"] * 8 / 1e6, 1),
                             "per_flow_mbit_s": [round(f * 8 / 1e6, 1) for f in r["flow_rates_Bps"]]})
                print(f"link {a.bw:>8}  per-stream {per_stream or '-':>8}  flows {flows}: "
                      f"{rows[-1]['mbit_s']:7.1f} Mbit/s payload  per flow {rows[-1]['per_flow_mbit_s']}", flush=True)
            if a.gloo:
                for nbytes in (4 << 20, 64 << 20):
                    res = run_on_hosts(state, [[sys.executable, "-c", GLOO]] * 4, env_extra={"NBYTES": str(nbytes)},
                                       timeout_s=120, master_port=29500)
                    dt, busbw = map(float, res[0].stdout.split())
                    print(f"  gloo all-reduce 4 ranks {nbytes >> 20} MiB: {dt * 1e3:.1f} ms, "
                          f"busbw {busbw * 8 / 1e6:.0f} Mbit/s", flush=True)
    for lat in a.latencies.split(","):
        spec = EmulatedCluster.parse(2, a.bw, latency=None if lat in ("0", "") else lat, prefix="ctx")
        with emulated_cluster(spec) as state:
            r = measure_rtt(state, count=200)
        rows.append({"latency": lat, "rtt_p50_us": round(r["p50_s"] * 1e6), "rtt_min_us": round(r["min_s"] * 1e6)})
        print(f"one-way latency {lat:>6}: TCP ping-pong RTT p50 {r['p50_s'] * 1e6:7.0f} us  "
              f"min {r['min_s'] * 1e6:7.0f} us  p90 {r['p90_s'] * 1e6:7.0f} us", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
