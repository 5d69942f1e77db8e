"""The probe's time budget: a short pilot all-reduce first, then a plan that fits.

The probe's default sizes reach the link rate on a fast link (64 MiB); on a slow one
the same sizes take minutes per point. So the probe first times a pilot (a 4 KiB and
a 1 MiB collective of each kind asked, on one stream and on the most streams asked:
gloo's all-gather is slower than the ring formula makes it from the all-reduce),
estimates each collective's ring step latency and rates from it
(:func:`estimate_link`), and :func:`plan_probe`
estimates every point's time (the ring formula, the passes, warmups and a worst-case
repeat of a noisy point) and shrinks the plan until it fits the budget:

1. the largest size, while the next one is already link-bound (it adds no physics);
2. the largest burst size, while more than one is left;
3. timed iterations, down to :data:`MIN_ITERS`;
4. the largest size, while more than two sizes are left in the fit range;
5. the bursts altogether.

What is left over budget after that is reported (``fits`` False), not cut further:
two fitted sizes and :data:`MIN_ITERS` iterations are the least a calibration needs.
Every rank plans from the same slowest-rank pilot times, so all ranks run the same plan.

The calibration runs that follow the sweep on the same ranks (the DDP and FSDP ones, the
task's ``calibration_runs``) are estimated from the pilot's link too
(:func:`calibration_reserve`) and their seconds reserved: the sweep is planned in what is
left, so the whole probe keeps to the budget (the driver then cuts those runs to what is
left of it after the sweep).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from commtune.probe.allreduce import PASSES, measure_allreduce
from commtune.probe.link_estimate import LinkEstimate
from commtune.units import format_size

#: the pilot all-reduce sizes: a latency-bound one and one that is link-bound at <= 10 Gbit/s
PILOT_SIZES = (4096, 2**20)
#: timed iterations of the pilot (one per pass)
PILOT_ITERS = 2
#: the fewest timed iterations per point a plan goes down to
MIN_ITERS = 2
#: a size is link-bound when its transfer time is at least this many times its latency
LINK_BOUND_RATIO = 4.0
#: host memory rate assumed for the host-work points (divide + copy of a buffer)
HOST_Bps = 1e9
#: the share of the budget (after the pilot) the planned points may fill: the rest covers starting
#: the ranks, the fit and the estimate's error (loopback, 2 loaded cores: 17 s estimated, 32 s in all)
PLAN_SHARE = 0.8
#: ring steps per peer of each collective: an all-reduce takes 2(n-1), an all-gather n-1
STEPS_PER_PEER = {"allreduce": 2, "allgather": 1, "reduce_scatter": 1}


def estimate_link(records: Iterable[Mapping], ranks: int, steps_per_peer: int = 2) -> LinkEstimate:
    """A :class:`LinkEstimate` from pilot records of a collective of ``steps_per_peer``
    ring steps per peer (2: all-reduce): per stream count the line through its smallest
    and largest size gives the rate ``s(n-1)/(n*b)``; the fewest streams give the per-flow
    rate (divided by their count), the most the link rate (at least the per-flow rate);
    the smallest size of one stream the latency."""
    by_k: dict[int, dict[float, float]] = {}
    for r in records:
        by_k.setdefault(int(r["streams"]), {})[float(r["size_bytes"])] = float(r["time_s"])
    if not by_k or ranks < 2:
        raise ValueError("the pilot needs records of two sizes on at least two ranks")
    steps = steps_per_peer * (ranks - 1)

    def rate(k: int) -> float:
        pts = by_k[k]
        lo, hi = min(pts), max(pts)
        b = (pts[hi] - pts[lo]) / (hi - lo) if hi > lo else 0.0
        return steps / (ranks * b) if b > 0 else math.inf

    k_lo, k_hi = min(by_k), max(by_k)
    per_flow = rate(k_lo) / k_lo
    link = max(rate(k_hi), per_flow)
    small = by_k[k_lo]
    alpha = small[min(small)] / steps
    return LinkEstimate(alpha, per_flow, link)


@dataclass(frozen=True)
class ProbePlan:
    """What the probe will measure, its estimated duration and what was cut to fit."""

    sizes: tuple[int, ...]
    streams: tuple[int, ...]
    iters: int
    warmup: int
    collectives: tuple[str, ...]
    burst_sizes: tuple[int, ...]
    burst_count: int
    host_sizes: tuple[int, ...]
    estimate_s: float
    budget_s: float
    fits: bool
    dropped: tuple[str, ...] = ()
    #: seconds reserved for each calibration run after the sweep (``{"ddp": s, "fsdp": s}``)
    reserve: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ProbePlan":
        """The plan of :meth:`to_dict` (extra keys, as the worker's result has, ignored; a missing
        key, as in an older file, its default)."""
        return cls(**{f.name: tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name]
                      for f in dataclasses.fields(cls) if f.name in d})

    def describe(self) -> str:
        """One line: sizes, streams, iterations, what was dropped, estimate against budget, the reserve."""
        sizes = ",".join(format_size(s) for s in self.sizes)
        bursts = ",".join(format_size(s) for s in self.burst_sizes) or "none"
        cut = f"; cut: {', '.join(self.dropped)}" if self.dropped else ""
        over = "" if self.fits else " (over budget: the least a calibration needs)"
        kept = (f"; {sum(self.reserve.values()):.0f} s reserved for the calibration runs after it ("
                + ", ".join(f"{k.upper()} {v:.0f} s" for k, v in self.reserve.items()) + ")") if self.reserve else ""
        return (f"probe plan: {'+'.join(self.collectives)}, sizes {sizes}, streams {','.join(map(str, self.streams))}, "
                f"{self.iters} iterations, bursts {bursts}; estimated {self.estimate_s:.0f} s of the "
                f"{self.budget_s:.0f} s planned{over}{cut}{kept}")


def point_runs(iters: int, warmup: int, passes: int = PASSES) -> int:
    """Collectives one point runs: ``iters`` timed, ``warmup`` per pass and, worst case,
    one more pass for a noisy point (:func:`commtune.probe.allreduce._sweep`)."""
    passes = max(1, min(passes, iters))
    return iters + warmup * passes + (-(-iters // passes) + warmup)


def estimate_probe_s(link: LinkEstimate, ranks: int, sizes: Sequence[int], streams: Sequence[int], iters: int,
                     warmup: int, collectives: Sequence[str], burst_sizes: Sequence[int], burst_count: int,
                     host_sizes: Sequence[int], steps: Mapping[str, int] | None = None,
                     links: Mapping[str, LinkEstimate] | None = None) -> float:
    """Estimated seconds of a probe: every point's collective (and its barrier) times its runs.
    ``link``: the all-reduce's estimate (bursts, barriers, and every collective not in ``links``)."""
    steps = {**STEPS_PER_PEER, **(steps or {})}
    links = links or {}
    runs = point_runs(iters, warmup)
    barrier = link.collective_s(2, 0.0, 1, ranks)
    total = 0.0
    for c in collectives:
        lc = links.get(c, link)
        total += runs * sum(lc.collective_s(steps[c], s, k, ranks) + barrier for k in streams for s in sizes)
    total += runs * sum(burst_count * link.collective_s(2, s, k, ranks) + barrier for k in streams for s in burst_sizes)
    total += (iters + warmup) * sum(2 * s / HOST_Bps + barrier for s in host_sizes)
    return total


def plan_probe(link: LinkEstimate, ranks: int, budget_s: float, sizes: Sequence[int], streams: Sequence[int],
               iters: int, warmup: int, collectives: Sequence[str], burst_sizes: Sequence[int] = (),
               burst_count: int = 8, host_sizes: Sequence[int] = (), min_fit_size: int = 2**20,
               steps: Mapping[str, int] | None = None, links: Mapping[str, LinkEstimate] | None = None,
               reserve: Mapping[str, float] | None = None) -> ProbePlan:
    """The largest plan within ``budget_s`` seconds, cut in the order of the module docstring
    (``links``: per-collective estimates, as :func:`estimate_probe_s`; ``reserve``: the seconds kept
    for the calibration runs, already taken off ``budget_s``, recorded in the plan)."""
    sizes, bursts = sorted(int(s) for s in sizes), sorted(int(s) for s in burst_sizes)
    asked_iters = int(iters)
    dropped: list[str] = []

    def estimate() -> float:
        return estimate_probe_s(link, ranks, sizes, streams, iters, warmup, collectives, bursts, burst_count,
                                host_sizes, steps, links)

    def fitted() -> list[int]:
        return [s for s in sizes if s >= min_fit_size]

    def link_bound(size: int) -> bool:
        latency = link.collective_s(2, 0.0, 1, ranks)
        return link.collective_s(2, size, 1, ranks) - latency >= LINK_BOUND_RATIO * latency

    while estimate() > budget_s:
        fit = fitted()
        if len(fit) > 2 and link_bound(fit[-2]):
            dropped.append(f"size {format_size(sizes.pop())} (the next is link-bound)")
        elif len(bursts) > 1:
            dropped.append(f"burst size {format_size(bursts.pop())}")
        elif iters > MIN_ITERS:
            iters -= 1
        elif len(fit) > 2:
            dropped.append(f"size {format_size(sizes.pop())}")
        elif bursts:
            dropped.append("bursts")
            bursts = []
        else:
            break
    total = estimate()
    if iters < asked_iters:
        dropped.append(f"iterations {asked_iters} -> {iters}")
    return ProbePlan(tuple(sizes), tuple(int(k) for k in streams), int(iters), int(warmup), tuple(collectives),
                     tuple(bursts), int(burst_count), tuple(int(s) for s in host_sizes), total, float(budget_s),
                     total <= budget_s, tuple(dropped), {k: float(v) for k, v in (reserve or {}).items()})


#: the calibration runs a probe task may say follow its sweep (``calibration_runs``)
CALIBRATION_RUNS = ("ddp", "fsdp")


def calibration_reserve(link: LinkEstimate, ranks: int, runs: Sequence[str], streams: Sequence[int],
                        ddp_steps: int = 6, rs_steps: int = 2) -> dict[str, float]:
    """Estimated seconds of each calibration run in ``runs`` after the sweep on ``link``:
    ``ddp`` (:func:`~commtune.probe.ddp_calib.estimate_ddp_calibration_s` at every probed K, round robin
    at those of RR_STREAMS) and ``fsdp`` (:func:`~commtune.probe.fsdp_calib.estimate_fsdp_calibration_s`;
    ``rs_steps`` the reduce-scatter's ring steps per peer), both with ``ddp_steps`` timed steps."""
    from commtune.probe.ddp_calib import RR_STREAMS, estimate_ddp_calibration_s
    from commtune.probe.fsdp_calib import estimate_fsdp_calibration_s

    ks = sorted({int(k) for k in streams})
    out = {}
    if "ddp" in runs:
        out["ddp"] = estimate_ddp_calibration_s(link, ranks, ks, [k for k in RR_STREAMS if k in ks], ddp_steps)
    if "fsdp" in runs:
        out["fsdp"] = estimate_fsdp_calibration_s(link, ranks, ddp_steps, rs_steps=rs_steps)
    return out


def planned_task(comm, task: dict, progress=None, steps: Mapping[str, int] | None = None) -> tuple[dict, dict]:
    """Run the pilot on every rank (each collective of the task) and plan the task within
    :data:`PLAN_SHARE` of ``task["budget_s"]`` less the pilot's time and the calibration runs that follow
    (``task["calibration_runs"]``, :func:`calibration_reserve`); the task with the planned sizes and
    iterations, and the plan (with the pilot's records and link estimates) for the result."""
    from commtune.probe.allreduce import MEASURE

    steps_all = {**STEPS_PER_PEER, **(steps or {})}
    collectives = list(task.get("collectives") or ["allreduce"])
    t0 = time.perf_counter()
    pilot_streams = sorted({1, max(task["streams"])})
    pilot = {c: (measure_allreduce if c == "allreduce" else MEASURE[c])(comm, PILOT_SIZES, pilot_streams, PILOT_ITERS,
                                                                       1, progress)
             for c in collectives}
    elapsed = comm.max([time.perf_counter() - t0])[0]
    links = {c: estimate_link(recs, comm.world, steps_all[c]) for c, recs in pilot.items()}
    reserve = calibration_reserve(links["allreduce"], comm.world, task.get("calibration_runs") or (), task["streams"],
                                  int(task.get("ddp_steps", 6)), steps_all["reduce_scatter"])
    plan = plan_probe(links["allreduce"], comm.world,
                      PLAN_SHARE * (float(task["budget_s"]) - elapsed - sum(reserve.values())), task["sizes"],
                      task["streams"],
                      int(task["iters"]), int(task["warmup"]), collectives, task.get("burst_sizes") or (),
                      int(task.get("burst_count", 8)), task.get("host_sizes") or (),
                      int(task.get("min_fit_size", 2**20)), steps, links, reserve)
    planned = {**task, "sizes": list(plan.sizes), "iters": plan.iters, "burst_sizes": list(plan.burst_sizes)}
    return planned, {**plan.to_dict(), "asked_budget_s": float(task["budget_s"]), "pilot_s": elapsed,
                     "link_estimates": {c: v.to_dict() for c, v in links.items()},
                     "pilot_records": [{**r, "collective": c} for c, recs in pilot.items() for r in recs]}
