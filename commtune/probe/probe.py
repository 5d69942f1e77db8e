"""``commtune probe``: measure all-reduce (and all-gather, reduce-scatter) against size and streams, fit,
write a calibration file.

Entry points: :func:`parse_sizes`, :func:`run_probe` (launch ranks or run as
one rank under torchrun/mpiexec), :func:`calibration` (records -> ClusterSpec +
``fit`` section), :func:`format_table` (nccl-tests style), :func:`write_calibration`.
"""
from __future__ import annotations

import dataclasses
import math
import platform
from datetime import datetime, timezone
from typing import Sequence

from commtune import __version__
from commtune.cluster import ClusterSpec, save_cluster_file
from commtune.errors import CommtuneError
from commtune.probe.allreduce import SHARDED_COLLECTIVES
from commtune.probe.fit import (algbw, busbw, derive_link, fit_bound_sharpness, fit_gap_model, fit_host,
                                fit_latency_bound, fit_measurements, fit_pipelining, model_quality, refit_latency)
from commtune.units import parse_size, split_list



def _pow2(n: int) -> int:
    return 1 << max(2, round(math.log2(n)))


def parse_sizes(text: str, step: int = 4, what: str = "--sizes") -> list[int]:
    """``"1KB:256MB"`` -> powers of ``step`` (2 or 4) from 1 KiB to 256 MiB (endpoints
    rounded to powers of two, as nccl-tests counts), or a list ``"1MB,4MB,16MB"``."""
    if step not in (2, 4):
        raise CommtuneError(f"--step must be 2 or 4, got {step!r}")
    text = str(text).strip()
    if ":" in text:
        lo_s, _, hi_s = text.partition(":")
        lo = parse_size(lo_s, f"{what} start", allow_zero=False)
        hi = parse_size(hi_s, f"{what} end", allow_zero=False)
        if lo > hi:
            raise CommtuneError(f"{what} {text}: start {lo_s} is larger than end {hi_s}")
        lo, hi = _pow2(lo), _pow2(hi)
        sizes = []
        s = lo
        while s <= hi:
            sizes.append(s)
            s *= step
        _check_message_sizes(what, text, sizes)
        return sizes
    sizes = [parse_size(part, f"{what} entry", allow_zero=False) for part in split_list(text, what)]
    if not sizes:
        raise CommtuneError(f"{what} is empty; give e.g. 1KB:256MB or 1MB,4MB,16MB")
    if any(s < 4 for s in sizes):
        raise CommtuneError(f"{what} entries must be at least 4 bytes (one float32)")
    _check_message_sizes(what, text, sizes)
    return sorted(set(sizes))


def _check_message_sizes(what: str, text: str, sizes: list[int]) -> None:
    from commtune.limits import RANGES

    r = RANGES["message_size"]
    if max(sizes) > r.high:
        raise CommtuneError(f"{what} {text}: {max(sizes):,} bytes is above the largest message, "
                            f"{int(r.high):,} bytes (2 GiB; {r.why})")


def parse_streams(text: str | Sequence[int]) -> list[int]:
    try:
        ks = sorted({int(x) for x in (text.split(",") if isinstance(text, str) else text)})
    except ValueError:
        raise CommtuneError(f"--streams must be a list of integers like 1,2,4,8, got {text!r}") from None
    if not ks or ks[0] < 1 or ks[-1] > 64:
        raise CommtuneError(f"--streams must be integers between 1 and 64, got {text!r}")
    return ks


#: the collectives ``commtune probe`` measures (``--collectives``); the all-reduce is always one
COLLECTIVES = ("allreduce",) + SHARDED_COLLECTIVES
#: the probe's default time budget (``--budget``), seconds: the pilot and every planned point
DEFAULT_BUDGET_S = 300.0


def parse_collectives(text: str | Sequence[str]) -> list[str]:
    """``"allreduce,allgather"`` -> the collectives in :data:`COLLECTIVES` order; must include allreduce."""
    names = split_list(text, "--collectives") if isinstance(text, str) else [str(x) for x in text]
    bad = [c for c in names if c not in COLLECTIVES]
    if bad or not names:
        raise CommtuneError(f"--collectives {','.join(names) or repr(text)}: {', '.join(bad) or 'empty'} is not "
                            f"one of {', '.join(COLLECTIVES)}")
    if "allreduce" not in names:
        raise CommtuneError(f"--collectives {','.join(names)}: must include allreduce (the network model is fitted from it)")
    return [c for c in COLLECTIVES if c in names]


def probe_task(sizes: Sequence[int], streams: Sequence[int], iters: int, warmup: int,
               burst_sizes: Sequence[int] = (), burst_count: int = 8, host_sizes: Sequence[int] = (),
               collectives: Sequence[str] = ("allreduce",), budget_s: float | None = None,
               min_fit_size: int = 2**20, calibration_runs: Sequence[str] = (), ddp_steps: int = 6) -> dict:
    """The task every rank runs; ``calibration_runs`` (of :data:`~commtune.probe.plan.CALIBRATION_RUNS`,
    with ``ddp_steps`` timed steps) follow the sweep, and a budget reserves their time."""
    from commtune.probe.plan import CALIBRATION_RUNS

    if iters < 1 or warmup < 0:
        raise CommtuneError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")
    if burst_sizes and burst_count < 2:
        raise CommtuneError(f"--burst-count must be at least 2, got {burst_count}")
    bad = [r for r in calibration_runs if r not in CALIBRATION_RUNS]
    if bad:
        raise CommtuneError(f"calibration runs {', '.join(bad)}: not one of {', '.join(CALIBRATION_RUNS)}")
    return {"kind": "allreduce", "sizes": [int(s) for s in sizes], "streams": [int(k) for k in streams],
            "iters": int(iters), "warmup": int(warmup), "burst_sizes": [int(s) for s in burst_sizes],
            "burst_count": int(burst_count), "host_sizes": [int(s) for s in host_sizes],
            "collectives": parse_collectives(collectives), "budget_s": float(budget_s) if budget_s else None,
            "min_fit_size": int(min_fit_size), "calibration_runs": list(calibration_runs), "ddp_steps": int(ddp_steps)}


def run_probe(launch, sizes: Sequence[int], streams: Sequence[int], iters: int = 5, warmup: int = 1,
              burst_sizes: Sequence[int] = (), burst_count: int = 8, host_sizes: Sequence[int] = (),
              collectives: Sequence[str] = ("allreduce",), budget_s: float | None = None,
              min_fit_size: int = 2**20, calibration_runs: Sequence[str] = (), ddp_steps: int = 6) -> dict:
    """Launch the probe on the ranks of ``launch`` (a :class:`LaunchSpec`); rank 0's result.

    ``burst_sizes``: also time ``burst_count`` back-to-back all-reduces of each
    size per stream count (fits the pipelining: collectives in flight per
    stream and the back-to-back gap). ``host_sizes``: also time the host work
    around a DDP bucket (divide, copy back) at each size (fits the host cost
    per byte). Both are skipped when empty. ``collectives``: also time
    all-gather / reduce-scatter at the same sizes and streams (``collectives`` in
    the result). ``budget_s``: plan the run to fit (:mod:`commtune.probe.plan`;
    ``plan`` in the result; ``calibration_runs`` that follow on ``launch``, with ``ddp_steps``, have their
    time reserved), ``min_fit_size`` the smallest size the fit uses.
    ``host_busy_cores`` in the result: how busy this machine was before the ranks
    started (:mod:`commtune.host_load`)."""
    from commtune.host_load import busy_cores
    from commtune.probe.launch import run_task

    busy = busy_cores()  # the ranks run on this machine: is another job using it?
    result = run_task(launch, probe_task(sizes, streams, iters, warmup, burst_sizes, burst_count, host_sizes,
                                         collectives, budget_s, min_fit_size, calibration_runs, ddp_steps))
    return {**result, "host_busy_cores": busy}


def run_probe_here(engine: str, sizes: Sequence[int], streams: Sequence[int], iters: int, warmup: int,
                   timeout_s: float = 300.0, burst_sizes: Sequence[int] = (), burst_count: int = 8,
                   host_sizes: Sequence[int] = (), collectives: Sequence[str] = ("allreduce",),
                   budget_s: float | None = None, min_fit_size: int = 2**20) -> dict:
    """Run as one rank of a job started by torchrun (env) or mpiexec (MPI); every rank returns the result."""
    from commtune.probe.worker import run_task

    return run_task({**probe_task(sizes, streams, iters, warmup, burst_sizes, burst_count, host_sizes, collectives,
                                  budget_s, min_fit_size),
                     "engine": engine, "timeout_s": timeout_s})


def format_table(records: Sequence[dict], ranks: int, collective: str = "allreduce") -> str:
    """nccl-tests style table, one block per stream count (a sharded ``collective``'s
    blocks are headed by its name; sizes are the full buffer)."""
    lines = []
    what = "" if collective == "allreduce" else f"{collective}, "
    for k in sorted({r["streams"] for r in records}):
        lines.append(f"# {what}streams: {k}  (message split over {k} concurrent communicator{'s' if k > 1 else ''}), "
                     f"{ranks} ranks")
        lines.append(f"#{'size':>12} {'count':>12} {'type':>6} {'time(us)':>11} {'algbw(GB/s)':>12} {'busbw(GB/s)':>12}")
        for r in sorted((r for r in records if r["streams"] == k), key=lambda r: r["size_bytes"]):
            t = r["time_s"]
            lines.append(f" {r['size_bytes']:>12} {r['count']:>12} {'float':>6} {t * 1e6:>11.1f} "
                         f"{algbw(r['size_bytes'], t) / 1e9:>12.4f} "
                         f"{busbw_collective(collective, r['size_bytes'], t, ranks) / 1e9:>12.4f}")
    return "\n".join(lines)


#: probe defaults: the calibration that validates best (see experiments/live_fidelity.py)
DEFAULT_SIZES = "4KiB,1MiB,4MiB,16MiB,64MiB"  # 4 KB: the control latency; >= 1 MiB: the fit
DEFAULT_STREAMS = (1, 2, 3, 4, 6, 8)
DEFAULT_FIT_MIN_SIZE = 2**20
DEFAULT_WEIGHTING = "absolute"
#: a fit below this R^2 (generalised model against the fitted records) gets a warning
R2_WARN = 0.99
#: ... and so does one with a record further than this from the model
RESIDUAL_WARN = 0.10


def control_latency(records: Sequence[dict], ranks: int, min_fit_size: float) -> tuple[float, str]:
    """One hop of a small message: the median time of the smallest probed all-reduce
    (sizes below the fit range, one stream) over its ``2(n-1)`` ring steps."""
    small = [r for r in records if r["size_bytes"] < min_fit_size and int(r["streams"]) == 1]
    if not small:
        return 0.0, "none measured"
    smin = min(r["size_bytes"] for r in small)
    ts = sorted(float(r["time_s"]) for r in small if r["size_bytes"] == smin)
    return ts[len(ts) // 2] / (2 * (ranks - 1)), f"{smin} B all-reduce / {2 * (ranks - 1)} ring steps"


def calibration(result: dict, hosts: int, ranks_per_host: int | None = None, min_fit_size: int = DEFAULT_FIT_MIN_SIZE,
                name: str = "calibrated", source: str = "", weighting: str = DEFAULT_WEIGHTING) -> tuple[ClusterSpec, dict]:
    """ClusterSpec + extra sections (``fit``, ``measurements``, ``provenance``) from a probe result.

    ``fit.network`` holds the physical parameters of :class:`simulators.calibrated.CalibratedNetwork`
    and ``fit.calibrated`` what was measured (stream counts, sizes, world size); ``fit.quality``
    the generalised model's R^2 and residuals and ``fit.warnings`` what looks wrong."""
    from commtune.host_load import busy_warning
    from simulators.calibrated import CalibratedNetwork, CalibratedParams, CalibratedRange

    n = int(result["world_size"])
    records = result["records"]
    if ranks_per_host is None:
        if n % hosts:
            raise CommtuneError(f"{n} ranks do not divide evenly over {hosts} hosts")
        ranks_per_host = n // hosts
    warnings = []
    fits = fit_measurements(records, n, min_size=min_fit_size, weighting=weighting)
    if not fits:
        fits = fit_measurements(records, n, weighting=weighting)
        min_fit_size = 0
        warnings.append("fewer than two sizes at or above the fit minimum: fitted every size")
    if not fits:
        raise CommtuneError("need at least two message sizes per stream count to fit t = a + b*S")
    link = refit_latency(records, derive_link(fits, n), n, min_fit_size)
    ctl, ctl_source = control_latency(records, n, min_fit_size)
    if ctl <= 0:
        ctl = max(link.alpha_s, 0.0)
        ctl_source = "fitted alpha"
    small_step, small_per_stream, small_by_k = fit_latency_bound(records, n, min_fit_size)
    # the line and the latency bound first: the bound's sharpness and the burst fit need them
    params = CalibratedParams(link_Bps=link.link_Bps, per_flow_Bps=link.per_stream_Bps, alpha_s=link.alpha_s,
                              launch_s=link.launch_s, control_latency_s=ctl,
                              small_step_s=small_step, small_per_stream_s=small_per_stream)
    params = dataclasses.replace(params, bound_sharpness=fit_bound_sharpness(records, CalibratedNetwork(params, n)))
    floors = dict(zip(fits, CalibratedNetwork(params, n).min_collective_s(list(fits)).tolist()))
    pipe = (fit_pipelining(result["bursts"], fits, floors=floors, sharpness=params.bound_sharpness)
            if result.get("bursts") else None)
    host = fit_host(result["host"]) if result.get("host") and len({r["size_bytes"] for r in result["host"]}) >= 2 else None
    gap0, gap1 = fit_gap_model(pipe.gaps_s) if pipe is not None else (0.0, 0.0)
    params = dataclasses.replace(params, inflight_per_stream=pipe.inflight if pipe is not None else 1,
                                 gap0_s=gap0, gap_per_stream_s=gap1)
    fitted_sizes = [r["size_bytes"] for r in records if r["size_bytes"] >= min_fit_size]
    rng = CalibratedRange(tuple(sorted(fits)), float(min(fitted_sizes)), float(max(fitted_sizes)), n,
                          link.link_saturated)
    quality = model_quality(records, CalibratedNetwork(params, n, rng), min_size=min_fit_size)
    if quality["r2"] < R2_WARN:
        warnings.append(f"poor fit: R^2 {quality['r2']:.3f} < {R2_WARN} (noisy host or too few sizes; "
                        f"repeat with more --iters or larger --sizes)")
    if quality["max_rel_residual"] > RESIDUAL_WARN:
        warnings.append(f"a record is {quality['max_rel_residual']:.0%} off the fitted model (> {RESIDUAL_WARN:.0%})")
    if not any(math.isfinite(v) for v in link.rate_by_streams.values()):
        warnings.append("no transfer time measured (time did not grow with size): use larger --sizes")
    elif not link.link_saturated:
        warnings.append("the link rate was never reached (every probed stream count was capped, or only one was "
                        "probed): more streams than probed are reported as extrapolations")
    busy_msg = busy_warning(result.get("host_busy_cores"))
    if busy_msg:
        warnings.append(busy_msg)
    if params.control_latency_s != ctl:
        warnings.append("no latency measured: control latency set to the floor "
                        f"{params.control_latency_s * 1e6:.0f} us")
    finite_rates = [v for v in link.rate_by_streams.values() if math.isfinite(v)]
    finite_link = link.link_Bps if math.isfinite(link.link_Bps) else max(finite_rates, default=ClusterSpec.inter_bw_Bps)
    base = ClusterSpec(nodes=hosts, gpus_per_node=ranks_per_host, name=name)
    fields = dict(inter_bw_Bps=finite_link, per_stream_Bps=link.per_stream_Bps, inter_latency_s=link.alpha_s,
                  launch_overhead_s=link.launch_s, inflight_per_stream=params.inflight_per_stream,
                  buffer_gap_s=max(gap0 + gap1, 0.0))
    if hosts == 1:  # one host: the ring runs over the intra-node path
        fields.update(intra_bw_Bps=finite_link, intra_latency_s=link.alpha_s)
    if host is not None:
        fields.update(host_pre_s_per_byte=host.pre_s_per_byte, host_post_s_per_byte=host.post_s_per_byte)
    extra = {
        "fit": {
            "model": "(t^p + f(K)^p)^(1/p), t = a(K) + b(K)*S; a(K) = 2(n-1)*alpha + K*launch; b(K) = 2(n-1)/(n*min(K*c, B)); "
                     "f(K) = 2(n-1)*small_step + K*small_per_stream; g(K) = gap0 + gap_per_stream*K "
                     "(simulators.calibrated)",
            "weighting": weighting,
            "engine": result.get("engine"),
            "world_size": n,
            "min_fit_size_bytes": int(min_fit_size),
            "network": params.to_dict(),
            "calibrated": rng.to_dict(),
            "control_latency_source": ctl_source,
            "latency_bound": {"method": "fastest iteration of the smallest probed all-reduce per K (below the fit range), "
                                        "f(K) = 2(n-1)*small_step + K*small_per_stream by least squares on relative error; "
                                        "sharpness p of the soft roofline (t^p + f^p)^(1/p) chosen over every probed size",
                              "measured_s": {int(k): v for k, v in small_by_k.items()}},
            "quality": quality,
            "warnings": warnings,
            "per_stream_fits": {int(k): f.to_dict() for k, f in fits.items()},  # diagnostics, not used by the simulator
            "derived": link.to_dict(),
            **({"pipelining": pipe.to_dict()} if pipe is not None else {}),
            **({"host": host.to_dict()} if host is not None else {}),
            "r2_min": min(f.r2 for f in fits.values()),
            "max_rel_residual": max(f.max_rel_residual for f in fits.values()),
        },
        "measurements": [
            {**r, "busbw_Bps": busbw(r["size_bytes"], r["time_s"], n)} for r in records
        ],
        **({"burst_measurements": list(result["bursts"])} if result.get("bursts") else {}),
        **({"host_measurements": list(result["host"])} if result.get("host") else {}),
        "provenance": {
            "tool": f"commtune {__version__} probe",
            "source": source,
            "host": platform.node(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"host_busy_cores": result["host_busy_cores"]} if result.get("host_busy_cores") is not None else {}),
        },
    }
    if result.get("collectives"):
        extra["fit"]["collectives"] = collective_fits(result["collectives"], n, str(result.get("engine") or "gloo"),
                                                      min_fit_size, weighting, warnings, params.bound_sharpness)
        extra["collective_measurements"] = {
            c: [{**r, "busbw_Bps": busbw_collective(c, r["size_bytes"], r["time_s"], n)} for r in recs]
            for c, recs in result["collectives"].items()}
    if result.get("plan"):
        extra["provenance"]["plan"] = {k: v for k, v in result["plan"].items() if k != "pilot_records"}
        extra["pilot_measurements"] = list(result["plan"].get("pilot_records") or [])
    spec = dataclasses.replace(base, **fields, meta={"fit": extra["fit"]})  # the simulator reads meta["fit"]
    return spec, extra


def busbw_collective(collective: str, size_bytes: float, time_s: float, ranks: int) -> float:
    """Bus bandwidth (nccl-tests): all-reduce ``algbw * 2(n-1)/n``, all-gather and
    reduce-scatter ``algbw * (n-1)/n`` (``algbw = S/t``, ``S`` the full buffer)."""
    return busbw(size_bytes, time_s, ranks) if collective == "allreduce" else algbw(size_bytes, time_s) * (ranks - 1) / ranks


def collective_fits(measured: dict, ranks: int, engine: str, min_fit_size: int, weighting: str,
                    warnings: list[str], sharpness: float = math.inf) -> dict:
    """``fit.collectives``: per sharded collective its :class:`~simulators.calibrated.CollectiveParams`
    (``params``, read by :func:`~simulators.calibrated.calibrated_network`; the ring steps per peer
    it was fitted with, gloo's reduce-scatter being an all-reduce: 2; the all-reduce's soft-roofline
    ``sharpness``, which the simulator applies to every collective) and the quality; a poor fit
    adds to ``warnings``."""
    from commtune.probe.comm import REDUCE_SCATTER_STEPS
    from commtune.probe.fit import fit_collective

    out = {}
    for name, records in measured.items():
        steps = REDUCE_SCATTER_STEPS.get(engine, 1) if name == "reduce_scatter" else 1
        try:
            params, quality = fit_collective(records, ranks, steps, min_size=min_fit_size, weighting=weighting,
                                             sharpness=sharpness)
        except CommtuneError as e:
            warnings.append(f"{name}: not fitted ({e})")
            continue
        if quality["r2"] < R2_WARN:
            warnings.append(f"{name}: poor fit: R^2 {quality['r2']:.3f} < {R2_WARN}")
        out[name] = {"params": params.to_dict(), "quality": quality,
                     "streams": sorted({int(r["streams"]) for r in records}),
                     "sizes_bytes": sorted({int(r["size_bytes"]) for r in records})}
    return out


def write_calibration(path: str, spec: ClusterSpec, extra: dict) -> None:
    save_cluster_file(spec, path, extra)


def summary(spec: ClusterSpec, extra: dict) -> str:
    from commtune.units import format_bandwidth, format_size, format_time

    fit = extra["fit"]
    p = fit["network"]
    r = fit["calibrated"]
    q = fit["quality"]
    cap = format_bandwidth(p["per_flow_Bps"]) if p["per_flow_Bps"] else "none seen"
    link = format_bandwidth(p["link_Bps"]) if p["link_Bps"] else "not reached"
    lines = [f"model ({fit['world_size']} ranks, {spec.nodes} host(s) x {spec.gpus_per_node}): link {link}, "
             f"per-flow cap {cap}, alpha {format_time(p['alpha_s'])}/ring step, launch {format_time(p['launch_s'])}/stream, "
             f"control latency {format_time(p['control_latency_s'])} ({fit.get('control_latency_source', '')})",
             f"  latency bound: {format_time(p.get('small_step_s', 0.0))}/ring step + "
             f"{format_time(p.get('small_per_stream_s', 0.0))}/stream (the smallest probed message), soft roofline p = "
             f"{p.get('bound_sharpness') or 'inf'}",
             f"  pipelining: {p['inflight_per_stream']} collective(s) in flight per stream, gap "
             f"{format_time(p['gap0_s'])} + {format_time(p['gap_per_stream_s'])}*K",
             f"  calibrated: streams {','.join(str(k) for k in r['streams'])}, sizes "
             f"{r['min_size_bytes'] / 2**20:g}-{r['max_size_bytes'] / 2**20:g} MiB; one model for all K: "
             f"R^2 {q['r2']:.4f}, MAPE {q['mape']:.1%}, worst {q['max_rel_residual']:.1%} ({q['n_points']} records)"]
    for k, f in fit["per_stream_fits"].items():
        lines.append(f"  K={k}: a = {format_time(f['a_s'])}, 1/b = {format_bandwidth(1 / f['b_s_per_byte']) if f['b_s_per_byte'] > 0 else 'inf'} "
                     f"(R^2 {f['r2']:.5f}, max rel. residual {f['max_rel_residual']:.1%}, {f['n_points']} sizes)")
    for name, c in (fit.get("collectives") or {}).items():
        cp, cq = c["params"], c["quality"]
        cap_c = format_bandwidth(cp["per_flow_Bps"]) if cp["per_flow_Bps"] else "none seen"
        link_c = format_bandwidth(cp["link_Bps"]) if cp["link_Bps"] else "not reached"
        lines.append(f"  {name} ({cp['steps_per_peer']}(n-1) ring steps): link {link_c}, per-flow cap {cap_c}, "
                     f"alpha {format_time(cp['alpha_s'])}/step, launch {format_time(cp['launch_s'])}/stream; "
                     f"R^2 {cq['r2']:.4f}, MAPE {cq['mape']:.1%}, worst {cq['max_rel_residual']:.1%} "
                     f"({cq['n_points']} records)")
    if "host" in fit:
        h = fit["host"]
        lines.append(f"host work per byte: before all-reduce {h['pre_s_per_byte'] * 1e9:.3f} ns/B, "
                     f"after {h['post_s_per_byte'] * 1e9:.3f} ns/B (per MiB: {format_time(h['pre_s_per_byte'] * 2**20)} + "
                     f"{format_time(h['post_s_per_byte'] * 2**20)})")
    if "round_robin_check" in fit:
        c = fit["round_robin_check"]
        nw = fit["network"]
        lines.append(f"  round robin (DDP calibration points, fitted): link time lost per collective "
                     f"{format_time(nw.get('rr_gap0_s', 0.0))} + {format_time(nw.get('rr_gap_per_stream_s', 0.0))}*K, "
                     f"{c['mape']:.1%} mean error; "
                     + ("beyond the measurement spread" if c["needed"] else "within the measurement spread"))
    if "ddp_gap" in fit:
        for k, v in fit["ddp_gap"]["by_streams"].items():
            lines.append(f"  DDP calibration K={k}: {format_size(v['small_bucket_bytes'])} - "
                         f"{format_size(v['large_bucket_bytes'])} "
                         f"buckets measured {v['measured_diff_s'] * 1e3:.1f} ms -> gap {v['gap_s'] * 1e3:.3f} ms")
    if "last_bucket_delay" in fit:
        t = fit["last_bucket_delay"]
        lines.append(f"  end of backward (DDP calibration, last bucket alone): step measured {t['measured_s'] * 1e3:.1f} ms, "
                     f"simulated {t['simulated_at_0_s'] * 1e3:.1f} ms -> the last bucket starts "
                     f"{format_time(t['delay_s'])} after backward")
    if "fsdp_calibration" in fit:
        t = fit["fsdp_calibration"]
        lines.append(f"  FSDP calibration (one unit per block, and 4 blocks per unit): steps measured "
                     f"{', '.join(f'{m * 1e3:.1f}' for m in t['measured_s'])} ms, simulated "
                     f"{', '.join(f'{m * 1e3:.1f}' for m in t['simulated_at_0_s'])} ms -> host cost per sharded "
                     f"collective {format_time(t['unit_host_s'])} + {t['unit_host_s_per_byte'] * 1e9:.3f} ns/B")
    return "\n".join(lines)
