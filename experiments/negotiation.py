"""Rank-0 coordinator vs decentralized negotiation from 8 to 1024 ranks.

Claim: decentralized negotiation cuts rank 0's messages per round from 2(n-1) to 2 ceil(log2 n) (254 vs 14 at 128 ranks) and, re-tuned, is faster than Horovod's uncached coordinator at scale (simulated).
Runs: ~20 s. Root: no.
Writes: ``experiments/results/negotiation.{md,json,csv,png}``.

Horovod's coordinator: every loop tick rank 0 receives a readiness request
from, and sends a response to, each other rank: 2(n-1) messages in series
(the seed's "hot spot of 256 messages at 128 ranks": 2 x 127 = 254). The
decentralized bit-vector all-reduce needs 2 ceil(log2 n) latency-bound steps
and no rank handles more than 2 ceil(log2 n) messages. Multi-gradient
negotiation (one round per tick for every gradient ready by then, as
Horovod's loop does) is compared with one round per gradient.

Tuned = best of the grid over the ``horovod`` search space (fusion
threshold, cycle, streams, hierarchical; ``C.GRID_POINTS`` per range) with
negotiation fixed per column and wire precision fp32/fp16 added as an
explicit override (the Horovod space does not search it; the comparison
keeps fp16 compression available as before).

Cluster: the 32 Gbit/s VPC preset (30 us latency, 5 us per coordinator
message), 8 GPUs per node, 1..128 nodes; ResNet-50, batch 64/GPU. The
coordinator is studied without Horovod's response cache (``response_cache``
off: Horovod < 0.16.2, or every cache miss); with the cache (the preset's
default, Horovod's since 0.16.2) a steady-state central round is the same
bit-vector all-reduce as the decentralized one, reported as a last column.
Writes results/negotiation.{csv,json,md,png}.
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
from simulators.system import negotiation_messages_rank0, negotiation_time_s

NODES = [1, 2, 4, 8, 16, 32, 64, 128]
GPUS = 8
MODEL = "resnet50"
#: Not in the horovod search space: varied explicitly (see the summary).
WIRE = {"wire_precision": ["fp32", "fp16"]}


def main() -> None:
    model = load_model(MODEL)
    rows = []
    for nodes in NODES:
        cached_cluster = preset("vpc-32gbit", nodes, GPUS)
        sc = Scenario(model, dataclasses.replace(cached_cluster, response_cache=False))
        sim, cl = sc.simulator, sc.cluster
        cached = Scenario(model, cached_cluster).simulator.run(HOROVOD_DEFAULT)
        n = cl.world_size
        lat = sim.network.control_latency_s()
        tensors = len(sc.workload.numel)
        central = sim.run(HOROVOD_DEFAULT)
        decentral = sim.run(dataclasses.replace(HOROVOD_DEFAULT, negotiation="decentralized"))
        rounds = central.negotiation_msgs_rank0 / max(1, int(negotiation_messages_rank0(True, n)))
        tc, mc = grid_best(sim, knob_grid("horovod", {"negotiation": ["central"], **WIRE}, points=C.GRID_POINTS))
        td, md_ = grid_best(sim, knob_grid("horovod", {"negotiation": ["decentralized"], **WIRE}, points=C.GRID_POINTS))
        per_c, per_d = int(negotiation_messages_rank0(True, n)), int(negotiation_messages_rank0(False, n))
        rows.append({
            "nodes": nodes, "ranks": n,
            "msgs_per_round_rank0_central": per_c, "msgs_per_round_rank0_decentral": per_d,
            "msgs_per_round_total_central": 2 * (n - 1), "msgs_per_round_total_decentral": n * math.ceil(math.log2(n)),
            "round_s_central": float(negotiation_time_s(True, n, lat, cl.coord_msg_s)),
            "round_s_decentral": float(negotiation_time_s(False, n, lat, cl.coord_msg_s)),
            "tensors": tensors, "rounds_per_step_hvd": rounds,
            "msgs_per_step_rank0_per_tensor_central": tensors * per_c,
            "msgs_per_step_rank0_central": central.negotiation_msgs_rank0,
            "msgs_per_step_rank0_decentral": decentral.negotiation_msgs_rank0,
            "negotiation_s_per_step_central": central.negotiation_s,
            "negotiation_s_per_step_decentral": decentral.negotiation_s,
            "step_s_hvd_central": central.step_time_s, "step_s_hvd_decentral": decentral.step_time_s,
            "step_s_hvd_central_cached": cached.step_time_s,
            "flat_ring_latency_s": 2 * (n - cl.nodes) * cl.intra_latency_s + 2 * (cl.nodes - 1) * cl.inter_latency_s,
            "buffers_hvd_central": central.num_buffers, "buffers_hvd_decentral": decentral.num_buffers,
            "step_s_tuned_central": mc["step_time_s"], "step_s_tuned_decentral": md_["step_time_s"],
            "tuned_central_knobs": tc.describe(), "tuned_decentral_knobs": td.describe(),
            "compute_s": sc.workload.compute_s,
        })
    C.write_csv("negotiation.csv", rows)
    C.write_json("negotiation.json", {"cluster": "vpc-32gbit", "gpus_per_node": GPUS, "model": MODEL, "rows": rows})

    from matplotlib.ticker import NullLocator

    from commtune.plots import new_figure, plain_log_axis, styled

    ranks = [r["ranks"] for r in rows]
    fig = new_figure(12.5, 4.6)
    with styled():
        a1, a2, a3 = fig.subplots(1, 3)
        a1.plot(ranks, [r["msgs_per_round_rank0_central"] for r in rows], "o-", color="C3", label="rank-0 coordinator: 2(n-1)")
        a1.plot(ranks, [r["msgs_per_round_rank0_decentral"] for r in rows], "s-", color="C2", label="decentralized: 2 ceil(log2 n)")
        r128 = next(r for r in rows if r["ranks"] == 128)
        a1.annotate(f"128 ranks: {r128['msgs_per_round_rank0_central']} msgs\n(seed: ~256 hot spot)",
                    (128, r128["msgs_per_round_rank0_central"]), xytext=(12, 700), textcoords="data",
                    arrowprops=dict(arrowstyle="->", color="0.3"), fontsize=8.5)
        a1.set_ylabel("messages at the busiest rank per round")
        a1.set_title("Per negotiation round")
        a2.plot(ranks, [r["msgs_per_step_rank0_per_tensor_central"] for r in rows], "^--", color="C3", mfc="none",
                label="coordinator, one round per gradient")
        a2.plot(ranks, [r["msgs_per_step_rank0_central"] for r in rows], "o-", color="C3",
                label="coordinator, multi-gradient (1 ms ticks)")
        a2.plot(ranks, [r["msgs_per_step_rank0_decentral"] for r in rows], "s-", color="C2",
                label="decentralized, multi-gradient (1 ms ticks)")
        a2.set_ylabel("messages at the busiest rank per step")
        a2.set_title("Per training step (Horovod defaults otherwise)")
        for key, label, c, mk, ls in (("step_s_hvd_central", "Horovod defaults (coordinator)", "C3", "o", "--"),
                                      ("step_s_hvd_decentral", "Horovod defaults + decentralized", "C2", "s", "--"),
                                      ("step_s_tuned_central", "tuned dynamic, coordinator", "C3", "o", "-"),
                                      ("step_s_tuned_decentral", "tuned dynamic, decentralized", "C2", "s", "-")):
            a3.plot(ranks, [r[key] * 1e3 for r in rows], marker=mk, ls=ls, color=c, label=label)
        a3.axhline(rows[0]["compute_s"] * 1e3, color="0.5", lw=1, label="compute only")
        a3.set_ylabel("step time (ms)")
        a3.set_title(f"Step time, {MODEL} on the 32 Gbit/s VPC")
        for ax in (a1, a2, a3):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ranks, [str(x) for x in ranks])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("ranks (8 GPUs per node)")
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
            ax.legend(loc="upper left", fontsize=7.5)
        a1.set_ylim(top=5000)
        fig.suptitle("Negotiation: rank-0 coordinator vs decentralized bit-vector all-reduce")
    C.save(fig, "negotiation.png")

    tab = [{
        "ranks": r["ranks"], "pc": r["msgs_per_round_rank0_central"], "pd": r["msgs_per_round_rank0_decentral"],
        "rc": f"{r['round_s_central'] * 1e6:.0f}", "rd": f"{r['round_s_decentral'] * 1e6:.0f}",
        "rounds": f"{r['rounds_per_step_hvd']:.0f}",
        "sg": f"{r['msgs_per_step_rank0_per_tensor_central']:,}", "sc": f"{r['msgs_per_step_rank0_central']:,}",
        "sd": f"{r['msgs_per_step_rank0_decentral']:,}",
        "bc": r["buffers_hvd_central"], "bd": r["buffers_hvd_decentral"],
        "hc": f"{r['step_s_hvd_central'] * 1e3:.1f}", "hd": f"{r['step_s_hvd_decentral'] * 1e3:.1f}",
        "tc": f"{r['step_s_tuned_central'] * 1e3:.1f}", "td": f"{r['step_s_tuned_decentral'] * 1e3:.1f}",
    } for r in rows]
    r1024 = rows[-1]
    md = f"""# Negotiation: rank-0 coordinator vs decentralized, 8 to 1024 ranks

`experiments/negotiation.py`; {MODEL} (161 gradient tensors), batch 64/GPU, `vpc-32gbit` (30 us latency, 5 us
per coordinator message), 8 GPUs per node. Figure: `negotiation.png`; data: `negotiation.csv`.

Columns: messages at the busiest rank per round (coordinator / decentralized), time of one round (us), rounds per
step with Horovod's 1 ms loop, messages at the busiest rank per step (coordinator with one round per gradient /
coordinator multi-gradient / decentralized multi-gradient), fused buffers and step time with Horovod defaults (coordinator /
decentralized) and with the best configuration under each negotiation: grid over the `horovod` search space (fusion
threshold, cycle time, streams, hierarchical; {C.GRID_POINTS} points per range) plus wire precision fp32/fp16, which
that space does not search and is added here as an explicit override (`commtune.plots.gridsearch.knob_grid`).

{C.md_table(tab, [("ranks", "ranks"), ("pc", "msgs/round coord."), ("pd", "msgs/round dec."), ("rc", "round coord. (us)"),
                  ("rd", "round dec. (us)"), ("rounds", "rounds/step"), ("sg", "msgs/step per-gradient coord."),
                  ("sc", "msgs/step coord."), ("sd", "msgs/step dec."), ("bc", "buffers hvd coord."),
                  ("bd", "buffers hvd dec."), ("hc", "step hvd coord. (ms)"),
                  ("hd", "step hvd dec. (ms)"), ("tc", "step tuned coord. (ms)"), ("td", "step tuned dec. (ms)")])}

- Hot spot: at 128 ranks rank 0 handles 2 x 127 = {r128['msgs_per_round_rank0_central']} messages per round (the seed's "256"),
  decentralized {r128['msgs_per_round_rank0_decentral']} ({r128['msgs_per_round_rank0_central'] / r128['msgs_per_round_rank0_decentral']:.0f}x fewer); a coordinator round takes
  {r128['round_s_central'] * 1e6:.0f} us, longer than the 1 ms cycle, so the loop slows to one tick per round.
- Traffic at the busiest rank per step, 128 ranks: {r128['msgs_per_step_rank0_per_tensor_central']:,} (coordinator, one round per gradient)
  -> {r128['msgs_per_step_rank0_central']:,} (coordinator, multi-gradient: {r128['rounds_per_step_hvd']:.0f} rounds for 161 gradients)
  -> {r128['msgs_per_step_rank0_decentral']:,} (decentralized, multi-gradient): {r128['msgs_per_step_rank0_central'] / max(1, r128['msgs_per_step_rank0_decentral']):.0f}x less than the coordinator with
  multi-gradient rounds and {r128['msgs_per_step_rank0_per_tensor_central'] / max(1, r128['msgs_per_step_rank0_decentral']):.0f}x less than per-gradient — the seed's "about one order of magnitude"
  holds for the busiest rank. Cluster-wide the decentralized scheme sends more messages per round (n log2 n =
  {r128['msgs_per_round_total_decentral']:,} vs 2(n-1) = {r128['msgs_per_round_total_central']}); the gain is that no rank is a serial bottleneck.
- Step time, Horovod defaults otherwise (1 ms cycle, 128 MiB, one stream, flat ring): switching to decentralized
  makes the step *slower* in this model — {r128['step_s_hvd_central'] * 1e3:.1f} -> {r128['step_s_hvd_decentral'] * 1e3:.1f} ms at 128 ranks,
  {r1024['step_s_hvd_central'] * 1e3:.1f} -> {r1024['step_s_hvd_decentral'] * 1e3:.1f} ms at 1024. The coordinator's slow rounds
  ({r128['round_s_central'] * 1e3:.2f} ms at 128, {r1024['round_s_central'] * 1e3:.1f} ms at 1024 ranks) stretch the loop period, so each tick fuses
  more gradients ({r128['buffers_hvd_central']} buffers at 128 ranks, {r1024['buffers_hvd_central']} at 1024); fast decentralized rounds keep 1 ms
  ticks and split the step into {r128['buffers_hvd_decentral']} / {r1024['buffers_hvd_decentral']} buffers, each paying the flat ring's 2(n-1)
  latency steps ({r128['flat_ring_latency_s'] * 1e3:.2f} ms at 128 ranks, {r1024['flat_ring_latency_s'] * 1e3:.2f} ms at 1024: NCCL's hop count, intra-node
  hops at the NVLink latency). Negotiation and fusion granularity must be tuned together.
- With Horovod's response cache (on by default since 0.16.2) the steady-state central round is the bit-vector
  all-reduce: Horovod's defaults then take {r128['step_s_hvd_central_cached'] * 1e3:.1f} ms at 128 ranks and
  {r1024['step_s_hvd_central_cached'] * 1e3:.1f} ms at 1024 (= the decentralized column), so in steady state the
  coordinator's hot spot is only a cache-miss cost.
- Tuned (Horovod-space grid + fp32/fp16 wire override, per negotiation): decentralized wins, {r128['step_s_tuned_central'] * 1e3:.1f} -> {r128['step_s_tuned_decentral'] * 1e3:.1f} ms
  at 128 ranks and {r1024['step_s_tuned_central'] * 1e3:.1f} -> {r1024['step_s_tuned_decentral'] * 1e3:.1f} ms at 1024
  ({(1 - r1024['step_s_tuned_decentral'] / r1024['step_s_tuned_central']) * 100:.0f}% faster).

**Conclusion:** decentralized negotiation removes the rank-0 hot spot ({r128['msgs_per_round_rank0_central']} -> {r128['msgs_per_round_rank0_decentral']} messages per round at 128 ranks,
{r1024['msgs_per_round_rank0_central']} -> {r1024['msgs_per_round_rank0_decentral']} at 1024) and cuts the busiest rank's negotiation traffic per step
{r128['msgs_per_step_rank0_central'] / max(1, r128['msgs_per_step_rank0_decentral']):.0f}x at 128 ranks (the seed's order of magnitude); it shortens the step only with a re-tuned cycle and
threshold ({(1 - r128['step_s_tuned_decentral'] / r128['step_s_tuned_central']) * 100:.1f}% at 128, {(1 - r1024['step_s_tuned_decentral'] / r1024['step_s_tuned_central']) * 100:.0f}% at 1024 ranks) — with Horovod's 1 ms default cycle it fragments
fusion and slows the step.
"""
    C.write_md("negotiation.md", md)
    print(md)


if __name__ == "__main__":
    main()
