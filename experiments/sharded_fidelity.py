"""Sharded-step fidelity of the calibrated simulator on held-out FSDP2 configurations, and the live gain of the searched FSDP2 profile.

Claim: the simulator, calibrated by ``commtune probe`` with its defaults, predicts real FSDP2 steps of held-out sharded configurations on emulated clusters (MAPE <= 5 %, worst <= 10 %, the simulator's pick within 3 % of the live best, per shape and model), and the profile ``search --space fsdp`` finds on it, applied live by ``commtune.runtime.shard``, beats FSDP2's defaults and lies within 3 % of the best of a live grid around it.
Runs: ~18 min by default on 2 cores (2 shapes of 2-3 hosts; the estimate ``--dry-run`` prints: each default probe at its 300 s budget, an upper bound, every live configuration at (warm-up + steps) x passes x its simulated step plus a re-shard, noisy-pass repeats included). Root: yes (emulated cluster).
Writes: ``experiments/results/sharded_fidelity.{md,json,png}``; calibrations, the mirrors' profiles and the search spaces under ``experiments/results/sharded_fidelity/``.

For each emulated cluster shape (:data:`SHAPES`): ``commtune cluster up``,
``commtune probe --emulated`` with its defaults (all-reduce, all-gather,
reduce-scatter, the DDP and FSDP calibration runs), then for each model of
:data:`MODELS` (the synthetic mirror of a zoo model, tensors scaled, forward /
backward compute emulated by sleeps; the mirror keeps the model's transformer
blocks, the units FSDP users wrap) ``commtune validate --sharding full`` with
its defaults: held-out FSDP2 configurations (unit caps, prefetch, reshard
after forward, reduce precision; :func:`commtune.validation.held_out_sharded`),
two passes of alternating order of :data:`VALIDATE` ``steps`` timed steps each
(more than validate's default 5: a step of many small collectives varies by
up to 20 % between passes here), measured as FSDP2 steps on the emulated
hosts and predicted by the sharded timeline on the calibration.

Gain (on :data:`GAIN_SHAPES`): ``commtune search --space FILE`` (the fsdp
space with unit caps scaled to the mirror: FSDP2's one unit per block and
1/16 .. 1/2 of its parameter bytes) on the same calibration and mirror, then
``commtune validate --sharding full --configs`` of the searched profile,
FSDP2's defaults (:data:`commtune.knobs.FSDP2_DEFAULT`) and a small grid
around the profile (:func:`grid_around`: unit cap halved and doubled, forward
prefetch +-1, reshard flipped), measured on the same ranks: the live gain
over FSDP2's defaults and the profile's gap to the grid's live best.

``--dry-run`` builds the plan (shapes, held-out configurations, commands,
time estimate) and prints it without starting anything; ``--report JSON``
prints the markdown of a saved run.

    PYTHONPATH=. python experiments/sharded_fidelity.py [--shapes a,b] [--models a,b] [--dry-run]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (puts the repository on sys.path)

from commtune.io import atomic_write_json, atomic_write_text  # noqa: E402

#: emulated shapes: communication exposed (3 hosts, a slow link) and latency-bound small gathers (2 hosts, 1 ms)
SHAPES = {
    "3h-500m": dict(hosts=3, bw="500mbit"),
    "2h-1g-1ms": dict(hosts=2, bw="1gbit", latency="1ms"),
}
#: model, element scale: about 10 MB of fp32 parameters each (a full gather, re-gather and reduce-scatter per step)
MODELS = {"llama": ("llama3.2-1b", 0.002), "gpt2": ("gpt2", 0.02)}
#: where the searched profile is applied live: the shape where communication is exposed, the 1B decoder's mirror
GAIN_SHAPES, GAIN_MODELS = ("3h-500m",), ("llama",)
COMPUTE_MS = (100.0, 200.0)
HELD_OUT = 5
SEARCH_TRIALS = 30
TARGETS = {"mape": 0.05, "worst": 0.10, "pick_gap": 0.03, "grid_gap": 0.03}
#: validate's settings: its defaults (commtune/cli/validate_cmd.py) but 10 timed steps per pass
VALIDATE = {"warmup": 2, "steps": 10, "passes": 2, "repeat_noisy": 2}
#: a worker group's start, a fresh FSDP2 copy per configuration, validate's drift check (3 DDP anchors): seconds
START_S, RESHARD_S, DRIFT_S = 8.0, 1.0, 15.0
#: the share of configurations assumed to get validate's extra (noisy) passes
NOISY_SHARE = 0.5


def mirror(model: str, scale: float, compute_ms=COMPUTE_MS):
    """The synthetic profile validate measures (the same call validate makes)."""
    from commtune.runtime.synthetic import synthetic_profile

    return synthetic_profile(model, scale, compute_ms[0] / 1e3, compute_ms[1] / 1e3)


def param_bytes(profile) -> int:
    return sum(t.numel for layer in profile.layers for t in layer.tensors) * 4


def space_yaml(profile) -> str:
    """The fsdp search space (``search_spaces/fsdp.yaml``) with unit caps scaled to ``profile``."""
    total = param_bytes(profile)
    units = [0] + [int(total // d) for d in (16, 8, 4, 2)]
    return ("name: fsdp-mirror\ndescription: the fsdp space, unit caps scaled to the synthetic mirror\n"
            "base: fsdp2_default\nknobs:\n  sharding: full\n"
            f"  unit_bytes: {{choices: [{', '.join(map(str, units))}]}}\n"
            "  forward_prefetch: {low: 1, high: 4, grid: 4}\n  backward_prefetch: {low: 0, high: 4, grid: 5}\n"
            "  reshard_after_forward: {choices: [true, false]}\n  reduce_precision: {choices: [fp32, bf16]}\n")


def config_arg(k) -> str:
    """``validate --configs`` entry of a full-sharding configuration."""
    reshard = "keep" if k.reshard_after_forward is False else "reshard"
    return f"{int(k.unit_bytes)}:{k.forward_prefetch}:{k.backward_prefetch}:{reshard}:{k.reduce_precision}"


def grid_around(k, profile) -> list:
    """A small live grid around ``k``: unit cap halved and doubled (per block: 1/8 and 1/4 of the parameter bytes),
    forward prefetch -1 and +1 (within 1 .. the units ahead), reshard after forward flipped; distinct, not ``k``."""
    from commtune.models.units import group_units

    total = param_bytes(profile)
    units = [total // 8, total // 4] if k.unit_bytes == 0 else [k.unit_bytes // 2, min(2 * k.unit_bytes, total)]
    out = [dataclasses.replace(k, unit_bytes=int(u)) for u in units if u > 0]
    most = min(4, max(1, len(group_units(profile, k.unit_bytes)) - 1))
    out += [dataclasses.replace(k, forward_prefetch=f) for f in (k.forward_prefetch - 1, k.forward_prefetch + 1)
            if 1 <= f <= most]
    out.append(dataclasses.replace(k, reshard_after_forward=k.reshard_after_forward is False))
    cap = {}
    for x in out:  # prefetch within the new units (FSDP2 caps it live; the checks refuse it otherwise)
        most_x = max(1, len(group_units(profile, x.unit_bytes)) - 1)
        x = dataclasses.replace(x, forward_prefetch=min(x.forward_prefetch, most_x),
                                backward_prefetch=min(x.backward_prefetch, most_x))
        if x != k:
            cap[config_arg(x)] = x
    return list(cap.values())


def shape_cluster(shape: dict):
    """The analytical ClusterSpec of an emulated shape (one rank per host): the time estimate's, before any probe."""
    from commtune.cluster import ClusterSpec
    from commtune.units import parse_bandwidth, parse_duration

    kw = {"inter_latency_s": parse_duration(shape["latency"], what="latency")} if shape.get("latency") else {}
    return ClusterSpec(nodes=shape["hosts"], gpus_per_node=1, inter_bw_Bps=parse_bandwidth(shape["bw"]),
                       name="emulated", **kw)


def configs_seconds(configs, profile, shape: dict, drift: bool = True) -> float:
    """Estimated live seconds of one validate run of ``configs``: its worker group's start, the drift check, and
    per configuration (warm-up + steps) x passes (plus the noisy repeats) of its simulated step, and a re-shard."""
    from commtune.runtime.synthetic import sim_workload
    from simulators import Simulator

    sim = Simulator(sim_workload(profile), shape_cluster(shape))
    v = VALIDATE
    steps = (v["warmup"] + v["steps"]) * (v["passes"] + NOISY_SHARE * v["repeat_noisy"])
    return START_S + (DRIFT_S if drift else 0.0) + sum(steps * sim.run(k).step_time_s + RESHARD_S for k in configs)


class Part(NamedTuple):
    """One planned run: what it is, the commtune arguments, its estimated seconds and the configurations it runs."""

    what: str
    argv: list
    estimate_s: float
    configs: list = []


def plan(shapes: list[str], models: list[str], held_out: int, gain_shapes: list[str], gain_models: list[str],
         out_dir: str, prefix: str, seed_base: int = 0) -> list[Part]:
    """Every run of the experiment, in order, with the configurations that are known before it starts."""
    from commtune.probe.probe import DEFAULT_BUDGET_S
    from commtune.validation import describe_knobs, held_out_sharded

    parts: list[Part] = []
    for name in shapes:
        shape = SHAPES[name]
        calib = os.path.join(out_dir, f"calib-{name}.yaml")
        up = ["cluster", "up", "--prefix", prefix, "--hosts", str(shape["hosts"]), "--bw", shape["bw"], "--replace"]
        if shape.get("latency"):
            up += ["--latency", shape["latency"]]
        parts.append(Part(f"{name}: cluster up", up, 5.0))
        parts.append(Part(f"{name}: default probe", ["probe", "--emulated", "--prefix", prefix, "-o", calib,
                                                      "--timeout", "900"], DEFAULT_BUDGET_S))
        for i, m in enumerate(models):
            model, scale = MODELS[m]
            prof = mirror(model, scale)
            configs = held_out_sharded(prof, held_out, seed_base + i)
            argv = held_out_argv(calib, prefix, m, seed_base + i, held_out,
                                 os.path.join(out_dir, f"sharded_fidelity-{name}-{m}.png"))
            parts.append(Part(f"{name} / {m}: held-out sharded validate", argv, configs_seconds(configs, prof, shape),
                              [describe_knobs(k) for k in configs]))
            if name in gain_shapes and m in gain_models:
                from commtune.knobs import FSDP2_DEFAULT

                files = model_files(out_dir, m)
                argv = search_argv(calib, shape["hosts"], *files, os.path.join(out_dir, "search"))
                parts.append(Part(f"{name} / {m}: search the fsdp space on the calibration", argv, 15.0))
                # the grid is known once the search has answered: estimated around FSDP2's defaults
                grid = [FSDP2_DEFAULT, *grid_around(FSDP2_DEFAULT, prof)]
                parts.append(Part(f"{name} / {m}: live grid (searched profile, FSDP2's defaults, its neighbours)",
                                  grid_argv(calib, prefix, m, ["SEARCHED", config_arg(FSDP2_DEFAULT), "NEIGHBOURS"]),
                                  configs_seconds(grid + [FSDP2_DEFAULT], prof, shape, drift=False),
                                  ["searched", describe_knobs(FSDP2_DEFAULT), "its neighbours (grid_around)"]))
        parts.append(Part(f"{name}: cluster down", ["cluster", "down", "--prefix", prefix], 2.0))
    return parts


def validate_argv(calib: str, prefix: str, m: str, *extra: str) -> list[str]:
    """``commtune validate --sharding full`` of model ``m``'s mirror on the emulated cluster ``prefix``."""
    model, scale = MODELS[m]
    return ["validate", "--cluster", calib, "--emulated", "--prefix", prefix, "--model", model, "--scale", str(scale),
            "--forward-ms", f"{COMPUTE_MS[0]:g}", "--backward-ms", f"{COMPUTE_MS[1]:g}", "--sharding", "full",
            "--steps", str(VALIDATE["steps"]), *extra,
            "--json", "--timeout", "900"]


def held_out_argv(calib: str, prefix: str, m: str, seed: int, held_out: int, png: str) -> list[str]:
    """The held-out validation of model ``m`` (validate's defaults but :data:`VALIDATE` steps: passes, repeats, drift check)."""
    return validate_argv(calib, prefix, m, "--held-out", str(held_out), "--seed", str(seed), "--plot", png)


def grid_argv(calib: str, prefix: str, m: str, configs: list[str]) -> list[str]:
    """The live grid of model ``m``: explicit configurations, no plot, no second drift check (the held-out
    validation just before it on the same cluster made one)."""
    return validate_argv(calib, prefix, m, "--configs", ",".join(configs), "--plot", "", "--no-drift-check")


def model_files(out_dir: str, m: str) -> tuple[str, str]:
    """The mirror's profile file and its search space file (written by :func:`write_model_files`)."""
    return os.path.join(out_dir, f"mirror-{m}.json"), os.path.join(out_dir, f"space-{m}.yaml")


def write_model_files(out_dir: str, m: str) -> tuple[str, str]:
    from commtune.models import save_profile

    prof = mirror(*MODELS[m])
    path, space = model_files(out_dir, m)
    save_profile(prof, path)
    atomic_write_text(space, space_yaml(prof))
    return path, space


def search_argv(calib: str, hosts: int, profile_file: str, space_file: str, workdir: str) -> list[str]:
    """``commtune search`` of the mirror on the calibration: one rank per host, fp32 (what the mirror runs), batch 1."""
    return ["search", "--model", profile_file, "--cluster", calib, "--nodes", str(hosts), "--gpus-per-node", "1",
            "--precision", "fp32", "--batch-size", "1", "--space", space_file,
            "--trials", str(SEARCH_TRIALS), "--workdir", workdir, "--no-profile", "--json", "--quiet"]


def searched_knobs(stdout: str):
    from commtune.knobs import Knobs

    return Knobs.from_dict(json.loads(stdout[stdout.index("{"):])["best"])


def gain(res: dict, searched_config: str, default_config: str) -> dict:
    """From a grid validation (rows: the searched profile, FSDP2's defaults, the neighbours): the live gain of
    the searched profile over the defaults and its gap to the grid's live best."""
    rows = {r["config"]: r for r in res["rows"]}
    s, d = rows[searched_config]["measured_s"], rows[default_config]["measured_s"]
    best = min(res["rows"], key=lambda r: r["measured_s"])
    return {"searched": searched_config, "searched_s": s, "default_s": d, "gain": d / s - 1,
            "grid_best": best["config"], "grid_best_s": best["measured_s"], "grid_gap": s / best["measured_s"] - 1,
            "targets_met": {"beats_default": s < d, "grid_gap": s / best["measured_s"] - 1 <= TARGETS["grid_gap"]}}


def targets_met(s: dict) -> dict:
    return {k: s[k] <= TARGETS[k] for k in ("mape", "worst", "pick_gap")}


def markdown(results: dict) -> str:
    t = results["targets"]
    lines = ["# Sharded-step fidelity (held-out FSDP2 configurations, CLI-default calibration)", "",
             f"Run {results.get('started', '?')} - {results.get('finished', '?')}; `experiments/sharded_fidelity.py`. "
             f"Targets: MAPE <= {t['mape']:.0%}, worst <= {t['worst']:.0%}, pick within {t['pick_gap']:.0%} of the live "
             f"best; the searched profile beats FSDP2's defaults and lies within {t['grid_gap']:.0%} of its grid's best.",
             "Models (synthetic mirrors, zoo layer sizes x element scale, blocks kept): "
             + ", ".join(f"{m} = {z} x {sc:g}" for m, (z, sc) in results["models"].items())
             + "; compute: forward {:g} ms, backward {:g} ms.".format(*results["compute_ms"]), "",
             "| shape | model | points | MAPE | worst | Spearman | pick gap | targets met | load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in results["shapes"].items():
        for m, r in e.get("models", {}).items():
            s = r["summary"]
            met = ", ".join(k for k, v in r["targets_met"].items() if v) or "none"
            load = r.get("uptime_before", "").split("load average:")[-1].split(",")[0].strip()
            lines.append(f"| {name} | {m} | {len(r['rows'])} | {s['mape']:.2%} | {s['worst']:.2%} | "
                         f"{s['spearman']:.3f} | {s['pick_gap']:.2%} | {met} | {load} |")
    gains = [(name, m, g) for name, e in results["shapes"].items() for m, g in e.get("gain", {}).items()]
    if gains:
        lines += ["", "| shape | model | searched profile | live | FSDP2 defaults | gain | grid best | gap to it |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, m, g in gains:
            lines.append(f"| {name} | {m} | {g['searched']} | {g['searched_s'] * 1e3:.1f} ms | "
                         f"{g['default_s'] * 1e3:.1f} ms | {g['gain']:+.1%} | {g['grid_best']} | {g['grid_gap']:.2%} |")
    lines.append("")
    for name, e in results["shapes"].items():
        p = e.get("probe") or {}
        if p:
            lines.append(f"- {name} ({e['shape']}): default probe {p['wall_s']:.0f} s ({p['uptime_before']})")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    """Predicted vs measured of every held-out point, grouped by shape and model."""
    from commtune.plots.fidelity import save_fidelity

    points = [{"predicted_s": r["predicted_s"], "measured_s": r["measured_s"], "label": r["config"],
               "group": f"{name} / {m}"}
              for name, e in results["shapes"].items() for m, res in e.get("models", {}).items() for r in res["rows"]]
    if points:
        save_fidelity(points, path, title="FSDP2 steps, held-out configurations")


def dry_run(parts: list[Part]) -> str:
    lines = []
    for p in parts:
        lines.append(f"[{p.estimate_s / 60:4.1f} min] {p.what}\n    commtune {' '.join(p.argv)}")
        lines += [f"      - {c}" for c in p.configs]
    total = sum(p.estimate_s for p in parts)
    lines.append(f"estimated total: {total / 60:.1f} min ({len(parts)} runs; probes at their default budget)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--gain-shapes", default=",".join(GAIN_SHAPES), help="shapes where the searched profile runs live")
    ap.add_argument("--gain-models", default=",".join(GAIN_MODELS), help="models whose searched profile runs live")
    ap.add_argument("--held-out", type=int, default=HELD_OUT, help=f"held-out configurations per model (default {HELD_OUT})")
    ap.add_argument("--seed-base", type=int, default=0)
    ap.add_argument("--prefix", default="sf")
    ap.add_argument("--out", default=None, help="results folder (default experiments/results)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate; start nothing")
    ap.add_argument("--report", metavar="JSON", help="only print the markdown summary of a saved run")
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            print(markdown(json.load(fh)))
        return 0
    shapes = [s for s in args.shapes.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    gain_shapes = [s for s in args.gain_shapes.split(",") if s]
    gain_models = [m for m in args.gain_models.split(",") if m]
    for what, names, known in (("--shapes", shapes, SHAPES), ("--models", models, MODELS),
                               ("--gain-shapes", gain_shapes, SHAPES), ("--gain-models", gain_models, MODELS)):
        bad = [n for n in names if n not in known]
        if bad:
            print(f"{what}: unknown {bad[0]!r}; give some of {', '.join(known)}", file=sys.stderr)
            return 2
    if not 2 <= args.held_out <= 500:
        print(f"--held-out {args.held_out}: give 2-500", file=sys.stderr)
        return 2
    results_dir = args.out or str(_common.RESULTS)
    out_dir = os.path.join(results_dir, "sharded_fidelity")
    parts = plan(shapes, models, args.held_out, gain_shapes, gain_models, out_dir, args.prefix, args.seed_base)
    if args.dry_run:
        print(dry_run(parts))
        return 0
    return run(shapes, models, gain_shapes, gain_models, args, results_dir, out_dir)


def run(shapes, models, gain_shapes, gain_models, args, results_dir: str, out_dir: str) -> int:
    """The live experiment (root): every shape's probe, held-out validations and the gain part."""
    import live_fidelity as lf
    from commtune.validation import describe_knobs

    if os.geteuid() != 0:
        print("sharded_fidelity needs root (emulated cluster); --dry-run shows the plan", file=sys.stderr)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(results_dir, "sharded_fidelity.json")
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "targets": TARGETS,
               "models": {m: MODELS[m] for m in models}, "compute_ms": list(COMPUTE_MS), "shapes": {}}

    def save() -> None:
        atomic_write_json(path, results)
        atomic_write_text(path[:-5] + ".md", markdown(results))

    try:
        for name in shapes:
            shape = SHAPES[name]
            print(f"== {name}: {shape}  [{lf.uptime()}]")
            lf.cluster_up(args.prefix, shape["hosts"], shape["bw"], shape.get("per_stream"), shape.get("latency"))
            calib = os.path.join(out_dir, f"calib-{name}.yaml")
            entry = {"shape": shape, "probe": lf.probe(args.prefix, calib), "models": {}, "gain": {}}
            results["shapes"][name] = entry
            save()
            for i, m in enumerate(models):
                p = lf.ct(*held_out_argv(calib, args.prefix, m, args.seed_base + i, args.held_out,
                                         os.path.join(out_dir, f"sharded_fidelity-{name}-{m}.png")))
                res = json.loads(p.stdout[p.stdout.index("{"):])
                res.update(uptime_before=lf.uptime(), targets_met=targets_met(res["summary"]))
                entry["models"][m] = res
                lf.show(f"{name} / {m}", res)
                save()
                if name in gain_shapes and m in gain_models:
                    from commtune.knobs import FSDP2_DEFAULT

                    files = write_model_files(out_dir, m)
                    best = searched_knobs(lf.ct(*search_argv(calib, shape["hosts"], *files,
                                                             os.path.join(out_dir, "search"))).stdout)
                    grid = [best, FSDP2_DEFAULT, *grid_around(best, mirror(*MODELS[m]))]
                    p = lf.ct(*grid_argv(calib, args.prefix, m, list(dict.fromkeys(config_arg(k) for k in grid))))
                    res = json.loads(p.stdout[p.stdout.index("{"):])
                    g = gain(res, describe_knobs(best), describe_knobs(FSDP2_DEFAULT))
                    g["validation"] = res
                    entry["gain"][m] = g
                    print(f"-- {name} / {m}: searched {g['searched']} {g['gain']:+.1%} over FSDP2's defaults, "
                          f"{g['grid_gap']:.2%} from the grid's best ({g['grid_best']})")
                    save()
            lf.cluster_down(args.prefix)
    finally:
        for prefix in sorted(lf._UP):
            lf.cluster_down(prefix)
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        save()
        plot(results, path[:-5] + ".png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
