"""``sweep``: best knobs and scaling efficiency against inter-node bandwidth.

For each bandwidth, ``cluster_for(bw)`` gives the cluster: ``commtune plot
sweep`` passes what ``search --bw`` would build (the preset of that link rate,
with its per-stream cap and GPU, else a custom cluster), or with ``--cluster``
that cluster with the link rate replaced (its per-stream cap kept;
``--per-stream none`` lifts it); without ``cluster_for`` the scenario's
cluster gets each link rate. An exhaustive grid over the knob
space (:mod:`commtune.plots.gridsearch` over a ``search_spaces`` space,
one ``run_batch`` call) finds the
best configuration. The figure shows step time and scaling efficiency of the
tuned configuration against the DDP and Horovod defaults and the physical
lower bound, and the best knobs at each bandwidth.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from commtune.knobs import DDP_DEFAULT, HOROVOD_DEFAULT
from commtune.units import MiB

DEFAULT_BWS = "5gbit,10gbit,16gbit,25gbit,32gbit,50gbit,100gbit,200gbit"


def sweep_data(scenario, bws_Bps: list[float], space: str = "default", points: int | None = None,
               cluster_for: Callable[[float], Any] | None = None) -> list[dict]:
    """One row per bandwidth: defaults, tuned optimum (its knobs) and lower bound.

    ``space``/``points``: the grid, as :func:`commtune.plots.gridsearch.knob_grid`;
    ``cluster_for``: the ClusterSpec of one bandwidth (default: the scenario's
    cluster with that link rate)."""
    from commtune.plots.gridsearch import grid_best, knob_grid
    from commtune.scenario import Scenario
    from simulators.bounds import step_lower_bound_s

    from commtune.limits import check_count
    from commtune.search.space import load_space

    sp = load_space(space)
    n = sp.grid_size(points=points)
    check_count("grid_configs", n * len(bws_Bps), f"sweep of {len(bws_Bps)} bandwidths x {n:,} grid configurations:",
                f"{n * len(bws_Bps):,}")
    arrays = knob_grid(sp, points=points)
    rows = []
    for bw in sorted(bws_Bps):
        cluster = (cluster_for(bw) if cluster_for is not None
                   else dataclasses.replace(scenario.cluster, inter_bw_Bps=float(bw)))
        sc = Scenario(scenario.model, cluster, scenario.batch_size, scenario.precision)
        sim = sc.simulator
        best, m = grid_best(sim, arrays)
        ddp, hvd = sim.run(DDP_DEFAULT), sim.run(HOROVOD_DEFAULT)
        rows.append({
            "bw_gbit": bw * 8 / 1e9, "cluster": cluster.name, "device": cluster.device,
            "per_stream_gbit": None if math.isinf(cluster.per_stream_Bps) else cluster.per_stream_Bps * 8 / 1e9,
            "ddp_default_step_s": ddp.step_time_s, "horovod_default_step_s": hvd.step_time_s,
            "tuned_step_s": m["step_time_s"],
            "ddp_default_eff": ddp.scaling_efficiency, "horovod_default_eff": hvd.scaling_efficiency,
            "tuned_eff": m["scaling_efficiency"], "tuned_samples_per_s": m["samples_per_s"],
            "lower_bound_s": step_lower_bound_s(sc.workload, sim.network, max_streams=8),
            "compute_s": sc.workload.compute_s,
            **{f"best_{k}": v for k, v in best.to_dict().items()},
        })
    return rows


def write_csv(rows: list[dict], path: str) -> None:
    import csv
    import io

    from commtune.io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def plot_sweep(rows: list[dict], title: str | None = None):
    """Three panels against bandwidth (log x): step time, efficiency, best knobs."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from commtune.plots import new_figure, plain_log_axis, styled

    bw = np.array([r["bw_gbit"] for r in rows])
    fig = new_figure(7.2, 8.6)
    with styled():
        ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
        series = [("tuned_step_s", "tuned (grid optimum)", "C2", "o", "-"),
                  ("ddp_default_step_s", "PyTorch DDP defaults", "C0", "s", "--"),
                  ("horovod_default_step_s", "Horovod defaults", "C1", "^", "--")]
        for key, label, c, mk, ls in series:
            ax1.plot(bw, [r[key] * 1e3 for r in rows], marker=mk, color=c, ls=ls, label=label)
        ax1.plot(bw, [r["lower_bound_s"] * 1e3 for r in rows], color="0.3", ls=":", label="lower bound (any knobs)")
        ax1.plot(bw, [r["compute_s"] * 1e3 for r in rows], color="0.6", lw=1,
                 label="compute only (fwd+bwd+optimizer)")
        ax1.set_ylabel("step time (ms)")
        ax1.set_yscale("log")
        plain_log_axis(ax1.yaxis)
        ax1.legend(ncols=2, loc="upper right")
        for key, label, c, mk, ls in [("tuned_eff", "tuned", "C2", "o", "-"), ("ddp_default_eff", "DDP defaults", "C0", "s", "--"),
                                      ("horovod_default_eff", "Horovod defaults", "C1", "^", "--")]:
            ax2.plot(bw, [r[key] * 100 for r in rows], marker=mk, color=c, ls=ls, label=label)
        ax2.set_ylabel("scaling efficiency (%)")
        ax2.set_ylim(0, 105)
        ax2.legend(loc="center right")
        thr = [r["best_fusion_threshold_bytes"] / MiB for r in rows]
        ax3.plot(bw, thr, marker="o", color="C4", label="best fusion threshold / bucket (MiB)")
        ax3.set_yscale("log")
        plain_log_axis(ax3.yaxis)
        ax3.set_ylabel("best threshold (MiB)", color="C4")
        ax3b = ax3.twinx()
        ax3b.plot(bw, [r["best_num_streams"] for r in rows], marker="D", color="C3", ls="--", label="best streams")
        ax3b.set_ylabel("best streams", color="C3")
        ax3b.set_ylim(0, 9)
        ax3b.grid(False)
        for x, t, r in zip(bw, thr, rows):
            tag = ("dyn" if r["best_fusion_policy"] == "dynamic" else "static") + (
                "\nhier" if r["best_hierarchical"] else "\nflat") + ("\nfp16" if r["best_wire_precision"] == "fp16" else "\nfp32")
            ax3.annotate(tag, (x, t), xytext=(0, 6), textcoords="offset points", ha="center", va="bottom", fontsize=7)
        lo, hi = min(thr), max(thr)
        ax3.set_ylim(lo / 2, hi * 12)
        h1, l1 = ax3.get_legend_handles_labels()
        h2, l2 = ax3b.get_legend_handles_labels()
        ax3.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
        ax3.set_xscale("log")
        ax3.xaxis.set_major_locator(FixedLocator(bw))
        ax3.xaxis.set_minor_locator(NullLocator())
        ax3.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        caps = {r["per_stream_gbit"] for r in rows}
        cap = rows[0]["per_stream_gbit"]
        ax3.set_xlabel("inter-node bandwidth per node (Gbit/s, log scale)"
                       + ("; per-stream cap of each preset" if len(caps) > 1 else
                          f"; per-stream cap {cap:g} Gbit/s" if cap else "; no per-stream cap"))
        fig.suptitle(title or "Tuned vs default communication against bandwidth")
    return fig
