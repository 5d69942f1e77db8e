"""``commtune probe``: measure all-reduce against size and streams, fit, write a calibration file.

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
from commtune.probe.fit import busbw, algbw, derive_link, fit_host, fit_measurements, fit_pipelining
from commtune.units import parse_size, split_list

DEFAULT_SIZES = "1KB:256MB"
DEFAULT_STREAMS = (1, 2, 4, 8)


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


def probe_task(sizes: Sequence[int], streams: Sequence[int], iters: int, warmup: int,
               burst_sizes: Sequence[int] = (), burst_count: int = 8, host_sizes: Sequence[int] = ()) -> dict:
    if iters < 1 or warmup < 0:
        raise CommtuneError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")
    if burst_sizes and burst_count < 2:
        raise CommtuneError(f"--burst-count must be at least 2, got {burst_count}")
    return {"kind": "allreduce", "sizes": [int(s) for s in sizes], "streams": [int(k) for k in streams],
            "iters": int(iters), "warmup": int(warmup), "burst_sizes": [int(s) for s in burst_sizes],
            "burst_count": int(burst_count), "host_sizes": [int(s) for s in host_sizes]}


def run_probe(launch, sizes: Sequence[int], streams: Sequence[int], iters: int = 5, warmup: int = 1,
              burst_sizes: Sequence[int] = (), burst_count: int = 8, host_sizes: Sequence[int] = ()) -> dict:
    """Launch the probe on the ranks of ``launch`` (a :class:`LaunchSpec`); rank 0's result.

    ``burst_sizes``: also time ``burst_count`` back-to-back all-reduces of each
    size per stream count (fits the pipelining: collectives in flight per
    stream and the back-to-back gap). ``host_sizes``: also time the host work
    around a DDP bucket (divide, copy back) at each size (fits the host cost
    per byte). Both are skipped when empty."""
    from commtune.probe.launch import run_task

    return run_task(launch, probe_task(sizes, streams, iters, warmup, burst_sizes, burst_count, host_sizes))


def run_probe_here(engine: str, sizes: Sequence[int], streams: Sequence[int], iters: int, warmup: int,
                   timeout_s: float = 300.0, burst_sizes: Sequence[int] = (), burst_count: int = 8,
                   host_sizes: Sequence[int] = ()) -> dict:
    """Run as one rank of a job started by torchrun (env) or mpiexec (MPI); every rank returns the result."""
    from commtune.probe.worker import run_task

    return run_task({**probe_task(sizes, streams, iters, warmup, burst_sizes, burst_count, host_sizes),
                     "engine": engine, "timeout_s": timeout_s})


def format_table(records: Sequence[dict], ranks: int) -> str:
    """nccl-tests style table, one block per stream count."""
    lines = []
    for k in sorted({r["streams"] for r in records}):
        lines.append(f"# streams: {k}  (message split over {k} concurrent communicator{'s' if k > 1 else ''}), {ranks} ranks")
        lines.append(f"#{'size':>12} {'count':>12} {'type':>6} {'time(us)':>11} {'algbw(GB/s)':>12} {'busbw(GB/s)':>12}")
        for r in sorted((r for r in records if r["streams"] == k), key=lambda r: r["size_bytes"]):
            t = r["time_s"]
            lines.append(f" {r['size_bytes']:>12} {r['count']:>12} {'float':>6} {t * 1e6:>11.1f} "
                         f"{algbw(r['size_bytes'], t) / 1e9:>12.4f} {busbw(r['size_bytes'], t, ranks) / 1e9:>12.4f}")
    return "\n".join(lines)


def calibration(result: dict, hosts: int, ranks_per_host: int | None = None, min_fit_size: int = 0,
                name: str = "calibrated", source: str = "", weighting: str = "relative") -> tuple[ClusterSpec, dict]:
    """ClusterSpec + extra sections (``fit``, ``measurements``, ``provenance``) from a probe result."""
    n = int(result["world_size"])
    records = result["records"]
    if ranks_per_host is None:
        if n % hosts:
            raise CommtuneError(f"{n} ranks do not divide evenly over {hosts} hosts")
        ranks_per_host = n // hosts
    fits = fit_measurements(records, n, min_size=min_fit_size, weighting=weighting)
    if not fits:
        fits = fit_measurements(records, n, weighting=weighting)
    if not fits:
        raise CommtuneError("need at least two message sizes per stream count to fit t = a + b*S")
    link = derive_link(fits, n)
    base = ClusterSpec(nodes=hosts, gpus_per_node=ranks_per_host, name=name)
    fields = dict(
        inter_bw_Bps=link.link_Bps,
        per_stream_Bps=link.per_stream_Bps,
        inter_latency_s=link.alpha_s,
        launch_overhead_s=link.launch_s,
    )
    if hosts == 1:  # one host: the ring runs over the intra-node path
        fields.update(intra_bw_Bps=link.link_Bps, intra_latency_s=link.alpha_s)
    pipe = fit_pipelining(result["bursts"], fits) if result.get("bursts") else None
    host = fit_host(result["host"]) if result.get("host") and len({r["size_bytes"] for r in result["host"]}) >= 2 else None
    if pipe is not None:
        fields.update(inflight_per_stream=pipe.inflight, buffer_gap_s=pipe.gap_s)
    if host is not None:
        fields.update(host_pre_s_per_byte=host.pre_s_per_byte, host_post_s_per_byte=host.post_s_per_byte)
    spec = dataclasses.replace(base, **fields)
    per_stream = {int(k): f.to_dict() for k, f in fits.items()}
    if pipe is not None:
        for k, g in pipe.gaps_s.items():
            per_stream[int(k)]["gap_s"] = float(g)
    extra = {
        "fit": {
            "model": "t = a_s + b_s_per_byte * size_bytes, least squares per stream count",
            "weighting": weighting,
            "engine": result.get("engine"),
            "world_size": n,
            "min_fit_size_bytes": int(min_fit_size),
            "per_stream_fits": per_stream,
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
        },
    }
    return spec, extra


def write_calibration(path: str, spec: ClusterSpec, extra: dict) -> None:
    save_cluster_file(spec, path, extra)


def summary(spec: ClusterSpec, extra: dict) -> str:
    fit = extra["fit"]
    d = fit["derived"]
    from commtune.units import format_bandwidth, format_time

    cap = format_bandwidth(d["per_stream_Bps"]) if d["per_stream_Bps"] else "none seen"
    lines = [f"fit ({fit['world_size']} ranks, {spec.nodes} host(s) x {spec.gpus_per_node}): "
             f"alpha {format_time(d['alpha_s'])}, launch {format_time(d['launch_s'])}/stream, "
             f"link {format_bandwidth(d['link_Bps'])}, per-stream cap {cap}"]
    for k, f in fit["per_stream_fits"].items():
        gap = f" gap {format_time(f['gap_s'])}" if f.get("gap_s") is not None else ""
        lines.append(f"  K={k}: a = {format_time(f['a_s'])}, 1/b = {format_bandwidth(1 / f['b_s_per_byte']) if f['b_s_per_byte'] > 0 else 'inf'} "
                     f"(R^2 {f['r2']:.5f}, max rel. residual {f['max_rel_residual']:.1%}, {f['n_points']} sizes){gap}")
    if "pipelining" in fit:
        p = fit["pipelining"]
        losses = ", ".join(f"m={m}: {v ** 0.5:.1%}" for m, v in p["loss_by_inflight"].items())
        lines.append(f"pipelining (back-to-back bursts): {p['inflight_per_stream']} collective(s) in flight per stream, "
                     f"gap {format_time(p['buffer_gap_s'])} (rms error of burst times: {losses})")
    if "host" in fit:
        h = fit["host"]
        lines.append(f"host work per byte: before all-reduce {h['pre_s_per_byte'] * 1e9:.3f} ns/B, "
                     f"after {h['post_s_per_byte'] * 1e9:.3f} ns/B (per MiB: {format_time(h['pre_s_per_byte'] * 2**20)} + "
                     f"{format_time(h['post_s_per_byte'] * 2**20)})")
    return "\n".join(lines)
