"""The measurement every probe rank runs: all-reduce, all-gather and reduce-scatter
time against size and streams (plus bursts and the host work around a DDP bucket)."""
from __future__ import annotations

import statistics
from typing import Sequence

from commtune.probe.comm import now
from commtune.probe.progress import Progress

ELEMENT_BYTES = 4  # float32


#: timed iterations of a point are spread over this many passes over all points (alternating order)
PASSES = 2
#: a point whose pass medians differ by more than this (relative) gets one more pass
NOISY_SPREAD = 0.05


def measure_allreduce(
    comm,
    sizes: Sequence[int],
    streams: Sequence[int],
    iters: int = 5,
    warmup: int = 1,
    progress: Progress | None = None,
) -> list[dict]:
    """Time all-reduces of each size split over each stream count.

    Every iteration starts after a barrier; its time is the slowest rank's.
    The ``iters`` timed iterations of a point are spread over passes over
    all points (:func:`_sweep`), so a stretch of time when the host is slowed
    down (another job, a hypervisor's steal) hits several points a little
    instead of one point wholly. Returns one record per (streams, size) with
    ``time_s`` (the median of the pass medians: one disturbed pass out of three
    does not move it; ``commtune validate`` times live steps the same way),
    the pass medians, mean and min. All ranks return the same.
    """
    def make_run(numel: int, k: int, groups, buffers: dict):
        if numel not in buffers:  # one buffer per size, shared by every K (K views of it)
            buffers[numel] = comm.buffer(numel)
        parts = comm.split(buffers[numel], k)
        return lambda: comm.allreduce_parts(parts, groups)

    return [{"streams": int(k), "size_bytes": int(numel * ELEMENT_BYTES), "count": int(numel),
             "time_s": statistics.median(medians), "pass_medians_s": medians, "mean_s": statistics.fmean(times),
             "min_s": min(times), "iters": len(times)}
            for k, numel, times, medians in _sweep(comm, sizes, streams, make_run, warmup, iters, progress)]


#: the sharded collectives the probe measures (besides ``allreduce``)
SHARDED_COLLECTIVES = ("allgather", "reduce_scatter")


def measure_allgather(comm, sizes: Sequence[int], streams: Sequence[int], iters: int = 5, warmup: int = 1,
                      progress: Progress | None = None) -> list[dict]:
    """Time all-gathers of each full (unsharded) size ``S`` split over each stream count:
    every rank holds ``S/n`` per part and gathers the other shards into the part's
    full buffer (part i on stream i). Sizes are rounded up to whole shards
    (``size_bytes`` is what was moved). Timed and returned as :func:`measure_allreduce`."""
    return _measure_sharded(comm, "allgather", sizes, streams, iters, warmup, progress)


def measure_reduce_scatter(comm, sizes: Sequence[int], streams: Sequence[int], iters: int = 5, warmup: int = 1,
                           progress: Progress | None = None) -> list[dict]:
    """Time reduce-scatters of each full size ``S`` split over each stream count: every rank
    reduces the part's full buffer and keeps its ``S/n`` shard (gloo: an all-reduce of the
    full part, :mod:`commtune.probe.comm`). Timed and returned as :func:`measure_allreduce`."""
    return _measure_sharded(comm, "reduce_scatter", sizes, streams, iters, warmup, progress)


def _measure_sharded(comm, collective: str, sizes: Sequence[int], streams: Sequence[int], iters: int, warmup: int,
                     progress: Progress | None) -> list[dict]:
    op = {"allgather": comm.allgather_parts, "reduce_scatter": comm.reduce_scatter_parts}[collective]

    def make_run(numel: int, k: int, groups, buffers: dict):
        if numel not in buffers:
            buffers[numel] = comm.buffer(numel)
        parts = comm.shard_parts(buffers[numel], k)
        return lambda: op(parts, groups)

    return [{"collective": collective, "streams": int(k), "size_bytes": int(numel * ELEMENT_BYTES), "count": int(numel),
             "time_s": statistics.median(medians), "pass_medians_s": medians, "mean_s": statistics.fmean(times),
             "min_s": min(times), "iters": len(times)}
            for k, numel, times, medians in _sweep(comm, sizes, streams, make_run, warmup, iters, progress,
                                                   multiple=comm.world)]


MEASURE = {"allgather": measure_allgather, "reduce_scatter": measure_reduce_scatter}


def _sweep(comm, sizes: Sequence[int], streams: Sequence[int], make_run, warmup: int, iters: int,
           progress: Progress | None, passes: int = PASSES, multiple: int = 1):
    """For each stream count K and size: ``make_run(numel, K, groups, buffers)`` builds
    the collective to time (``buffers``: a dict shared by all points, to reuse buffers).

    The ``iters`` timed iterations of every point are split over ``passes``
    passes over all points, in alternating order; each visit runs ``warmup``
    untimed iterations first (connections and caches warm, as in training). A
    point whose pass medians still differ by more than :data:`NOISY_SPREAD`
    gets one more pass. Returns ``(K, numel, per-iteration slowest-rank times,
    per-pass medians)`` per point, K-major (the same on every rank: decisions
    use the all-reduced times). ``multiple``: element counts are rounded up to a
    multiple of it, at least ``K * multiple`` (the world size: whole shards per stream).
    """
    progress = progress or Progress(comm.rank)
    groups_all = comm.stream_groups(max(streams))
    points = [(k, max(k * multiple, -(-(-(-int(size) // ELEMENT_BYTES)) // multiple) * multiple))
              for k in streams for size in sizes]
    buffers: dict = {}
    runs = {p: make_run(p[1], p[0], groups_all[:p[0]], buffers) for p in points}
    passes = max(1, min(passes, iters))
    per_pass = [iters // passes + (1 if i < iters % passes else 0) for i in range(passes)]
    visits: dict = {p: [] for p in points}
    for i, n in enumerate(per_pass):
        for p in (points if i % 2 == 0 else points[::-1]):
            visits[p].append(_timed_max(comm, progress, runs[p], warmup, n))
    noisy = [p for p in points if len(visits[p]) > 1 and _spread(visits[p]) > NOISY_SPREAD]
    for p in noisy:
        visits[p].append(_timed_max(comm, progress, runs[p], warmup, per_pass[0]))
    runs.clear()
    buffers.clear()
    for p in points:
        yield p[0], p[1], [t for v in visits[p] for t in v], [statistics.median(v) for v in visits[p]]


def _spread(visits: Sequence[Sequence[float]]) -> float:
    m = [statistics.median(v) for v in visits]
    return (max(m) - min(m)) / min(m)


def _timed_max(comm, progress: Progress, run, warmup: int, iters: int) -> list[float]:
    """Time ``run()`` after a barrier, ``warmup`` untimed then ``iters`` timed
    times; per iteration the slowest rank's time (the same list on every rank)."""
    times = []
    for it in range(warmup + iters):
        progress.tick()
        comm.barrier()
        progress.tick()
        t0 = now()
        run()
        dt = now() - t0
        if it >= warmup:
            times.append(dt)
    progress.tick()
    return comm.max(times)


def measure_bursts(
    comm,
    sizes: Sequence[int],
    streams: Sequence[int],
    count: int = 8,
    iters: int = 5,
    warmup: int = 1,
    progress: Progress | None = None,
) -> list[dict]:
    """Time ``count`` back-to-back all-reduces of each size, as DDP issues buckets.

    Each of the ``count`` buffers is split over K streams (part i on group i,
    as the multi-stream hook does); all are started without waiting, then
    waited for. How much faster than ``count`` single all-reduces this runs
    shows how many collectives a stream runs at once and how much of the
    per-call latency overlaps (``commtune.probe.fit.fit_pipelining``).
    Timed in passes as :func:`measure_allreduce`.
    """
    def make_run(numel: int, k: int, groups, buffers: dict):
        if numel not in buffers:
            buffers[numel] = [comm.buffer(numel) for _ in range(count)]
        parts = [comm.split(b, k) for b in buffers[numel]]
        return lambda: comm.allreduce_burst(parts, groups)

    return [{"streams": int(k), "size_bytes": int(numel * ELEMENT_BYTES), "count": int(count),
             "time_s": statistics.median(medians), "pass_medians_s": medians, "min_s": min(times), "iters": len(times)}
            for k, numel, times, medians in _sweep(comm, sizes, streams, make_run, warmup, iters, progress)]


def measure_host(comm, sizes: Sequence[int], iters: int = 5, warmup: int = 1,
                 progress: Progress | None = None) -> list[dict]:
    """Time the host work DDP does around a bucket's all-reduce, on every rank at once
    (so ranks sharing a host's cores contend as they do in training): the comm
    hook's divide (``pre_s``) and the copy back into the gradients (``post_s``);
    slowest rank, median over ``iters``."""
    progress = progress or Progress(comm.rank)
    records = []
    for size in sizes:
        numel = max(1, -(-int(size) // ELEMENT_BYTES))
        buf = comm.buffer(numel)
        dst = comm.buffer(numel)
        pre, post = [], []
        for it in range(warmup + iters):
            progress.tick()
            comm.barrier()
            t0 = now()
            comm.host_pre(buf)
            t1 = now()
            comm.host_post(buf, dst)
            t2 = now()
            if it >= warmup:
                pre.append(t1 - t0)
                post.append(t2 - t1)
        progress.tick()
        pre_max, post_max = comm.max(pre), comm.max(post)
        del buf, dst
        records.append({"size_bytes": int(numel * ELEMENT_BYTES), "pre_s": statistics.median(pre_max),
                        "post_s": statistics.median(post_max), "iters": int(iters)})
    return records
