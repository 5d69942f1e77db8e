"""Where the sharding knobs matter: step time and the best sharding against inter-node bandwidth (issue 26, 7(b)).

Claim: for Llama-3-8B on 16 x 8 H100 the best sharding and the gain of tuning over each framework's
defaults move with the inter-node bandwidth (10 to 400 Gbit/s): DDP does not fit an 80 GB GPU at all,
and tuned sharded configurations beat ZeRO-2's, FSDP2's and HSDP's defaults most on slow links (simulated).
Runs: ~2 min (24 searches of 30 trials). Root: no.
Writes: ``experiments/results/sharding_bandwidth.{md,json,png}``.

Scenario: ``llama3-8b`` (the zoo's Meta-Llama-3-8B shapes), sequence length 4096, batch 2 sequences
per GPU, bf16 compute, no activation checkpointing, Adam with mixed precision (the memory model's
default); 16 nodes x 8 H100 SXM5 80 GB (``devices.yaml``), NVSwitch inside a node (``nvlink-h100``),
the swept link per node with no per-stream cap and 10 us latency, so only the rate changes.

For each bandwidth and each sharding (DDP = ``none``, ZeRO-2 = ``grad``, FSDP = ``full``, HSDP =
``hybrid``):

* the framework's defaults (:data:`~commtune.knobs.DDP_DEFAULT`, :data:`~commtune.knobs.ZERO2_DEFAULT`,
  :data:`~commtune.knobs.FSDP2_DEFAULT`, and FSDP2's defaults with ``sharding: hybrid`` and the node as
  shard group for HSDP), simulated; its peak memory decides whether it fits (a step time is shown
  either way, marked);
* the tuned best: the search ``commtune search --sharding S`` runs (``commtune.tuning.search_scenario``
  on the space of :func:`commtune.sharding_checks.sharding_spaces`, auto sampler, 30 trials, seed 0,
  a temporary SQLite study), which never returns a configuration over the GPU's memory.

Options: ``--trials N``, ``--bandwidths 10gbit,100gbit`` (a quick look: it replaces the results too, so
set ``COMMTUNE_RESULTS=DIR`` to write elsewhere), ``--seed``. Bad input is one line and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (puts the repository on sys.path)

from commtune.errors import CommtuneError  # noqa: E402
from commtune.knobs import DDP_DEFAULT, FSDP2_DEFAULT, KNOBS, ZERO2_DEFAULT, Knobs  # noqa: E402

MODEL, NODES, GPUS, DEVICE, INTRA, LATENCY = "llama3-8b", 16, 8, "H100", "nvlink-h100", "10us"
SEQ_LEN, BATCH, PRECISION, CHECKPOINTING = 4096, 2, "bf16", False
BANDWIDTHS = ("10gbit", "25gbit", "50gbit", "100gbit", "200gbit", "400gbit")
#: At most this many bandwidths in one run (24 searches at six).
MAX_BANDWIDTHS = 12
TRIALS, SEED = 30, 0
#: Shardings within this fraction of the fastest are named together as the winners.
TIE = 0.01
#: The shardings compared, as ``search --sharding`` names them, and how the table names them.
SHARDINGS = {"none": "DDP", "grad": "ZeRO-2", "full": "FSDP", "hybrid": "HSDP"}
#: HSDP's defaults: FSDP2's, on a 2-D mesh whose shard group is the node (shard_group_size 0).
HSDP_DEFAULT = Knobs.from_dict({"sharding": "hybrid"}, base=FSDP2_DEFAULT)
DEFAULTS: dict[str, Knobs] = {"none": DDP_DEFAULT, "grad": ZERO2_DEFAULT, "full": FSDP2_DEFAULT,
                              "hybrid": HSDP_DEFAULT}


def make_scenario(bw: str):
    """The scenario at inter-node bandwidth ``bw`` (e.g. ``"50gbit"``): everything but the link rate fixed."""
    from commtune.cluster import make_cluster
    from commtune.models import load_model
    from commtune.scenario import Scenario

    cluster = make_cluster(bw=bw, nodes=NODES, gpus_per_node=GPUS, per_stream="none", latency=LATENCY,
                           intra=INTRA, device=DEVICE)
    return Scenario(load_model(MODEL, input_size=SEQ_LEN), cluster, batch_size=BATCH, precision=PRECISION,
                    activation_checkpointing=CHECKPOINTING)


def default_result(scenario, sharding: str) -> dict[str, Any]:
    """The framework defaults of ``sharding`` on ``scenario``: simulated step, peak memory per GPU, fits."""
    knobs = DEFAULTS[sharding]
    peak = int(scenario.memory(knobs).peak)
    return {"step_time_s": scenario.simulator.run(knobs).step_time_s, "peak_memory_bytes": peak,
            "fits": peak <= scenario.memory_limit_bytes(), "knobs": knobs.active()}


def tuned_result(scenario, sharding: str, storage: str, trials: int, seed: int, screen: int = 4096) -> dict[str, Any]:
    """The best of the search ``commtune search --sharding SHARDING`` runs on ``scenario``.

    ``step_time_s`` is None when no configuration of the space fits the GPU's memory."""
    from commtune.sharding_checks import check_space_sharding, sharding_spaces
    from commtune.tuning import search_scenario

    (_, space), = sharding_spaces(scenario, sharding)
    check_space_sharding(space, scenario.cluster)
    _, report = search_scenario(scenario, space, trials=trials, seed=seed, storage=storage, sampler="auto",
                                screen=screen)
    step = report["predicted_step_time_s"]
    fits = math.isfinite(step)
    return {"step_time_s": step if fits else None, "fits": fits,
            "peak_memory_bytes": report.get("peak_memory_bytes") if fits else None,
            "knobs": report["best_active"] if fits else None, "space": space.name, "trials": report["trials"],
            "infeasible_evaluations": report.get("infeasible_evaluations", 0)}


def sweep(bandwidths: list[str], trials: int, seed: int, storage: str, screen: int = 4096,
          log=None) -> list[dict[str, Any]]:
    """One row per (bandwidth, sharding): the defaults and the tuned best (see the module docstring)."""
    from commtune.units import parse_bandwidth

    rows = []
    for bw in bandwidths:
        scenario = make_scenario(bw)
        for sharding, label in SHARDINGS.items():
            t0 = time.monotonic()
            row = {"bw": bw, "bw_gbit": parse_bandwidth(bw, what="--bandwidths") * 8 / 1e9, "sharding": sharding,
                   "label": label, "default": default_result(scenario, sharding),
                   "tuned": tuned_result(scenario, sharding, storage, trials, seed, screen)}
            d, t = row["default"], row["tuned"]
            row["gain"] = d["step_time_s"] / t["step_time_s"] if d["fits"] and t["fits"] else None
            row["search_s"] = round(time.monotonic() - t0, 2)
            rows.append(row)
            if log:
                log(f"{bw:>8} {label:6} default {d['step_time_s']:8.3f} s{'' if d['fits'] else ' (no fit)':9} tuned "
                    + (f"{t['step_time_s']:8.3f} s" if t["fits"] else "no configuration fits")
                    + f"  [{row['search_s']:.1f} s]")
    return rows


def winners(rows: list[dict[str, Any]], which: str) -> dict[str, tuple[str, ...]]:
    """Per bandwidth, the shardings whose ``which`` (``default`` / ``tuned``) step is within :data:`TIE` of the
    fastest among those that fit, in :data:`SHARDINGS` order (empty when none fits)."""
    out: dict[str, tuple[str, ...]] = {}
    for bw in dict.fromkeys(r["bw"] for r in rows):
        fit = [r for r in rows if r["bw"] == bw and r[which]["fits"]]
        best = min((r[which]["step_time_s"] for r in fit), default=math.inf)
        near = {r["sharding"] for r in fit if r[which]["step_time_s"] <= best * (1 + TIE)}
        out[bw] = tuple(s for s in SHARDINGS if s in near)
    return out


def _ranges(winner: dict[str, tuple[str, ...]]) -> str:
    """``"FSDP at 10-50 Gbit/s, HSDP / FSDP at 100-400 Gbit/s"``: consecutive bandwidths with the same winners joined."""
    from commtune.units import parse_bandwidth

    runs: list[list] = []
    for bw, s in winner.items():
        if runs and runs[-1][0] == s:
            runs[-1][2] = bw
        else:
            runs.append([s, bw, bw])
    show = lambda bw: f"{parse_bandwidth(bw) * 8 / 1e9:g}"  # noqa: E731
    parts = []
    for s, lo, hi in runs:
        name = " / ".join(SHARDINGS[x] for x in s) if s else "nothing fits"
        span = show(lo) if lo == hi else f"{show(lo)}-{show(hi)}"
        parts.append(f"{name} at {span} Gbit/s")
    return "; ".join(parts)


def claim(rows: list[dict[str, Any]]) -> list[str]:
    """The findings, computed from ``rows``: winners by defaults and tuned, and each sharding's tuning gain."""
    from commtune.units import format_size

    tie = f"every sharding within {TIE:.0%} of the fastest"
    lines = [f"Best by framework defaults (among those that fit; {tie}): {_ranges(winners(rows, 'default'))}.",
             f"Best tuned ({tie}): {_ranges(winners(rows, 'tuned'))}."]
    for sharding, label in SHARDINGS.items():
        mine = [r for r in rows if r["sharding"] == sharding]
        gains = [r for r in mine if r["gain"] is not None]
        if not any(r["tuned"]["fits"] for r in mine):
            peak = max(r["default"]["peak_memory_bytes"] for r in mine)
            fast = [r for r in mine if r["default"]["step_time_s"] <= min(
                (x["default"]["step_time_s"] for x in rows if x["bw"] == r["bw"] and x["default"]["fits"]),
                default=math.inf)]
            beats = (f"; if memory allowed, its defaults would beat every sharded framework's defaults at "
                     f"{', '.join(r['bw'] for r in fast)}" if fast else "")
            lines.append(f"{label}: no configuration fits at any bandwidth (its defaults need {format_size(peak)} "
                         f"per GPU){beats}.")
        elif gains:
            lo, hi = min(gains, key=lambda r: r["gain"]), max(gains, key=lambda r: r["gain"])
            lines.append(f"{label}: tuning gains {lo['gain']:.2f}x ({lo['bw']}) to {hi['gain']:.2f}x ({hi['bw']}) over "
                         f"its defaults.")
        else:
            lines.append(f"{label}: its defaults do not fit; tuned configurations do.")
    for sharding, label in SHARDINGS.items():
        units = [(r["bw"], r["tuned"]["knobs"]["unit_bytes"]) for r in rows
                 if r["sharding"] == sharding and r["tuned"]["fits"]]
        if units:
            shown = ", ".join(f"{KNOBS['unit_bytes'].show(u) if u else 'one block'} at {bw}" for bw, u in units)
            lines.append(f"{label} tuned unit size: {shown}.")
    best_default = {bw: min((r["default"]["step_time_s"] for r in rows if r["bw"] == bw and r["default"]["fits"]),
                            default=None) for bw in dict.fromkeys(r["bw"] for r in rows)}
    best_tuned = {bw: min((r["tuned"]["step_time_s"] for r in rows if r["bw"] == bw and r["tuned"]["fits"]),
                          default=None) for bw in best_default}
    overall = {bw: best_default[bw] / best_tuned[bw] for bw in best_default if best_default[bw] and best_tuned[bw]}
    if overall:
        text = ", ".join(f"{g:.2f}x at {bw}" for bw, g in overall.items())
        lines.append(f"Best tuned vs best default that fits, per bandwidth: {text}.")
    return lines


def _fmt_step(res: dict[str, Any]) -> str:
    if res["step_time_s"] is None:
        return "no fit"
    return f"{res['step_time_s']:.3f}" + ("" if res["fits"] else " (no fit)")


def _fmt_mem(res: dict[str, Any]) -> str:
    from commtune.units import format_size

    return format_size(res["peak_memory_bytes"]) if res["peak_memory_bytes"] is not None else "-"


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table: bandwidth x sharding, default and tuned step, peak memory, fits, tuned knobs."""
    body = [{"bw": r["bw"], "sharding": r["label"], "dstep": _fmt_step(r["default"]), "dmem": _fmt_mem(r["default"]),
             "dfit": "yes" if r["default"]["fits"] else "no", "tstep": _fmt_step(r["tuned"]),
             "tmem": _fmt_mem(r["tuned"]), "tfit": "yes" if r["tuned"]["fits"] else "no",
             "gain": f"{r['gain']:.2f}x" if r["gain"] else "-",
             "knobs": ", ".join(f"{k}={KNOBS[k].show(v)}" for k, v in (r["tuned"]["knobs"] or {}).items() if k != "sharding") or "-"}
            for r in rows]
    cols = [("bw", "bandwidth"), ("sharding", "sharding"), ("dstep", "default step (s)"), ("dmem", "default peak"),
            ("dfit", "fits"), ("tstep", "tuned step (s)"), ("tmem", "tuned peak"), ("tfit", "fits"),
            ("gain", "tuning gain"), ("knobs", "tuned knobs")]
    return _common.md_table(body, cols)


def plot(rows: list[dict[str, Any]], compute_s: float | None = None) -> Path:
    """Step time against bandwidth, one colour per sharding: defaults dashed, tuned solid; no-fit points hollow;
    ``compute_s`` (the step's compute alone) dotted."""
    from commtune.plots import new_figure, styled

    fig = new_figure(8.0, 5.0)
    with styled():
        ax = fig.add_subplot()
        for i, (sharding, label) in enumerate(SHARDINGS.items()):
            mine = [r for r in rows if r["sharding"] == sharding]
            x = [r["bw_gbit"] for r in mine]
            d = [r["default"] for r in mine]
            fits_all = all(v["fits"] for v in d)
            ax.plot(x, [v["step_time_s"] for v in d], ls="--", color=f"C{i}", lw=1.3,
                    label=f"{label} defaults" + ("" if fits_all else " (hollow: does not fit)"))
            ax.scatter([xi for xi, v in zip(x, d) if not v["fits"]],
                       [v["step_time_s"] for v in d if not v["fits"]], facecolors="none", edgecolors=f"C{i}", s=28)
            t = [(xi, r["tuned"]["step_time_s"]) for xi, r in zip(x, mine) if r["tuned"]["fits"]]
            if t:
                ax.plot(*zip(*t), ls="-", marker="o", ms=4, color=f"C{i}", lw=1.8, label=f"{label} tuned")
        if compute_s is not None:
            ax.axhline(compute_s, color="0.4", ls=":", lw=1.2, label=f"compute only ({compute_s:.2f} s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({r["bw_gbit"] for r in rows})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("inter-node bandwidth per node (Gbit/s)")
        ax.set_ylabel("simulated step time (s)")
        ax.legend(fontsize=7, ncols=2)
        fig.suptitle(f"Llama-3-8B on {NODES} x {GPUS} H100 80 GB, batch {BATCH} x {SEQ_LEN} tokens/GPU, bf16: "
                     "DDP vs ZeRO-2 vs FSDP vs HSDP", fontsize=9)
    return _common.save(fig, "sharding_bandwidth.png")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, checked: bandwidths through the cluster's own limits, trials and seed through ``limits.py``."""
    from commtune.limits import RANGES
    from commtune.units import parse_bandwidth, split_list

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bandwidths", default=",".join(BANDWIDTHS), help="comma-separated link rates per node")
    p.add_argument("--trials", type=int, default=TRIALS, help=f"trials per search (default {TRIALS})")
    p.add_argument("--seed", type=int, default=SEED, help=f"sampler seed (default {SEED})")
    args = p.parse_args(argv)
    RANGES["trials"].check(args.trials, "--trials")
    RANGES["seed"].check(args.seed, "--seed")
    args.bandwidths = split_list(args.bandwidths, "--bandwidths")
    if len(args.bandwidths) > MAX_BANDWIDTHS:
        raise CommtuneError(f"--bandwidths: {len(args.bandwidths)} rates given; give at most {MAX_BANDWIDTHS}")
    for bw in args.bandwidths:
        RANGES["bandwidth"].check(parse_bandwidth(bw, what="--bandwidths"), "--bandwidths", repr(bw))
    if len(set(args.bandwidths)) != len(args.bandwidths):
        raise CommtuneError(f"--bandwidths {','.join(args.bandwidths)}: a rate appears twice; give each once")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except CommtuneError as e:
        print(f"sharding_bandwidth: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="commtune-sharding-bw-") as tmp:
        rows = sweep(args.bandwidths, args.trials, args.seed, f"sqlite:///{tmp}/studies.db", log=print)
    elapsed = time.monotonic() - t0
    found = claim(rows)
    scenario = make_scenario(args.bandwidths[0])
    result = {"scenario": {"model": MODEL, "seq_len": SEQ_LEN, "batch_per_gpu": BATCH, "precision": PRECISION,
                           "activation_checkpointing": CHECKPOINTING, "optimizer": "adam (mixed precision)",
                           "nodes": NODES, "gpus_per_node": GPUS, "device": DEVICE, "intra": INTRA,
                           "inter_latency": LATENCY, "per_stream_cap": None,
                           "device_memory_bytes": scenario.memory_limit_bytes(),
                           "compute_s": scenario.workload.compute_s},
              "search": {"trials": args.trials, "seed": args.seed, "sampler": "auto", "screen": 4096},
              "defaults": {s: k.active() for s, k in DEFAULTS.items()},
              "rows": rows, "claim": found, "elapsed_s": round(elapsed, 1)}
    _common.write_json("sharding_bandwidth.json", result)
    plot(rows, scenario.workload.compute_s)
    from commtune.units import format_size

    md = [f"# Where the sharding knobs matter: {MODEL} on {NODES} x {GPUS} {DEVICE} against bandwidth",
          "", "Simulated with `experiments/sharding_bandwidth.py` "
          f"({elapsed / 60:.1f} min on the 2-core machine). Scenario: Meta-Llama-3-8B shapes (zoo `{MODEL}`), "
          f"sequence length {SEQ_LEN}, batch {BATCH} sequences per GPU, {PRECISION} compute "
          f"({scenario.workload.compute_s:.2f} s of compute per step), "
          f"{'with' if CHECKPOINTING else 'no'} activation checkpointing, Adam with mixed precision; {NODES} nodes x "
          f"{GPUS} {DEVICE} ({format_size(scenario.memory_limit_bytes())} each), `{INTRA}` inside a node, the "
          f"swept link per node with no per-stream cap and {LATENCY} latency.",
          "", "Defaults: DDP's (25 MiB buckets), DeepSpeed ZeRO-2's (5e8-element buckets), FSDP2's (one unit per "
          "transformer block, reshard after forward, prefetch 1, fp32 reduce), HSDP = FSDP2's with the node as "
          "shard group. Tuned: the search `commtune search --sharding S` runs (`search_scenario` on the space of "
          f"`sharding_spaces`: DDP `default`, ZeRO-2 `zero` pinned to grad, FSDP `fsdp`, HSDP `hsdp`), auto sampler, "
          f"{args.trials} trials, seed {args.seed}; configurations over the GPU's memory are never returned. "
          "A default that does not fit still shows its simulated step, marked (no fit). "
          "Tuning gain = default step / tuned step, where both fit. Figure: `sharding_bandwidth.png` "
          "(defaults dashed, hollow where they do not fit; tuned solid).",
          "", table(rows), "", "## Claim", ""] + [f"- {line}" for line in found]
    _common.write_md("sharding_bandwidth.md", "\n".join(md))
    print("\n".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
