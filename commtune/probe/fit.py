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
streams reach, ``R_K = 2(n-1)/(n*b_K)``; the simulator's model
(:mod:`simulators.calibrated`) is ``R_K = min(K*c, B)``, fitted to the R_K
(:func:`fit_rates`). The intercepts give ``a_K = 2(n-1)*alpha + K*launch``
(least squares over K, both clamped at 0). The per-K fits are only the way to
these physical parameters: the simulator uses the parameters, for any K.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from commtune.errors import CommtuneError
from simulators.network import latency_bounded


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
    link_Bps: float  # math.inf = never reached (every probed K was capped)
    per_stream_Bps: float  # math.inf = no per-stream cap seen
    rate_by_streams: dict[int, float]
    link_saturated: bool = True  # some probed K reached the link rate
    rate_rms_rel_error: float = 0.0  # of min(K*c, B) against the rates R_K

    def to_dict(self) -> dict:
        return {
            "alpha_s": self.alpha_s,
            "launch_s": self.launch_s,
            "link_Bps": None if math.isinf(self.link_Bps) else self.link_Bps,
            "per_stream_Bps": None if math.isinf(self.per_stream_Bps) else self.per_stream_Bps,
            "rate_by_streams_Bps": {int(k): float(v) for k, v in self.rate_by_streams.items()},
            "link_saturated": bool(self.link_saturated),
            "rate_rms_rel_error": float(self.rate_rms_rel_error),
        }


#: a per-flow cap is kept only if it lowers the rate fit's squared relative error below this fraction of the no-cap fit
CAP_GAIN = 0.5


def _rel_ls(values: np.ndarray, x: np.ndarray) -> float:
    """The v minimising sum((v*x/R - 1)^2) over the rates R = ``values``: sum(x/R) / sum(x^2/R^2)."""
    return float(np.sum(x / values) / np.sum(x * x / (values * values)))


def fit_rates(rates: Mapping[int, float]) -> tuple[float, float, bool, float]:
    """``(B, c, saturated, rms)``: the link rate and per-flow cap of ``R_K = min(K*c, B)``
    fitted to measured rates by least squares of the relative error; every split of the
    sorted K into capped (``K*c``) and saturated (``B``) is tried, and such a two-parameter
    split is kept only if it clearly beats the better one-parameter model (one rate for all
    K, or all K capped; :data:`CAP_GAIN`). ``saturated`` is False when
    every K was capped (B unknown: ``math.inf``) or only one K was probed."""
    ks = np.array(sorted(rates), dtype=np.float64)
    R = np.array([rates[int(k)] for k in ks], dtype=np.float64)

    def loss(B: float, c: float) -> float:
        return float(np.mean((np.minimum(ks * c, B) / R - 1.0) ** 2))

    # one-parameter models: no cap (every K at B) or every K capped (B never reached)
    B0 = _rel_ls(R, np.ones_like(R))
    c0 = _rel_ls(R, ks)
    simple = [(loss(B0, math.inf), B0, math.inf)]
    if len(ks) >= 2:
        simple.append((loss(math.inf, c0), math.inf, c0))
    best = min(simple, key=lambda x: x[0])
    one_param = best[0]
    for j in range(1, len(ks)):  # two parameters: K[:j] capped, K[j:] at the link rate
        c = _rel_ls(R[:j], ks[:j])
        B = _rel_ls(R[j:], np.ones(len(ks) - j))
        if not c * ks[j - 1] <= B * 1.05 or c * ks[0] >= B * 0.99:
            continue  # the split contradicts min(), or the cap binds at no probed K
        l = loss(B, c)
        if l < best[0] and l < CAP_GAIN * one_param:
            best = (l, B, c)
    l, B, c = best
    saturated = not math.isinf(B) and (len(ks) >= 2 or not math.isinf(c))
    return B, c, saturated, math.sqrt(l)


def derive_link(fits: Mapping[int, LinearFit], ranks: int, steps_per_peer: int = 2) -> LinkParams:
    """Latency per ring step, launch cost per stream, link rate B and per-flow cap c
    from the per-K fits: ``R_K = 2(n-1)/(n*b_K)`` fitted by ``min(K*c, B)``
    (:func:`fit_rates`), ``a_K = 2(n-1)*alpha + K*launch`` (least squares over K,
    both clamped at 0). ``steps_per_peer``: the collective's ring steps per peer
    (2 for an all-reduce, 1 for an all-gather: ``s(n-1)`` in place of ``2(n-1)``)."""
    if ranks < 2:
        raise ValueError("need at least two ranks")
    ks = sorted(fits)
    steps = steps_per_peer * (ranks - 1)
    rates = {k: steps / (ranks * fits[k].b_s_per_byte) if fits[k].b_s_per_byte > 0 else math.inf for k in ks}
    finite = {k: v for k, v in rates.items() if math.isfinite(v)}
    # every slope 0 (time did not grow with size: noise swamped the transfer): no rate known
    link, per_stream, saturated, rms = fit_rates(finite) if finite else (math.inf, math.inf, False, 0.0)
    a = np.array([fits[k].a_s for k in ks])
    if len(ks) >= 2:
        slope, intercept = np.polyfit(np.asarray(ks, dtype=np.float64), a, 1)
    else:
        slope, intercept = 0.0, float(a[0])
    launch = max(float(slope), 0.0)
    if slope < 0:
        intercept = float(np.mean(a))
    alpha = max(float(intercept), 0.0) / steps
    return LinkParams(alpha, launch, float(link), per_stream, rates, saturated, rms)


def refit_latency(records: Iterable[Mapping], link: LinkParams, ranks: int, min_size: float = 0,
                  steps_per_peer: int = 2) -> LinkParams:
    """Second stage: with the rates fixed by the model (``b(K)`` from ``min(K*c, B)``), each
    probed K's intercept is the median of ``t - b(K)*S`` over its fitted records (robust to one
    slow size, and every size counts, not only the largest as in the absolute-weighted slope
    fit); then ``a_K = 2(n-1)*alpha + K*launch`` by least squares over K (both >= 0);
    ``steps_per_peer`` as :func:`derive_link`."""
    steps = steps_per_peer * (ranks - 1)
    by_k: dict[int, list[float]] = {}
    for r in records:
        if r["size_bytes"] >= min_size:
            k = int(r["streams"])
            rate = min(k * link.per_stream_Bps, link.link_Bps)
            b = steps / (ranks * rate) if math.isfinite(rate) else 0.0
            by_k.setdefault(k, []).append(float(r["time_s"]) - b * float(r["size_bytes"]))
    if not by_k:
        return link
    ks = np.array(sorted(by_k), dtype=np.float64)
    a = np.array([max(float(np.median(by_k[int(k)])), 0.0) for k in ks])
    if len(ks) >= 2:
        slope, intercept = np.polyfit(ks, a, 1)
        if slope < 0:
            slope, intercept = 0.0, float(np.mean(a))
        if intercept < 0:
            slope, intercept = float(np.sum(ks * a) / np.sum(ks * ks)), 0.0
    else:
        slope, intercept = 0.0, float(a[0])
    return dataclasses.replace(link, alpha_s=max(float(intercept), 0.0) / steps, launch_s=max(float(slope), 0.0))


def fit_latency_bound(records: Iterable[Mapping], ranks: int, max_size: float,
                      steps_per_peer: int = 2) -> tuple[float, float, dict[int, float]]:
    """The latency bound ``f(K) = 2(n-1)*small_step + K*small_per_stream`` from the records
    below ``max_size`` (the probe's small message): per K the fastest iteration of the
    smallest size (``min_s``, else ``time_s``: a bound, so the best case; a busy core only
    ever slows a small message down), then non-negative least squares on relative error
    over K. Returns
    ``(small_step_s, small_per_stream_s, {K: measured})``; ``(0, 0, {})`` when none was measured.
    ``steps_per_peer`` as :func:`derive_link`."""
    small = [r for r in records if float(r["size_bytes"]) < max_size]
    if not small or ranks < 2:
        return 0.0, 0.0, {}
    smin = min(float(r["size_bytes"]) for r in small)
    by_k: dict[int, list[float]] = {}
    for r in small:
        if float(r["size_bytes"]) == smin:
            by_k.setdefault(int(r["streams"]), []).append(float(r.get("min_s", r["time_s"])))
    measured = {k: float(min(v)) for k, v in sorted(by_k.items())}
    ks = np.array(list(measured), dtype=np.float64)
    t = np.array(list(measured.values()))
    steps = float(steps_per_peer * (ranks - 1))
    w = 1.0 / t  # relative error
    cols = np.stack([np.full_like(ks, steps), ks], axis=1)
    if len(ks) > 1:
        step, per_stream = np.linalg.lstsq(cols * w[:, None], t * w, rcond=None)[0]
    else:
        step, per_stream = t[0] / steps, 0.0
    if per_stream < 0 or step < 0:  # non-negative: the better of the two one-term fits
        only_step = (float(np.sum(w * w * t) / np.sum(w * w)) / steps, 0.0)
        only_k = (0.0, float(np.sum(w * w * ks * t) / np.sum(w * w * ks * ks)))
        loss = lambda p: float(np.sum(((steps * p[0] + ks * p[1] - t) * w) ** 2))  # noqa: E731
        step, per_stream = min((only_step, only_k), key=loss)
    return float(step), float(per_stream), measured


#: sharpness values tried for the latency bound's soft roofline (inf: max)
BOUND_SHARPNESS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, math.inf)


def fit_bound_sharpness(records: Iterable[Mapping], network) -> float:
    """The sharpness p (of :data:`BOUND_SHARPNESS`) whose soft roofline
    ``latency_bounded(a(K) + b(K)*S, f(K), p)`` has the least squared relative error over
    every probed record (small and large: where the two regimes meet is what p decides);
    inf when no latency bound was measured."""
    pts = [(int(r["streams"]), float(r["size_bytes"]), float(r["time_s"])) for r in records]
    if not pts or not np.any(network.min_collective_s(np.array([p[0] for p in pts])) > 0):
        return math.inf
    k = np.array([p[0] for p in pts], dtype=np.float64)
    s = np.array([p[1] for p in pts])
    t = np.array([p[2] for p in pts])
    a, b = network.coeffs(k, False)
    f = network.min_collective_s(k)
    loss = {p: float(np.mean((latency_bounded(a + b * s, f, p) / t - 1) ** 2)) for p in BOUND_SHARPNESS}
    return min(BOUND_SHARPNESS, key=lambda p: (loss[p], -p))


def fit_gap_model(gaps: Mapping[int, float]) -> tuple[float, float]:
    """``(gap0, gap_per_stream)`` of ``g(K) = gap0 + gap_per_stream*K`` by least squares over
    the per-K gaps (one K: a constant)."""
    ks = np.array(sorted(gaps), dtype=np.float64)
    g = np.array([gaps[int(k)] for k in ks], dtype=np.float64)
    if len(ks) < 2:
        return float(g[0]) if len(g) else 0.0, 0.0
    slope, intercept = np.polyfit(ks, g, 1)
    return float(intercept), float(slope)


def model_quality(records: Iterable[Mapping], network, min_size: float = 0, max_size: float = math.inf) -> dict:
    """R^2 and relative residuals of the generalised model (one formula for all K)
    against the probe's single all-reduce records in the fitted size range."""
    pts = [(int(r["streams"]), float(r["size_bytes"]), float(r["time_s"])) for r in records
           if min_size <= r["size_bytes"] <= max_size]
    if len(pts) < 2:
        return {"r2": float("nan"), "max_rel_residual": float("nan"), "mape": float("nan"), "n_points": len(pts)}
    k = np.array([p[0] for p in pts], dtype=np.float64)
    s = np.array([p[1] for p in pts])
    t = np.array([p[2] for p in pts])
    a, b = network.coeffs(k, False)
    pred = latency_bounded(a + b * s, network.min_collective_s(k), network.bound_sharpness)
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum((t - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    rel = (pred - t) / t
    return {"r2": r2, "max_rel_residual": float(np.max(np.abs(rel))), "mape": float(np.mean(np.abs(rel))),
            "n_points": len(pts)}


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


def burst_time_s(a_s: float, b_s_per_byte: float, size_bytes: float, count: int, inflight: int, gap_s: float,
                 floor_s: float = 0.0, sharpness: float = math.inf) -> float:
    """The simulator's time for ``count`` buffers of ``size_bytes`` all dispatched at t=0
    (the reference scheduler of :mod:`simulators.system`, so the fit and the
    simulator use the same formulas)."""
    from simulators.system import schedule

    row = (False, 1.0, 1.0, 0.0, 0.0, 0.0, float(a_s), float(b_s_per_byte), int(inflight), float(gap_s), 0.0, 0.0,
           1, 0.0, 0.0, math.inf, math.inf, 0.0, 0.0, 0.0, False, float(floor_s), float(sharpness))
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


def _fit_gap(a: float, b: float, pts: Sequence[tuple[float, int, float]], m: int, floor: float = 0.0,
             sharpness: float = math.inf) -> tuple[float, float]:
    """Gap g >= 0 minimising the squared relative error of the burst times (grid, then refined)."""
    def loss(g: float) -> float:
        return float(np.mean([((burst_time_s(a, b, s, c, m, g, floor, sharpness) - t) / t) ** 2 for s, c, t in pts]))

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
                   candidates: Sequence[int] = (1, 2, 3, 4), floors: Mapping[int, float] | None = None,
                   sharpness: float = math.inf) -> PipelineFit:
    """Fit ``m`` (collectives in flight per stream, one for all K) and a gap ``g_K``
    per stream count to burst measurements, given the single all-reduce fits
    ``a_K + b_K*S``. For each candidate m the gaps are fitted per K; the
    smallest m whose error is within ``1 + PIPELINE_TOLERANCE`` of the best wins
    (bursts of link-bound buffers cannot tell m=2 from m=4; m=1 with a gap
    larger than a_K is the same as m=2 with that gap, so the smaller m is kept).
    ``floors``, ``sharpness``: the latency bound per K and its sharpness (each collective
    takes ``latency_bounded(a_K + b_K*S, f_K, p)``, :mod:`simulators.network`)."""
    f = floors or {}
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
            g, l = _fit_gap(fits[k].a_s, fits[k].b_s_per_byte, pts, m, f.get(k, 0.0), sharpness)
            gaps[k] = g
            losses.append(l * len(pts))
        results[m] = (gaps, float(np.sum(losses) / sum(len(p) for p in by_k.values())))
    best = min(v[1] for v in results.values())
    m = min(c for c in candidates if results[c][1] <= best * (1 + PIPELINE_TOLERANCE) + 1e-12)
    gaps = results[m][0]
    residuals = {k: [burst_time_s(fits[k].a_s, fits[k].b_s_per_byte, s, c, m, gaps[k], f.get(k, 0.0), sharpness) / t - 1
                     for s, c, t in pts]
                 for k, pts in sorted(by_k.items())}
    return PipelineFit(m, gaps, {c: results[c][1] for c in candidates}, residuals)


# --------------------------------------------------------------------------- all-gather and reduce-scatter

def fit_collective(records: Sequence[Mapping], ranks: int, steps_per_peer: int, min_size: float = 0,
                   weighting: str = "relative", sharpness: float | None = None):
    """``(CollectiveParams, quality)`` of one sharded collective from its probe records, in
    the all-reduce's form with ``s(n-1)`` ring steps (``s = steps_per_peer``): per-K lines
    on the sizes at or above ``min_size`` (every size when fewer than two are), the rates
    ``min(K*c, B)`` and ``a(K) = s(n-1)*alpha + K*launch`` (:func:`derive_link`,
    :func:`refit_latency`), the latency bound of the smallest size below ``min_size``
    (:func:`fit_latency_bound`) and the soft roofline's sharpness (``sharpness``: the
    all-reduce's, which the simulator applies to every collective; None: fitted,
    :func:`fit_bound_sharpness`). ``quality`` as :func:`model_quality` over the fitted records."""
    from simulators.calibrated import CollectiveModel, CollectiveParams

    fits = fit_measurements(records, ranks, min_size=min_size, weighting=weighting)
    if not fits:
        fits, min_size = fit_measurements(records, ranks, weighting=weighting), 0
    if not fits:
        raise CommtuneError("need at least two message sizes per stream count to fit t = a + b*S")
    link = refit_latency(records, derive_link(fits, ranks, steps_per_peer), ranks, min_size, steps_per_peer)
    small_step, small_per_stream, _ = fit_latency_bound(records, ranks, min_size, steps_per_peer)
    params = CollectiveParams(steps_per_peer, link.link_Bps, link.per_stream_Bps, link.alpha_s, link.launch_s,
                              small_step, small_per_stream)
    p = fit_bound_sharpness(records, CollectiveModel(params, ranks)) if sharpness is None else float(sharpness)
    params = dataclasses.replace(params, bound_sharpness=p)
    return params, model_quality(records, CollectiveModel(params, ranks), min_size=min_size)
