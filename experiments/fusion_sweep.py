"""Fusion granularity sweeps: step time against fusion threshold / bucket size.

Claim: the best fusion threshold / bucket size moves with the model and the bandwidth, so it has to be tuned (simulated).
Runs: ~55 s. Root: no.
Writes: ``experiments/results/fusion_sweep.{md,json,csv,png}``.

ResNet-50, BERT-base and VGG-16 (batch 64/GPU, AMP, 16 x 8 V100) on the
network presets at 10, 32 and 100 Gbit/s (``eth-10g``: 10 Gbit/s Ethernet,
PCIe inside the node; ``vpc-32gbit``: 10 Gbit/s per stream; ``ib-100g``).
For each fusion policy (dynamic = Horovod loop, static = DDP buckets) two
curves: the policy's default knobs with only the threshold changed, and the
best over every other knob at that threshold (grid over the ``default``
search space with the thresholds as override, ``C.GRID_POINTS`` per other
range; one ``run_batch``).
The best threshold of each curve is starred.

Writes results/fusion_sweep.{csv,json,md,png}.
"""
from __future__ import annotations


import numpy as np

import _common as C

from commtune.cluster import preset
from commtune.knobs import DDP_DEFAULT, HOROVOD_DEFAULT
from commtune.models import load_model
from commtune.plots.gridsearch import knob_grid
from commtune.scenario import Scenario
from commtune.units import MiB, format_size
from simulators import KnobArrays

MODELS = ("resnet50", "bert-base", "vgg16")
NETS = (("eth-10g", 10), ("vpc-32gbit", 32), ("ib-100g", 100))
THRESHOLDS = np.unique(np.geomspace(64 * 1024, 2**30, 29).astype(np.int64))


def curves(sim) -> dict[str, np.ndarray]:
    out = {}
    for policy, base in (("dynamic", HOROVOD_DEFAULT), ("static", DDP_DEFAULT)):
        cols = {name: getattr(base, name) for name in KnobArrays.__dataclass_fields__}
        cols["fusion_threshold_bytes"] = THRESHOLDS
        out[f"{policy}_defaults"] = sim.run_batch(KnobArrays.from_columns(len(THRESHOLDS), **cols))["step_time_s"]
    grid = knob_grid("default", {"fusion_threshold_bytes": [int(t) for t in THRESHOLDS]}, points=C.GRID_POINTS)
    step = sim.run_batch(grid)["step_time_s"]
    for policy in ("dynamic", "static"):
        best = np.full(len(THRESHOLDS), np.inf)
        mask = grid.fusion_policy == policy
        idx = np.searchsorted(THRESHOLDS, grid.fusion_threshold_bytes[mask])
        np.minimum.at(best, idx, step[mask])
        out[f"{policy}_tuned"] = best
    return out


def main() -> None:
    rows, panels = [], {}
    for model in MODELS:
        m = load_model(model)
        for net, gbit in NETS:
            sc = Scenario(m, preset(net, 16, 8))
            cv = curves(sc.simulator)
            panels[(model, net)] = (cv, sc.workload.compute_s, sc.workload.total_grad_bytes)
            for i, t in enumerate(THRESHOLDS):
                rows.append({"model": model, "network": net, "bw_gbit": gbit, "threshold_bytes": int(t),
                             **{f"{k}_step_s": float(v[i]) for k, v in cv.items()}})
    C.write_csv("fusion_sweep.csv", rows)

    from matplotlib.lines import Line2D

    from matplotlib.ticker import NullLocator

    from commtune.plots import new_figure, plain_log_axis, styled

    styles = {"dynamic_defaults": ("C1", "--", "Horovod defaults, threshold varied (dynamic)"),
              "dynamic_tuned": ("C1", "-", "dynamic fusion, other knobs tuned"),
              "static_defaults": ("C0", "--", "DDP defaults, bucket cap varied (static)"),
              "static_tuned": ("C0", "-", "static buckets, other knobs tuned")}
    best_rows = []
    fig = new_figure(13.0, 10.5)
    with styled():
        axes = fig.subplots(len(MODELS), len(NETS))
        for i, model in enumerate(MODELS):
            for j, (net, gbit) in enumerate(NETS):
                ax = axes[i, j]
                cv, compute, gbytes = panels[(model, net)]
                x = THRESHOLDS / MiB
                for key, (c, ls, _) in styles.items():
                    y = cv[key] * 1e3
                    ax.plot(x, y, color=c, ls=ls, lw=1.5)
                    k = int(np.argmin(y))
                    ax.plot(x[k], y[k], marker="*", ms=13, color=c, mec="black", mew=0.6, zorder=4)
                    near = np.flatnonzero(y <= y[k] * 1.01)
                    at_def = float(cv[key][np.argmin(np.abs(THRESHOLDS - (128 * MiB if "dynamic" in key else 25 * MiB)))] * 1e3)
                    best_rows.append({"model": model, "network": net, "curve": key,
                                      "best_threshold": format_size(int(THRESHOLDS[k])),
                                      "within_1pct": f"{format_size(int(THRESHOLDS[near.min()]))} .. {format_size(int(THRESHOLDS[near.max()]))}",
                                      "best_step_ms": f"{y[k]:.1f}", "at_default_ms": f"{at_def:.1f}",
                                      "gain_pct": f"{(1 - y[k] / at_def) * 100:.1f}",
                                      "worst_ms": f"{y.max():.1f}"})
                ax.axhline(compute * 1e3, color="0.5", lw=1)
                ax.set_xscale("log")
                ax.set_yscale("log")
                plain_log_axis(ax.yaxis)
                ax.set_xticks([0.0625, 1, 16, 256], ["64K", "1M", "16M", "256M"])
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_title(f"{model} ({gbytes / MiB:.0f} MiB grads), {gbit} Gbit/s ({net})", fontsize=9.5)
                if i == len(MODELS) - 1:
                    ax.set_xlabel("fusion threshold / bucket cap (bytes, log)")
                if j == 0:
                    ax.set_ylabel("step time (ms, log)")
        handles = [Line2D([], [], color=c, ls=ls, label=lab) for c, ls, lab in styles.values()]
        handles += [Line2D([], [], ls="", marker="*", ms=12, color="0.4", mec="black", label="best threshold of a curve"),
                    Line2D([], [], color="0.5", label="compute only (fwd+bwd)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle("Fusion granularity: step time against threshold, 16 x 8 V100, batch 64/GPU")
    C.save(fig, "fusion_sweep.png")
    C.write_json("fusion_sweep.json", {"thresholds_bytes": THRESHOLDS.tolist(), "best": best_rows})

    tuned = [r for r in best_rows if r["curve"].endswith("tuned")]
    default = [r for r in best_rows if r["curve"].endswith("defaults")]
    cols = [("model", "model"), ("network", "network"), ("curve", "curve"), ("best_threshold", "best threshold"),
            ("within_1pct", "within 1% of best"), ("best_step_ms", "best step (ms)"),
            ("at_default_ms", "at default size (ms)"), ("gain_pct", "gain vs default size (%)"), ("worst_ms", "worst (ms)")]

    def b(model, net, curve):
        return next(r for r in best_rows if r["model"] == model and r["network"] == net and r["curve"] == curve)

    gd_max = max(default, key=lambda r: float(r["gain_pct"]))
    gt_max = max(tuned, key=lambda r: float(r["gain_pct"]))
    worst = max(best_rows, key=lambda r: float(r["worst_ms"]) / float(r["best_step_ms"]))
    vgg_ib = b("vgg16", "ib-100g", "static_defaults")
    vpc = preset("vpc-32gbit", 16, 8)
    vpc_lat_ms = 1e3 * (2 * (vpc.world_size - vpc.nodes) * vpc.intra_latency_s + 2 * (vpc.nodes - 1) * vpc.inter_latency_s)
    md = f"""# Fusion granularity sweeps (ResNet-50, BERT-base, VGG-16 at 10/32/100 Gbit/s)

`experiments/fusion_sweep.py`; 16 x 8 V100, batch 64/GPU, AMP; networks `eth-10g` (10 Gbit/s, PCIe 3 inside the
node), `vpc-32gbit` (10 Gbit/s per stream) and `ib-100g`; {len(THRESHOLDS)} thresholds from 64 KiB to 1 GiB. Figure:
`fusion_sweep.png`; every point: `fusion_sweep.csv`. "At framework default size" = the curve at 128 MiB (dynamic) or
25 MiB (static).

Framework defaults with only the threshold varied:

{C.md_table(default, cols)}

Every other knob tuned at each threshold:

{C.md_table(tuned, cols)}

- With the frameworks' other defaults, resizing alone gains {gd_max['gain_pct']}% at most ({gd_max['model']}, {gd_max['network']},
  {gd_max['curve']}: {gd_max['at_default_ms']} -> {gd_max['best_step_ms']} ms at {gd_max['best_threshold']}); the curves are flat above a
  few MiB for dynamic fusion because Horovod's 1 ms cycle, not the threshold, then decides how much one tick fuses.
- Too small a threshold is what hurts: every flat all-reduce over 128 ranks pays 2(n-1) latency steps ({vpc_lat_ms:.2f} ms on the
  VPC, intra-node hops at the NVLink latency), so sub-MiB buffers multiply latency — up to {worst['worst_ms']} ms ({worst['model']}, {worst['network']}, {worst['curve']}).
  Too large a static bucket loses overlap (VGG-16 on IB with DDP defaults: {vgg_ib['worst_ms']} ms at 1 GiB vs {vgg_ib['best_step_ms']} ms).
- With the other knobs tuned, the optimum moves to smaller buffers on faster networks (ResNet-50 static:
  {b('resnet50', 'eth-10g', 'static_tuned')['best_threshold']} at 10 Gbit/s, {b('resnet50', 'vpc-32gbit', 'static_tuned')['best_threshold']} at 32, {b('resnet50', 'ib-100g', 'static_tuned')['best_threshold']} at 100, where {b('resnet50', 'ib-100g', 'static_tuned')['within_1pct']} is within 1%) and the
  near-optimal band is wide (see "within 1% of best"): the threshold matters far less than streams, hierarchy and
  wire precision once those are right ({gt_max['gain_pct']}% at most over the default size).

**Conclusion:** the best fusion granularity varies with model and network (ResNet-50 static, tuned: {b('resnet50', 'eth-10g', 'static_tuned')['best_threshold']} /
{b('resnet50', 'vpc-32gbit', 'static_tuned')['best_threshold']} / {b('resnet50', 'ib-100g', 'static_tuned')['best_threshold']} at 10/32/100 Gbit/s), as the seed says, but in this simulator the step-time stake of the
threshold alone is modest ({gd_max['gain_pct']}% at most with default knobs, {gt_max['gain_pct']}% with the rest tuned) next to the other knobs.
"""
    C.write_md("fusion_sweep.md", md)
    print(md)


if __name__ == "__main__":
    main()
