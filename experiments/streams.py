"""Benefit of 1-8 communication streams, with and without a per-stream cap.

Claim: more communication streams help only while a per-stream cap binds (up to ceil(link / cap) streams), and not at all without one (simulated).
Runs: ~50 s. Root: no.
Writes: ``experiments/results/streams.{md,json,csv,png}``.

Cluster: 16 x 8 V100 on the 32 Gbit/s VPC preset, once with its 10 Gbit/s
per-stream cap (the seed's "single NCCL stream ~10 Gbit/s") and once with the
cap lifted (one flow can fill the link). For K = 1..8 streams:

* the network alone: bus bandwidth of a 64 MiB flat ring all-reduce;
* ResNet-50 and BERT-base steps with Horovod's defaults but K streams;
* the best step with K streams fixed, every other knob tuned (grid over the
  ``default`` search space, ``C.GRID_POINTS`` per range), flat all-reduce
  only and with hierarchical allowed.

Writes results/streams.{csv,json,md,png}.
"""
from __future__ import annotations

import dataclasses
import math


import _common as C

from commtune.cluster import preset
from commtune.knobs import HOROVOD_DEFAULT
from commtune.models import load_model
from commtune.plots.gridsearch import grid_best, knob_grid
from commtune.scenario import Scenario
from commtune.units import MiB

MODELS = ("resnet50", "bert-base")
KS = list(range(1, 9))


def main() -> None:
    capped = preset("vpc-32gbit", 16, 8)
    uncapped = dataclasses.replace(capped, per_stream_Bps=math.inf, name="vpc-32gbit-nocap")
    rows = []
    for cl in (capped, uncapped):
        cap = "10 Gbit/s per stream" if cl is capped else "no per-stream cap"
        n = cl.world_size
        for model in MODELS:
            sc = Scenario(load_model(model), cl)
            sim = sc.simulator
            for k in KS:
                a, b = sim.network.coeffs(k, False)
                t64 = float(a + b * 64 * MiB)
                busbw = 64 * MiB / t64 * 2 * (n - 1) / n * 8 / 1e9
                hvd = sim.run(dataclasses.replace(HOROVOD_DEFAULT, num_streams=k))
                flat, mflat = grid_best(sim, knob_grid("default", {"num_streams": [k], "hierarchical": [False]},
                                                       points=C.GRID_POINTS))
                anyh, many = grid_best(sim, knob_grid("default", {"num_streams": [k]}, points=C.GRID_POINTS))
                rows.append({
                    "model": model, "cap": cap, "streams": k, "busbw_64MiB_gbit": busbw,
                    "horovod_default_step_s": hvd.step_time_s, "tuned_flat_step_s": mflat["step_time_s"],
                    "tuned_any_step_s": many["step_time_s"], "tuned_flat_knobs": flat.describe(),
                    "tuned_any_knobs": anyh.describe(), "compute_s": sc.workload.compute_s,
                })
    C.write_csv("streams.csv", rows)
    C.write_json("streams.json", {"cluster": capped.to_dict(), "rows": rows})

    from commtune.plots import new_figure, styled

    fig = new_figure(12.0, 4.4)
    with styled():
        axes = fig.subplots(1, 3)
        caps = [("10 Gbit/s per stream", "C0"), ("no per-stream cap", "C1")]
        ax = axes[0]
        for cap, c in caps:
            rs = [r for r in rows if r["cap"] == cap and r["model"] == MODELS[0]]
            ax.plot(KS, [r["busbw_64MiB_gbit"] for r in rs], marker="o", color=c, label=cap)
        ax.axhline(32, color="0.4", ls=":", lw=1, label="link rate 32 Gbit/s")
        ax.set_xlabel("streams K")
        ax.set_ylabel("bus bandwidth (Gbit/s), 64 MiB incl. latency")
        ax.set_title("Network only: flat ring, 128 ranks")
        ax.set_ylim(0, 36)
        ax.legend(loc="lower right")
        for ax, model in zip(axes[1:], MODELS):
            for cap, c in caps:
                rs = [r for r in rows if r["cap"] == cap and r["model"] == model]
                ax.plot(KS, [r["horovod_default_step_s"] * 1e3 for r in rs], marker="^", ls="--", color=c)
                ax.plot(KS, [r["tuned_flat_step_s"] * 1e3 for r in rs], marker="o", ls="-", color=c)
                ax.plot(KS, [r["tuned_any_step_s"] * 1e3 for r in rs], marker="s", ls=":", color=c, mfc="none")
            ax.axhline(rs[0]["compute_s"] * 1e3, color="0.5", lw=1)
            ax.set_yscale("log")
            from commtune.plots import plain_log_axis

            plain_log_axis(ax.yaxis)
            ax.set_xlabel("streams K")
            ax.set_ylabel("step time (ms, log scale)")
            ax.set_title(f"{model}, 16 x 8 V100")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="C0", lw=3, label="10 Gbit/s per-stream cap"),
                   Line2D([], [], color="C1", lw=3, label="no per-stream cap"),
                   Line2D([], [], color="black", ls="--", marker="^", label="Horovod defaults + K streams"),
                   Line2D([], [], color="black", ls="-", marker="o", label="tuned (grid), flat all-reduce"),
                   Line2D([], [], color="black", ls=":", marker="s", mfc="none", label="tuned, flat or hierarchical"),
                   Line2D([], [], color="0.5", lw=1, label="compute only (fwd+bwd)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle("Streams on a 32 Gbit/s VPC: with the 10 Gbit/s per-stream cap (blue) and without (orange)")
    C.save(fig, "streams.png")

    def pick(model, cap, k):
        return next(r for r in rows if r["model"] == model and r["cap"] == cap and r["streams"] == k)

    table = []
    for model in MODELS:
        for cap, _ in caps:
            r1, r4, r8 = pick(model, cap, 1), pick(model, cap, 4), pick(model, cap, 8)
            bestk = min((pick(model, cap, k) for k in KS), key=lambda r: r["tuned_flat_step_s"])
            table.append({
                "model": model, "cap": cap,
                "h1": f"{r1['horovod_default_step_s'] * 1e3:.1f}", "h4": f"{r4['horovod_default_step_s'] * 1e3:.1f}",
                "t1": f"{r1['tuned_flat_step_s'] * 1e3:.1f}", "t4": f"{r4['tuned_flat_step_s'] * 1e3:.1f}",
                "t8": f"{r8['tuned_flat_step_s'] * 1e3:.1f}", "kbest": f"{bestk['streams']}",
                "a1": f"{r1['tuned_any_step_s'] * 1e3:.1f}", "a4": f"{r4['tuned_any_step_s'] * 1e3:.1f}",
            })
    bw = {cap: [pick(MODELS[0], cap, k)["busbw_64MiB_gbit"] for k in KS] for cap, _ in caps}
    rn_cap = (pick("resnet50", caps[0][0], 1), pick("resnet50", caps[0][0], 4))
    rn_nocap = (pick("resnet50", caps[1][0], 1), pick("resnet50", caps[1][0], 4))
    nodes = capped.nodes
    ring_lat_ms = 1e3 * (2 * (capped.world_size - nodes) * capped.intra_latency_s + 2 * (nodes - 1) * capped.inter_latency_s)
    md = f"""# Streams: 1-8, with and without a per-stream cap

`experiments/streams.py`; 16 x 8 V100 on `vpc-32gbit` (32 Gbit/s per node, 30 us), once with its 10 Gbit/s
per-stream cap and once without. Figure: `streams.png`; data: `streams.csv`.

Bus bandwidth (nccl-tests convention, algbw x 2(n-1)/n) of a 64 MiB flat ring all-reduce over 128 ranks, K = 1..8,
in Gbit/s (below 32 even without a cap because the ring's 2(n-1) latency steps, {ring_lat_ms:.2f} ms, are included):
- with cap: {", ".join(f"{v:.1f}" for v in bw[caps[0][0]])}
- no cap:   {", ".join(f"{v:.1f}" for v in bw[caps[1][0]])}

Step time (ms): Horovod defaults with K streams (hvd), best with K fixed and flat all-reduce (flat),
best with K fixed, hierarchical allowed (any):

{C.md_table(table, [("model", "model"), ("cap", "per-stream"), ("h1", "hvd K=1"), ("h4", "hvd K=4"),
                    ("t1", "flat K=1"), ("t4", "flat K=4"), ("t8", "flat K=8"), ("kbest", "best K (flat)"),
                    ("a1", "any K=1"), ("a4", "any K=4")])}

- With the cap, streams multiply the usable rate until K x 10 Gbit/s reaches the 32 Gbit/s link (K = 4): ResNet-50's
  tuned flat step drops from {rn_cap[0]['tuned_flat_step_s'] * 1e3:.1f} ms (K=1) to {rn_cap[1]['tuned_flat_step_s'] * 1e3:.1f} ms (K=4);
  more streams only add launch overhead (10 us each per collective).
- Without the cap, one stream already fills the link: {rn_nocap[0]['tuned_flat_step_s'] * 1e3:.1f} ms (K=1) vs
  {rn_nocap[1]['tuned_flat_step_s'] * 1e3:.1f} ms (K=4) — the same pattern as the emulated cluster (EMULATED-CLUSTER.md: more
  process groups help exactly when a per-flow cap binds).
- Hierarchical all-reduce makes streams nearly moot here: its 8 concurrent inter-node rings (one per local GPU) each
  get 32/8 = 4 Gbit/s < 10 Gbit/s, so the cap never binds.

**Conclusion:** streams are worth ~{rn_cap[0]['tuned_flat_step_s'] / rn_cap[1]['tuned_flat_step_s']:.1f}x on ResNet-50 step time (flat,
tuned) when a 10 Gbit/s per-stream cap binds on a 32 Gbit/s link, up to K = ceil(32/10) = 4, and nothing without a cap.
"""
    C.write_md("streams.md", md)
    print(md)


if __name__ == "__main__":
    main()
