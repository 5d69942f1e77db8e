"""`commtune validate`: run DDP configurations live and in the calibrated simulator;
report per-point error, MAPE, the worst point, Spearman rank correlation and whether
the simulator's pick is the live best. By default the configurations are held out:
drawn at random (bucket caps in the search range, stream counts the probe did not
measure, both stream modes); --configs or --buckets/--streams give an explicit list.
With --sharding full (or grad, hybrid; a comma list alternates) the configurations are
FSDP2's instead: unit caps, prefetch, reshard after forward and reduce precision drawn
at random (--held-out), or --configs UNIT:FWD[:BWD[:reshard|keep[:fp32|bf16]]],...;
measured as FSDP2 steps on the same ranks and predicted by the sharded timeline."""
from __future__ import annotations

import argparse
import json

from commtune.cli.common import positive_int, ranged
from commtune.cli.probe_cmd import add_launch_args, launch_from_args
from commtune.errors import CommtuneError
from commtune.limits import check_count
from commtune.knobs import KNOBS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="compare live DDP step times with the calibrated simulator",
                       description=__doc__)
    p.add_argument("--cluster", required=True, metavar="CALIB", help="calibration file written by `commtune probe`")
    p.add_argument("--model", default="resnet50", help="zoo model or profile the synthetic model mirrors (default resnet50)")
    p.add_argument("--scale", type=ranged("scale", "--scale"), default=0.25, help="scale factor on element counts (default 0.25)")
    p.add_argument("--forward-ms", type=ranged("compute_ms", "--forward-ms"), default=100.0, help="emulated forward time (default 100)")
    p.add_argument("--backward-ms", type=ranged("compute_ms", "--backward-ms"), default=200.0, help="emulated backward time (default 200)")
    p.add_argument("--share", choices=("flops", "size"), default="flops", help="split compute over layers by FLOPs or size")
    p.add_argument("--held-out", type=positive_int, default=12, metavar="N",
                   help="configurations to draw that calibration did not use (default 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out draw (default 0)")
    p.add_argument("--sharding", default="none", metavar="none|grad|full|hybrid",
                   help="validate sharded (FSDP2) configurations of these shardings, a comma list (default none: DDP)")
    p.add_argument("--shard-group-size", default="0", metavar="N",
                   help="--sharding hybrid: ranks per shard group (default 0: the ranks per host)")
    p.add_argument("--configs", help="explicit list BUCKET:STREAMS[:MODE],... e.g. 25MiB:2,4MiB:3:round_robin; with "
                                     "--sharding: UNIT:FWD[:BWD[:reshard|keep[:fp32|bf16]]],... e.g. 0:1:1,4MiB:2:0:keep")
    p.add_argument("--buckets", help="explicit grid: bucket caps, e.g. 1MiB,5MiB,25MiB,100MiB (with --streams)")
    p.add_argument("--streams", help="explicit grid: stream counts, e.g. 1,2,4 (with --buckets)")
    p.add_argument("--wire", default="fp32", help="wire precisions, e.g. fp32,fp16 (default fp32)")
    p.add_argument("--first-bucket", default="1MiB", help="first bucket cap (default 1MiB)")
    p.add_argument("--mode", choices=KNOBS["stream_mode"].choices, default=None,
                   help="stream_mode of every configuration: how K streams share buckets (default: each configuration's own)")
    p.add_argument("--steps", type=ranged("steps", "--steps"), default=5, help="timed steps per configuration (default 5)")
    p.add_argument("--passes", type=ranged("passes", "--passes"), default=2,
                   help="passes over the configurations, alternating order (median of the pass medians; default 2)")
    p.add_argument("--repeat-noisy", type=ranged("repeat_noisy", "--repeat-noisy"), default=2, metavar="N",
                   help="extra passes, at most N, over the configurations whose pass medians differ by more "
                        "than 2%% (default 2; 0: never)")
    p.add_argument("--warmup", type=ranged("steps", "--warmup"), default=2, help="warm-up steps (default 2, at least 1)")
    p.add_argument("--no-drift-check", dest="drift", action="store_false",
                   help="do not re-time the calibration's DDP anchor points afterwards (by default validate reports "
                        "how much slower or faster the cluster runs than when it was calibrated)")
    p.add_argument("--plot", metavar="PNG", default="validate.png", help="predicted-vs-measured plot (default validate.png)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    add_launch_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from commtune.cluster import load_cluster_file
    from commtune.io import check_writable
    from commtune.plots import check_output_path
    from commtune.probe.probe import parse_streams
    from commtune.units import parse_size, split_list
    from commtune.validation import format_report, grid_configs, held_out_configs, parse_configs, plot, run_validation

    if args.plot:
        check_output_path(args.plot)  # before minutes of live steps, not after
        check_writable(args.plot, "--plot")
    calib = load_cluster_file(args.cluster)  # one-line error if missing or malformed
    wire = split_list(args.wire, "--wire")
    bad = [w for w in wire if w not in ("fp32", "fp16")]
    if bad:
        raise CommtuneError(f"--wire entries must be fp32 or fp16, got {bad[0]!r}")
    if not 0 < args.scale <= 1:
        raise CommtuneError(f"--scale must be in (0, 1], got {args.scale:g}")
    if args.forward_ms < 0 or args.backward_ms < 0:
        raise CommtuneError("--forward-ms and --backward-ms must be non-negative")
    from commtune.models import load_model

    model = load_model(args.model)
    if args.configs and (args.buckets or args.streams):
        raise CommtuneError("give --configs or --buckets/--streams, not both")
    shardings = _shardings(args)
    if shardings:
        configs, kind = _sharded_configs(args, model, shardings)
    elif args.configs:
        configs = parse_configs(args.configs)
        kind = "explicit"
    elif args.buckets or args.streams:
        buckets = [parse_size(b, "--buckets entry", allow_zero=False)
                   for b in split_list(args.buckets or "1MiB,5MiB,25MiB,100MiB", "--buckets")]
        if not buckets:
            raise CommtuneError("--buckets is empty")
        configs = grid_configs(buckets, parse_streams(args.streams or "1,2,4"), wire, parse_size(args.first_bucket, "--first-bucket"))
        kind = "grid"
    else:
        from commtune.runtime.synthetic import sim_workload, synthetic_profile

        total = sim_workload(synthetic_profile(model, args.scale, args.forward_ms / 1e3, args.backward_ms / 1e3,
                                               args.share)).total_grad_bytes
        check_count("live_configs", args.held_out, "--held-out")
        configs = held_out_configs(calib, args.held_out, args.seed, max_bucket_bytes=int(total))
        kind = "held-out"
    check_count("live_configs", len(configs), f"{kind} configurations")
    launch = launch_from_args(args)
    if launch is None:
        raise CommtuneError("validate launches its ranks: give --ranks N or --emulated")
    res = run_validation(launch, calib, configs, model, scale=args.scale, forward_s=args.forward_ms / 1e3,
                         backward_s=args.backward_ms / 1e3, share=args.share, steps=args.steps,
                         warmup=args.warmup, mode=args.mode, passes=args.passes,
                         repeat_noisy=args.repeat_noisy, drift_from=args.cluster if args.drift else None)
    if args.plot:
        plot(res, args.plot)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{len(configs)} {kind} configurations on {launch.describe()}; simulator: {res['network']} from {args.cluster}")
        print(format_report(res))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _shardings(args: argparse.Namespace) -> list[str]:
    """The shardings of ``--sharding`` (empty for ``none``: DDP); the DDP-only flags refused beside them."""
    from commtune.knobs import SHARDED
    from commtune.units import split_list

    values = split_list(args.sharding, "--sharding")
    args.shard_group_size = KNOBS["shard_group_size"].parse(args.shard_group_size)  # one line when out of range
    if values == ["none"]:
        if args.shard_group_size:
            raise CommtuneError("--shard-group-size applies to --sharding hybrid")
        return []
    bad = [v for v in values if v not in SHARDED]
    if bad or not values:
        raise CommtuneError(f"--sharding {args.sharding!r}: give none or a comma list of {', '.join(SHARDED)}")
    if args.shard_group_size and "hybrid" not in values:
        raise CommtuneError("--shard-group-size applies to --sharding hybrid")
    ddp_only = [flag for flag, given in (("--buckets", args.buckets), ("--streams", args.streams),
                                         ("--wire", args.wire != "fp32"), ("--first-bucket", args.first_bucket != "1MiB"),
                                         ("--mode", args.mode)) if given]
    if ddp_only:
        raise CommtuneError(f"{ddp_only[0]} sets DDP's buckets and streams; sharded configurations take "
                            "--configs UNIT:FWD[:BWD[:reshard|keep[:fp32|bf16]]] or --held-out N")
    return values


def _sharded_configs(args: argparse.Namespace, model, shardings: list[str]) -> tuple[list, str]:
    """The sharded configurations to validate and their kind (explicit / held-out)."""
    from commtune.validation import held_out_sharded, parse_sharded_configs

    if args.configs:
        if len(shardings) > 1:
            raise CommtuneError("--configs with several --sharding values: give one sharding per run")
        return parse_sharded_configs(args.configs, shardings[0], args.shard_group_size), "explicit"
    from commtune.runtime.synthetic import synthetic_profile

    check_count("live_configs", args.held_out, "--held-out")
    profile = synthetic_profile(model, args.scale, args.forward_ms / 1e3, args.backward_ms / 1e3, args.share)
    return held_out_sharded(profile, args.held_out, args.seed, shardings, args.shard_group_size), "held-out sharded"
