"""Fitting all-reduce measurements: ``t = a + b*S`` per stream count, and the
link parameters behind the fits.

Conventions (nccl-tests): for an all-reduce of ``S`` bytes over ``n`` ranks
taking ``t`` seconds, ``algbw = S/t`` and ``busbw = algbw * 2(n-1)/n`` (the
rate each rank's link actually carries in a ring).

The fit is a weighted least squares with weights ``1/t`` (it minimises
*relative* residuals, so the microsecond latencies of small messages count as
much as the seconds of 256 MB ones); on noise-free data it recovers ``a`` and
``b`` exactly. If the intercept comes out negative (latency lost in noise) it
is refitted with ``a = 0``.

From the per-stream-count slopes ``b_K`` the ring model gives the rate K
streams reach, ``R_K = 2(n-1)/(n*b_K)``; the simulator's model is
``R_K = min(K*c, B)``. We take ``B = max_K R_K`` and, when some ``R_K`` stays
clearly below ``B`` (a per-stream cap binds), ``c`` = the mean of ``R_K/K``
over those K; otherwise there is no cap (``c = inf``). The intercepts give
``a_K = 2(n-1)*alpha + K*launch`` (least squares over K, both clamped at 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

#: R_K below this fraction of the best rate counts as "capped by the per-stream rate".
CAP_FRACTION = 0.9


def algbw(size_bytes: float, time_s: float) -> float:
    """Algorithm bandwidth, bytes/s."""
    return size_bytes / time_s


def busbw(size_bytes: float, time_s: float, ranks: int) -> float:
    """Bus bandwidth (nccl-tests): ``algbw * 2(n-1)/n``, bytes/s."""
    return algbw(size_bytes, time_s) * 2 * (ranks - 1) / ranks


@dataclass(frozen=True)
class LinearFit:
    """``t = a_s + b_s_per_byte * S`` with its quality."""

    a_s: float
    b_s_per_byte: float
    r2: float
    max_rel_residual: float
    n_points: int

    def predict(self, size_bytes: float | np.ndarray) -> float | np.ndarray:
        return self.a_s + self.b_s_per_byte * size_bytes

    def to_dict(self) -> dict:
        return {"a_s": float(self.a_s), "b_s_per_byte": float(self.b_s_per_byte), "r2": float(self.r2),
                "max_rel_residual": float(self.max_rel_residual), "n_points": int(self.n_points)}


def fit_linear(sizes: Sequence[float], times: Sequence[float], weighting: str = "relative") -> LinearFit:
    """Least squares of ``t = a + b*S``, weights ``1/t`` (``"relative"``, see the
    module docstring) or none (``"absolute"``: the largest messages dominate,
    so the slope is the large-message rate)."""
    s = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if s.shape != t.shape or s.size < 2:
        raise ValueError("fit_linear needs at least two (size, time) points")
    if np.any(t <= 0):
        raise ValueError("measured times must be positive")
    if np.unique(s).size < 2:
        raise ValueError("fit_linear needs at least two distinct sizes")
    if weighting not in ("relative", "absolute"):
        raise ValueError(f"weighting must be relative or absolute, got {weighting!r}")
    w = 1.0 / t if weighting == "relative" else np.ones_like(t)
    A = np.stack([np.ones_like(s), s], axis=1) * w[:, None]
    (a, b), *_ = np.linalg.lstsq(A, t * w, rcond=None)
    if a < 0:
        a = 0.0
        b = float(np.sum(w * w * s * t) / np.sum(w * w * s * s))
    pred = a + b * s
    ss_res = float(np.sum((t - pred) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    rel = float(np.max(np.abs(pred - t) / t))
    return LinearFit(float(a), float(b), r2, rel, int(s.size))


@dataclass(frozen=True)
class LinkParams:
    """Link parameters derived from per-stream-count fits (bytes/s, seconds)."""

    alpha_s: float
    launch_s: float
    link_Bps: float
    per_stream_Bps: float  # math.inf = no per-stream cap seen
    rate_by_streams: dict[int, float]

    def to_dict(self) -> dict:
        return {
            "alpha_s": self.alpha_s,
            "launch_s": self.launch_s,
            "link_Bps": self.link_Bps,
            "per_stream_Bps": None if math.isinf(self.per_stream_Bps) else self.per_stream_Bps,
            "rate_by_streams_Bps": {int(k): float(v) for k, v in self.rate_by_streams.items()},
        }


def derive_link(fits: Mapping[int, LinearFit], ranks: int) -> LinkParams:
    """Latency, launch cost, link rate B and per-stream cap c from the fits."""
    if ranks < 2:
        raise ValueError("need at least two ranks")
    ks = sorted(fits)
    steps = 2 * (ranks - 1)
    rates = {k: steps / (ranks * fits[k].b_s_per_byte) if fits[k].b_s_per_byte > 0 else math.inf for k in ks}
    link = max(rates.values())
    capped = [k for k in ks if rates[k] < CAP_FRACTION * link]
    per_stream = float(np.mean([rates[k] / k for k in capped])) if capped else math.inf
    a = np.array([fits[k].a_s for k in ks])
    if len(ks) >= 2:
        slope, intercept = np.polyfit(np.asarray(ks, dtype=np.float64), a, 1)
    else:
        slope, intercept = 0.0, float(a[0])
    launch = max(float(slope), 0.0)
    if slope < 0:
        intercept = float(np.mean(a))
    alpha = max(float(intercept), 0.0) / steps
    return LinkParams(alpha, launch, float(link), per_stream, rates)


def fit_measurements(records: Iterable[Mapping], ranks: int, min_size: float = 0, max_size: float = math.inf,
                     weighting: str = "relative") -> dict[int, LinearFit]:
    """Per-stream-count fits from probe records (``streams``, ``size_bytes``, ``time_s``)."""
    by_k: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        if min_size <= r["size_bytes"] <= max_size:
            by_k.setdefault(int(r["streams"]), []).append((float(r["size_bytes"]), float(r["time_s"])))
    fits = {}
    for k, pts in sorted(by_k.items()):
        if len({s for s, _ in pts}) >= 2:
            fits[k] = fit_linear([s for s, _ in pts], [t for _, t in pts], weighting)
    return fits


# --------------------------------------------------------------------------- host work and pipelining

@dataclass(frozen=True)
class HostFit:
    """Host time per gradient byte before (``pre``) and after (``post``) a bucket's all-reduce."""

    pre_s_per_byte: float
    post_s_per_byte: float
    pre: LinearFit
    post: LinearFit

    def to_dict(self) -> dict:
        return {"pre_s_per_byte": self.pre_s_per_byte, "post_s_per_byte": self.post_s_per_byte,
                "pre_fit": self.pre.to_dict(), "post_fit": self.post.to_dict()}


def fit_host(records: Iterable[Mapping]) -> HostFit:
    """Slopes of ``pre_s`` and ``post_s`` against size (unweighted least squares,
    intercept >= 0: the per-call part is microseconds and left out of the model)."""
    recs = list(records)
    sizes = [float(r["size_bytes"]) for r in recs]
    pre = fit_linear(sizes, [max(float(r["pre_s"]), 1e-9) for r in recs], "absolute")
    post = fit_linear(sizes, [max(float(r["post_s"]), 1e-9) for r in recs], "absolute")
    return HostFit(max(pre.b_s_per_byte, 0.0), max(post.b_s_per_byte, 0.0), pre, post)


def burst_time_s(a_s: float, b_s_per_byte: float, size_bytes: float, count: int, inflight: int, gap_s: float) -> float:
    """The simulator's time for ``count`` buffers of ``size_bytes`` all dispatched at t=0
    (the reference scheduler of :mod:`simulators.system`, so the fit and the
    simulator use the same formulas)."""
    from simulators.system import schedule

    row = (False, 1.0, 1.0, 0.0, 0.0, 0.0, float(a_s), float(b_s_per_byte), int(inflight), float(gap_s), 0.0, 0.0,
           1, 0.0, math.inf, math.inf, 0.0, 0.0, 0.0, False)
    buffers, _, _, _ = schedule([0.0] * int(count), [float(size_bytes)] * int(count), row)
    return buffers[-1].end_s


#: a larger in-flight count is kept only if it lowers the burst fit's squared relative error by more than this
PIPELINE_TOLERANCE = 0.25


@dataclass(frozen=True)
class PipelineFit:
    """Collectives in flight per stream and the back-to-back gap per stream count."""

    inflight: int
    gaps_s: dict[int, float]
    loss_by_inflight: dict[int, float]  # mean squared relative error of the burst times
    residuals: dict[int, list[float]]  # per K: relative error of each burst size at the chosen (m, g)

    @property
    def gap_s(self) -> float:
        """One gap for all stream counts (the median of the per-K gaps)."""
        return float(np.median(list(self.gaps_s.values()))) if self.gaps_s else 0.0

    def to_dict(self) -> dict:
        return {"inflight_per_stream": int(self.inflight), "gap_s_by_streams": {int(k): float(v) for k, v in self.gaps_s.items()},
                "buffer_gap_s": self.gap_s,
                "loss_by_inflight": {int(m): float(v) for m, v in self.loss_by_inflight.items()},
                "rel_residuals_by_streams": {int(k): [float(x) for x in v] for k, v in self.residuals.items()}}


def _fit_gap(a: float, b: float, pts: Sequence[tuple[float, int, float]], m: int) -> tuple[float, float]:
    """Gap g >= 0 minimising the squared relative error of the burst times (grid, then refined)."""
    def loss(g: float) -> float:
        return float(np.mean([((burst_time_s(a, b, s, c, m, g) - t) / t) ** 2 for s, c, t in pts]))

    hi = max(t / c for _, c, t in pts)
    grid = np.linspace(0.0, hi, 201)
    losses = [loss(g) for g in grid]
    i = int(np.argmin(losses))
    lo_g, hi_g = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    for _ in range(40):  # golden-section refine around the best grid point
        g1 = lo_g + 0.382 * (hi_g - lo_g)
        g2 = lo_g + 0.618 * (hi_g - lo_g)
        if loss(g1) <= loss(g2):
            hi_g = g2
        else:
            lo_g = g1
    g = 0.5 * (lo_g + hi_g)
    best = (g, loss(g)) if loss(g) <= losses[i] else (float(grid[i]), losses[i])
    return best


def fit_pipelining(bursts: Iterable[Mapping], fits: Mapping[int, LinearFit],
                   candidates: Sequence[int] = (1, 2, 3, 4)) -> PipelineFit:
    """Fit ``m`` (collectives in flight per stream, one for all K) and a gap ``g_K``
    per stream count to burst measurements, given the single all-reduce fits
    ``a_K + b_K*S``. For each candidate m the gaps are fitted per K; the
    smallest m whose error is within ``1 + PIPELINE_TOLERANCE`` of the best wins
    (bursts of link-bound buffers cannot tell m=2 from m=4; m=1 with a gap
    larger than a_K is the same as m=2 with that gap, so the smaller m is kept)."""
    by_k: dict[int, list[tuple[float, int, float]]] = {}
    for r in bursts:
        k = int(r["streams"])
        if k in fits:
            by_k.setdefault(k, []).append((float(r["size_bytes"]), int(r["count"]), float(r["time_s"])))
    if not by_k:
        raise ValueError("no burst measurement matches a fitted stream count")
    results = {}
    for m in candidates:
        gaps, losses = {}, []
        for k, pts in sorted(by_k.items()):
            g, l = _fit_gap(fits[k].a_s, fits[k].b_s_per_byte, pts, m)
            gaps[k] = g
            losses.append(l * len(pts))
        results[m] = (gaps, float(np.sum(losses) / sum(len(p) for p in by_k.values())))
    best = min(v[1] for v in results.values())
    m = min(c for c in candidates if results[c][1] <= best * (1 + PIPELINE_TOLERANCE) + 1e-12)
    gaps = results[m][0]
    residuals = {k: [burst_time_s(fits[k].a_s, fits[k].b_s_per_byte, s, c, m, gaps[k]) / t - 1 for s, c, t in pts]
                 for k, pts in sorted(by_k.items())}
    return PipelineFit(m, gaps, {c: results[c][1] for c in candidates}, residuals)
