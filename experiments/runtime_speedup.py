"""Target: a searched profile, loaded by the runtime, makes real DDP steps >= 2x faster than DDP's defaults.

Claim: a searched profile, applied by ``commtune.runtime``, makes real DDP steps >= 2x faster than DDP's defaults on an emulated cluster.
Runs: a few minutes (``--replot``: seconds). Root: yes (emulated cluster); ``--replot`` no.
Writes: ``experiments/results/runtime_speedup.{md,png}`` and the launches in ``runtime_speedup/``.

On the emulated cluster (4 hosts, 1 Gbit/s links, 300 Mbit/s per TCP stream;
needs root), with the synthetic model of ``experiments/train_ddp.py`` (ResNet-50
tensors scaled by 0.25 -> 24 MiB of gradients, 100 ms forward / 200 ms backward
emulated compute):

1. write the synthetic model's profile (same tensors, same compute timeline)
   and a cluster file (4 nodes x 1 GPU, 1gbit, 300mbit per stream) -- or use
   ``--cluster-file`` (e.g. the calibration ``commtune probe`` wrote);
2. get a profile: ``commtune search --space ddp ... -o profile.json`` when the
   search command is there, else ``Simulator.run_batch`` over a grid of the
   DDP-applicable knobs (best predicted step time) saved with
   ``commtune.profiles``;
3. bring the cluster up and launch ``train_ddp.py`` ``--launches`` times with
   DDP's defaults and with ``--profile`` (alternating), plus one launch of the
   live AutoTuner (``--tune``) for per-configuration step times;
4. print the figures and write ``experiments/results/runtime_speedup.md``.

Not a timed test: ``sudo python experiments/runtime_speedup.py`` (a few minutes).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from commtune.io import atomic_write_text  # noqa: E402
from commtune.units import MiB  # noqa: E402

TRAIN = ROOT / "experiments" / "train_ddp.py"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--bw", default="1gbit")
    ap.add_argument("--per-stream", default="300mbit")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--forward", type=float, default=0.1)
    ap.add_argument("--backward", type=float, default=0.2)
    ap.add_argument("--launches", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tune-trials", type=int, default=8, help="AutoTuner launch (0: skip)")
    ap.add_argument("--cluster-file", help="cluster/calibration file for the search (default: written from the flags)")
    ap.add_argument("--search-trials", type=int, default=200)
    ap.add_argument("--force-grid", action="store_true", help="use the run_batch grid even if `commtune search` exists")
    ap.add_argument("--workdir", default=str(ROOT / "experiments" / "results" / "runtime_speedup"))
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "runtime_speedup.md"))
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the figure (--out with .png) from the launches stored in --workdir (no root)")
    return ap.parse_args()


def plot(work: Path, png: Path) -> Path:
    """The figure from the launches stored in ``work`` (``default-*.json``, ``profile-*.json``,
    ``autotuner.json``): each launch's median step (p90 as the bar's whisker), then the AutoTuner's
    configurations against both medians."""
    from commtune.plots import new_figure, save_figure, styled

    def runs(tag: str) -> list[dict]:
        return [json.loads(f.read_text()) for f in sorted(work.glob(f"{tag}-*.json"))]

    default, profile = runs("default"), runs("profile")
    if not default or not profile:
        raise SystemExit(f"{work}: no default-*.json / profile-*.json launches to plot (run without --replot first)")
    tuner = work / "autotuner.json"
    tuned = json.loads(tuner.read_text()) if tuner.exists() else None
    fig = new_figure(11.0 if tuned else 5.5, 4.6)
    with styled():
        axes = fig.subplots(1, 2 if tuned else 1, squeeze=False)[0]
        ax = axes[0]
        x = np.arange(len(default))
        for off, rs, label, color in ((-0.2, default, "DDP defaults", "C3"), (0.2, profile, "searched profile", "C0")):
            med = np.array([r["median_s"] for r in rs]) * 1e3
            p90 = np.array([r["p90_s"] for r in rs]) * 1e3
            ax.bar(x + off, med, width=0.4, color=color, label=label,
                   yerr=[np.zeros_like(med), p90 - med], capsize=3)
        ax.set_xticks(x, [f"launch {i + 1}" for i in x])
        ax.set_ylabel("step time, ms (median; whisker: p90)")
        speedups = [a["median_s"] / b["median_s"] for a, b in zip(default, profile)]
        ax.set_title(f"profile vs DDP defaults: {statistics.median(speedups):.2f}x (median of launches)")
        ax.legend(fontsize=8)
        if tuned:
            ax = axes[1]
            rows = tuned["tuning"]
            ax.barh(np.arange(len(rows)), [h["median_s"] * 1e3 for h in rows], color="C2")
            ax.set_yticks(np.arange(len(rows)), [h["config"].replace(", wire fp32", "") for h in rows], fontsize=7)
            ax.invert_yaxis()
            for value, label, color in ((statistics.median(r["median_s"] for r in default), "DDP defaults", "C3"),
                                        (statistics.median(r["median_s"] for r in profile), "searched profile", "C0")):
                ax.axvline(value * 1e3, color=color, ls="--", label=f"{label} (median)")
            ax.set_xlabel("median step, ms")
            ax.set_title("live AutoTuner: each configuration it timed")
            ax.legend(fontsize=8, loc="lower right")
        fig.suptitle("Real DDP steps on the emulated cluster (4 hosts, 1 Gbit/s, 300 Mbit/s per stream)")
    return save_figure(fig, png)


def write_inputs(args, work: Path) -> tuple[Path, Path]:
    import yaml

    from commtune.models import load_model, save_profile
    from commtune.runtime.synthetic import synthetic_profile

    model_file = work / "model.yaml"
    save_profile(synthetic_profile(load_model(args.model), scale=args.scale, forward_s=args.forward,
                                   backward_s=args.backward), model_file)
    if args.cluster_file:
        return model_file, Path(args.cluster_file)
    cluster_file = work / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump({
        "format": "commtune-cluster/1", "name": f"emulated-{args.hosts}x1-{args.bw}",
        "description": f"emulated cluster: {args.hosts} hosts x 1 rank, {args.bw} links, {args.per_stream} per TCP stream",
        "nodes": args.hosts, "gpus_per_node": 1, "inter_bw": args.bw, "per_stream": args.per_stream,
        "inter_latency": "50us", "launch_overhead": "50us", "device": "V100"}, sort_keys=False))
    return model_file, cluster_file


def have_search_cli() -> bool:
    r = subprocess.run([sys.executable, "-m", "commtune", "search", "--help"], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return r.returncode == 0


def search_profile(args, model_file: Path, cluster_file: Path, out: Path) -> str:
    cmd = [sys.executable, "-m", "commtune", "search", "--model", str(model_file), "--cluster", str(cluster_file),
           "--batch-size", "1", "--precision", "fp32", "--space", "ddp", "--trials", str(args.search_trials),
           "--seed", "0", "--workdir", str(out.parent), "--quiet", "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if r.returncode != 0:
        raise SystemExit(f"commtune search failed: {r.stderr.strip()[-2000:]}")
    return "`" + " ".join(["commtune", *cmd[3:]]).replace(str(ROOT) + "/", "") + "`"


def grid_profile(model_file: Path, cluster_file: Path, out: Path) -> str:
    """Best predicted configuration over a grid of DDP-applicable knobs (until `commtune search` is merged)."""
    import numpy as np

    from commtune.cluster import load_cluster_file
    from commtune.knobs import BASELINES, Knobs
    from commtune.models import load_model
    from commtune.profiles import Profile, model_summary, provenance, save_profile
    from commtune.scenario import Scenario

    scen = Scenario(load_model(str(model_file)), load_cluster_file(cluster_file), batch_size=1, precision="fp32")
    grid = [Knobs(fusion_policy="static", fusion_threshold_bytes=int(f * MiB), first_bucket_bytes=int(b * MiB),
                  num_streams=k, wire_precision=w)
            for f, b, k, w in itertools.product([0.5, 1, 2, 4, 8, 16, 25, 64], [0.25, 1, 4], [1, 2, 3, 4, 6, 8],
                                                ["fp32", "fp16"])]
    m = scen.simulator.run_batch(grid)
    i = int(np.argmin(m["step_time_s"]))
    base = scen.simulator.run_batch(list(BASELINES.values()))
    prof = Profile(
        model=model_summary(scen), cluster=scen.cluster, knobs=grid[i],
        predicted={k: float(v[i]) for k, v in m.items()},
        baselines={name: {"step_time_s": float(base["step_time_s"][j])} for j, name in enumerate(BASELINES)},
        provenance=provenance(backend="grid (Simulator.run_batch)", sampler="grid", trials=len(grid), seed=None,
                              study=None, storage=None, objective="step_time_s",
                              note="experiments/runtime_speedup.py fallback until `commtune search` is merged"))
    save_profile(prof, out)
    return f"`Simulator.run_batch` over a grid of {len(grid)} DDP-applicable configurations (fallback)"


def launch(state, args, extra: list[str], tag: str, work: Path, timeout: float = 400) -> dict:
    from commtune.emulation import run_on_hosts

    out = work / f"{tag}.json"
    argv = [sys.executable, str(TRAIN), "--model", str(work / "model.yaml"), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--json", str(out), "--label", tag, *extra]
    t0 = time.monotonic()
    res = run_on_hosts(state, [argv] * args.hosts, env_extra={"PYTHONPATH": str(ROOT)}, timeout_s=timeout,
                       master_port=29500 + (abs(hash(tag)) % 400))
    line = [ln for ln in res[0].stdout.splitlines() if ln.strip()]
    print(f"  {line[-1] if line else tag} [{time.monotonic() - t0:.0f} s]", flush=True)
    return json.loads(out.read_text())


def main() -> int:
    args = parse_args()
    if args.replot:
        print(f"wrote {plot(Path(args.workdir), Path(args.out).with_suffix('.png'))}")
        return 0
    if os.geteuid() != 0:
        raise SystemExit("the emulated cluster needs root (network namespaces)")
    from commtune.emulation import EmulatedCluster, emulated_cluster
    from commtune.profiles import load_profile

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model_file, cluster_file = write_inputs(args, work)
    prof_path = work / "profile.json"
    if have_search_cli() and not args.force_grid:
        how = search_profile(args, model_file, cluster_file, prof_path)
    else:
        how = grid_profile(model_file, cluster_file, prof_path)
    prof = load_profile(prof_path)
    print(f"profile ({how}): {prof.knobs.describe()}; predicted {prof.predicted['step_time_s'] * 1e3:.0f} ms, "
          f"DDP default predicted {prof.baselines.get('ddp_default', {}).get('step_time_s', float('nan')) * 1e3:.0f} ms")

    spec = EmulatedCluster.parse(args.hosts, args.bw, per_stream=args.per_stream, prefix="ctrs")
    runs: dict[str, list[dict]] = {"ddp_default": [], "profile": []}
    tuned = None
    with emulated_cluster(spec, replace=True) as state:
        print(f"cluster up: {spec.describe()}", flush=True)
        for i in range(args.launches):
            runs["ddp_default"].append(launch(state, args, [], f"default-{i}", work))
            runs["profile"].append(launch(state, args, ["--profile", str(prof_path)], f"profile-{i}", work))
        if args.tune_trials:
            tuned = launch(state, args, ["--tune", "--trials", str(args.tune_trials),
                                         "--profile-out", str(work / "autotuned.json")], "autotuner", work, timeout=600)

    d = [r["median_s"] for r in runs["ddp_default"]]
    p = [r["median_s"] for r in runs["profile"]]
    speedups = [a / b for a, b in zip(d, p)]
    lines = [
        "# Runtime speedup: searched profile vs DDP defaults on the emulated cluster",
        "",
        f"- Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; produced by `experiments/runtime_speedup.py`.",
        f"- Cluster: {spec.describe()} (namespaces, htb links, per-flow pacing shim); gloo; one rank per host.",
        f"- Model: synthetic {runs['profile'][0]['model']} ({args.model} tensors x {args.scale:g}, "
        f"{_grad_mib(model_file):.1f} MiB of fp32 gradients), emulated compute {args.forward * 1e3:.0f} ms forward / "
        f"{args.backward * 1e3:.0f} ms backward (sleep), SGD step, synthetic data.",
        f"- Profile: {how}; cluster file `{cluster_file.name}`; knobs: {prof.knobs.describe()}"
        f" (stream mode {prof.knobs.stream_mode}).",
        f"- Simulator's prediction: profile {prof.predicted['step_time_s'] * 1e3:.0f} ms, DDP defaults "
        f"{prof.baselines.get('ddp_default', {}).get('step_time_s', float('nan')) * 1e3:.0f} ms.",
        f"- Each launch: {args.warmup} warm-up + {args.steps} timed steps; step time = slowest rank; launches alternate.",
        "",
        "| launch | DDP defaults median (p90) ms | profile median (p90) ms | speedup |",
        "|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(runs["ddp_default"], runs["profile"])):
        lines.append(f"| {i + 1} | {a['median_s'] * 1e3:.0f} ({a['p90_s'] * 1e3:.0f}) | "
                     f"{b['median_s'] * 1e3:.0f} ({b['p90_s'] * 1e3:.0f}) | {a['median_s'] / b['median_s']:.2f}x |")
    lines += ["", f"**Speedup: median {statistics.median(speedups):.2f}x (min {min(speedups):.2f}x, "
                  f"max {max(speedups):.2f}x) over {len(speedups)} launches; target >= 2x: "
                  f"{'met' if min(speedups) >= 2 else 'NOT met'}.**", ""]
    if tuned is not None:
        lines += ["## Live AutoTuner on the same cluster (one launch)", "",
                  f"`train_ddp.py --tune --trials {args.tune_trials}` (default space: bucket 1/4/25 MiB x "
                  "K 1/2/4 x split/round-robin, fp32; 1 warm-up + 3 timed steps per configuration; slowest rank's median):", "",
                  "| # | configuration | median step ms |", "|---|---|---|"]
        for j, h in enumerate(tuned["tuning"]):
            lines.append(f"| {j + 1} | {h['config']} | {h['median_s'] * 1e3:.0f} |")
        lines += ["", f"Locked in: {tuned['config']}; afterwards median {tuned['median_s'] * 1e3:.0f} ms "
                      f"(p90 {tuned['p90_s'] * 1e3:.0f}) = {statistics.median(d) / tuned['median_s']:.2f}x "
                      "DDP defaults (median of the default launches).", ""]
    lines += [f"Figure: `{Path(args.out).with_suffix('.png').name}`; launches: `{work.name}/`.", ""]
    atomic_write_text(args.out, "\n".join(lines))
    plot(work, Path(args.out).with_suffix(".png"))
    print("\n".join(lines))
    return 0


def _grad_mib(model_file: Path) -> float:
    from commtune.models import load_model

    return load_model(str(model_file)).num_params * 4 / MiB


if __name__ == "__main__":
    sys.exit(main())
