"""`commtune simulate`: one simulated step under one configuration."""
from __future__ import annotations

import argparse
import json

from commtune.cli.common import add_knob_args, add_scenario_args, knobs_from_args, scenario_from_args
from commtune.cli.notes import first_bucket_note
from commtune.io import check_writable
from commtune.sharding_checks import check_sharding
from commtune.units import format_size, format_time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate one training step under one configuration")
    add_scenario_args(p)
    add_knob_args(p)
    p.add_argument("--trace", metavar="FILE", help="write the step's timeline as Chrome-trace/Perfetto JSON")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.trace:
        check_writable(args.trace, "--trace")
    scenario = scenario_from_args(args)
    knobs = knobs_from_args(args)
    check_sharding(knobs, scenario.model, scenario.cluster)
    result = scenario.simulator.run(knobs)
    flags = scenario.simulator.network.extrapolation(knobs)  # what a calibration did not measure
    if args.trace:
        from simulators.trace import write_trace

        write_trace(args.trace, scenario.workload, result, knobs)
    if args.json:
        out = {**result.to_dict(), "knobs": knobs.to_dict(), "model": scenario.model.name,
               "cluster": scenario.cluster.to_dict(), "batch_size": scenario.batch_size,
               "precision": scenario.precision, "extrapolation": flags}
        if args.trace:
            out["trace"] = args.trace
        print(json.dumps(out, indent=2))
        return 0
    print(scenario.describe())
    print(f"knobs: {knobs.describe()}")
    framework = result.interference_s + scenario.cluster.step_overhead_s
    network = scenario.cluster.world_size > 1
    first = result.buffers[0].grad_bytes if result.buffers else None
    rows = [
        ("step time", f"{format_time(result.step_time_s)} = compute + exposed communication + framework costs"),
        ("compute (one GPU)", f"{format_time(result.compute_time_s)} = forward {format_time(result.forward_s)} + "
                              f"backward {format_time(result.backward_s)} + optimizer {format_time(result.optimizer_s)}"),
        ("communication busy", f"{format_time(result.comm_time_s)} (the network carrying all-reduces)" if network
         else f"{format_time(result.comm_time_s)} (one GPU: no network)"),
        ("exposed communication", f"{format_time(result.exposed_comm_s - framework)} " + (
            "(all-reduce not hidden behind backward)" if network else
            "(one GPU: the last buffer's fusion cycle and launch after backward; no network)")),
        ("framework costs", f"{format_time(framework)} (gradient hooks, bucket launches, slowest rank, step "
                            f"overhead{'' if network else '; no network'})"),
        ("scaling efficiency", f"{result.scaling_efficiency:.1%}"),
        ("throughput", f"{result.samples_per_s:,.0f} samples/s"),
        ("fused buffers", f"{result.num_buffers} (mean {format_size(scenario.workload.total_grad_bytes / result.num_buffers)}"
                          + (f", first {format_size(first)})" if first is not None else ")")),
        ("negotiation", f"{format_time(result.negotiation_s)}, {result.negotiation_msgs_rank0} msgs at rank 0"),
    ]
    note = first_bucket_note(knobs, first)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
        if k == "fused buffers" and note:
            print(f"  {'':<{width}}  {note}")
    for f in flags:
        print(f"  {'extrapolation warning' if not f['modelled'] else 'modelled beyond calibration'}: {f['message']}")
    if args.trace:
        print(f"trace written to {args.trace} (open in https://ui.perfetto.dev)")
    return 0
