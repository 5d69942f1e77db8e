"""How busy this machine is before the probe's ranks start.

Ranks launched here (``--ranks``, ``--emulated``) share this machine's cores, so
another job running meanwhile slows what the probe fits on the host's side (the
DDP calibration's per-bucket gaps, the last bucket's delay): a calibration made
while a busy loop held one of 2 cores predicted the same configurations up to
15 % slower than one made on the quiet machine (``experiments/live_fidelity.py``,
repeatability). The probe samples ``/proc/stat`` for a second before it
launches, records the busy cores in the calibration's provenance and warns at
:data:`BUSY_WARN_CORES` or more; it corrects nothing.

The same reading over a configuration's timed steps (:func:`busy_between`,
``host_busy_cores`` in the worker loop's and the DDP task's results) says
whether the ranks themselves kept the cores busy: the hosts of an emulated
cluster share this machine's cores, so at 6 hosts a step can be CPU-bound
where separate hosts would not be (:func:`cpu_bound`; ``commtune validate``
marks such points).
"""
from __future__ import annotations

import os
import time

#: busy cores (other jobs) before the probe from which the calibration warns
BUSY_WARN_CORES = 0.5


def cpu_jiffies(stat_path: str = "/proc/stat") -> tuple[int, int] | None:
    """``(busy, idle)`` jiffies of all CPUs (busy: user, nice, system, irq, softirq; idle:
    idle, iowait; steal and guest left out); None where ``/proc/stat`` cannot be read."""
    try:
        with open(stat_path) as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in fields[1:8])
    return user + nice + system + irq + softirq, idle + iowait


def busy_cores(interval_s: float = 1.0, cores: int | None = None, sample=cpu_jiffies, sleep=time.sleep) -> float | None:
    """Cores kept busy over ``interval_s`` (0 .. ``cores``); None where it cannot be measured."""
    a = sample()
    sleep(interval_s)
    return busy_between(a, sample(), cores)


def busy_warning(busy: float | None, cores: int | None = None) -> str | None:
    """The calibration's warning when other jobs kept ``busy`` cores busy before the probe."""
    if busy is None or busy < BUSY_WARN_CORES:
        return None
    return (f"{busy:.1f} of {cores or os.cpu_count()} cores were busy before the probe started (another job): "
            "the DDP per-bucket gaps and the last bucket's delay fitted here include its load; "
            "probe again on a quiet machine for a calibration that predicts one")


#: share of the cores busy over a configuration's timed steps from which validate calls the point CPU-bound
CPU_BOUND_SHARE = 0.85


def busy_between(a: tuple[int, int] | None, b: tuple[int, int] | None, cores: int | None = None) -> float | None:
    """Cores kept busy between two :func:`cpu_jiffies` samples (0 .. ``cores``); None where unknown."""
    if a is None or b is None:
        return None
    busy, idle = b[0] - a[0], b[1] - a[1]
    if busy + idle <= 0:
        return None
    return (cores or os.cpu_count() or 1) * busy / (busy + idle)


def cpu_bound(busy: float | None, cores: int | None) -> bool:
    """Whether ``busy`` of ``cores`` is at least :data:`CPU_BOUND_SHARE` of them."""
    return busy is not None and bool(cores) and busy >= CPU_BOUND_SHARE * cores


def mean_busy_cores(results) -> float | None:
    """The mean ``host_busy_cores`` of several timings of one configuration (passes); None when none has one."""
    busy = [float(r["host_busy_cores"]) for r in results if r.get("host_busy_cores") is not None]
    return sum(busy) / len(busy) if busy else None
