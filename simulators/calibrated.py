"""The calibrated network: physical parameters fitted by ``commtune probe``, valid
for any stream count and world size.

One model for every K (no lookup of per-K fits): a flat ring over ``n`` ranks
takes ``2(n-1)`` steps; each stream opens one flow per rank (gloo/NCCL rings
send to one neighbour), so K streams move ``min(K*c, B)`` bytes/s per rank
(``c`` per-flow cap, ``B`` link rate)::

    a(K) = 2(n-1)*alpha + K*launch                 (seconds)
    b(K) = 2(n-1) / (n * min(K*c, B))              (seconds per byte)
    g(K) = max(gap0 + gap_per_stream*K, 0)         (back-to-back gap per bucket)
    g_rr(K) = max(rr_gap0 + rr_gap_per_stream*K, 0)   (round robin: link time lost per collective)
    f(K) = 2(n-1)*small_step + K*small_per_stream  (latency bound: no collective is shorter)

A collective of S bytes takes ``(t^p + f(K)^p)^(1/p)`` with ``t = a(K) + b(K)*S``:
a soft roofline of the bandwidth line fitted on large messages and the latency
bound a small message measures (``p = inf``: ``max(t, f)``; ``p``, the
sharpness, is fitted over every probed size, where the two regimes meet). Large messages overlap a ring step's handshake with the
previous step's transfer, so the line's intercept ``a(K)`` is below what a
message too small to overlap anything pays; without ``f`` a bucket of a few
hundred KB would be predicted at the line's intercept (seen: 5.5 ms predicted,
15.8 ms measured on 3 hosts with 1 ms latency, where a 4 KB all-reduce took
12.6 ms).

``alpha`` (per ring step), ``launch`` (per stream and collective), ``B``,
``c``, ``m`` (collectives in flight per stream), ``gap0``/``gap_per_stream``,
``small_step``/``small_per_stream`` and the host work per byte are per-host quantities: they carry over to
another world size, where the ring formula does the rest (scale prediction).

What was calibrated is recorded (:class:`CalibratedRange`: the stream counts
and message sizes measured, whether the link rate was reached), and
:meth:`CalibratedNetwork.extrapolation` reports, as structured flags, what a
configuration asks beyond it: modelled extrapolations (a linear term past the
largest size, another world size) and unmodelled ones (more streams than
probed with the link never saturated, hierarchical all-reduce, which the probe
does not measure). Sharded collectives (:meth:`CalibratedNetwork.shard_coeffs`)
use the probe's own fit where the file has one (below); else they are derived
from the same per-host parameters, with the ring's step count:
all-gather and reduce-scatter over a group of G ranks take ``G-1`` steps
(``a = (G-1)*alpha + K*launch``, ``b = (G-1)/(G*min(K*c, B))``,
``f = (G-1)*small_step + K*small_per_stream``) and HSDP's all-reduce of the
S/G shard across ``r = n/G`` groups ``2(r-1)`` steps (``b`` divided by G). The
assumption, until part 2 probes them: an all-gather step costs what an
all-reduce step costs (one send to the ring neighbour per step, the same
per-flow cap), and every rank is a host as in the calibration (no
intra-node links). The control latency (negotiation) is measured separately
from a small all-reduce and never 0.

All-gather and reduce-scatter, where ``commtune probe`` measured them, have their
own fit in the same form (:class:`CollectiveParams`: ``s(G-1)`` ring steps, ``s = 1``,
or 2 for gloo's reduce-scatter, an all-reduce of the full buffer), and
:meth:`CalibratedNetwork.shard_coeffs` (so ``allgather_time``, ``reduce_scatter_time``
and the sharded simulator) uses it over a group of G ranks: the calibrated model
follows what the backend does, while the analytical model stays NCCL's ring.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from simulators.network import CALIBRATED_BUILDER, SHARD_OPS, ArrayLike, NetworkModel, latency_bounded, stream_rate

#: control latency used when the probe measured none (a latency fit of 0 s must not make negotiation free)
MIN_CONTROL_LATENCY_S = 5e-6
#: above the largest probed size the linear model is physics only if that size was link-bound (b*S >= this * a)
LINK_BOUND_RATIO = 4.0


@dataclass(frozen=True)
class CalibratedRange:
    """What the calibration measured."""

    streams: tuple[int, ...]  # stream counts probed
    min_size_bytes: float  # smallest / largest message size fitted
    max_size_bytes: float
    world_size: int
    link_saturated: bool  # some probed K reached the link rate (so min(K*c, B) is known for every K)

    def to_dict(self) -> dict:
        return {"streams": [int(k) for k in self.streams], "min_size_bytes": float(self.min_size_bytes),
                "max_size_bytes": float(self.max_size_bytes), "world_size": int(self.world_size),
                "link_saturated": bool(self.link_saturated)}

    @classmethod
    def from_dict(cls, d: dict) -> "CalibratedRange":
        return cls(tuple(int(k) for k in d["streams"]), float(d["min_size_bytes"]), float(d["max_size_bytes"]),
                   int(d["world_size"]), bool(d["link_saturated"]))


class _InfAsNone:
    """``to_dict``/``from_dict`` of a params dataclass whose rates may be infinite
    (``math.inf`` is written as None: JSON has no inf)."""

    _INF_KEYS = ("link_Bps", "per_flow_Bps", "bound_sharpness")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in self._INF_KEYS:
            d[key] = None if math.isinf(d[key]) else float(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        for key in cls._INF_KEYS:
            d[key] = math.inf if d.get(key) is None else float(d[key])
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass(frozen=True)
class CalibratedParams(_InfAsNone):
    """The fitted physical parameters (seconds, bytes/s); see the module docstring."""

    link_Bps: float
    per_flow_Bps: float  # math.inf = no per-flow cap
    alpha_s: float  # per ring step
    launch_s: float  # per stream per collective
    control_latency_s: float  # one small message between ranks (negotiation); > 0
    inflight_per_stream: int = 1
    gap0_s: float = 0.0
    gap_per_stream_s: float = 0.0
    rr_gap0_s: float = 0.0  # round robin: link time lost per collective, g_rr(K) = rr_gap0 + rr_gap_per_stream*K
    rr_gap_per_stream_s: float = 0.0
    small_step_s: float = 0.0  # latency bound f(K) = 2(n-1)*small_step + K*small_per_stream (0: none measured)
    small_per_stream_s: float = 0.0
    bound_sharpness: float = math.inf  # p of the soft roofline (inf: max)

    def __post_init__(self) -> None:
        if not self.link_Bps > 0 or not self.per_flow_Bps > 0:
            raise ValueError(f"link and per-flow rates must be positive, got {self.link_Bps!r}, {self.per_flow_Bps!r}")
        if int(self.inflight_per_stream) < 1:
            raise ValueError(f"inflight_per_stream must be >= 1, got {self.inflight_per_stream!r}")
        if not self.control_latency_s > 0:
            object.__setattr__(self, "control_latency_s", MIN_CONTROL_LATENCY_S)



def gap_model(num_streams: ArrayLike, gap0_s: float, gap_per_stream_s: float) -> np.ndarray:
    """``g(K) = max(gap0 + gap_per_stream*K, 0)``."""
    k = np.asarray(num_streams, dtype=np.float64)
    return np.maximum(gap0_s + gap_per_stream_s * k, 0.0)


def latency_bound(num_streams: ArrayLike, world_size: int, small_step_s: float, small_per_stream_s: float) -> np.ndarray:
    """``f(K) = 2(n-1)*small_step + K*small_per_stream``, at least 0."""
    k = np.asarray(num_streams, dtype=np.float64)
    return np.maximum(2 * (world_size - 1) * small_step_s + k * small_per_stream_s, 0.0)


#: the sharded collectives a calibration file may hold fits for (``fit.collectives``)
SHARDED_COLLECTIVES = ("allgather", "reduce_scatter")


@dataclass(frozen=True)
class CollectiveParams(_InfAsNone):
    """A sharded collective's fit (``commtune probe``): the all-reduce's form with
    ``s(n-1)`` ring steps, ``s = steps_per_peer`` (1: a ring all-gather or reduce-scatter;
    2: gloo's reduce-scatter, an all-reduce of the full buffer)::

        a(K) = s(n-1)*alpha + K*launch
        b(K) = s(n-1) / (n * min(K*c, B))
        f(K) = s(n-1)*small_step + K*small_per_stream

    and ``S`` bytes (the full, unsharded buffer) over K streams take
    ``(t^p + f(K)^p)^(1/p)``, ``t = a(K) + b(K)*S``."""

    steps_per_peer: int
    link_Bps: float  # math.inf = never reached
    per_flow_Bps: float  # math.inf = no per-flow cap
    alpha_s: float
    launch_s: float
    small_step_s: float = 0.0
    small_per_stream_s: float = 0.0
    bound_sharpness: float = math.inf

    def __post_init__(self) -> None:
        if int(self.steps_per_peer) not in (1, 2):
            raise ValueError(f"steps_per_peer must be 1 or 2, got {self.steps_per_peer!r}")
        if not self.link_Bps > 0 or not self.per_flow_Bps > 0:
            raise ValueError(f"link and per-flow rates must be positive, got {self.link_Bps!r}, {self.per_flow_Bps!r}")

    def coeffs(self, num_streams: ArrayLike, group: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, f)`` over groups of ``group`` ranks (0 for a group of one), broadcast."""
        k, g = np.broadcast_arrays(np.asarray(num_streams, dtype=np.float64), np.asarray(group, dtype=np.float64))
        steps = int(self.steps_per_peer) * (g - 1)
        alone = g <= 1
        a = steps * self.alpha_s + k * self.launch_s
        b = steps / (np.where(alone, 1.0, g) * stream_rate(k, self.per_flow_Bps, self.link_Bps))
        f = np.maximum(steps * self.small_step_s + k * self.small_per_stream_s, 0.0)
        return np.where(alone, 0.0, a), np.where(alone, 0.0, b), np.where(alone, 0.0, f)



class CollectiveModel:
    """A :class:`CollectiveParams` at ``world_size`` ranks: ``coeffs``, ``min_collective_s`` and
    ``bound_sharpness`` as :class:`CalibratedNetwork` has them for the all-reduce (the probe's
    fit uses the same functions on both), and :meth:`time_s`."""

    def __init__(self, params: CollectiveParams, world_size: int):
        self.params = params
        self.world_size = int(world_size)
        self.bound_sharpness = float(params.bound_sharpness)

    def coeffs(self, num_streams: ArrayLike, hierarchical: ArrayLike = False) -> tuple[np.ndarray, np.ndarray]:
        a, b, _ = self.params.coeffs(num_streams, self.world_size)
        return a, b

    def min_collective_s(self, num_streams: ArrayLike) -> np.ndarray:
        return self.params.coeffs(num_streams, self.world_size)[2]

    def time_s(self, size_bytes: ArrayLike, num_streams: ArrayLike) -> np.ndarray:
        """Seconds for ``size_bytes`` (full buffer) split over ``num_streams`` streams."""
        a, b, f = self.params.coeffs(num_streams, self.world_size)
        return latency_bounded(a + b * np.asarray(size_bytes, dtype=np.float64), f, self.bound_sharpness)


class CalibratedNetwork(NetworkModel):
    """The network a calibration file describes, at ``world_size`` ranks (any size)."""

    def __init__(self, params: CalibratedParams, world_size: int, calibrated: CalibratedRange | None = None,
                 ranks_per_node: int = 1, collectives: dict[str, CollectiveParams] | None = None):
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size!r}")
        self.params = params
        self.world_size = int(world_size)
        self.calibrated = calibrated
        self.ranks_per_node = int(ranks_per_node)
        self.inflight_per_stream = int(params.inflight_per_stream)
        self.buffer_gap_s = float(gap_model(1, params.gap0_s, params.gap_per_stream_s))
        self.bound_sharpness = float(params.bound_sharpness)
        self.collectives = dict(collectives or {})

    def replace(self, **fields) -> "CalibratedNetwork":
        """A copy with some :class:`CalibratedParams` fields changed."""
        return CalibratedNetwork(dataclasses.replace(self.params, **fields), self.world_size, self.calibrated,
                                 self.ranks_per_node, self.collectives)

    def control_latency_s(self) -> float:
        return self.params.control_latency_s

    def rate_Bps(self, num_streams: ArrayLike) -> np.ndarray:
        """What K streams move per rank: ``min(K*c, B)``."""
        return stream_rate(num_streams, self.params.per_flow_Bps, self.params.link_Bps)

    def coeffs(self, num_streams: ArrayLike, hierarchical: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        # Hierarchical all-reduce is not measured: the flat ring is used, and extrapolation() flags it.
        k, _ = np.broadcast_arrays(np.asarray(num_streams, dtype=np.float64), np.asarray(hierarchical))
        n = self.world_size
        if n <= 1:
            return np.zeros_like(k), np.zeros_like(k)
        p = self.params
        steps = 2 * (n - 1)
        return steps * p.alpha_s + k * p.launch_s, steps / (n * self.rate_Bps(k))

    def shard_coeffs(self, op: str, num_streams: ArrayLike, group: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sharded collectives: the probe's measured fit of ``op`` where the calibration has
        one, else derived from the fitted all-reduce parameters (module docstring)."""
        k, grp = np.broadcast_arrays(np.asarray(num_streams, dtype=np.float64), np.asarray(group, dtype=np.float64))
        if op in self.collectives:
            return self.collectives[op].coeffs(k, grp)
        p = self.params
        if op in ("allgather", "reduce_scatter"):
            ranks, steps, per_byte = grp, grp - 1, 1.0
        elif op == "replica_allreduce":
            ranks = self.world_size / grp
            steps, per_byte = 2 * (ranks - 1), 1.0 / grp
        else:
            raise ValueError(f"unknown sharded collective {op!r}; one of {', '.join(SHARD_OPS)}")
        alone = ranks <= 1
        a = steps * p.alpha_s + k * p.launch_s
        b = steps / (ranks * self.rate_Bps(k)) * per_byte
        f = np.maximum(steps * p.small_step_s + k * p.small_per_stream_s, 0.0)
        return np.where(alone, 0.0, a), np.where(alone, 0.0, b), np.where(alone, 0.0, f)

    def min_collective_s(self, num_streams: ArrayLike) -> np.ndarray:
        """``f(K) = 2(n-1)*small_step + K*small_per_stream``: the latency bound (module docstring)."""
        k = np.asarray(num_streams, dtype=np.float64)
        n = self.world_size
        if n <= 1:
            return np.zeros(k.shape)
        return latency_bound(k, n, self.params.small_step_s, self.params.small_per_stream_s)

    def pipelining(self, num_streams: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(num_streams, dtype=np.float64)
        g = gap_model(k, self.params.gap0_s, self.params.gap_per_stream_s)
        return np.full(k.shape, self.inflight_per_stream, dtype=np.int64), g

    def round_robin_gap(self, num_streams: ArrayLike) -> np.ndarray:
        """``g_rr(K) = max(rr_gap0 + rr_gap_per_stream*K, 0)``: under round robin the link loses
        this much time per collective (K streams contend for it; :mod:`simulators.fairshare`),
        fitted from the DDP calibration run."""
        return gap_model(num_streams, self.params.rr_gap0_s, self.params.rr_gap_per_stream_s)

    def extrapolation(self, knobs) -> list[dict]:
        """Flags for what ``knobs`` (a :class:`~commtune.knobs.Knobs`) asks beyond the calibration.

        Each flag: ``kind`` (streams / size / hierarchical / world_size), ``value``,
        ``calibrated`` (the measured range), ``modelled`` (True: the physics covers it;
        False: an extrapolation warning) and a one-line ``message``."""
        r = self.calibrated
        if r is None:
            return [{"kind": "calibration", "value": None, "calibrated": None, "modelled": False,
                     "message": "no calibrated range recorded: every prediction is unchecked"}]
        out = []
        k = int(knobs.num_streams)
        kmax = max(r.streams)
        if k > kmax:
            modelled = r.link_saturated
            out.append({"kind": "streams", "value": k, "calibrated": list(r.streams), "modelled": modelled,
                        "message": f"{k} streams, probed up to {kmax}: "
                                   + ("rate min(K*c, B) is known (link reached); launch and gap terms extrapolated linearly"
                                      if modelled else "the link rate was never reached, so the rate of more streams is unknown")})
        elif k not in r.streams:
            out.append({"kind": "streams", "value": k, "calibrated": list(r.streams), "modelled": True,
                        "message": f"{k} streams not probed: interpolated by min(K*c, B) and the linear launch/gap terms"})
        size = float(knobs.fusion_threshold_bytes)
        if size > r.max_size_bytes:
            a, b = self.coeffs(k, False)
            link_bound = float(b) * r.max_size_bytes >= LINK_BOUND_RATIO * float(a)
            out.append({"kind": "size", "value": size, "calibrated": [r.min_size_bytes, r.max_size_bytes],
                        "modelled": link_bound,
                        "message": f"bucket {size / 2**20:.0f} MiB above the largest probed message "
                                   f"{r.max_size_bytes / 2**20:.0f} MiB: "
                                   + ("linear in size (that size was link-bound)" if link_bound
                                      else "the largest probed size was not link-bound")})
        if bool(getattr(knobs, "hierarchical", False)) and self.ranks_per_node > 1:  # one rank per node: the flat ring
            out.append({"kind": "hierarchical", "value": True, "calibrated": False, "modelled": False,
                        "message": "hierarchical all-reduce is not probed: predicted as the flat ring"})
        if self.world_size != r.world_size:
            out.append({"kind": "world_size", "value": self.world_size, "calibrated": r.world_size, "modelled": True,
                        "message": f"{self.world_size} ranks, calibrated on {r.world_size}: per-host parameters "
                                   f"carried over, ring formula 2(n-1) steps"})
        return out


def unmodelled(flags: list[dict]) -> list[dict]:
    """The flags that are extrapolation warnings (not covered by the model)."""
    return [f for f in flags if not f["modelled"]]


def calibrated_network(fit: dict, world_size: int, ranks_per_node: int = 1) -> CalibratedNetwork:
    """The network of a calibration file's ``fit`` section (``network`` + ``calibrated``, and the
    sharded collectives' ``collectives.<name>.params`` where probed), at ``world_size``."""
    collectives = {name: CollectiveParams.from_dict(c["params"]) for name, c in (fit.get("collectives") or {}).items()
                   if name in SHARDED_COLLECTIVES}
    return CalibratedNetwork(CalibratedParams.from_dict(fit["network"]), world_size,
                             CalibratedRange.from_dict(fit["calibrated"]) if fit.get("calibrated") else None,
                             ranks_per_node, collectives)


CALIBRATED_BUILDER.append(calibrated_network)  # network_for builds calibration files through it
