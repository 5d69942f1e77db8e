"""The measurement every probe rank runs: all-reduce time against size and streams."""
from __future__ import annotations

import statistics
from typing import Sequence

from commtune.probe.comm import now
from commtune.probe.progress import Progress

ELEMENT_BYTES = 4  # float32


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
    Returns one record per (streams, size) with the median (``time_s``),
    mean and min over ``iters`` timed iterations. All ranks return the same.
    """
    def make_run(numel: int, k: int, groups):
        parts = comm.split(comm.buffer(numel), k)
        return lambda: comm.allreduce_parts(parts, groups)

    records = []
    for k, numel, tmax in _sweep(comm, sizes, streams, make_run, warmup, iters, progress):
        records.append({
            "streams": int(k),
            "size_bytes": int(numel * ELEMENT_BYTES),
            "count": int(numel),
            "time_s": statistics.median(tmax),
            "mean_s": statistics.fmean(tmax),
            "min_s": min(tmax),
            "iters": int(iters),
        })
    return records


def _sweep(comm, sizes: Sequence[int], streams: Sequence[int], make_run, warmup: int, iters: int,
           progress: Progress | None):
    """For each stream count K and size: ``make_run(numel, K, groups)`` builds
    the collective to time; yields ``(K, numel, per-iteration slowest-rank times)``."""
    progress = progress or Progress(comm.rank)
    groups_all = comm.stream_groups(max(streams))
    for k in streams:
        for size in sizes:
            numel = max(k, -(-int(size) // ELEMENT_BYTES))
            run = make_run(numel, k, groups_all[:k])
            yield k, numel, _timed_max(comm, progress, run, warmup, iters)
            del run


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
    """
    def make_run(numel: int, k: int, groups):
        parts = [comm.split(comm.buffer(numel), k) for _ in range(count)]
        return lambda: comm.allreduce_burst(parts, groups)

    return [{"streams": int(k), "size_bytes": int(numel * ELEMENT_BYTES), "count": int(count),
             "time_s": statistics.median(tmax), "min_s": min(tmax), "iters": int(iters)}
            for k, numel, tmax in _sweep(comm, sizes, streams, make_run, warmup, iters, progress)]


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
