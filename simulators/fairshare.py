"""Round robin's streams sharing one link: a fluid model with max-min fair rates.

Under ``stream_mode = round_robin`` buffer ``j`` goes whole onto stream
``j mod K``; the K streams are separate flows (one TCP connection or NCCL
channel set per neighbour) that share each rank's link. Each flow is capped
at ``c`` (the per-flow rate) and the link carries ``B``; a fair link (TCP's
congestion control, a shaper's fair queue) gives every busy stream the same
share until the cap binds. In units of one stream's full rate (a buffer's
*work* ``b(1)*S`` is the time it takes alone) the link holds ``R = b(1)/b(K)
= min(K, B/c)`` streams, and with ``a`` streams transferring each gets::

    share = min(1, R / a)

split evenly over the collectives of that stream that are in flight (at most
``m`` per stream, in buffer order: buffer j waits until its stream has a free
slot). A collective first pays its latency part ``a(1)`` without using the
link, then transfers its work (its bytes, plus the link time the round-robin
gap ``g_rr`` costs per collective; ``simulators.system``) at its share. Rates change only when a collective is admitted, leaves its latency part
or ends, so the schedule is exact between those events.

This is what makes round robin lose against split on unevenly loaded streams:
a stream with more bytes than the others gets only ``R/a`` of one stream's rate
while all are busy, and once the others are done it runs alone at its cap, with
the rest of the link idle (seen on 3 hosts at 300 Mbit/s with a 120 Mbit/s cap,
3 streams of 4 MiB buckets: 1073 ms live, 905 ms predicted by a first-come
first-served link, 1047 ms by this model). With every stream busy to the end
the link stays full and the last buffer ends when the total work does.

The event loop (:func:`_fluid`) is plain Python over arrays; it runs compiled
by numba where numba imports (about a microsecond per event instead of a few),
interpreted otherwise, with the same arithmetic either way.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

#: a collective is done when this share of its work (at least this many seconds' worth) is left
EPS = 1e-12


def fair_share_schedule(ready_s: Sequence[float], latency_s: Sequence[float], work_s: Sequence[float],
                        streams: int, inflight: int, link_streams: float) -> tuple[list[float], list[float]]:
    """``(start, end)`` of each buffer (buffer j on stream ``j % streams``).

    ``ready_s``: when buffer j may start (dispatched, host pre-work done);
    ``latency_s``: its latency part; ``work_s``: its transfer time alone at one
    stream's rate; ``inflight``: collectives in flight per stream (m);
    ``link_streams``: the link's capacity in streams, ``R = min(K, B/c)``."""
    n = len(ready_s)
    start, end = np.zeros(n), np.zeros(n)
    if n:
        _kernel()(np.asarray(ready_s, dtype=np.float64), np.asarray(latency_s, dtype=np.float64),
                  np.asarray(work_s, dtype=np.float64), max(int(streams), 1), max(int(inflight), 1),
                  float(link_streams), start, end)
    return start.tolist(), end.tolist()


def _fluid(ready, lat, work, k, m, cap, start, end):  # pragma: no cover - compiled by numba where it imports
    """The event loop: writes ``start`` and ``end`` (see :func:`fair_share_schedule`)."""
    n = ready.shape[0]
    go = np.zeros(n)  # when buffer j's transfer may begin: its start + latency part
    left = work.copy()
    done_at = np.empty(n)  # what counts as transferred
    for j in range(n):
        done_at[j] = EPS * max(1.0, work[j])
    nxt = np.arange(k)  # the next buffer of each stream not yet admitted
    count = np.zeros(k, np.int64)  # admitted, not ended, per stream
    moving = np.zeros(k, np.int64)  # collectives transferring, per stream
    active = np.zeros(k * m, np.int64)
    na = 0
    t = 0.0
    ended = 0
    while ended < n:
        for s in range(k):  # admit what is ready and has a slot, in buffer order
            j = nxt[s]
            while j < n and count[s] < m and ready[j] <= t:
                start[j] = t
                go[j] = t + lat[j]
                active[na] = j
                na += 1
                count[s] += 1
                j += k
            nxt[s] = j
        busy = 0
        for s in range(k):
            moving[s] = 0
        for i in range(na):
            j = active[i]
            if go[j] <= t:
                if moving[j % k] == 0:
                    busy += 1
                moving[j % k] += 1
        share = 0.0
        if busy > 0:
            share = cap / busy if cap < busy else 1.0
        nearest = np.inf
        for s in range(k):
            j = nxt[s]
            if j < n and count[s] < m and ready[j] < nearest:
                nearest = ready[j]
        for i in range(na):
            j = active[i]
            e = go[j] if go[j] > t else t + left[j] * moving[j % k] / share
            if e < nearest:
                nearest = e
        step = nearest - t
        keep = 0
        for i in range(na):
            j = active[i]
            if go[j] <= t:
                left[j] -= step * share / moving[j % k]
                if left[j] <= done_at[j]:
                    end[j] = nearest
                    count[j % k] -= 1
                    ended += 1
                    continue
            active[keep] = j
            keep += 1
        na = keep
        t = nearest


@functools.cache
def _kernel() -> Callable:
    """:func:`_fluid` compiled by numba (cached on disk), or as it is where numba does not import."""
    try:
        import numba
    except ImportError:
        return _fluid
    return numba.njit(cache=True)(_fluid)
