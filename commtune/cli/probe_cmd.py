"""`commtune probe`: measure all-reduce, all-gather and reduce-scatter time against
message size and streams within a time budget, print nccl-tests style tables and
write a calibration file for the simulator."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from commtune.cli.common import ranged
from commtune.errors import CommtuneError
from commtune.probe.probe import COLLECTIVES, DEFAULT_BUDGET_S, DEFAULT_SIZES, DEFAULT_STREAMS, DEFAULT_WEIGHTING


def add_launch_args(p: argparse.ArgumentParser) -> None:
    """Where ranks run: --ranks N local processes, or --emulated (one per namespace host)."""
    g = p.add_argument_group("where ranks run (else: as one rank under torchrun / mpiexec)")
    g.add_argument("--ranks", type=ranged("ranks", "--ranks"), help="spawn N local ranks on 127.0.0.1 (N >= 2)")
    g.add_argument("--emulated", action="store_true",
                   help="one rank per host of the emulated cluster: the one that is up (--prefix), or one brought up "
                        "for this run when --bw is given")
    g.add_argument("--hosts", type=int, default=4, help="emulated hosts to bring up with --bw (default 4)")
    g.add_argument("--bw", help="emulated link rate per host, e.g. 1gbit (brings a cluster up for the run)")
    g.add_argument("--per-stream", help="emulated per-stream (per-flow) cap, e.g. 300mbit")
    g.add_argument("--latency", help="emulated one-way latency, e.g. 1ms")
    g.add_argument("--prefix", default="ct", help="emulated cluster namespace prefix (default ct)")
    g.add_argument("--timeout", type=ranged("timeout", "--timeout"), default=300.0,
                   help="seconds before a hung run is stopped, naming the rank (default 300)")


def launch_from_args(args: argparse.Namespace, engine: str = "gloo"):
    """A LaunchSpec from --ranks/--emulated, or None when no launch was asked for."""
    from commtune.probe.launch import LaunchSpec

    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise CommtuneError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.emulated:
        if args.ranks is not None:
            raise CommtuneError("give --ranks or --emulated, not both")
        if os.geteuid() != 0:
            raise CommtuneError("--emulated needs root (network namespaces)")
        if args.bw:
            from commtune.emulation import EmulatedCluster

            spec = EmulatedCluster.parse(args.hosts, args.bw, args.per_stream, args.latency, prefix=args.prefix)
            return LaunchSpec(emulated=spec, timeout_s=args.timeout, engine=engine)
        from commtune.emulation import status

        state = status(args.prefix)
        if state is None:
            raise CommtuneError(f"no emulated cluster {args.prefix!r} is up; run `commtune cluster up` or give --bw")
        return LaunchSpec(state=state, timeout_s=args.timeout, engine=engine)
    if args.bw or args.per_stream or args.latency:
        raise CommtuneError("--bw/--per-stream/--latency shape an emulated cluster; add --emulated")
    if args.ranks is not None:
        if args.ranks < 2:
            raise CommtuneError(f"--ranks must be at least 2, got {args.ranks}")
        return LaunchSpec(ranks=args.ranks, timeout_s=args.timeout, engine=engine)
    return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="measure all-reduce, all-gather, reduce-scatter vs size and streams; write a calibration file",
                       description=__doc__)
    p.add_argument("--engine", choices=("gloo", "nccl", "mpi"), default="gloo",
                   help="torch.distributed gloo (CPU) or nccl (GPU), or MPI (mpi4py, run under mpiexec)")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help=f"START:END (powers of --step) or a list 1MB,4MB (default {DEFAULT_SIZES}: the smallest, "
                        "below --fit-min-size, gives the control latency)")
    p.add_argument("--step", type=int, default=4, help="size multiplier in a START:END range: 2 or 4 (default 4)")
    p.add_argument("--streams", default=",".join(map(str, DEFAULT_STREAMS)),
                   help=f"concurrent stream counts (default {','.join(map(str, DEFAULT_STREAMS))}: the search range)")
    p.add_argument("--iters", type=ranged("iterations", "--iters"), default=5, help="timed iterations per size (default 5)")
    p.add_argument("--warmup", type=ranged("warmup", "--warmup"), default=1, help="untimed iterations per size (default 1)")
    p.add_argument("--fit-min-size", default="1MiB", help="fit only sizes at least this (default 1MiB); small messages "
                                                         "are noisy on an oversubscribed host")
    p.add_argument("--fit-weighting", choices=("relative", "absolute"), default=DEFAULT_WEIGHTING,
                   help=f"least-squares weights: relative (1/t) or absolute (large messages dominate; default "
                        f"{DEFAULT_WEIGHTING}, validates better)")
    p.add_argument("--no-ddp-calibration", dest="ddp_calibration", action="store_false",
                   help="skip the short DDP run (16 tensors of up to 1 MiB, sized to the link, bucket caps 1 vs 8 "
                        "tensors per stream count) that fits DDP's per-bucket gap; it is part of the default calibration")
    p.add_argument("--no-fsdp-calibration", dest="fsdp_calibration", action="store_false",
                   help="skip the short FSDP2 run (16 blocks, one unit per block vs 4 per unit, no compute) that fits "
                        "the host cost per sharded collective; it is part of the default calibration when the "
                        "sharded collectives are probed")
    p.add_argument("--ddp-steps", type=ranged("steps", "--ddp-steps"), default=6, help="timed steps per DDP calibration configuration (default 6)")
    p.add_argument("--burst-sizes", default="1MB,4MB",
                   help="sizes of back-to-back bursts (fit collectives in flight per stream and the gap between "
                        "buffers); 'none' to skip (default 1MB,4MB)")
    p.add_argument("--burst-count", type=ranged("iterations", "--burst-count"), default=8, help="all-reduces per burst (default 8)")
    p.add_argument("--host-sizes", default="1MB,4MB,16MB,64MB",
                   help="sizes at which to time DDP's host work around a bucket (divide, copy back) to fit its cost "
                        "per byte; 'none' to skip (default 1MB,4MB,16MB,64MB)")
    p.add_argument("--collectives", default=",".join(COLLECTIVES),
                   help=f"collectives to time at every size and stream count (default {','.join(COLLECTIVES)}; "
                        "allreduce is always one): the sharded ones calibrate FSDP / ZeRO steps")
    p.add_argument("--budget", type=ranged("probe_budget", "--budget"), default=DEFAULT_BUDGET_S,
                   help=f"seconds the probe may take, calibration runs included (default {DEFAULT_BUDGET_S:g}): a "
                        "pilot all-reduce first, the DDP/FSDP calibration runs' time reserved, then the largest sizes, "
                        "burst sizes and iterations are cut until the estimate fits (the plan is printed), and the "
                        "calibration runs time fewer stream counts / steps if what is left is short; 0 runs the sizes "
                        "as given")
    p.add_argument("-o", "--output", metavar="FILE", help="write the calibration file (YAML, or JSON by suffix)")
    p.add_argument("--json", action="store_true", help="print the raw result as JSON instead of the table")
    p.add_argument("--refit", metavar="CALIB", help="run nothing: re-fit the measurements stored in a calibration file "
                                                    "with this version's model (write it with -o)")
    add_launch_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from commtune.probe.comm import env_has_rank, mpi_world_size
    from commtune.probe.probe import parse_collectives, parse_sizes, parse_streams, run_probe_here
    from commtune.units import parse_size

    if args.refit:
        return _refit(args)
    sizes = parse_sizes(args.sizes, args.step)
    streams = parse_streams(args.streams)
    min_fit = parse_size(args.fit_min_size, "--fit-min-size")
    none = ("", "none", "off", "0")
    extra_kw = dict(
        burst_sizes=[] if args.burst_sizes.strip().lower() in none else parse_sizes(args.burst_sizes, what="--burst-sizes"),
        burst_count=args.burst_count,
        host_sizes=[] if args.host_sizes.strip().lower() in none else parse_sizes(args.host_sizes, what="--host-sizes"),
        collectives=parse_collectives(args.collectives),
        budget_s=args.budget or None,
        min_fit_size=min_fit,
    )
    if extra_kw["burst_sizes"] and args.burst_count < 2:
        raise CommtuneError(f"--burst-count must be at least 2, got {args.burst_count}")
    if args.warmup < 0:
        raise CommtuneError(f"--warmup must be >= 0, got {args.warmup}")
    if args.output:
        from commtune.io import check_writable

        check_writable(args.output, "calibration file")
    if args.engine == "mpi":
        if args.ranks is not None or args.emulated:
            raise CommtuneError("--engine mpi runs under mpiexec (mpiexec -n 4 commtune probe --engine mpi); "
                                "drop --ranks/--emulated")
        if mpi_world_size() < 2:
            raise CommtuneError("--engine mpi needs at least 2 ranks: run it as `mpiexec -n N commtune probe --engine mpi`")
        result = run_probe_here("mpi", sizes, streams, args.iters, args.warmup, args.timeout, **extra_kw)
        hosts = result["world_size"] // result["ranks_per_host"]
        source = f"mpiexec, {result['world_size']} ranks"
    else:
        launch = launch_from_args(args, args.engine)
        if launch is not None and args.emulated and args.bw:
            # one cluster for the probe and the DDP calibration run
            from commtune.emulation import emulated_cluster
            from commtune.probe.launch import LaunchSpec

            with emulated_cluster(launch.emulated, replace=True) as state:
                return _probe_and_write(args, LaunchSpec(state=state, timeout_s=launch.timeout_s, engine=args.engine),
                                        sizes, streams, min_fit, extra_kw)
        if launch is not None:
            return _probe_and_write(args, launch, sizes, streams, min_fit, extra_kw)
        if env_has_rank():
            result = run_probe_here(args.engine, sizes, streams, args.iters, args.warmup, args.timeout, **extra_kw)
            rph = int(os.environ.get("LOCAL_WORLD_SIZE", result["ranks_per_host"]))
            hosts = max(1, result["world_size"] // rph)
            source = f"torchrun, {result['world_size']} ranks"
        else:
            raise CommtuneError("nothing to run on: give --ranks N (local), --emulated, or start it under "
                                "torchrun / mpiexec")
    return _finish(args, result, hosts, source, min_fit)


def _refit(args) -> int:
    """``--refit CALIB``: the stored measurements through this version's fit, nothing launched."""
    from commtune.probe.probe import summary
    from commtune.probe.refit import refit_calibration

    if args.ranks is not None or args.emulated:
        raise CommtuneError("--refit runs nothing: drop --ranks/--emulated")
    if args.output:
        from commtune.io import check_writable

        check_writable(args.output, "calibration file (-o)")
    name = os.path.splitext(os.path.basename(args.output))[0] if args.output else None
    spec, extra = refit_calibration(args.refit, name=name)
    return _report_and_write(args, spec, extra, summary(spec, extra),
                             f"calibration re-fitted from {args.refit}, written to {args.output}")


def _calibration_runs(args, collectives) -> list[str]:
    """The calibration runs that follow the sweep on launched ranks: ``ddp`` unless opted out,
    ``fsdp`` unless opted out when the sharded collectives are probed."""
    return ((["ddp"] if args.ddp_calibration else [])
            + (["fsdp"] if args.fsdp_calibration and {"allgather", "reduce_scatter"} <= set(collectives) else []))


def _probe_and_write(args, launch, sizes, streams, min_fit, extra_kw) -> int:
    """Probe on launched ranks, then (unless opted out) the DDP and FSDP calibration runs within
    what is left of ``--budget``, then write."""
    from commtune.probe.probe import run_probe

    deadline = time.monotonic() + args.budget if args.budget else None
    print(f"probing {', '.join(extra_kw['collectives'])} on {launch.describe()} ({args.engine}) ...", file=sys.stderr)
    result = run_probe(launch, sizes, streams, args.iters, args.warmup, **extra_kw,
                       calibration_runs=_calibration_runs(args, extra_kw["collectives"]), ddp_steps=args.ddp_steps)
    return _finish(args, result, launch.hosts, launch.describe(), min_fit, launch, deadline)


def _finish(args, result: dict, hosts: int, source: str, min_fit: int, launch=None,
            deadline: float | None = None) -> int:
    """Fit the probe's ``result``; on ``launch`` (launched ranks) the DDP and FSDP calibration runs, each
    within what is left before ``deadline`` (``time.monotonic()``; None: as asked); report and write."""
    from commtune.probe.comm import REDUCE_SCATTER_STEPS
    from commtune.probe.probe import calibration, format_table, summary
    from commtune.units import format_size

    def left_s(after: float = 0.0) -> float | None:
        return None if deadline is None else deadline - time.monotonic() - after

    if result.get("rank", 0) != 0:
        return 0
    if result.get("plan"):
        from commtune.probe.plan import ProbePlan

        print(ProbePlan.from_dict(result["plan"]).describe(), file=sys.stderr)
    n = result["world_size"]
    spec, extra = calibration(result, hosts=hosts, min_fit_size=min_fit, source=source, weighting=args.fit_weighting,
                              name=os.path.splitext(os.path.basename(args.output))[0] if args.output else "calibrated")
    fsdp = "fsdp" in _calibration_runs(args, result.get("collectives") or {})
    rs_steps = REDUCE_SCATTER_STEPS[args.engine]  # the FSDP run's reduce-scatter, as the sweep timed it
    if launch is not None and args.ddp_calibration:
        from commtune.probe.ddp_calib import COUNT, calibrate_ddp, cluster_link, ddp_calibration_streams, ddp_tensor_bytes
        from commtune.probe.fsdp_calib import estimate_fsdp_calibration_s

        ks, rr = ddp_calibration_streams(extra)
        link = cluster_link(spec)
        after = estimate_fsdp_calibration_s(link, n, args.ddp_steps, rs_steps=rs_steps) if fsdp else 0.0
        print(f"DDP calibration run (per-bucket gap, {COUNT} tensors of {format_size(ddp_tensor_bytes(link, n))}, "
              f"streams {','.join(map(str, ks))}; round robin {','.join(map(str, rr)) or 'none'}) ...", file=sys.stderr)
        spec = calibrate_ddp(launch, spec, extra, steps=args.ddp_steps, budget_s=left_s(after))
    elif args.ddp_calibration and args.engine != "mpi":
        extra["fit"]["warnings"].append("the DDP calibration run needs launched ranks (--ranks/--emulated); skipped")
    if fsdp:
        if launch is not None:
            from commtune.probe.fsdp_calib import BLOCKS, calib_block_bytes, calibrate_fsdp

            print(f"FSDP calibration run (host cost per sharded collective; {BLOCKS} blocks of "
                  f"{format_size(calib_block_bytes(spec))}) ...", file=sys.stderr)
            spec = calibrate_fsdp(launch, spec, extra, steps=args.ddp_steps, budget_s=left_s(), rs_steps=rs_steps)
        elif args.engine != "mpi":
            extra["fit"]["warnings"].append("the FSDP calibration run needs launched ranks (--ranks/--emulated); skipped")
    tables = [format_table(result["records"], n)] + [format_table(recs, n, c) for c, recs in
                                                      (result.get("collectives") or {}).items()]
    return _report_and_write(args, spec, extra, "\n".join(tables) + "\n" + summary(spec, extra),
                             f"calibration written to {args.output} (use: commtune simulate --cluster {args.output})")


def _report_and_write(args, spec, extra: dict, text: str, written: str) -> int:
    """Print the calibration (``text``, or JSON with --json) and its warnings; write it to -o."""
    from commtune.probe.probe import write_calibration

    print(json.dumps({**extra, "cluster": spec.to_dict()}, indent=2) if args.json else text)
    for w in extra["fit"]["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if args.output:
        write_calibration(args.output, spec, extra)
        print(written, file=sys.stderr)
    return 0
