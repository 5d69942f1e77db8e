"""The scheduler of :func:`simulators.system.schedule`, vectorised over configurations.

One pass over the gradient tensors updates per-configuration state arrays, so
thousands of configurations cost about as much as one Python loop of numpy
operations. Tests check it against the reference scheduler exactly.

Pipelining (``m`` collectives in flight per stream) needs the end of buffer
j-m: a ring of the last ``max(m)`` buffer ends per configuration, indexed by
buffer number modulo ``max(m)``. Slots not yet written hold 0, which is what
the reference uses for ``end_{j-m}`` with j < m (times are never negative).

Static fusion's host post-work starts no earlier than the end of backward,
``B + D``, which is known only once every buffer is launched; since the
chain is ``done_J = max(done'_J, B + D + h_post*sum S)`` (``done'`` started
at 0), the floor is applied at the end.
"""
from __future__ import annotations

import numpy as np

from simulators.system import SystemParams


def schedule_batch(ready_s: np.ndarray, grad_bytes: np.ndarray, p: SystemParams) -> dict[str, np.ndarray]:
    """Return per-configuration ``comm_end_s`` (done of the last buffer),
    ``comm_busy_s``, ``num_buffers``, ``rounds`` (negotiation rounds) and
    ``delay_s`` (what the buffers added to backward)."""
    n = len(p)
    dyn = p.dynamic
    period = p.period_s
    has_period = period > 0
    safe_period = np.where(has_period, period, 1.0)
    a, b, thr, first_cap, nego = p.a_s, p.b_s_per_byte, p.threshold, p.first_cap, p.nego_s
    m, gap, h_pre, h_post = p.inflight, p.gap_s, p.host_pre_s_per_byte, p.host_post_s_per_byte
    a2, b2, cost, share = p.a2_s, p.b2_s_per_byte, p.bucket_cost_s, p.sm_share
    has_alt = bool(np.isfinite(a2).any())
    interferes = bool((cost > 0).any() or (share > 0).any())
    waits = p.loop_waits
    any_waits = bool(waits.any())
    origin = np.zeros(n)
    m_max = int(m.max()) if n else 1
    pipelined = m_max > 1
    rows = np.arange(n)
    hist = np.zeros((n, m_max)) if pipelined else None

    last_end = np.full(n, -np.inf)
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
        """(start, end, done, collective time) of a buffer of ``size`` bytes
        dispatched at ``disp``, every configuration."""
        if pipelined:
            slot = hist[rows, (nbuf - m) % m_max]
        else:
            slot = np.maximum(last_end, 0.0)
        start = np.maximum(disp + cost + h_pre * size, slot)
        aj, bj = a, b
        if has_alt:
            alt = a2 + b2 * size < a + b * size
            aj, bj = np.where(alt, a2, a), np.where(alt, b2, b)
        bs = bj * size
        end = np.maximum(start + (aj + bs), last_end + gap + bs)
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
            start, end, dn, t_coll = emit(cur, cur_disp)
            if interferes:
                delay = np.where(flush, delay + cost + share * t_coll, delay)
            if any_waits:
                origin = np.where(flush & waits, end, origin)
            if moving:
                tick, disp = dispatch(r + delay)
            busy += np.where(flush, end - np.maximum(start, last_end), 0.0)
            if pipelined:
                hist[rows, nbuf % m_max] = np.where(flush, end, hist[rows, nbuf % m_max])
            last_end = np.where(flush, end, last_end)
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
    busy += end - np.maximum(start, last_end)
    if len(ready_s):
        post = h_post * float(np.sum(grad_bytes))
        dn = np.where(dyn, dn, np.maximum(dn, float(ready_s[-1]) + delay + post))
    return {"comm_end_s": dn, "comm_busy_s": busy, "num_buffers": nbuf + 1, "rounds": rounds, "delay_s": delay}
