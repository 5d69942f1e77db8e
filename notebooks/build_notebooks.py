"""Write the example notebooks (without outputs) from the cell sources below.

    python notebooks/build_notebooks.py          # rewrite every notebook
    python notebooks/build_notebooks.py --check  # exit 1 if a stored notebook differs

The notebooks are stored without outputs; ``tests/test_notebooks.py`` runs
them headlessly. Edit the cells here, not in the .ipynb files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
# Make the repository importable when the notebook runs from notebooks/ (no install needed).
import os, sys
from pathlib import Path
root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "commtune" / "__init__.py").exists())
sys.path.insert(0, str(root))
try:  # inline figures in Jupyter; harmless when run headless
    get_ipython().run_line_magic("matplotlib", "inline")
except Exception:
    pass
from IPython.display import display
'''

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01-explore.ipynb"] = [
    ("md", """\
# 01 — Explore the step simulator

Simulate one data-parallel training step of ResNet-50 on 128 V100 (16 nodes x 8) over the 32 Gbit/s VPC preset,
compare the framework defaults, sweep the fusion threshold and the number of streams, and look inside a step.
Everything here is the simulator (no GPUs, no network); each cell runs in well under a second."""),
    ("code", SETUP),
    ("code", '''\
import commtune
from commtune.knobs import DDP_DEFAULT, HOROVOD_DEFAULT, Knobs

where = dict(model="resnet50", cluster="vpc-32gbit", nodes=16, gpus_per_node=8, batch_size=64)
scenario = commtune.make_scenario(**where)  # model + cluster + workload, ready to simulate
print(scenario.describe())
w = scenario.workload
print(f"{len(w.numel)} gradient tensors, {w.total_grad_bytes / 2**20:.1f} MiB; "
      f"forward {w.forward_s * 1e3:.1f} ms, backward {w.backward_s * 1e3:.1f} ms")'''),
    ("md", "## Simulate the two framework defaults"),
    ("code", '''\
for name, knobs in [("PyTorch DDP defaults", DDP_DEFAULT), ("Horovod defaults", HOROVOD_DEFAULT)]:
    r = commtune.simulate(**where, **knobs.to_dict())  # what `commtune simulate --json` prints
    print(f"{name:22s} step {r['step_time_s'] * 1e3:6.1f} ms  efficiency {r['scaling_efficiency']:5.1%}  "
          f"{r['samples_per_s']:9,.0f} samples/s  {r['num_buffers']:.0f} buffers")'''),
    ("md", "## Many configurations at once: `run_batch`\n\nEvery combination of a knob grid in one vectorised call."),
    ("code", '''\
import time
from commtune.plots.gridsearch import grid_best, knob_grid

grid = knob_grid("default")
t0 = time.perf_counter()
metrics = scenario.simulator.run_batch(grid)
print(f"{len(grid):,} configurations in {time.perf_counter() - t0:.2f} s")
best, m = grid_best(scenario.simulator, grid)
print("best:", best.describe())
print(f"step {m['step_time_s'] * 1e3:.1f} ms, efficiency {m['scaling_efficiency']:.1%}")'''),
    ("md", "## Sweep: step time against the fusion threshold, per policy"),
    ("code", '''\
import dataclasses
import numpy as np
from commtune.plots import new_figure, plain_log_axis
from simulators import KnobArrays

thresholds = np.geomspace(2**16, 2**30, 29).astype(np.int64)
fig = new_figure(6.5, 4)
ax = fig.add_subplot()
for base, label in [(DDP_DEFAULT, "static (DDP buckets)"), (HOROVOD_DEFAULT, "dynamic (Horovod loop)")]:
    cols = {k: getattr(base, k) for k in KnobArrays.__dataclass_fields__}
    cols["fusion_threshold_bytes"] = thresholds
    step = scenario.simulator.run_batch(KnobArrays.from_columns(len(thresholds), **cols))["step_time_s"]
    ax.plot(thresholds / 2**20, step * 1e3, marker=".", label=label)
ax.set_xscale("log"); ax.set_yscale("log"); plain_log_axis(ax.yaxis)
ax.set_xlabel("fusion threshold / bucket cap (MiB)"); ax.set_ylabel("step time (ms)")
ax.set_title("ResNet-50, 16x8 V100, 32 Gbit/s VPC"); ax.legend()
display(fig)'''),
    ("md", "## Heat map: fusion threshold x streams"),
    ("code", '''\
from commtune.plots.heatmap import plot_heatmap
display(plot_heatmap(scenario, HOROVOD_DEFAULT))'''),
    ("md", "## Inside one step: the timeline\n\nHorovod defaults, then the grid's best configuration."),
    ("code", '''\
from commtune.plots.timeline import plot_timeline
display(plot_timeline(scenario, HOROVOD_DEFAULT))
display(plot_timeline(scenario, best))'''),
    ("md", "## Best knobs against bandwidth"),
    ("code", '''\
from commtune.plots.sweep import plot_sweep, sweep_data
rows = sweep_data(scenario, [b * 1e9 / 8 for b in (10, 25, 32, 100)], space="default")
for r in rows:
    print(f"{r['bw_gbit']:5.0f} Gbit/s: tuned {r['tuned_step_s'] * 1e3:6.1f} ms ({r['tuned_eff']:.0%}), "
          f"DDP defaults {r['ddp_default_step_s'] * 1e3:6.1f} ms")
display(plot_sweep(rows))'''),
    ("md", "Save any figure with `commtune.plots.save_figure(fig, 'name.png')` (PNG, SVG or PDF by extension), or "
           "draw the same from the shell: `commtune plot heatmap --model resnet50 --cluster vpc-32gbit -o heatmap.png`."),
]

NOTEBOOKS["02-search-and-export.ipynb"] = [
    ("md", """\
# 02 — Search the knobs, compare samplers, export a profile

`commtune search` tunes the communication knobs of a scenario against the simulator with Optuna, stores the
study (resumable) and writes a *profile*; `commtune export` turns a profile into the settings a framework reads
(Horovod environment variables, DDP settings, NCCL variables, a DeepSpeed fragment). Small trial counts keep this
notebook under a minute."""),
    ("code", SETUP),
    ("code", '''\
import tempfile, warnings
import optuna
import commtune
from commtune.cli import main as cli
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore")
work = Path(tempfile.mkdtemp(prefix="commtune-nb02-"))
print("working in", work)'''),
    ("md", "## One search per space\n\nResNet-50 on 16 x 8 V100 over the 32 Gbit/s VPC (10 Gbit/s per stream), "
           "in the DDP space (static buckets, streams, fp16 hook) and in the Horovod space (dynamic fusion), "
           "so that each profile exports exactly to its framework. `commtune.search` is `commtune search` "
           "(same defaults); the studies go to one SQLite file, as the command line's do."),
    ("code", '''\
storage = f"sqlite:///{work / 'commtune-studies.db'}"
profiles = {}
for space in ("ddp", "horovod"):
    run = commtune.search(model="resnet50", cluster="vpc-32gbit", space=space, trials=40, seed=0, storage=storage)
    profiles[space] = run.save(work / f"resnet50-vpc-{space}.json")
    print(f"{space:8s} best {run.predicted['step_time_s'] * 1e3:.1f} ms "
          f"(DDP defaults {run.baselines['ddp_default'] * 1e3:.1f} ms): {run.best.describe()}")'''),
    ("code", '''rc = cli(["show", str(profiles["horovod"])])'''),
    ("md", "## Export the profiles for their frameworks"),
    ("code", '''\
rc = cli(["export", str(profiles["horovod"]), "--format", "horovod"])
print()
rc = cli(["export", str(profiles["ddp"]), "--format", "ddp"])'''),
    ("md", "## Compare samplers\n\nThe same search with several samplers and seeds (in-memory studies), best-so-far per trial."),
    ("code", '''\
from commtune.knobs import DDP_DEFAULT
from commtune.plots.gridsearch import grid_best, knob_grid
from commtune.plots.history import plot_history

scenario = commtune.make_scenario("resnet50", cluster="vpc-32gbit")
runs = {}
for sampler in ("random", "tpe", "auto"):
    runs[sampler] = []
    for seed in (0, 1):  # in-memory studies (no storage given)
        run = commtune.search(model="resnet50", cluster="vpc-32gbit", sampler=sampler, trials=30, seed=seed)
        runs[sampler].append(run.history)
    print(f"{sampler:7s} best {min(min(h) for h in runs[sampler]) * 1e3:.2f} ms")
_, grid = grid_best(scenario.simulator, knob_grid("default"))
refs = {"DDP defaults": scenario.simulator.run(DDP_DEFAULT).step_time_s,
        "grid optimum": grid["step_time_s"]}
display(plot_history(runs, refs, log_y=True, title="Samplers, ResNet-50 on the 32 Gbit/s VPC"))'''),
    ("md", "## The study is stored: plot it from the storage\n\n"
           "`commtune plot history --storage <db>` draws every study in a storage (one line per study: here the DDP-space "
           "and the Horovod-space searches above)."),
    ("code", '''\
out = work / "history.png"
rc = cli(["plot", "history", "--storage", str(work / "commtune-studies.db"), "-o", str(out)])
from IPython.display import Image
display(Image(filename=str(out)))'''),
]

NOTEBOOKS["03-live-validation.ipynb"] = [
    ("md", """\
# 03 — Probe and validate on the emulated cluster

The live side of commtune: `commtune probe` measures all-reduce on a cluster and writes a calibration file;
`commtune validate` runs DDP configurations live and in the calibrated simulator and compares them.

Here the "cluster" is emulated on this machine (network namespaces, shaped links). That needs root and the
`ip`/`tc` tools, and it takes a couple of minutes, so the live cells run only when you set
`COMMTUNE_NOTEBOOK_LIVE=1`; otherwise they say why they skipped. The last section plots the committed results
of `experiments/live_fidelity.py` when they exist."""),
    ("code", SETUP),
    ("code", '''\
import shutil, subprocess

def live_unavailable():
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    for tool in ("ip", "tc"):
        if not shutil.which(tool):
            return f"needs the `{tool}` tool"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "network namespaces are unavailable"
    if os.environ.get("COMMTUNE_NOTEBOOK_LIVE") != "1":
        return "set COMMTUNE_NOTEBOOK_LIVE=1 to run it (a few minutes, root)"
    return None

WHY = live_unavailable()
LIVE = WHY is None
print("live emulated-cluster cells:", "enabled" if LIVE else f"skipped — {WHY}")'''),
    ("md", "## Probe: all-reduce times on 4 emulated hosts (1 Gbit/s, 300 Mbit/s per stream)"),
    ("code", '''\
import tempfile
work = Path(tempfile.mkdtemp(prefix="commtune-nb03-"))
calib = work / "calib.yaml"
if LIVE:
    import commtune
    from commtune.emulation import EmulatedCluster, emulated_cluster
    from commtune.probe.launch import LaunchSpec
    from commtune.probe.probe import format_table, summary
    from commtune.validation import format_report, grid_configs

    spec = EmulatedCluster.parse(4, "1gbit", "300mbit", prefix="ctn")
    with emulated_cluster(spec, replace=True) as state:
        launch = LaunchSpec(state=state, timeout_s=300)
        cs, details = commtune.probe(launch, sizes="1MB:16MB", streams=[1, 2, 4], iters=3, warmup=1,
                                     fit_min_size="1MiB", name="nb03", output=calib)
        print(format_table(details["records"], details["world_size"]))
        print(summary(cs, details))
        res = commtune.validate(calib, launch, configs=grid_configs(buckets_bytes=(2**20, 25 * 2**20), streams=(1, 2, 4)),
                                model="resnet50", scale=0.25, forward_s=0.1, backward_s=0.2, steps=3, warmup=1)
    print(format_report(res))
else:
    res = None
    print("skipped:", WHY)'''),
    ("md", "## Predicted against measured"),
    ("code", '''\
from commtune.plots.fidelity import plot_fidelity

def points(res):
    return [{"predicted_s": r["predicted_s"], "measured_s": r["measured_s"], "label": r["config"],
             "group": f"{r['knobs']['num_streams']} stream(s)"} for r in res["rows"]]

if res is not None:
    display(plot_fidelity(points(res), title="this run"))
else:
    print("no live run in this session")'''),
    ("md", "## The committed full run (`experiments/live_fidelity.py`)"),
    ("code", '''\
import json
results = root / "experiments" / "results"
found = sorted(results.glob("live_fidelity-*.json"))
for path in found:
    for setting, r in json.loads(path.read_text()).items():
        s = r["summary"]
        print(f"{path.name} / {setting}: MAPE {s['mape']:.1%}, Spearman {s['spearman']:.2f}, pick gap {s['pick_gap']:.1%}")
        display(plot_fidelity(points(r), title=setting))
if not found:
    print("no live_fidelity results committed yet (run experiments/live_fidelity.py as root)")'''),
]


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src) in enumerate(NOTEBOOKS[name]):
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        cell["id"] = f"c{i:02d}"
        nb.cells.append(cell)
    return nb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    for name in NOTEBOOKS:
        text = nbformat.writes(build(name)) + "\n"
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print("stale notebooks (run notebooks/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
