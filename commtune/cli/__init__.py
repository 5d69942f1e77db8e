"""The ``commtune`` command line: one module per sub-command.

Each command module exposes ``register(subparsers)`` which adds its parser and
sets ``func(args) -> int``. A :class:`~commtune.errors.CommtuneError` becomes a
one-line message on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from commtune import __version__
from commtune.errors import CommtuneError

# Sub-command modules, in the order ``commtune --help`` lists them.
COMMANDS = [
    "commtune.cli.models_cmd",
    "commtune.cli.presets_cmd",
    "commtune.cli.simulate_cmd",
    "commtune.cli.profile_model_cmd",
    "commtune.cli.search_cmd",
    "commtune.cli.show_cmd",
    "commtune.cli.export_cmd",
    "commtune.cli.cluster_cmd",
    "commtune.cli.probe_cmd",
    "commtune.cli.validate_cmd",
    "commtune.cli.plot_cmd",
]


#: What ``commtune --help`` opens with (the user's view; the module docstring is the developer's).
DESCRIPTION = """\
commtune auto-tunes the communication knobs of data-parallel training (bucket / fusion size, streams,
negotiation, hierarchical all-reduce, wire precision) on a simulator of one training step or live on a
cluster, and writes a profile that PyTorch DDP (through commtune.runtime), Horovod, NCCL and DeepSpeed use.

The main job:
  commtune search --model resnet50 --bw 32gbit       # tune; writes profiles/resnet50-32gbit.json
  commtune show profiles/resnet50-32gbit.json         # what was found, against the defaults
  commtune export profiles/resnet50-32gbit.json --format ddp   # or horovod | nccl | deepspeed | json
Your own model: `commtune profile-model MODULE:FACTORY -o model.yaml`, then `search --model model.yaml`;
apply the profile in training with commtune.runtime.wrap(model, PROFILE)."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from commtune.knobs import KNOBS
    from commtune.limits import ranges_help

    knob_ranges = "".join(f"\n  {k.flag:<48} {k.accepted()}" for k in KNOBS.values() if k.kind in ("size", "int", "float"))
    parser = _Parser(prog="commtune", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Bad input gets one line on stderr and exit status 2. Accepted ranges:\n" + ranges_help()
                            + knob_ranges)
    parser.add_argument("--version", action="version", version=f"commtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except CommtuneError as exc:
        print(f"commtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("commtune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`commtune presets --json | head`): stop quietly, like
        # Unix tools killed by SIGPIPE, and keep Python from reporting the failed flush.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
