"""The scheduler of :func:`simulators.system.schedule`, vectorised over configurations.

One pass over the gradient tensors updates per-configuration state arrays, so
thousands of configurations cost about as much as one Python loop of numpy
operations. Tests check it against the reference scheduler exactly.

Pipelining (``m`` collectives in flight per stream) needs the ends of
buffers j-m and j-1: a ring of the last ``max(m)`` buffer ends per
configuration, indexed by buffer number modulo its length.
Slots not yet written hold 0, which is what the reference uses for
``end_{j-m}`` with j < m (times are never negative); the back-to-back term
of the first buffer is masked to -inf.

Only split rows take the vectorised pass; round robin rows (K > 1) are run
through the reference scheduler one by one: their fair-share pass
(:mod:`simulators.fairshare`) is event-driven over each row's own buffers,
which one pass over tensors does not vectorise
(about 0.1 ms per row, most of it the reference's own pass over the tensors,
against microseconds for a split row).

Static fusion's host post-work starts no earlier than the end of backward,
``B + D``, which is known only once every buffer is launched; since the
chain is ``done_J = max(done'_J, B + D + h_post*sum S)`` (``done'`` started
at 0), the floor is applied at the end.
"""
from __future__ import annotations

import numpy as np

from simulators.network import latency_bounded
from simulators.system import SystemParams, schedule


def schedule_batch(ready_s: np.ndarray, grad_bytes: np.ndarray, p: SystemParams) -> dict[str, np.ndarray]:
    """Return per-configuration ``comm_end_s`` (done of the last buffer),
    ``comm_busy_s``, ``num_buffers``, ``rounds`` (negotiation rounds) and
    ``delay_s`` (what the buffers added to backward). Split rows (stride 1) go through
    the vectorised pass, round robin rows (K > 1) through the reference scheduler."""
    is_rr = p.stride > 1
    rr = np.flatnonzero(is_rr)
    if not len(rr):
        return _vectorised(ready_s, grad_bytes, p)
    n = len(p)
    out = {"comm_end_s": np.zeros(n), "comm_busy_s": np.zeros(n), "num_buffers": np.zeros(n, dtype=np.int64),
           "rounds": np.zeros(n, dtype=np.int64), "delay_s": np.zeros(n)}
    split = np.flatnonzero(~is_rr)
    if len(split):
        for key, val in _vectorised(ready_s, grad_bytes, p.take(split)).items():
            out[key][split] = val
    _round_robin_rows(ready_s, grad_bytes, p, rr, out)
    return out


def _vectorised(ready_s: np.ndarray, grad_bytes: np.ndarray, p: SystemParams) -> dict[str, np.ndarray]:
    """:func:`schedule_batch` for split rows: one pass over the tensors for every configuration."""
    n = len(p)
    dyn = p.dynamic
    period = p.period_s
    has_period = period > 0
    safe_period = np.where(has_period, period, 1.0)
    a, b, thr, first_cap, nego = p.a_s, p.b_s_per_byte, p.threshold, p.first_cap, p.nego_s
    m, gap, h_pre, h_post = p.inflight, p.gap_s, p.host_pre_s_per_byte, p.host_post_s_per_byte
    a2, b2, cost, share, kappa = p.a2_s, p.b2_s_per_byte, p.bucket_cost_s, p.sm_share, p.gpu_s_per_byte
    floor, floor_p = p.floor_s, p.floor_p
    has_floor = bool((floor > 0).any())
    has_alt = bool(np.isfinite(a2).any())
    interferes = bool((cost > 0).any() or (share > 0).any() or (kappa > 0).any())
    waits = p.loop_waits
    any_waits = bool(waits.any())
    origin = np.zeros(n)
    ring = int(m.max()) if n else 1
    use_ring = ring > 1
    # ring of the last `ring` buffer ends, flat: configuration i, buffer j at i*ring + j % ring;
    # -inf = not written (a slot read clamps it to 0, a back-to-back read keeps -inf)
    hist = np.full(n * ring, -np.inf) if use_ring else None
    base = np.arange(n) * ring

    last_end = np.full(n, -np.inf)  # the end of the previous buffer
    done = np.zeros(n)
    delay = np.zeros(n)
    busy = np.zeros(n)
    nbuf = np.zeros(n, dtype=np.int64)
    rounds = np.zeros(n, dtype=np.int64)
    cur = np.zeros(n)
    cur_disp = np.zeros(n)
    prev_tick = np.full(n, -1.0)
    first_bucket = np.ones(n, dtype=bool)
    cap = first_cap.copy()

    def emit(size: np.ndarray, disp: np.ndarray):
        """(start, end, done, the collective's own duration a + b*S) of a buffer of ``size``
        bytes dispatched at ``disp``, every configuration."""
        if use_ring:
            slot = np.maximum(hist.take(base + (nbuf - m) % ring), 0.0)
            prev = hist.take(base + (nbuf - 1) % ring)
        else:
            slot = np.maximum(last_end, 0.0)
            prev = last_end
        ready = disp + cost + h_pre * size
        start = np.maximum(ready, slot)
        aj, bj = a, b
        if has_alt:  # the faster algorithm per buffer
            alt = a2 + b2 * size < a + b * size
            aj, bj = np.where(alt, a2, a), np.where(alt, b2, b)
        bs = bj * size
        if has_floor:  # the latency bound
            aj = latency_bounded(aj + bs, floor, floor_p) - bs
        end = np.maximum(start + (aj + bs), prev + gap + bs)
        return start, end, np.maximum(done, end) + h_post * size, aj + bs

    def dispatch(r):
        if any_waits:
            late = r > origin
            grid = origin + np.ceil((r - origin) / safe_period) * safe_period
            tick = np.where(late, np.where(has_period, grid, r), origin)
        else:
            tick = np.where(has_period, np.ceil(r / safe_period) * safe_period, r)
        return tick, np.where(dyn, tick + nego, r)

    moving = interferes or any_waits
    for r, s in zip(ready_s.tolist(), grad_bytes.tolist()):
        tick, disp = dispatch(r + delay) if interferes else dispatch(r)
        flush_dyn = (disp != cur_disp) | (cur + s > thr)
        flush = (cur > 0) & np.where(dyn, flush_dyn, cur >= cap)
        if flush.any():
            start, end, dn, t_j = emit(cur, cur_disp)
            busy += np.where(flush, np.maximum(end - np.maximum(start, last_end), 0.0), 0.0)
            if use_ring:
                at = base + nbuf % ring
                hist[at] = np.where(flush, end, hist.take(at))
            last_end = np.where(flush, np.maximum(end, last_end), last_end)
            if interferes:
                delay = np.where(flush, delay + cost + share * t_j + kappa * cur, delay)
            if any_waits:
                origin = np.where(flush & waits, last_end, origin)
            if moving:
                tick, disp = dispatch(r + delay)
            done = np.where(flush, dn, done)
            nbuf += flush
            first_bucket &= ~flush
            cap = np.where(first_bucket, first_cap, thr)
            cur = np.where(flush, s, cur + s)
        else:
            cur = cur + s
        cur_disp = disp
        new_round = dyn & (tick != prev_tick)
        rounds += new_round
        prev_tick = np.where(new_round, tick, prev_tick)

    start, end, dn, _ = emit(cur, cur_disp)
    busy += np.maximum(end - np.maximum(start, last_end), 0.0)
    if len(ready_s):
        post = h_post * float(np.sum(grad_bytes))
        dn = np.where(dyn, dn, np.maximum(dn, float(ready_s[-1]) + delay + post))
    return {"comm_end_s": dn, "comm_busy_s": busy, "num_buffers": nbuf + 1, "rounds": rounds, "delay_s": delay}


def _round_robin_rows(ready_s: np.ndarray, grad_bytes: np.ndarray, p: SystemParams, rows: np.ndarray,
                      out: dict[str, np.ndarray]) -> None:
    """Round robin rows (K > 1): the reference scheduler, row by row. Its fair-share pass
    (:mod:`simulators.fairshare`) is event-driven over each row's own buffers, which the
    one pass over tensors above does not vectorise (the module docstring)."""
    ready, sizes = ready_s.tolist(), grad_bytes.tolist()
    for i in rows.tolist():
        buffers, rounds, busy, delay = schedule(ready, sizes, p.row(i))
        out["comm_end_s"][i] = buffers[-1].done_s
        out["comm_busy_s"][i], out["num_buffers"][i], out["rounds"][i], out["delay_s"][i] = busy, len(buffers), rounds, delay
