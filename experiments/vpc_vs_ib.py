"""Can tuned communication make a 32 Gbit/s VPC match 100 Gbit/s InfiniBand?

Claim: tuned communication makes ResNet-50 on 16 x 8 V100 over the 32 Gbit/s VPC as fast as 100 Gbit/s InfiniBand with DDP's defaults (simulated; the seed's story).
Runs: ~15 s. Root: no.
Writes: ``experiments/results/vpc_vs_ib.{md,json,csv,png}`` (+ ``vpc_vs_ib_timeline_{default,tuned}.png``).

The seed (AIACC DAWNBench write-up) trained ResNet-50 on 128 V100 (16 x 8) over
a 32 Gbit/s VPC whose single NCCL stream reaches ~10 Gbit/s, and beat the
previous record set on 100 Gbit/s InfiniBand. Here, in the simulator:

* VPC (``vpc-32gbit``: 32 Gbit/s, 10 Gbit/s per stream, 30 us) with PyTorch
  DDP defaults and with Horovod defaults;
* VPC tuned: exhaustive grid over the ``default`` search space (both fusion
  policies, 1 MiB..1 GiB threshold, cycle, 1..8 streams, negotiation,
  hierarchical, fp16 wire; ``C.GRID_POINTS`` per range, ~42k configurations,
  one ``run_batch`` call), and the best within restricted spaces (an
  ablation: which knob matters; the ``ddp`` and ``horovod`` search spaces);
* InfiniBand (``ib-100g``: 100 Gbit/s, no per-stream cap, 5 us) with the
  same defaults (and tuned, for reference).

Writes results/vpc_vs_ib.{json,csv,md} and vpc_vs_ib.png (+ timelines).
"""
from __future__ import annotations


import _common as C

from commtune.cluster import preset
from commtune.knobs import DDP_DEFAULT, HOROVOD_DEFAULT, Knobs
from commtune.models import load_model
from commtune.plots.gridsearch import grid_best, knob_grid
from commtune.scenario import Scenario
from simulators.bounds import step_lower_bound_s

MODEL, NODES, GPUS, BATCH = "resnet50", 16, 8, 64


def row(label: str, network: str, knobs: Knobs, r) -> dict:
    return {"label": label, "network": network, "step_time_s": r.step_time_s,
            "scaling_efficiency": r.scaling_efficiency, "samples_per_s": r.samples_per_s,
            "exposed_comm_s": r.exposed_comm_s, "num_buffers": r.num_buffers, "knobs": knobs.describe()}


def main() -> None:
    model = load_model(MODEL)
    vpc = Scenario(model, preset("vpc-32gbit", NODES, GPUS), batch_size=BATCH)
    ib = Scenario(model, preset("ib-100g", NODES, GPUS), batch_size=BATCH)
    grid = knob_grid("default", points=C.GRID_POINTS)
    rows = []
    best = {}
    for name, sc in (("VPC 32G", vpc), ("IB 100G", ib)):
        for label, k in (("DDP defaults", DDP_DEFAULT), ("Horovod defaults", HOROVOD_DEFAULT)):
            rows.append(row(f"{name}, {label}", sc.cluster.name, k, sc.simulator.run(k)))
        k, _ = grid_best(sc.simulator, grid)
        best[name] = k
        rows.append(row(f"{name}, tuned (grid, {len(grid):,} configs)", sc.cluster.name, k, sc.simulator.run(k)))

    # Ablation on the VPC: the best configuration when one knob is held back.
    ablations = {
        "tuned, fp32 wire only": dict(overrides={"wire_precision": ["fp32"]}),
        "tuned, flat all-reduce only": dict(overrides={"hierarchical": [False]}),
        "tuned, 1 stream only": dict(overrides={"num_streams": [1]}),
        "tuned, flat + fp32 (fusion, streams, cycle, negotiation)": dict(overrides={"hierarchical": [False], "wire_precision": ["fp32"]}),
        "tuned, DDP space (static buckets, streams, fp16)": dict(space="ddp"),
        "tuned, Horovod space (dynamic: fusion, cycle, streams, hierarchical)": dict(space="horovod"),
    }
    abl_rows = []
    for label, kw in ablations.items():
        arrays = knob_grid(kw.get("space", "default"), kw.get("overrides"), points=C.GRID_POINTS)
        k, _ = grid_best(vpc.simulator, arrays)
        abl_rows.append(row(f"VPC 32G, {label}", "vpc-32gbit", k, vpc.simulator.run(k)))

    ib_ref = next(r for r in rows if r["label"] == "IB 100G, DDP defaults")["step_time_s"]
    ib_hvd = next(r for r in rows if r["label"] == "IB 100G, Horovod defaults")["step_time_s"]
    for r in rows + abl_rows:
        r["vs_ib_ddp_default"] = r["step_time_s"] / ib_ref
    lb_vpc = step_lower_bound_s(vpc.workload, vpc.simulator.network, max_streams=8)
    lb_ib = step_lower_bound_s(ib.workload, ib.simulator.network, max_streams=8)
    w = vpc.workload
    data = {
        "scenario": {"model": MODEL, "nodes": NODES, "gpus_per_node": GPUS, "batch_size_per_gpu": BATCH,
                     "precision": "amp", "device": "V100", "forward_s": w.forward_s, "backward_s": w.backward_s,
                     "grad_bytes": w.total_grad_bytes, "vpc": vpc.cluster.to_dict(), "ib": ib.cluster.to_dict()},
        "lower_bound_s": {"vpc": lb_vpc, "ib": lb_ib},
        "results": rows, "ablation": abl_rows,
        "best_knobs": {k: v.to_dict() for k, v in best.items()},
    }
    C.write_json("vpc_vs_ib.json", data)
    C.write_csv("vpc_vs_ib.csv", [{k: v for k, v in r.items()} for r in rows + abl_rows])

    # ---- figure: step time bars, efficiency annotated
    from commtune.plots import new_figure, styled

    fig = new_figure(9.0, 5.6)
    short_labels = {
        "VPC 32G, DDP defaults": "VPC: DDP defaults",
        "VPC 32G, Horovod defaults": "VPC: Horovod defaults",
        "IB 100G, DDP defaults": "IB: DDP defaults",
        "IB 100G, Horovod defaults": "IB: Horovod defaults",
        "VPC 32G, tuned, fp32 wire only": "VPC tuned, fp32 wire only",
        "VPC 32G, tuned, flat all-reduce only": "VPC tuned, flat all-reduce only",
        "VPC 32G, tuned, 1 stream only": "VPC tuned, 1 stream only",
        "VPC 32G, tuned, flat + fp32 (fusion, streams, cycle, negotiation)": "VPC tuned, flat + fp32 wire",
    }
    with styled():
        ax = fig.add_subplot()
        ax.grid(axis="y", visible=False)
        show = rows + abl_rows[:4]
        labels = [short_labels.get(r["label"], r["label"].split(" (grid")[0].replace("VPC 32G, ", "VPC ").replace("IB 100G, ", "IB "))
                  for r in show]
        colors = []
        for r in show:
            if r["network"] != "vpc-32gbit":
                colors.append("C1")
            elif "tuned" in r["label"]:
                colors.append("C2" if "grid" in r["label"] else "#98d49a")
            else:
                colors.append("C0")
        y = list(range(len(show)))[::-1]
        ax.barh(y, [r["step_time_s"] * 1e3 for r in show], color=colors, edgecolor="black", lw=0.5)
        for yi, r in zip(y, show):
            ax.text(r["step_time_s"] * 1e3 + 5, yi, f"{r['step_time_s'] * 1e3:.1f} ms | eff {r['scaling_efficiency']:.0%} | "
                    f"{r['samples_per_s'] / 1e3:.0f}k samples/s", va="center", fontsize=8)
        ax.axvline(ib_ref * 1e3, color="C1", ls="--", lw=1.2, label=f"IB 100G with DDP defaults ({ib_ref * 1e3:.1f} ms)")
        ax.axvline(w.compute_s * 1e3, color="0.4", ls=":", lw=1.2, label=f"compute only, perfect overlap ({w.compute_s * 1e3:.1f} ms)")
        ax.set_yticks(y, labels, fontsize=9)
        ax.set_xlabel("simulated step time (ms) — ResNet-50, 16 x 8 V100, batch 64/GPU")
        ax.set_xlim(0, max(r["step_time_s"] for r in show) * 1e3 * 1.6)
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("32 Gbit/s VPC (10 Gbit/s per stream) vs 100 Gbit/s InfiniBand: defaults vs tuned")
    C.save(fig, "vpc_vs_ib.png")

    from commtune.plots.timeline import plot_timeline

    C.save(plot_timeline(vpc, HOROVOD_DEFAULT, title="VPC 32G, Horovod defaults (128 MiB, 1 ms, 1 stream, flat, fp32)"),
           "vpc_vs_ib_timeline_default.png")
    C.save(plot_timeline(vpc, best["VPC 32G"], title=f"VPC 32G, tuned: {short(best['VPC 32G'])}"),
           "vpc_vs_ib_timeline_tuned.png")

    # ---- summary
    def fmt(rs):
        return [{"label": r["label"], "step": f"{r['step_time_s'] * 1e3:.1f}", "eff": f"{r['scaling_efficiency']:.1%}",
                 "sps": f"{r['samples_per_s']:,.0f}", "ratio": f"{r['vs_ib_ddp_default']:.2f}x", "knobs": r["knobs"]}
                for r in rs]
    cols = [("label", "configuration"), ("step", "step (ms)"), ("eff", "scaling eff."), ("sps", "samples/s"),
            ("ratio", "vs IB DDP default"), ("knobs", "knobs")]
    tuned = next(r for r in rows if r["label"].startswith("VPC 32G, tuned"))
    vdd = next(r for r in rows if r["label"] == "VPC 32G, DDP defaults")
    vhd = next(r for r in rows if r["label"] == "VPC 32G, Horovod defaults")
    flat32 = abl_rows[3]
    n = NODES * GPUS
    vc = vpc.cluster
    ring_lat_s = 2 * (n - NODES) * vc.intra_latency_s + 2 * (NODES - 1) * vc.inter_latency_s  # NCCL's hop count
    ring_bytes_s = 2 * (n - 1) / n * w.total_grad_bytes / vpc.cluster.per_stream_Bps
    best_ib = next(r for r in rows if r["label"].startswith("IB 100G, tuned"))["step_time_s"]
    verdict = ("matches" if tuned["step_time_s"] <= ib_ref * 1.02 else "does not match")
    # a knob family is needed when holding it back costs more than 2 % over the full optimum
    cost = {name: abl_rows[i]["step_time_s"] / tuned["step_time_s"] - 1
            for i, name in ((0, "fp16 wire compression"), (1, "hierarchical all-reduce"), (2, "more than one stream"))}
    needed = [name for name, c in cost.items() if c > 0.02]
    needs = (" and ".join(needed) if needed else "none of fp16, hierarchy or streams alone")
    held = "; ".join(f"without {name} {c:+.1%}" for name, c in cost.items())
    consistent = "consistent with" if verdict == "matches" else "short of"
    md = f"""# VPC 32 Gbit/s vs InfiniBand 100 Gbit/s (ResNet-50, 16 x 8 V100)

Simulated with `experiments/vpc_vs_ib.py` (batch 64/GPU, AMP; compute {w.compute_s * 1e3:.1f} ms per step =
{w.forward_s * 1e3:.1f} forward + {w.backward_s * 1e3:.1f} backward; {w.total_grad_bytes / 2**20:.1f} MiB of fp32 gradients in
{len(w.numel)} tensors). VPC = `vpc-32gbit` (32 Gbit/s per node, 10 Gbit/s per stream, 30 us); IB = `ib-100g`
(100 Gbit/s, no per-stream cap, 5 us). Tuned = best of an exhaustive grid of {len(grid):,} configurations
(`commtune.plots.gridsearch` over the `default` search space, {C.GRID_POINTS} points per numeric range; the ablation's
DDP and Horovod rows use the `ddp` and `horovod` spaces as defined in `search_spaces/`). Lower bound on the step time (any knobs): VPC {lb_vpc * 1e3:.1f} ms,
IB {lb_ib * 1e3:.1f} ms.

{C.md_table(fmt(rows), cols)}

Ablation on the VPC (best configuration with one knob family held back):

{C.md_table(fmt(abl_rows), cols)}

Figures: `vpc_vs_ib.png` (step times), `vpc_vs_ib_timeline_default.png` / `vpc_vs_ib_timeline_tuned.png`.

- With defaults the VPC is {vdd['step_time_s'] / ib_ref:.1f}x (DDP) and {vhd['step_time_s'] / ib_ref:.1f}x (Horovod) slower
  than IB with DDP defaults. One stream moves at most 10 Gbit/s, so a flat ring needs {ring_bytes_s * 1e3:.0f} ms just for
  the bytes; and every flat-ring all-reduce over {NODES * GPUS} ranks pays 2(n-1)·alpha = {ring_lat_s * 1e3:.1f} ms of latency,
  which Horovod's 1 ms cycle multiplies by {vhd['num_buffers']} buffers (DDP's 25 MiB buckets: {vdd['num_buffers']}).
- Tuned, the VPC reaches {tuned['step_time_s'] * 1e3:.1f} ms ({tuned['scaling_efficiency']:.1%} scaling efficiency,
  {tuned['samples_per_s']:,.0f} samples/s) against {ib_ref * 1e3:.1f} ms on IB with DDP defaults and {ib_hvd * 1e3:.1f} ms with
  Horovod defaults.
- Without fp16 on the wire and hierarchical all-reduce (fusion, streams, cycle, negotiation only) the VPC's best is
  {flat32['step_time_s'] * 1e3:.1f} ms ({flat32['vs_ib_ddp_default']:.2f}x IB); with only one of the two,
  {abl_rows[0]['step_time_s'] * 1e3:.1f} ms (fp32 wire) / {abl_rows[1]['step_time_s'] * 1e3:.1f} ms (flat). Held back one
  at a time: {held}. fp16 halves the inter-node bytes; the per-stream cap can be sidestepped either way
  (hierarchical all-reduce runs 8 concurrent inter-node rings, each on 1/8 of the data; a flat ring uses K streams).
- Within the frameworks' own spaces (`search_spaces/`): the DDP space (static buckets, streams, fp16 hook, flat)
  reaches {abl_rows[4]['step_time_s'] * 1e3:.1f} ms ({abl_rows[4]['vs_ib_ddp_default']:.2f}x IB), the Horovod space (dynamic fusion,
  cycle, streams, hierarchical; fp32 wire and the coordinator as in Horovod's defaults) {abl_rows[5]['step_time_s'] * 1e3:.1f} ms
  ({abl_rows[5]['vs_ib_ddp_default']:.2f}x IB; the Horovod space keeps fp32 on the wire).

**Conclusion:** in the simulator, tuned communication on the 32 Gbit/s VPC {verdict} 100 Gbit/s InfiniBand with
default knobs for ResNet-50 on 128 V100 ({tuned['step_time_s'] * 1e3:.1f} vs {ib_ref * 1e3:.1f} ms per step), {consistent}
the seed's claim (tuned IB is {best_ib * 1e3:.1f} ms; the tuned VPC is {(tuned['step_time_s'] / best_ib - 1) * 100:.1f}% above it). The knob
families it needs (holding one back costs > 2 %): {needs}; fusion, streams, cycle and negotiation alone leave it
{flat32['vs_ib_ddp_default']:.2f}x slower than IB with defaults.
"""
    C.write_md("vpc_vs_ib.md", md)
    print(md)


def short(k: Knobs) -> str:
    from commtune.units import format_size

    parts = [k.fusion_policy, format_size(k.fusion_threshold_bytes)]
    if k.fusion_policy == "static":
        parts.append(f"first {format_size(k.first_bucket_bytes)}")
    else:
        parts += [f"cycle {k.cycle_time_ms:g} ms", k.negotiation]
    parts += [f"{k.num_streams} stream(s)", "hierarchical" if k.hierarchical else "flat", f"{k.wire_precision} wire"]
    return ", ".join(parts)


if __name__ == "__main__":
    main()
