"""``commtune cluster up|status|down``: an emulated cluster of network namespaces."""
from __future__ import annotations

import argparse
import json
import sys

from commtune.emulation.spec import MAX_HOSTS, MIN_HOSTS, EmulatedCluster
from commtune.emulation.state import ClusterState, state_path
from commtune.errors import CommtuneError
from commtune.units import format_bandwidth


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cluster", help="bring an emulated cluster (network namespaces) up or down",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cluster_command", metavar="ACTION")
    sub.required = True

    pu = sub.add_parser("up", help="create the namespaces, bridge, shaping (needs root)")
    pu.add_argument("--hosts", type=int, required=True, help=f"number of hosts ({MIN_HOSTS}-{MAX_HOSTS})")
    pu.add_argument("--bw", required=True, help="link rate of every host, e.g. 1gbit")
    pu.add_argument("--per-stream", default=None, help="cap on each TCP stream, e.g. 300mbit")
    pu.add_argument("--latency", default=None, help="one-way latency added on each host's egress, e.g. 1ms")
    pu.add_argument("--replace", action="store_true", help="take down a cluster that is already up first")
    pu.add_argument("--json", action="store_true", help="print the state as JSON")
    pu.set_defaults(func=_up)

    ps = sub.add_parser("status", help="show the emulated cluster, if any")
    ps.add_argument("--json", action="store_true", help="print the state file as JSON")
    ps.set_defaults(func=_status)

    pd = sub.add_parser("down", help="remove the emulated cluster and any leftovers (idempotent)")
    pd.set_defaults(func=_down)

    for q in (pu, ps, pd):
        q.add_argument("--prefix", default="ct", type=_prefix, help="name prefix of namespaces and state file (default: ct)")


def _prefix(text: str) -> str:
    from commtune.emulation.spec import check_prefix

    try:
        return check_prefix(text)
    except CommtuneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _describe(state: ClusterState) -> str:
    lines = [f"emulated cluster {state.prefix!r}: {state.num_hosts} hosts on bridge namespace {state.bridge_netns}",
             f"  link {format_bandwidth(state.link_rate_Bps)} each way"
             + (f", per-stream {format_bandwidth(state.per_stream_Bps)}" if state.per_stream_Bps else "")
             + (f", one-way latency {state.latency_s * 1e6:.0f} us" if state.latency_s > 0 else "")]
    for h in state.hosts:
        lines.append(f"  host {h.index}: {h.netns} {h.ifname} {h.address}")
    lines.append(f"  state: {state_path(state.prefix)}")
    return "\n".join(lines)


def _up(args: argparse.Namespace) -> int:
    from commtune.emulation.topology import up

    spec = EmulatedCluster.parse(args.hosts, args.bw, args.per_stream, args.latency, prefix=args.prefix)
    if spec.per_stream_exceeds_link:
        print(f"commtune: warning: per-stream cap {format_bandwidth(spec.per_stream_Bps or 0)} exceeds the link rate "
              f"{format_bandwidth(spec.link_rate_Bps)}; it will never bind", file=sys.stderr)
    state = up(spec, replace=args.replace)
    print(json.dumps(state.to_json(), indent=2) if args.json else _describe(state))
    return 0


def _status(args: argparse.Namespace) -> int:
    from commtune.emulation.topology import problems, status

    state = status(args.prefix)
    if state is None:
        if args.json:
            print("null")
        else:
            print(f"no emulated cluster {args.prefix!r} is up")
        return 1
    if args.json:
        print(json.dumps(state.to_json(), indent=2))
        return 0
    print(_describe(state))
    issues = problems(state)
    if issues:
        raise CommtuneError(f"the cluster is broken ({'; '.join(issues)}); run `commtune cluster down`")
    return 0


def _down(args: argparse.Namespace) -> int:
    from commtune.emulation.topology import down

    removed = down(args.prefix)
    print(f"removed {len(removed)} items: " + ", ".join(removed) if removed else "nothing to remove")
    return 0
