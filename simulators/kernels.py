"""The schedulers' inner loops, compiled by numba where it imports.

:func:`schedule_row` is the reference scheduler (:func:`simulators.system.schedule`)
of one configuration over arrays, with the same arithmetic in the same order, so
its figures are the reference's; :func:`schedule_rows` runs it over every row of
a batch in one call. Round robin's fair-share event loop (:func:`fluid`,
:mod:`simulators.fairshare`) and the latency bound
(:func:`latency_bounded_scalar`) live here too: numba's on-disk cache
(``cache=True``) is invalidated when this file changes, not when a callee in
another file does, so every function the compiled code calls is in this file.

Without numba the same functions run interpreted (the same figures, about a
hundred times slower: ~0.4 ms against ~3 us a ResNet-50 configuration).
:func:`kernels` compiles them on first use: a fresh compile takes ~4 s, loading
them from the on-disk cache ~0.6 s per process (2-core machine under load).

A configuration is one row of :data:`NPARAM` floats in the order of
:meth:`simulators.system.SystemParams.row` (booleans and counts as floats).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

#: a collective is done when this share of its work (at least this many seconds' worth) is left
EPS = 1e-12
#: numbers per configuration (the fields of ``SystemParams``)
NPARAM = 23
#: scratch columns per buffer of :func:`schedule_row`: first, last, bytes, dispatch, start, end, done,
#: and round robin's ready, latency part and work
NSCRATCH = 10


def latency_bounded_scalar(line_s: float, floor_s: float, sharpness: float = math.inf) -> float:
    """:func:`simulators.network.latency_bounded` of one collective, in plain floats: the reference
    scheduler calls it per buffer, where numpy on scalars cost half of a calibrated ``Simulator.run``."""
    if not floor_s > 0:
        return line_s
    if line_s >= floor_s:
        hi, lo = line_s, floor_s
    else:
        hi, lo = floor_s, line_s
    if math.isinf(sharpness) or not hi > 0:
        return hi
    return hi * (1.0 + (lo / hi) ** sharpness) ** (1.0 / sharpness)


def cycle_tick(ready_s: float, origin_s: float, period_s: float) -> float:
    """The background loop's first cycle at or after ``ready_s`` (cycles every ``period_s`` from
    ``origin_s``; none before ``origin_s``; ``period_s`` 0: at once), as the reference computes it."""
    if ready_s <= origin_s:
        return origin_s
    if period_s > 0:
        return origin_s + math.ceil((ready_s - origin_s) / period_s) * period_s
    return ready_s


def fluid(ready, lat, work, k, m, cap, start, end):
    """Round robin's fair-share event loop (:func:`simulators.fairshare.fair_share_schedule`):
    writes each buffer's ``start`` and ``end``."""
    n = ready.shape[0]
    go = np.zeros(n)  # when buffer j's transfer may begin: its start + latency part
    left = work.copy()
    done_at = np.empty(n)  # what counts as transferred
    for j in range(n):
        done_at[j] = EPS * max(1.0, work[j])
    nxt = np.arange(k)  # the next buffer of each stream not yet admitted
    count = np.zeros(k, np.int64)  # admitted, not ended, per stream
    moving = np.zeros(k, np.int64)  # collectives transferring, per stream
    active = np.zeros(k * m, np.int64)  # admitted, not ended: the buffer ...
    stream = np.zeros(k * m, np.int64)  # ... and its stream (j % k)
    na = 0
    t = 0.0
    ended = 0
    # the earliest ready buffer among the streams with a free slot; only an end (a freed slot)
    # or reaching it can admit anything, so admission is skipped otherwise
    ready_min = -np.inf
    freed = True
    while ended < n:
        if freed or ready_min <= t:
            for s in range(k):  # admit what is ready and has a slot, in buffer order
                j = nxt[s]
                while j < n and count[s] < m and ready[j] <= t:
                    start[j] = t
                    go[j] = t + lat[j]
                    active[na] = j
                    stream[na] = s
                    na += 1
                    count[s] += 1
                    j += k
                nxt[s] = j
            ready_min = np.inf
            for s in range(k):
                j = nxt[s]
                if j < n and count[s] < m and ready[j] < ready_min:
                    ready_min = ready[j]
            freed = False
        busy = 0
        for s in range(k):
            moving[s] = 0
        for i in range(na):
            if go[active[i]] <= t:
                s = stream[i]
                if moving[s] == 0:
                    busy += 1
                moving[s] += 1
        share = 0.0
        if busy > 0:
            share = cap / busy if cap < busy else 1.0
        nearest = ready_min
        for i in range(na):
            j = active[i]
            e = go[j] if go[j] > t else t + left[j] * moving[stream[i]] / share
            if e < nearest:
                nearest = e
        step = nearest - t
        keep = 0
        for i in range(na):
            j = active[i]
            s = stream[i]
            if go[j] <= t:
                left[j] -= step * share / moving[s]
                if left[j] <= done_at[j]:
                    end[j] = nearest
                    count[s] -= 1
                    ended += 1
                    freed = True
                    continue
            active[keep] = j
            stream[keep] = s
            keep += 1
        na = keep
        t = nearest


def schedule_row(ready_s, grad_bytes, p, buf):
    """The reference scheduler (:func:`simulators.system.schedule`) of the configuration ``p``
    (:data:`NPARAM` floats); writes its buffers into the columns of ``buf`` (``NSCRATCH`` x
    tensors + 1, see :data:`NSCRATCH`) and returns ``(buffers, rounds, busy, delay)``."""
    dynamic = p[0] != 0.0
    thr, first_cap, period, nego = p[1], p[2], p[3], p[4]
    a, b, m, gap, h_pre, h_post = p[6], p[7], int(p[8]), p[9], p[10], p[11]
    k, b_link, g_link, a2, b2 = int(p[12]), p[13], p[14], p[15], p[16]
    cost, share, kappa, waits, floor, floor_p = p[17], p[18], p[19], p[20] != 0.0, p[21], p[22]
    first, last, size, disp_at, start_at, end_at, done_at = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6]
    fair_ready, fair_lat, fair_work = buf[7], buf[8], buf[9]
    cur_bytes = 0.0
    cur_disp = 0.0
    cur_first = 0
    first_bucket = True
    rounds = 0
    prev_tick = -1.0
    prev_end = -np.inf
    delay = 0.0
    origin = 0.0
    moves = cost > 0 or share > 0 or kappa > 0 or waits
    n = ready_s.shape[0]
    nb = 0
    tick = 0.0
    disp = 0.0
    link_streams = b / b_link if b_link > 0 else float(k)
    for i in range(n + 1):
        s = 0.0
        if i < n:
            s = grad_bytes[i]
            r = ready_s[i] + delay
            if dynamic:
                tick = _tick(r, origin, period)
                disp = tick + nego
                flush = cur_bytes > 0 and (disp != cur_disp or cur_bytes + s > thr)
            else:
                disp = r
                flush = cur_bytes > 0 and cur_bytes >= (first_cap if first_bucket else thr)
            if not flush:
                if dynamic and tick != prev_tick:
                    rounds += 1
                    prev_tick = tick
                cur_bytes += s
                cur_disp = disp
                continue
        # emit the current buffer (simulators.system's formulas)
        j = nb
        slot = end_at[j - k * m] if j >= k * m else 0.0
        ready = cur_disp + cost + h_pre * cur_bytes
        start = ready if ready > slot else slot
        aj, bj = a, b
        if a2 + b2 * cur_bytes < a + b * cur_bytes:  # the faster algorithm
            aj, bj = a2, b2
        bs = bj * cur_bytes
        if floor > 0:  # the latency bound
            aj = _bounded(aj + bs, floor, floor_p) - bs
        end = start + (aj + bs)
        serial = (end_at[j - k] if j >= k else -np.inf) + gap + bs
        if serial > end:
            end = serial
        if k > 1:
            fair_ready[j] = ready
            fair_lat[j] = aj
            fair_work[j] = bs + g_link * link_streams
        end_at[j] = end
        if end > prev_end:
            prev_end = end
        first[j] = cur_first
        last[j] = i - 1
        size[j] = cur_bytes
        disp_at[j] = cur_disp
        start_at[j] = start
        nb += 1
        if i < n:
            if moves:
                delay += cost + share * (aj + bs) + kappa * cur_bytes
                if waits:
                    origin = prev_end
                r = ready_s[i] + delay
                if not dynamic:
                    tick, disp = r, r
                else:
                    tick = _tick(r, origin, period)
                    disp = tick + nego
            if dynamic and tick != prev_tick:
                rounds += 1
                prev_tick = tick
            first_bucket = False
            cur_bytes = s
            cur_first = i
            cur_disp = disp
    if k > 1:  # round robin: K flows share the link max-min fairly
        _fluid(fair_ready[:nb], fair_lat[:nb], fair_work[:nb], k, max(m, 1), link_streams,
              start_at[:nb], end_at[:nb])
    done = 0.0
    if not dynamic and n > 0:
        done = ready_s[n - 1] + delay
    busy = 0.0
    latest = -np.inf
    for j in range(nb):
        st, en = start_at[j], end_at[j]
        span = en - (st if st > latest else latest)
        if span > 0.0:
            busy += span
        if en > latest:
            latest = en
        done = (done if done > en else en) + h_post * size[j]
        done_at[j] = done
    return nb, rounds, busy, delay


def schedule_rows(ready_s, grad_bytes, params, out):
    """:func:`schedule_row` for every row of ``params`` (configurations x :data:`NPARAM`); row i of
    ``out`` gets ``comm_end_s`` (done of the last buffer), ``comm_busy_s``, buffers, rounds and
    ``delay_s``."""
    buf = np.zeros((NSCRATCH, ready_s.shape[0] + 1))
    for i in range(params.shape[0]):
        nb, rounds, busy, delay = _row(ready_s, grad_bytes, params[i], buf)
        out[i, 0] = buf[6, nb - 1]
        out[i, 1] = busy
        out[i, 2] = nb
        out[i, 3] = rounds
        out[i, 4] = delay


# What the compiled functions call: these Python functions, replaced by their compiled
# versions in :func:`kernels` (numba resolves a callee by its global name when it compiles).
_bounded, _tick, _fluid, _row = latency_bounded_scalar, cycle_tick, fluid, schedule_row


class Kernels(NamedTuple):
    """The functions of this module, compiled or as they are."""

    fluid: Callable
    schedule_row: Callable
    schedule_rows: Callable


@functools.cache
def kernels() -> Kernels:
    """This module's functions compiled by numba (cached on disk), or as they are where numba
    does not import; the module's public names stay the Python functions."""
    global _bounded, _tick, _fluid, _row
    try:
        import numba
    except ImportError:
        return Kernels(fluid, schedule_row, schedule_rows)

    def jit(fn: Callable) -> Callable:
        try:
            return numba.njit(cache=True)(fn)
        except RuntimeError:  # no writable cache directory: compile in memory, every process
            return numba.njit(fn)

    _bounded, _tick, _fluid = jit(latency_bounded_scalar), jit(cycle_tick), jit(fluid)
    _row = jit(schedule_row)
    return Kernels(_fluid, _row, jit(schedule_rows))
