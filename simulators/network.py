"""Network layer: the cost of one all-reduce of a fused buffer.

Every network model answers one question through :meth:`NetworkModel.coeffs`:
for a buffer split over ``num_streams`` concurrent streams, flat or
hierarchical, what are ``a`` (seconds) and ``b`` (seconds per byte) such
that the all-reduce of ``S`` bytes takes ``a + b*S``? The arguments may be
numpy arrays (one entry per configuration), which keeps the batch simulator
vectorised.

:class:`AnalyticalNetwork` derives the coefficients from a cluster's links
(alpha-beta ring model; concurrent streams share a link fairly, each capped at
the per-stream rate, so K streams move data at ``min(K*c, B)``).
:class:`simulators.calibrated.CalibratedNetwork` uses physical parameters
fitted to live measurements.

:meth:`NetworkModel.pipelining` says how one stream's back-to-back buffers
overlap: ``m`` collectives in flight per stream and the gap ``g`` of link idle
time between two back-to-back buffers (``ClusterSpec.inflight_per_stream`` /
``buffer_gap_s``; a calibration models the gap as a function of the stream count). The
schedulers (``simulators.system``) turn them into buffer end times.
"""
from __future__ import annotations

import abc
import math
import numpy as np

from commtune.cluster import ClusterSpec

ArrayLike = np.ndarray | float | int | bool


def stream_rate(num_streams: ArrayLike, per_stream_Bps: float, link_Bps: float) -> np.ndarray:
    """Aggregate rate of K concurrent flows on one link: ``min(K*c, B)``."""
    k = np.asarray(num_streams, dtype=np.float64)
    if math.isinf(per_stream_Bps):
        return np.full_like(k, link_Bps)
    return np.minimum(k * per_stream_Bps, link_Bps)


def latency_bounded(line_s: ArrayLike, floor_s: ArrayLike, sharpness: ArrayLike = math.inf) -> np.ndarray:
    """A collective's time under the latency bound ``f``: the soft roofline
    ``(t^p + f^p)^(1/p)`` of the bandwidth line's ``t = a + b*S`` and ``f`` (``p`` the
    sharpness; ``p = inf`` is ``max(t, f)``); ``t`` itself where ``f = 0``."""
    t = np.asarray(line_s, dtype=np.float64)
    f = np.asarray(floor_s, dtype=np.float64)
    p = np.asarray(sharpness, dtype=np.float64)
    hi = np.maximum(t, f)
    lo = np.minimum(t, f)
    finite = np.isfinite(p) & (hi > 0)
    safe_hi = np.where(finite, hi, 1.0)
    safe_p = np.where(finite, p, 1.0)
    soft = hi * (1.0 + (lo / safe_hi) ** safe_p) ** (1.0 / safe_p)
    return np.where(f > 0, np.where(finite, soft, hi), t)


def latency_bounded_scalar(line_s: float, floor_s: float, sharpness: float = math.inf) -> float:
    """:func:`latency_bounded` of one collective, in plain floats: the reference scheduler
    calls it per buffer, where numpy on scalars cost half of a calibrated ``Simulator.run``."""
    if not floor_s > 0:
        return line_s
    hi, lo = (line_s, floor_s) if line_s >= floor_s else (floor_s, line_s)
    if math.isinf(sharpness) or not hi > 0:
        return hi
    return hi * (1.0 + (lo / hi) ** sharpness) ** (1.0 / sharpness)


def ring_allreduce_time(size_bytes: float, ranks: int, alpha_s: float, bw_Bps: float) -> float:
    """Ring all-reduce: ``2(n-1)(alpha + S/(n*B))``."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) * (alpha_s + size_bytes / (ranks * bw_Bps))


def ring_allgather_time(size_bytes: float, ranks: int, alpha_s: float, bw_Bps: float) -> float:
    """Ring all-gather (and reduce-scatter) of an ``S``-byte buffer (the full, unsharded
    bytes): ``(n-1)*alpha + (n-1)/n * S/B``, half of the ring all-reduce's steps."""
    if ranks <= 1:
        return 0.0
    return (ranks - 1) * alpha_s + (ranks - 1) / ranks * size_bytes / bw_Bps


#: the sharded collectives of :meth:`NetworkModel.shard_coeffs`: all-gather and reduce-scatter
#: inside a shard group, and HSDP's all-reduce of each rank's 1/G shard across the groups
SHARD_OPS = ("allgather", "reduce_scatter", "replica_allreduce")


class NetworkModel(abc.ABC):
    """One interface for every network backend."""

    world_size: int

    @abc.abstractmethod
    def coeffs(self, num_streams: ArrayLike, hierarchical: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(a_s, b_s_per_byte)`` arrays so that T(S) = a + b*S."""

    @abc.abstractmethod
    def control_latency_s(self) -> float:
        """One-way latency of a small control message between ranks."""

    #: collectives in flight per stream and the back-to-back gap (seconds); see the module docstring.
    inflight_per_stream: int = 1
    buffer_gap_s: float = 0.0
    #: how sharply a collective's time turns from the latency bound to the bandwidth line (p of
    #: :func:`latency_bounded`; inf = ``max``)
    bound_sharpness: float = math.inf

    def pipelining(self, num_streams: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(m, g)`` arrays, one entry per stream count: collectives a stream
        runs at once and the link idle time between back-to-back buffers."""
        k = np.asarray(num_streams, dtype=np.float64)
        return np.full(k.shape, int(self.inflight_per_stream), dtype=np.int64), np.full(k.shape, float(self.buffer_gap_s))

    def round_robin_gap(self, num_streams: ArrayLike) -> np.ndarray:
        """Round robin with K streams: the link time lost per collective while the streams
        share it (``g_rr`` in ``simulators.system``), per stream count; none unless calibrated."""
        return np.zeros(np.shape(num_streams))

    def extrapolation(self, knobs) -> list[dict]:
        """Structured flags for what ``knobs`` asks beyond what the model was
        calibrated on (see :mod:`simulators.calibrated`); none for a model
        that was not calibrated."""
        return []

    def min_collective_s(self, num_streams: ArrayLike) -> np.ndarray:
        """The latency bound ``f(K)`` of one collective over K streams (what a small
        message takes); 0 unless calibrated. A buffer takes ``latency_bounded(a + b*S, f(K))``
        (``simulators.system``)."""
        return np.zeros(np.shape(num_streams))

    def alt_coeffs(self, num_streams: ArrayLike, hierarchical: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(a2, b2)`` of a second all-reduce algorithm the library may pick
        per buffer when it is faster (``inf`` = none; the default)."""
        k, _ = np.broadcast_arrays(np.asarray(num_streams, dtype=np.float64), np.asarray(hierarchical))
        return np.full(k.shape, np.inf), np.full(k.shape, np.inf)

    def shard_coeffs(self, op: str, num_streams: ArrayLike, group: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, f)`` of a sharded collective (``op`` one of :data:`SHARD_OPS`) over shard
        groups of ``group`` ranks (consecutive ranks, node-major; ``group`` divides the world
        size), each split over ``num_streams`` streams: the collective of a unit of ``S`` full
        (unsharded) bytes takes ``latency_bounded(a + b*S, f)``. ``replica_allreduce`` is the
        all-reduce of the ``S/group`` shard across the ``world/group`` groups (``b`` counts full
        bytes). Arguments broadcast like :meth:`coeffs`."""
        raise NotImplementedError(f"{type(self).__name__} does not model sharded collectives")

    def _shard_time(self, op: str, size_bytes: float, num_streams: int, group: int | None) -> float:
        a, b, f = self.shard_coeffs(op, num_streams, self.world_size if group is None else group)
        return float(latency_bounded(a + b * size_bytes, f, self.bound_sharpness))

    def allgather_time(self, size_bytes: float, num_streams: int = 1, group: int | None = None) -> float:
        """All-gather of a unit of ``size_bytes`` full bytes inside groups of ``group`` ranks
        (default the world)."""
        return self._shard_time("allgather", size_bytes, num_streams, group)

    def reduce_scatter_time(self, size_bytes: float, num_streams: int = 1, group: int | None = None) -> float:
        """Reduce-scatter of ``size_bytes`` full gradient bytes inside groups of ``group`` ranks."""
        return self._shard_time("reduce_scatter", size_bytes, num_streams, group)

    def replica_allreduce_time(self, size_bytes: float, num_streams: int = 1, group: int | None = None) -> float:
        """HSDP: the all-reduce of one rank's ``size_bytes/group`` shard across the
        ``world/group`` shard groups (0 with one group)."""
        return self._shard_time("replica_allreduce", size_bytes, num_streams, group)

    def allreduce_time(self, size_bytes: float, num_streams: int = 1, hierarchical: bool = False) -> float:
        """The all-reduce time of one buffer: the faster of the two algorithms, at least
        :meth:`min_collective_s`."""
        a, b = self.coeffs(num_streams, hierarchical)
        a2, b2 = self.alt_coeffs(num_streams, hierarchical)
        return float(latency_bounded(min(a + b * size_bytes, a2 + b2 * size_bytes), self.min_collective_s(num_streams),
                                     self.bound_sharpness))


class AnalyticalNetwork(NetworkModel):
    """Alpha-beta model of flat ring, tree and hierarchical all-reduce.

    Flat ring over n = N*g ranks (node-major), K streams each a ring. Its
    ``2(n-1)`` steps cross a node boundary ``2(N-1)`` times; the rest are
    intra-node hops (NCCL's tuning model, ``src/graph/tuning.cc``
    ``ncclTopoTuneModel``: ``nInterSteps = 2*(nNodes-1)``, latency
    ``(nsteps-nInterSteps)*intraLat + nInterSteps*interLat``). Chunks are
    pipelined through the ring, so bytes move at the slowest hop's rate once:
    ``a = 2(n-N)*alpha_i + 2(N-1)*alpha + K*launch`` and ``b = 2(n-1)/(n*R)``
    with R = min(K*c, B_inter, B_intra) (R = B_intra on one node). With
    ``alpha_i = alpha`` this is the plain ``2(n-1)*alpha`` ring.

    Tree (``ClusterSpec.nccl_tree``, NCCL >= 2.4, flat only, N > 1): NCCL's
    double binary tree, latency ``2((g-1)*alpha_i + log2(N)*alpha)``, bus
    bandwidth 0.9 R and algorithm bandwidth half the bus bandwidth (same
    source: ``busBw*.9``, ``ratio = .5``): ``a2 = 2((g-1)*alpha_i +
    ceil(log2 N)*alpha) + K*launch``, ``b2 = 2/(0.9*R)``. The system layer
    takes the faster of ring and tree per buffer, as NCCL does; NCCL's
    per-size correction factors and protocol choice (LL/LL128) are not modelled.

    Hierarchical (N nodes of g GPUs): intra-node reduce-scatter and
    all-gather, ``2(g-1)(alpha_i + S/(g*B_i))``; between them g concurrent
    inter-node rings (one per local rank) each reduce S/g, so the NIC carries
    g*K flows and each ring gets r = min(K*c, B/g):
    ``2(N-1)(alpha + S/(g*N*r))``.

    Sharded collectives (:meth:`shard_coeffs`), the same ring machinery with
    ``(G-1)`` steps instead of ``2(n-1)``: a group of G consecutive ranks spans
    ``N_G = ceil(G/g)`` nodes and its ring crosses a node boundary ``N_G-1``
    times, so all-gather and reduce-scatter of S full bytes take
    ``a = (G-N_G)*alpha_i + (N_G-1)*alpha + K*launch``, ``b = (G-1)/(G*R)``
    with R = min(K*c, B_inter, B_intra) across nodes and R = B_intra inside
    one (every group's ring is on its own nodes: G divides n, and a group
    larger than a node holds whole nodes). HSDP's all-reduce of the S/G shard
    across the ``r = n/G`` groups: a ring over r ranks with ``min(r, N)``
    nodes, so ``2(min(r,N)-1)`` inter-node and ``2(r-min(r,N))`` intra-node
    steps; each node's NIC carries ``min(G, g)`` such rings at once (one per
    local shard position), each at ``min(K*c, B/min(G, g))``:
    ``b = 2(r-1)/(r*R) / G`` per full byte (R = B_intra on one node).
    """

    def __init__(self, cluster: ClusterSpec):
        self.cluster = cluster
        self.world_size = cluster.world_size
        self.inflight_per_stream = cluster.inflight_per_stream
        self.buffer_gap_s = cluster.buffer_gap_s

    def control_latency_s(self) -> float:
        c = self.cluster
        return c.inter_latency_s if c.nodes > 1 else c.intra_latency_s

    def coeffs(self, num_streams: ArrayLike, hierarchical: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        c = self.cluster
        k = np.asarray(num_streams, dtype=np.float64)
        hier = np.asarray(hierarchical, dtype=bool)
        k, hier = np.broadcast_arrays(k, hier)
        n, N, g = c.world_size, c.nodes, c.gpus_per_node
        if n == 1:
            return np.zeros_like(k), np.zeros_like(k)
        launch = k * c.launch_overhead_s
        if N == 1:
            # All ranks on one node: a ring over the intra-node fabric.
            a = 2 * (n - 1) * c.intra_latency_s + launch
            b = np.full_like(k, 2 * (n - 1) / (n * c.intra_bw_Bps))
            return a, b
        flat_rate = np.minimum(stream_rate(k, c.per_stream_Bps, c.inter_bw_Bps), c.intra_bw_Bps)
        a_flat = 2 * (n - N) * c.intra_latency_s + 2 * (N - 1) * c.inter_latency_s + launch
        b_flat = 2 * (n - 1) / (n * flat_rate)
        if g == 1:
            return a_flat, b_flat
        ring_rate = stream_rate(k, c.per_stream_Bps, c.inter_bw_Bps / g)
        a_hier = 2 * (g - 1) * c.intra_latency_s + 2 * (N - 1) * c.inter_latency_s + launch
        b_hier = 2 * (g - 1) / (g * c.intra_bw_Bps) + 2 * (N - 1) / (g * N * ring_rate)
        return np.where(hier, a_hier, a_flat), np.where(hier, b_hier, b_flat)

    def shard_coeffs(self, op: str, num_streams: ArrayLike, group: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self.cluster
        k, grp = np.broadcast_arrays(np.asarray(num_streams, dtype=np.float64), np.asarray(group, dtype=np.int64))
        n, N, g = c.world_size, c.nodes, c.gpus_per_node
        launch = k * c.launch_overhead_s
        cross_rate = np.minimum(stream_rate(k, c.per_stream_Bps, c.inter_bw_Bps), c.intra_bw_Bps)
        if op in ("allgather", "reduce_scatter"):
            G = grp.astype(np.float64)
            nodes = np.ceil(grp / g)
            rate = np.where(nodes > 1, cross_rate, c.intra_bw_Bps)
            a = (G - nodes) * c.intra_latency_s + (nodes - 1) * c.inter_latency_s + launch
            b = (G - 1) / (G * rate)
            alone = grp <= 1
        elif op == "replica_allreduce":
            G = grp.astype(np.float64)
            r = n / G
            nodes = np.minimum(r, N)
            flows = np.minimum(G, g)
            rate = np.minimum(stream_rate(k, c.per_stream_Bps, c.inter_bw_Bps / flows), c.intra_bw_Bps)
            rate = np.where(N > 1, rate, c.intra_bw_Bps)
            a = 2 * (r - nodes) * c.intra_latency_s + 2 * (nodes - 1) * c.inter_latency_s + launch
            b = 2 * (r - 1) / (r * rate) / G
            alone = r <= 1
        else:
            raise ValueError(f"unknown sharded collective {op!r}; one of {', '.join(SHARD_OPS)}")
        zero = np.zeros(k.shape)
        return np.where(alone, 0.0, a), np.where(alone, 0.0, b), zero

    def alt_coeffs(self, num_streams: ArrayLike, hierarchical: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        c = self.cluster
        if not c.nccl_tree or c.nodes == 1 or c.world_size == 1:
            return super().alt_coeffs(num_streams, hierarchical)
        k = np.asarray(num_streams, dtype=np.float64)
        hier = np.asarray(hierarchical, dtype=bool)
        k, hier = np.broadcast_arrays(k, hier)
        rate = np.minimum(stream_rate(k, c.per_stream_Bps, c.inter_bw_Bps), c.intra_bw_Bps)
        a = (2 * ((c.gpus_per_node - 1) * c.intra_latency_s + math.ceil(math.log2(c.nodes)) * c.inter_latency_s)
             + k * c.launch_overhead_s)
        b = 2 / (0.9 * rate)
        return np.where(hier, np.inf, a), np.where(hier, np.inf, b)


#: builds a calibrated network from a calibration file's ``fit`` section, the world size and
#: ranks per node; set by :mod:`simulators.calibrated` (which imports this module, not the reverse)
CALIBRATED_BUILDER: list = []


def network_for(cluster: ClusterSpec) -> NetworkModel:
    """The network model a cluster asks for: calibrated
    (:class:`simulators.calibrated.CalibratedNetwork`, at this cluster's world
    size) if its file carries the fitted network written by ``commtune probe``,
    else analytical from the ClusterSpec fields."""
    fit = cluster.meta.get("fit") if cluster.meta else None
    if isinstance(fit, dict) and isinstance(fit.get("network"), dict):
        return CALIBRATED_BUILDER[0](fit, cluster.world_size, cluster.gpus_per_node)
    return AnalyticalNetwork(cluster)
