"""`commtune export`: write a tuned profile as settings of one training stack."""
from __future__ import annotations

import argparse
import sys

from commtune.exporters import EXPORTERS, get_exporter
from commtune.io import atomic_write_text, check_writable
from commtune.profiles import load_profile
from commtune.sharding_checks import check_sharding


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a profile as DDP/Horovod/NCCL/DeepSpeed/FSDP2/Megatron/JSON settings")
    p.add_argument("profile", metavar="PROFILE", help="profile file written by `commtune search`")
    p.add_argument("--format", "-f", required=True, metavar="FORMAT",
                   help="; ".join(f"{name}: {cls.description}" for name, cls in EXPORTERS.items()))
    p.add_argument("-o", "--output", metavar="FILE", help="write FILE (atomically) instead of printing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    exporter = get_exporter(args.format)
    if args.output:
        check_writable(args.output, "export")
    profile = load_profile(args.profile)
    check_sharding(profile.knobs, None, profile.cluster)  # the exporters that need the units check them too
    result = exporter.export(profile)
    for line in result.warnings():
        print(f"commtune: warning: {line}", file=sys.stderr)
    if args.output:
        path = atomic_write_text(args.output, result.text)
        print(f"wrote {path} ({exporter.name}: {len(result.applied)} knob(s) applied, "
              f"{len(result.unsupported)} not expressible)")
    else:
        sys.stdout.write(result.text)
    return 0
