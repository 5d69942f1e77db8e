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
    progress = progress or Progress(comm.rank)
    groups_all = comm.stream_groups(max(streams))
    records = []
    for k in streams:
        groups = groups_all[:k]
        for size in sizes:
            numel = max(k, -(-int(size) // ELEMENT_BYTES))
            buf = comm.buffer(numel)
            parts = comm.split(buf, k)
            times = []
            for it in range(warmup + iters):
                progress.tick()
                comm.barrier()
                progress.tick()
                t0 = now()
                comm.allreduce_parts(parts, groups)
                dt = now() - t0
                if it >= warmup:
                    times.append(dt)
            progress.tick()
            tmax = comm.max(times)
            del buf, parts
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
