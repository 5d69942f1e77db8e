"""`commtune plot KIND -o FILE`: figures of simulations, searches and measurements.

Kinds (one drawing module each under ``commtune.plots``): history, heatmap,
timeline, sweep, fidelity. This module turns each kind's flags into data and
options for its drawing function; the format follows the output file's
extension (.png, .svg, .pdf).
"""
from __future__ import annotations

import argparse

import numpy as np

from commtune.cli.common import add_knob_args, add_scenario_args, cluster_from_args, knobs_from_args, scenario_from_args
from commtune.errors import CommtuneError
from commtune.io import check_writable
from commtune.limits import RANGES
from commtune.plots import KINDS, check_output_path, plot_module, save_figure
from commtune.plots.sweep import DEFAULT_BWS

HELP = {
    "history": "best-so-far step time against trial, per sampler (Optuna storage or bench_search JSON)",
    "heatmap": "step time over fusion threshold x streams for a scenario (log threshold axis)",
    "timeline": "backward compute against fused buffers per stream for one configuration",
    "sweep": "best knobs and scaling efficiency against bandwidth (grid search per bandwidth)",
    "fidelity": "predicted against measured scatter with the y=x line (CSV/JSON of {predicted, measured})",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a figure (history, heatmap, timeline, sweep, fidelity) to PNG/SVG")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", parser_class=type(p))
    kinds.required = True
    for kind in KINDS:
        add, figure = _KIND_CLI[kind]
        doc = (plot_module(kind).__doc__ or "").strip().splitlines()[0]
        kp = kinds.add_parser(kind, help=HELP[kind], description=doc)
        kp.add_argument("-o", "--output", required=True, metavar="FILE", help="output image (.png, .svg or .pdf)")
        add(kp)
        kp.set_defaults(func=run, figure=figure)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output)  # fail before any work
    check_writable(args.output, "figure")
    fig = args.figure(args)
    path = save_figure(fig, args.output)
    print(f"{args.kind} plot written to {path}")
    return 0


def _history_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", help="bench_search JSON file (or use --storage)")
    p.add_argument("--storage", help="Optuna storage: sqlite:///file.db, a journal .log file, or an RDB URL")
    p.add_argument("--study", action="append", default=[], help="study name (repeatable; default: all studies, one curve each)")
    p.add_argument("--title", help="figure title")
    p.add_argument("--log-y", action="store_true", help="logarithmic step-time axis")


def _history_figure(args: argparse.Namespace):
    from commtune.plots.history import histories_from_json, histories_from_storage, plot_history

    if bool(args.source) == bool(args.storage):
        raise CommtuneError("plot history needs either a JSON file or --storage (not both)")
    if args.storage:
        runs, refs = histories_from_storage(args.storage, args.study), {}
    else:
        runs, refs = histories_from_json(args.source)
    return plot_history(runs, refs, title=args.title, log_y=args.log_y)


def _heatmap_arguments(p: argparse.ArgumentParser) -> None:
    add_scenario_args(p)
    add_knob_args(p)
    p.add_argument("--min-threshold", default="64KiB", help="smallest fusion threshold (default 64KiB)")
    p.add_argument("--max-threshold", default="1GiB", help="largest fusion threshold (default 1GiB)")
    p.add_argument("--points", type=RANGES["heatmap_points"].argtype("--points"), default=41, help="thresholds on the log axis (default 41)")
    p.add_argument("--max-streams", type=int, default=8, help="streams 1..N (default 8)")
    p.add_argument("--metric", choices=("step_time_s", "exposed_comm_s"), default="step_time_s")


def _heatmap_figure(args: argparse.Namespace):
    from commtune.knobs import KNOBS
    from commtune.plots.heatmap import plot_heatmap
    from commtune.units import format_size

    lo = KNOBS["fusion_threshold_bytes"].parse(args.min_threshold)
    hi = KNOBS["fusion_threshold_bytes"].parse(args.max_threshold)
    if not 0 < lo < hi:
        raise CommtuneError(f"--min-threshold {args.min_threshold} must be positive and below --max-threshold "
                            f"{args.max_threshold} ({format_size(lo)} >= {format_size(hi)})")
    if not 2 <= args.points <= 400:
        raise CommtuneError(f"--points must be between 2 and 400, got {args.points}")
    if not 1 <= args.max_streams <= int(KNOBS["num_streams"].high):
        raise CommtuneError(f"--max-streams must be between 1 and {int(KNOBS['num_streams'].high)}, got {args.max_streams}")
    scenario = scenario_from_args(args)
    base = knobs_from_args(args)
    thresholds = np.unique(np.geomspace(lo, hi, args.points).astype(np.int64))
    return plot_heatmap(scenario, base, thresholds, np.arange(1, args.max_streams + 1), metric=args.metric)


def _timeline_arguments(p: argparse.ArgumentParser) -> None:
    add_scenario_args(p)
    add_knob_args(p)


def _timeline_figure(args: argparse.Namespace):
    from commtune.plots.timeline import plot_timeline

    return plot_timeline(scenario_from_args(args), knobs_from_args(args))


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    add_scenario_args(p)
    p.add_argument("--bws", default=DEFAULT_BWS,
                   help=f"comma-separated link rates (default {DEFAULT_BWS}); each is what `search --bw` means: "
                        "the preset of that rate (its per-stream cap and GPU) or a custom cluster; with --cluster, "
                        "that cluster's link rate is replaced and its per-stream cap kept")
    p.add_argument("--space", default="default",
                   help="search space of the grid: a bundled name (default: both fusion policies; horovod; ddp) "
                        "or a YAML file")
    p.add_argument("--grid-points", type=RANGES["grid_points"].argtype("--grid-points"), metavar="N",
                   help="points per numeric range of the grid (default: the space's own)")
    p.add_argument("--csv", metavar="FILE", help="also write the table of results as CSV")


def _sweep_figure(args: argparse.Namespace):
    from commtune.plots.sweep import plot_sweep, sweep_data, write_csv
    from commtune.units import parse_bandwidth, split_list

    if args.bw:
        raise CommtuneError("plot sweep takes --bws (a list), not --bw")
    if args.csv:
        check_writable(args.csv, "--csv")
    texts = split_list(args.bws, "--bws")
    bws = [parse_bandwidth(b, what="--bws") for b in texts]
    if len(bws) < 2:
        raise CommtuneError("--bws needs at least two bandwidths, e.g. 10gbit,32gbit,100gbit")
    if args.grid_points is not None and args.grid_points < 2:
        raise CommtuneError(f"--grid-points must be at least 2, got {args.grid_points}")
    cluster_for = None
    if args.cluster is None:  # the meaning of `search --bw A,B`: each link rate picks its preset (and GPU)
        clusters = {bw: cluster_from_args(args, bw=text) for bw, text in zip(bws, texts)}  # bad flags fail here
        cluster_for = clusters.__getitem__
        how = "the preset of each link rate, as search --bw"
    scenario = scenario_from_args(args)
    if args.cluster is not None:
        how = f"{scenario.cluster.name} with varied link rate, its per-stream cap kept"
    rows = sweep_data(scenario, bws, space=args.space, points=args.grid_points, cluster_for=cluster_for)
    if args.csv:
        write_csv(rows, args.csv)
    return plot_sweep(rows, title=f"{scenario.model.name} on {scenario.cluster.nodes}x{scenario.cluster.gpus_per_node} GPUs "
                                  f"({how})")


def _fidelity_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="CSV or JSON file of {predicted, measured} points")
    p.add_argument("--title", help="figure title")
    p.add_argument("--band", type=RANGES["percent"].argtype("--band"), default=10.0, help="shade +-PCT around y=x (default 10; 0 = none)")
    p.add_argument("--annotate", action="store_true", help="write each point's label next to it")


def _fidelity_figure(args: argparse.Namespace):
    from commtune.plots.fidelity import load_points, plot_fidelity

    if args.band < 0 or args.band >= 100:
        raise CommtuneError(f"--band must be in [0, 100), got {args.band}")
    return plot_fidelity(load_points(args.source), title=args.title, band_pct=args.band, annotate=args.annotate)


_KIND_CLI = {kind: (globals()[f"_{kind}_arguments"], globals()[f"_{kind}_figure"]) for kind in KINDS}
