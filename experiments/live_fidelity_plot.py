"""Live fidelity of the calibrated simulator on the emulated cluster: plot + summary.

Claim: the first live fidelity study: the calibrated simulator against 12 real DDP configurations on 4 emulated hosts, 1 Gbit/s with and without a 300 Mbit/s per-stream cap (superseded as the headline by ``live_fidelity.py``'s held-out runs).
Runs: seconds from the stored JSON; ``--run`` a few minutes. Root: only with ``--run``.
Writes: ``experiments/results/live_fidelity_plot.{md,csv,png}`` (from ``live_fidelity-split.json``).

Two sources, in this order:

1. ``--from FILE`` or, without ``--run``, the probe engineer's full run
   ``experiments/results/live_fidelity-split.json`` (``experiments/live_fidelity.py``:
   two shapings x 12 DDP configurations) when it exists;
2. a short live run of its own (``--run``, or when no JSON exists): 4 emulated
   hosts on 1 Gbit/s links with a 300 Mbit/s per-stream cap, a probe
   (1-16 MB, 1/2/4 streams) for the calibration file, then DDP steps of the
   synthetic ResNet-50 (x0.25 elements, 100 ms forward / 200 ms backward
   emulated) for buckets 1/25 MiB x streams 1/2/4, each also simulated.

The live run needs root, ``ip``, ``tc`` and network namespaces; without them
the script prints why it skipped and writes that to the summary (exit 0).

Writes results/live_fidelity_plot.{csv,md,png} (and the calibration/JSON of a live run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C

DEFAULT_JSON = C.RESULTS / "live_fidelity-split.json"


def live_unavailable() -> str | None:
    """Why a live run cannot happen here, or None."""
    if not sys.platform.startswith("linux"):
        return "the emulated cluster needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the emulated cluster needs root (network namespaces, tc)"
    for tool in ("ip", "tc"):
        if not shutil.which(tool):
            return f"the emulated cluster needs the `{tool}` tool"
    try:
        import torch.distributed  # noqa: F401
    except ImportError:
        return "live DDP steps need torch"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"network namespaces are unavailable: {probe.stderr.strip() or 'ip netns list failed'}"
    return None


def other_clusters(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sorted({ln.split()[0].split("-")[0] for ln in out.splitlines() if ln.strip()} - {prefix})


def run_live(args) -> dict:
    from commtune.emulation import EmulatedCluster, emulated_cluster
    from commtune.probe.launch import LaunchSpec
    from commtune.probe.probe import calibration, parse_sizes, run_probe, summary, write_calibration
    from commtune.validation import format_report, grid_configs, run_validation

    MiB = 2**20
    name = "1gbit-300mbit-per-stream"
    spec = EmulatedCluster.parse(args.hosts, "1gbit", "300mbit", prefix=args.prefix)
    t0 = time.time()
    with emulated_cluster(spec, replace=True) as state:
        launch = LaunchSpec(state=state, timeout_s=300)
        probe = run_probe(launch, parse_sizes("1MB:16MB"), [1, 2, 4], iters=3, warmup=1)
        cs, extra = calibration(probe, hosts=args.hosts, name=f"calib-{name}", source=spec.describe(),
                                min_fit_size=2**20)
        calib = str(C.out(f"live_fidelity-calib-{name}.yaml"))
        write_calibration(calib, cs, extra)
        print(summary(cs, extra))
        configs = grid_configs(buckets_bytes=(1 * MiB, 25 * MiB), streams=(1, 2, 4))
        res = run_validation(launch, calib, configs, "resnet50", scale=0.25, forward_s=0.1, backward_s=0.2,
                             steps=args.steps, warmup=1, mode="split")
    res["setting"] = name
    res["wall_s"] = time.time() - t0
    print(format_report(res))
    out = {name: res}
    C.write_json("live_fidelity-short.json", out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", help="a live_fidelity JSON (default: results/live_fidelity-split.json)")
    ap.add_argument("--run", action="store_true", help="measure live even if a JSON exists")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prefix", default="ctf", help="namespace prefix of this script's emulated cluster")
    args = ap.parse_args()

    source = Path(args.source) if args.source else DEFAULT_JSON
    if args.source and not source.exists():
        print(f"live_fidelity_plot: {source} does not exist", file=sys.stderr)
        return 2
    if source.exists() and not args.run:
        results = json.loads(source.read_text())
        origin = f"`{source.name}` (from `experiments/live_fidelity.py`)"
    else:
        why = live_unavailable()
        if why:
            msg = f"live fidelity skipped: {why}; run as root on Linux, or pass --from a live_fidelity JSON."
            print(msg)
            C.write_md("live_fidelity_plot.md", f"# Live fidelity on the emulated cluster\n\n**Skipped:** {msg}\n")
            return 0
        busy = other_clusters(args.prefix)
        if busy:
            print(f"warning: other emulated clusters are up ({', '.join(busy)}); their traffic and CPU use will "
                  "distort these measurements", file=sys.stderr)
        results = run_live(args)
        origin = "a short live run of this script (`--run`)"
    plot_and_summarise(results, origin)
    return 0


def plot_and_summarise(results: dict, origin: str) -> None:
    from commtune.plots import new_figure, styled
    from commtune.plots.fidelity import draw_fidelity
    from commtune.validation import fidelity_points

    points_all, table = [], []
    fig = new_figure(5.3 * len(results), 5.2)
    with styled():
        axes = fig.subplots(1, len(results), squeeze=False)[0]
        for ax, (name, res) in zip(axes, results.items()):
            pts = fidelity_points(res)
            draw_fidelity(ax, pts, title=name, band_pct=10)
            s = res["summary"]
            rows = res["rows"]
            table.append({"setting": name, "n": len(rows), "mape": f"{s['mape']:.1%}",
                          "spearman": f"{s['spearman']:.2f}", "pick": rows[s["sim_best"]]["config"],
                          "best": rows[s["live_best"]]["config"], "gap": f"{s['pick_gap']:.1%}",
                          "noise": f"{s['noise']:.1%}", "within": "yes" if s["pick_within_noise"] else "no",
                          "targets": "yes" if (len(rows) >= 12 and s["mape"] <= 0.05 and s["spearman"] >= 0.9
                                               and s["pick_gap"] <= 0.03) else "no"})
            for r in rows:
                points_all.append({"setting": name, "config": r["config"], "predicted_s": r["predicted_s"],
                                   "measured_s": r["measured_s"], "error_pct": (r["predicted_s"] / r["measured_s"] - 1) * 100,
                                   "spread_pct": r["spread"] * 100})
        fig.suptitle("Calibrated simulator vs live DDP steps on the emulated cluster (4 hosts)")
    C.save(fig, "live_fidelity_plot.png")
    C.write_csv("live_fidelity_plot.csv", points_all)
    worst = max(points_all, key=lambda p: abs(p["error_pct"]))
    ok = all(t["within"] == "yes" for t in table)
    missed = [t["setting"] for t in table if t["targets"] == "no"]
    met_text = "met in every shaping" if not missed else f"not met in {', '.join(missed)}"
    md = f"""# Live fidelity on the emulated cluster

Source: {origin}. 4 emulated hosts (network namespaces, htb links; a per-stream cap is a
`SO_MAX_PACING_RATE` shim), one rank each, gloo; the simulator uses the probe's calibration file (per-stream
a + b·S fits). Figure: `live_fidelity_plot.png`; points: `live_fidelity_plot.csv`.

{C.md_table(table, [("setting", "shaping"), ("n", "configs"), ("mape", "MAPE"), ("spearman", "Spearman"),
                    ("pick", "simulator's pick"), ("best", "live best"), ("gap", "pick gap"), ("noise", "live noise"),
                    ("within", "gap within noise"), ("targets", "targets met")])}

Largest single error: {worst['error_pct']:+.1f}% ({worst['setting']}, {worst['config']}).

**Conclusion:** the calibrated simulator {'picks a configuration within the live run-to-run noise of the best' if ok else 'misses the live best by more than the noise in at least one shaping'}
(MAPE {", ".join(t['mape'] for t in table)}; rank correlation {", ".join(t['spearman'] for t in table)}).
Targets (>= 12 configurations, MAPE <= 5%, Spearman >= 0.9, pick within 3% of the live best):
{met_text}. `live_fidelity.md` (the probe's write-up) compares the runs and analyses the misses.
"""
    C.write_md("live_fidelity_plot.md", md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
