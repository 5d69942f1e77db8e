"""`commtune plot KIND -o FILE`: figures of simulations, searches and measurements.

Kinds (one module each under ``commtune.plots``): history, heatmap, timeline,
sweep, fidelity. The format follows the output file's extension (.png, .svg,
.pdf).
"""
from __future__ import annotations

import argparse
import importlib

from commtune.io import check_writable
from commtune.plots import KINDS, check_output_path, save_figure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a figure (history, heatmap, timeline, sweep, fidelity) to PNG/SVG")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", parser_class=type(p))
    kinds.required = True
    for kind, modname in KINDS.items():
        mod = importlib.import_module(modname)
        kp = kinds.add_parser(kind, help=mod.HELP, description=(mod.__doc__ or "").strip().splitlines()[0])
        kp.add_argument("-o", "--output", required=True, metavar="FILE", help="output image (.png, .svg or .pdf)")
        mod.add_arguments(kp)
        kp.set_defaults(func=run, plot_module=mod)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output)  # fail before any work
    check_writable(args.output, "figure")
    fig = args.plot_module.figure_from_args(args)
    path = save_figure(fig, args.output)
    print(f"{args.kind} plot written to {path}")
    return 0
