"""`commtune show`: a profile, readably."""
from __future__ import annotations

import argparse
import json
from typing import Any

from commtune.knobs import KNOBS
from commtune.profiles import Profile, load_profile
from commtune.units import format_time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="print a tuned profile: model, cluster, knobs, predictions, provenance")
    p.add_argument("profile", metavar="PROFILE", help="profile file")
    p.add_argument("--json", action="store_true", help="print as JSON (with active knobs and speedups)")
    p.set_defaults(func=run)


def speedups(profile: Profile) -> dict[str, float]:
    """Baseline step time / predicted step time, per baseline."""
    step = profile.predicted.get("step_time_s")
    out = {}
    for name, metrics in profile.baselines.items():
        base = metrics.get("step_time_s") if isinstance(metrics, dict) else None
        if _num(step) and _num(base):
            out[name] = base / step
    return out


def bound_distance(profile: Profile) -> float | None:
    """How far the predicted step is above the lower bound (0.05 = 5 %)."""
    step, bound = profile.predicted.get("step_time_s"), profile.lower_bound_s
    return step / bound - 1.0 if _num(step) and _num(bound) else None


_LABELS = {"step_time_s": "step time", "scaling_efficiency": "scaling efficiency", "samples_per_s": "throughput"}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _metric(name: str, v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return str(v)
    if name == "samples_per_s":
        return f"{v:,.0f} samples/s"
    if name == "scaling_efficiency":
        return f"{v:.1%}"
    if name.endswith("_s"):
        return format_time(v)
    return f"{v:g}"


def render(profile: Profile) -> list[str]:
    m, p = profile.model, profile.predicted
    params = m.get("num_params")
    lines = [
        f"profile ({profile.schema})",
        f"model      {m.get('name')}  params {f'{params / 1e6:.2f} M' if _num(params) else '?'}  "
        f"tensors {m.get('num_tensors', '?')}  fingerprint {m.get('fingerprint')}",
        f"           batch {m.get('batch_size', '?')}/GPU  precision {m.get('precision', '?')}"
        + (f"  input {m['input_size']}" if m.get("input_size") else ""),
        f"cluster    {profile.cluster.describe()}",
        "knobs      (* = inactive in this configuration)",
    ]
    active = profile.knobs.active()
    for name, value in profile.knobs.to_dict().items():
        mark = " " if name in active else "*"
        lines.append(f"  {mark} {name:<24} {KNOBS[name].show(value)}")
    lines.append("predicted")
    keys = [k for k in _LABELS if k in p] + [k for k in p if k not in _LABELS]
    lines.extend(f"    {_LABELS.get(k, k):<24} {_metric(k, p[k])}" for k in keys)
    if profile.baselines:
        ups = speedups(profile)
        lines.append("baselines")
        for name, metrics in profile.baselines.items():
            step = metrics.get("step_time_s") if isinstance(metrics, dict) else None
            up = f"  -> speedup {ups[name]:.2f}x" if name in ups else ""
            lines.append(f"    {name:<24} {_metric('step_time_s', step)}{up}")
    if profile.lower_bound_s is not None:
        dist = bound_distance(profile)
        lines.append(f"lower bound {_metric('lower_bound_s', profile.lower_bound_s)}"
                     + (f"  (predicted step is {dist:.1%} above it)" if dist is not None else ""))
    if profile.provenance:
        lines.append("provenance")
        lines.extend(f"    {k:<24} {v}" for k, v in profile.provenance.items())
    return lines


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    if args.json:
        out = {**profile.to_dict(), "active_knobs": list(profile.knobs.active()),
               "speedups": speedups(profile), "lower_bound_distance": bound_distance(profile)}
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(render(profile)))
    return 0
