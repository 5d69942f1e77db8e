"""Flags shared by several commands: the scenario (model, cluster, workload)
and the knobs (generated from the knob registry)."""
from __future__ import annotations

import argparse
from typing import Any

from commtune.cluster import make_cluster
from commtune.devices import PRECISIONS
from commtune.errors import CommtuneError
from commtune.knobs import KNOBS, Knobs
from commtune.limits import RANGES
from commtune.scenario import Scenario


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return v


def ranged(name: str, flag: str):
    """argparse ``type=`` checking the sane range :data:`commtune.limits.RANGES` [name]."""
    return RANGES[name].argtype(flag)


def stdout_console():
    """A rich console on stdout: the terminal's width on a terminal; in a pipe or
    file no width limit (rich would otherwise cut tables to 80 columns)."""
    import sys

    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)


def add_scenario_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    g = p.add_argument_group("scenario")
    g.add_argument("--model", required=model_required, help="zoo model name (see `commtune models`) or a model profile file")
    g.add_argument("--input-size", type=ranged("input_size", "--input-size"),
                   help="image side or sequence length (default: the model's)")
    g.add_argument("--batch-size", type=ranged("batch_size", "--batch-size"), default=None,
                   help="samples per GPU per step (default: the model's, 64; 1 sequence for the Llama models)")
    g.add_argument("--precision", choices=PRECISIONS, default="amp", help="compute precision (default amp)")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each model block's forward in backward (keeps only block inputs)")
    g.add_argument("--cluster", help="cluster preset name (see `commtune presets`) or cluster/calibration file")
    g.add_argument("--bw", help="inter-node bandwidth per node, e.g. 32gbit, 25Gbps, 4GB/s")
    g.add_argument("--nodes", type=ranged("nodes", "--nodes"), help="number of nodes (default 16)")
    g.add_argument("--gpus-per-node", type=ranged("gpus_per_node", "--gpus-per-node"), help="GPUs per node (default 8)")
    g.add_argument("--per-stream", help="per-stream (per-flow) cap, e.g. 10gbit, or 'none'")
    g.add_argument("--latency", help="inter-node latency per collective step, e.g. 30us")
    g.add_argument("--intra", help="intra-node preset, e.g. nvlink-v100, pcie3")
    g.add_argument("--device", help="GPU preset: V100, V100-32GB, A100, A100-40GB, H100, T4, P100")


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    from commtune.models import load_model

    model = load_model(args.model, input_size=args.input_size)
    batch = args.batch_size or model.meta.get("default_batch_size", 64)
    return Scenario(model, cluster_from_args(args), batch_size=batch, precision=args.precision,
                    activation_checkpointing=getattr(args, "activation_checkpointing", False))


def cluster_from_args(args: argparse.Namespace, bw: str | None = None):
    """The cluster of the scenario flags; ``bw`` overrides ``--bw`` (what ``search --bw A,B`` does per bandwidth:
    without --cluster, the preset of that link rate, else a custom cluster)."""
    return make_cluster(
        cluster=args.cluster, bw=args.bw if bw is None else bw, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        per_stream=args.per_stream, latency=args.latency, intra=args.intra, device=args.device,
    )


def add_knob_args(p: argparse.ArgumentParser) -> None:
    """One flag per knob, from the registry; unset flags keep the base value."""
    g = p.add_argument_group("knobs (default: Horovod's defaults)")
    for knob in KNOBS.values():
        dest = f"knob_{knob.name}"
        if knob.kind == "bool":
            g.add_argument(knob.flag, dest=dest, action="store_true", default=None, help=knob.help)
            if knob.name == "hierarchical":
                g.add_argument("--flat", dest="knob_flat", action="store_true", help="flat ring all-reduce")
        elif knob.kind == "choice":
            g.add_argument(knob.flag, dest=dest, choices=knob.choices, help=knob.help)
        else:
            g.add_argument(knob.flag, dest=dest, help=f"{knob.help} [{knob.unit or knob.kind}]")


def knobs_from_args(args: argparse.Namespace, base: Knobs | None = None) -> Knobs:
    values: dict[str, Any] = {}
    if getattr(args, "knob_flat", False):
        if args.knob_hierarchical:
            raise CommtuneError("--hierarchical and --flat contradict each other: give one of them")
        args.knob_hierarchical = False
    for knob in KNOBS.values():
        v = getattr(args, f"knob_{knob.name}", None)
        if v is not None:
            try:
                values[knob.name] = knob.parse(v)
            except CommtuneError as exc:
                raise CommtuneError(f"{knob.flag} {v}: {str(exc).split(': ', 1)[-1]}") from None
    return Knobs.from_dict(values, base=base)
