"""`commtune presets`: the named clusters, intra-node fabrics and devices."""
from __future__ import annotations

import argparse
import json

from commtune.cluster import preset_catalog, preset, preset_names
from commtune.devices import all_devices
from commtune.units import format_bandwidth, format_time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list cluster, intra-node and device presets")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = preset_catalog()
    if args.json:
        out = {
            "networks": {name: preset(name).to_dict() for name in preset_names()},
            "intra": data["intra"],
            "devices": {n: {"description": d.description, "tflops": d.tflops} for n, d in all_devices().items()},
        }
        print(json.dumps(out, indent=2))
        return 0
    print("Networks (use --cluster NAME, or --bw with a matching rate):")
    for name in preset_names():
        c = preset(name)
        cap = format_bandwidth(c.per_stream_Bps)
        print(f"  {name:<12} {format_bandwidth(c.inter_bw_Bps):>14}  per stream {cap:<14} "
              f"alpha {format_time(c.inter_latency_s):<8} {c.device:<5} {data['networks'][name]['description']}")
    print("Intra-node fabrics (--intra NAME):")
    for name, d in data["intra"].items():
        print(f"  {name:<12} {d['bw']:>10}  latency {d['latency']:<6} {d['description']}")
    print("Devices (--device NAME), effective TFLOP/s:")
    for name, d in all_devices().items():
        tf = ", ".join(f"{k} {v:g}" for k, v in d.tflops.items())
        print(f"  {name:<6} {tf:<40} {d.description}")
    return 0
