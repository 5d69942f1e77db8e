"""System layer: fusion, negotiation and streams.

Turns knobs into the per-configuration numbers the schedulers need
(:class:`SystemParams`) and holds the reference, one-configuration scheduler
:func:`schedule` that the batch engine (``simulators.batch``) mirrors.

Fusion policies, both over gradients in ready order:

* ``dynamic`` (Horovod): a background loop runs every ``P = max(cycle, nu)``
  seconds (``nu`` = negotiation time). A tensor ready at ``r`` is picked up
  by the first tick at or after ``r``; the tick's ready tensors are fused
  greedily into buffers of at most the threshold (a larger tensor travels
  alone) and dispatched at ``tick + nu``.
* ``static`` (PyTorch DDP): buckets are fixed in ready order; a bucket closes
  once it holds at least its cap (the first bucket has its own cap) and is
  dispatched when its last gradient is ready. No negotiation.

Negotiation per loop tick (dynamic policy): a ``central`` rank-0 coordinator
receives one request from and sends one response to every other rank, so it
handles ``2(n-1)`` messages in series: ``nu = 2*alpha + 2(n-1)*m``. A
``decentralized`` bit-vector all-reduce (recursive doubling) needs
``2*ceil(log2 n)`` latency-bound steps: ``nu = 2*ceil(log2 n)*alpha``. With
Horovod's response cache (``ClusterSpec.response_cache``; Horovod PR #902,
v0.16.2+) every tensor of a steady-state step is a cache hit, and rank 0's
round is replaced by the same bit-vector all-reduce: ``central`` then costs
what ``decentralized`` does.

Waiting loop (``ClusterSpec.loop_waits``): the loop runs a cycle's
collectives before its next cycle, so after buffer j the ticks restart at
its end: ``tick = O + ceil((r - O)/P)*P`` (``O`` = end of the last buffer, 0
before the first; ``tick = O`` for a tensor ready before ``O``). With
``O = 0`` this is the free-running grid above.

Algorithm choice. A network model may offer a second algorithm
``(a2, b2)`` (NCCL's tree); each buffer takes the faster of the two,
``min(a + b*S, a2 + b2*S)``, as NCCL's tuning model picks per message size.

Latency bound. A collective's time turns from the latency bound ``f`` (the
network model's ``min_collective_s``, 0 unless calibrated: what a small
message measures) to the chosen algorithm's line: it takes
``T = latency_bounded(a + b*S, f, p)`` (``simulators.network``; ``max`` for
``p = inf``), and its latency part becomes ``T - b*S``. Below, ``a`` is that
bounded term.

Interference with compute. Each buffer j costs ``c`` seconds on the training
thread (``ClusterSpec.bucket_cost_s``: hook, copy, launch) before its
all-reduce starts; its collective holds ``sigma`` of the GPU's SMs
(``comm_sm_share``: NCCL runs one CTA per channel, one SM each, NVIDIA/nccl
#689) for its whole duration ``t_j = a_j + b_j*S_j`` (its chosen algorithm's),
so backward, which shares the GPU, loses ``sigma*t_j``; and the GPU's own
work on its bytes (reductions, copies through memory) costs ``kappa*S_j``
(``comm_gpu_s_per_byte``, per wire byte), whatever the network's speed. A
buffer launched during backward (any but the last) therefore delays every
later gradient, and the end of backward, by ``d_j = c + sigma*t_j +
kappa*S_j``; the delays add up (``D``) and shift the ready times the fusion
policy sees (``r_i + D``). Backward ends at ``B + D``. (``sigma`` is the SM
fraction, channels / SMs, not a fitted factor: a ring's time grows with
``2(n-1)`` hops, and the SMs its kernels hold are a few of the GPU's, not
all of them.)

Rank synchronisation (``ClusterSpec.collective_jitter_s``). A collective
runs only once every rank has launched it; ranks launch each one ``j``
seconds apart (standard deviation), so it starts the expected maximum of n
such delays late, ``w = j*sqrt(2 ln n)`` (n > 1), and holds its SMs
meanwhile (an NCCL kernel spins on the GPU until its peers arrive and can
slow compute meanwhile, NVIDIA/nccl #1025; a late process delays every peer
at each blocking collective, Widener, Levy, Ferreira, Hoefler, "On noise and
the performance benefit of nonblocking collectives"): ``w`` adds to both algorithms'
``a`` (``a + w``, ``a2 + w``), so a step of J collectives pays it J times -
more buckets and more ranks, more waiting. ``j = 0`` leaves every form above.

Streams (``stream_mode``). ``split``: each buffer is split evenly over K
streams that run concurrently (the AIACC scheme), so a buffer of S bytes takes
``a(K) + b(K)*S`` from the network model; buffers are served first-in
first-out. ``round_robin``: buffer j goes whole onto stream ``j mod K``; the
K streams run concurrently and share the link. A buffer alone on the network
runs at one stream's rate (``a(1)``, ``b(1)``: min(c, B) in the analytical
model) and the link carries at most ``1/b(K)`` bytes per second in all
(min(K*c, B)): see the formulas below. With K = 1 both modes are the same
schedule (round_robin is computed as split).

Pipelining and host work. Buffer j (S_j gradient bytes, dispatched at d_j)
with ``m`` collectives in flight per stream, back-to-back gap ``g`` and host
costs ``h_pre``/``h_post`` per byte (``ClusterSpec``; all default to the plain
FIFO model, m=1, g=h=0)::

    start_j = max(d_j + c + h_pre*S_j, end_{j-m})      (end_{<0} = 0)
    end_j   = max(start_j + a + b*S_j, end_{j-1} + g + b*S_j)
    done_j  = max(done_{j-1}, end_j) + h_post*S_j       (done_{-1} = end of backward
                                                         B + D for static fusion, else 0)

Round robin (K > 1): buffer j is ready at ``d_j + c + h_pre*S_j`` and goes
onto stream ``j mod K``; the streams share the link max-min fairly
(:mod:`simulators.fairshare`, a fluid model): with one stream's ``a = a(1)``,
``b = b(1)``, ``m = m(1)`` and the link's ``b(K)``, the link holds ``R =
b(1)/b(K)`` streams (``min(K, B/c)`` in the analytical model); a stream admits
its buffers in order, at most ``m`` in flight; each pays its latency part
``a`` off the link, then transfers ``b*S_j + R*g_rr(K)`` (its bytes at one
stream's rate, plus the link time ``g_rr(K)`` the link loses per collective
while K streams contend for it: the network model's ``round_robin_gap``, 0
unless calibrated) at ``min(1, R/busy)`` of one stream's rate split over the
stream's collectives in flight. Two equal buffers of S bytes ready at 0 on
K = 2 streams (no latency) both end at ``max(S/c, 2S/B)``; split ends the second
at ``2S/min(2c, B)`` as well, the same total bytes at the aggregate rate. A
stream with more bytes than the others is held to its fair share while they
are busy and then to its own cap, with the rest of the link idle: round robin's
loss against split on unevenly loaded streams. The one-pass recurrences below
run for round robin too (one stream's coefficients, stride K, ``g = g(1)``);
their ends set only where a dynamic loop that waits for its collectives
(``loop_waits``) ticks again, and the fair-share pass replaces them.

A buffer waits for one of the stream's m slots (buffer j-m done); the link
carries one buffer's bytes at a time, so its transfer ``b*S_j`` follows the
previous buffer's plus the gap ``g``, while its latency part ``a`` (handshakes,
thread wake-ups) overlaps the previous transfer. With m = 1 and g <= a the
second term never binds (start_j >= end_{j-1}), so end_j = start_j + a + b*S_j:
strict FIFO. Host post-work runs on one thread in buffer order (DDP copies
buckets back into the gradients in ``finalize_backward``, after backward);
the step's communication ends at done of the last buffer. The network's busy
time is the length of the union of the [start_j, end_j] intervals (ends rise
with j under split; under round robin a buffer's interval is counted past the
latest end so far).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple, Sequence

import numpy as np

from commtune.cluster import ClusterSpec
from commtune.knobs import KNOBS, Knobs
from simulators.fairshare import fair_share_schedule
from simulators.network import NetworkModel, latency_bounded_scalar
from simulators.workload import Workload


def wire_bytes_per_element(wire_precision: str | np.ndarray, grad_bpe: int) -> np.ndarray:
    """fp16 on the wire halves fp32 gradients; gradients are never widened."""
    fp16 = np.asarray(wire_precision) == "fp16"
    return np.where(fp16, min(2, grad_bpe), grad_bpe)


def negotiation_time_s(central: np.ndarray | bool, world_size: int, latency_s: float, msg_s: float,
                       cached: bool = False) -> np.ndarray:
    """Time of one negotiation round (see module docstring)."""
    if world_size <= 1:
        return np.zeros(np.shape(central))
    t_decentral = 2 * math.ceil(math.log2(world_size)) * latency_s
    t_central = t_decentral if cached else 2 * latency_s + 2 * (world_size - 1) * msg_s
    return np.where(np.asarray(central, dtype=bool), t_central, t_decentral)


def negotiation_messages_rank0(central: np.ndarray | bool, world_size: int, cached: bool = False) -> np.ndarray:
    """Messages the busiest rank handles per negotiation round."""
    if world_size <= 1:
        return np.zeros(np.shape(central))
    log_steps = 2 * math.ceil(math.log2(world_size))
    return np.where(np.asarray(central, dtype=bool), log_steps if cached else 2 * (world_size - 1), log_steps)


@dataclass(frozen=True, eq=False)
class SystemParams:
    """Knobs turned into schedule numbers, one entry per configuration.

    Sizes are in *gradient* bytes (as training produces them); ``b`` is the
    network cost per gradient byte, i.e. already scaled by the wire ratio.
    """

    dynamic: np.ndarray  # bool
    threshold: np.ndarray  # gradient bytes; the bucket cap (static) or fusion threshold (dynamic)
    first_cap: np.ndarray  # gradient bytes, static first bucket
    period_s: np.ndarray  # loop period P (dynamic), 0 = continuous
    nego_s: np.ndarray  # negotiation time per tick (dynamic), 0 for static
    nego_msgs: np.ndarray  # messages at the busiest rank per tick
    a_s: np.ndarray
    b_s_per_byte: np.ndarray
    inflight: np.ndarray  # int, collectives in flight per stream (m)
    gap_s: np.ndarray  # back-to-back gap g
    host_pre_s_per_byte: np.ndarray  # per gradient byte
    host_post_s_per_byte: np.ndarray  # per gradient byte
    stride: np.ndarray  # int, streams a buffer index cycles over: K for round robin (K > 1), else 1
    link_b_s_per_byte: np.ndarray  # round robin: the link's cost per gradient byte, b(K); split: unused (0)
    link_gap_s: np.ndarray  # round robin: link time lost per collective, g_rr(K); split: 0
    a2_s: np.ndarray  # second algorithm (NCCL tree); inf = none
    b2_s_per_byte: np.ndarray
    bucket_cost_s: np.ndarray  # c, per buffer on the training thread
    sm_share: np.ndarray  # sigma, the SM fraction a collective holds while it runs
    gpu_s_per_byte: np.ndarray  # kappa, GPU time per gradient byte reduced (already x wire ratio)
    loop_waits: np.ndarray  # bool, the dynamic loop waits for its collectives
    floor_s: np.ndarray  # f, the latency bound; 0 = none
    floor_p: np.ndarray  # p, its sharpness (inf: max)

    def __len__(self) -> int:
        return len(self.dynamic)

    def take(self, idx: np.ndarray) -> "SystemParams":
        """The configurations at ``idx`` (an index array), in that order."""
        return SystemParams(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def row(self, i: int) -> tuple[float, ...]:
        return (
            bool(self.dynamic[i]), float(self.threshold[i]), float(self.first_cap[i]), float(self.period_s[i]),
            float(self.nego_s[i]), float(self.nego_msgs[i]), float(self.a_s[i]), float(self.b_s_per_byte[i]),
            int(self.inflight[i]), float(self.gap_s[i]), float(self.host_pre_s_per_byte[i]),
            float(self.host_post_s_per_byte[i]), int(self.stride[i]), float(self.link_b_s_per_byte[i]),
            float(self.link_gap_s[i]),
            float(self.a2_s[i]), float(self.b2_s_per_byte[i]),
            float(self.bucket_cost_s[i]), float(self.sm_share[i]), float(self.gpu_s_per_byte[i]),
            bool(self.loop_waits[i]), float(self.floor_s[i]), float(self.floor_p[i]),
        )


@dataclass(frozen=True, eq=False)
class KnobArrays:
    """A batch of configurations, one numpy array per knob."""

    fusion_policy: np.ndarray
    fusion_threshold_bytes: np.ndarray
    first_bucket_bytes: np.ndarray
    cycle_time_ms: np.ndarray
    num_streams: np.ndarray
    stream_mode: np.ndarray
    negotiation: np.ndarray
    hierarchical: np.ndarray
    wire_precision: np.ndarray
    sharding: np.ndarray
    shard_group_size: np.ndarray
    unit_bytes: np.ndarray
    forward_prefetch: np.ndarray
    backward_prefetch: np.ndarray
    reshard_after_forward: np.ndarray  # int: 0 = false, 1 = true, N >= 2 = reshard to N ranks
    reduce_precision: np.ndarray

    @classmethod
    def from_knobs(cls, configs: Sequence[Knobs]) -> "KnobArrays":
        cols = {name: np.asarray([getattr(k, name) for k in configs]) for name in cls.__dataclass_fields__}
        cols["reshard_after_forward"] = cols["reshard_after_forward"].astype(np.int64)
        return cls(**cols)

    @classmethod
    def from_columns(cls, n: int, **columns) -> "KnobArrays":
        """Build from per-knob arrays or scalars (scalars broadcast; missing
        knobs take their default)."""
        default = Knobs()
        cols = {}
        for name in cls.__dataclass_fields__:
            value = columns.pop(name, getattr(default, name))
            cols[name] = np.broadcast_to(np.asarray(value), (n,))
        cols["reshard_after_forward"] = cols["reshard_after_forward"].astype(np.int64)
        if columns:
            raise KeyError(f"unknown knob columns: {sorted(columns)}")
        return cls(**cols)

    def __len__(self) -> int:
        return len(self.num_streams)

    def take(self, idx: np.ndarray) -> "KnobArrays":
        """The configurations at ``idx`` (an index array), in that order."""
        return KnobArrays(**{name: getattr(self, name)[idx] for name in self.__dataclass_fields__})

    def knobs(self, i: int) -> Knobs:
        """The configuration at row ``i`` as a :class:`Knobs`."""
        return Knobs(**{name: getattr(self, name)[i].item() for name in self.__dataclass_fields__})


@dataclass(frozen=True, eq=False)
class NetworkTable:
    """The network model's answers for every stream count the knob allows
    (1..``KNOBS['num_streams'].high``) x flat/hierarchical, computed once:
    the system layer looks them up instead of re-deriving them per
    configuration (they depend on nothing else)."""

    a_s: np.ndarray  # (K, 2)
    b_s_per_byte: np.ndarray  # (K, 2)
    inflight: np.ndarray  # (K,)
    gap_s: np.ndarray  # (K,)
    a2_s: np.ndarray  # (K, 2), the alternative algorithm (inf = none)
    b2_s_per_byte: np.ndarray  # (K, 2)
    floor_s: np.ndarray  # (K,), the latency bound f(K)

    @classmethod
    def build(cls, network: NetworkModel) -> "NetworkTable":
        ks = np.arange(1, int(KNOBS["num_streams"].high) + 1)
        hs = np.array([False, True])[None, :]
        a, b = network.coeffs(ks[:, None], hs)
        a2, b2 = network.alt_coeffs(ks[:, None], hs)
        m, gap = network.pipelining(ks)
        f = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
        return cls(f(a), f(b), np.asarray(m, dtype=np.int64), f(gap), f(a2), f(b2), f(network.min_collective_s(ks)))

    def lookup(self, num_streams, hierarchical) -> tuple[np.ndarray, ...]:
        """``(a, b, m, gap, a2, b2, floor)`` per configuration."""
        k = np.asarray(num_streams, dtype=np.int64) - 1
        h = np.asarray(hierarchical, dtype=np.int64)
        return (self.a_s[k, h], self.b_s_per_byte[k, h], self.inflight[k], self.gap_s[k],
                self.a2_s[k, h], self.b2_s_per_byte[k, h], self.floor_s[k])


def network_table(network: NetworkModel) -> NetworkTable:
    """The (cached) :class:`NetworkTable` of ``network``."""
    table = network.__dict__.get("_table")
    if table is None:
        table = network.__dict__["_table"] = NetworkTable.build(network)
    return table


def sync_wait_s(jitter_s: float, n: int) -> float:
    """The expected wait of one collective for its slowest rank: ranks launch it
    ``jitter_s`` apart (standard deviation), so it starts ``jitter_s*sqrt(2 ln n)``
    late (the Gaussian maximum's bound); 0 on one rank or without jitter."""
    return jitter_s * math.sqrt(2.0 * math.log(n)) if n > 1 and jitter_s > 0 else 0.0


def system_params(knobs: KnobArrays, workload: Workload, network: NetworkModel,
                  cluster: ClusterSpec | None = None) -> SystemParams:
    """Derive :class:`SystemParams` for every configuration in ``knobs``.

    Pipelining (m, g) comes from the network model; host costs per byte from
    ``cluster`` (else the network's cluster, else none)."""
    gbpe = workload.grad_bytes_per_element
    ratio = wire_bytes_per_element(knobs.wire_precision, gbpe) / gbpe
    dynamic = knobs.fusion_policy == "dynamic"
    central = knobs.negotiation == "central"
    lat = network.control_latency_s()
    table = network_table(network)
    a, b, m, gap, a2, b2, floor = table.lookup(knobs.num_streams, knobs.hierarchical)
    host = cluster if cluster is not None else getattr(network, "cluster", None)
    wait = sync_wait_s(float(getattr(host, "collective_jitter_s", 0.0)), network.world_size)
    a, a2 = a + wait, a2 + wait
    # Round robin: each buffer on one stream (the one-stream coefficients),
    # the link at the K-stream rate b(K). K = 1 is the split schedule.
    rr = (np.asarray(knobs.stream_mode) == "round_robin") & (np.asarray(knobs.num_streams) > 1)
    link_b = np.where(rr, b, 0.0)
    link_gap = np.where(rr, network.round_robin_gap(knobs.num_streams), 0.0)
    if rr.any():
        one = table.lookup(np.ones_like(knobs.num_streams), knobs.hierarchical)
        one = (one[0] + wait, *one[1:4], one[4] + wait, *one[5:])
        a, b, m, gap, a2, b2, floor = (np.where(rr, x1, x) for x1, x in zip(one, (a, b, m, gap, a2, b2, floor)))
    msg_s = getattr(getattr(network, "cluster", None), "coord_msg_s", 0.0)
    cached = bool(getattr(host, "response_cache", False))
    nego = np.where(dynamic, negotiation_time_s(central, network.world_size, lat, msg_s, cached), 0.0)
    msgs = np.where(dynamic, negotiation_messages_rank0(central, network.world_size, cached), 0)
    h_pre = float(getattr(host, "host_pre_s_per_byte", 0.0))
    h_post = float(getattr(host, "host_post_s_per_byte", 0.0))
    thr = knobs.fusion_threshold_bytes.astype(np.float64)
    # The dynamic threshold counts wire bytes (Horovod compresses first);
    # static buckets count gradient bytes (DDP buckets the parameters).
    thr = np.where(dynamic, thr / ratio, thr)
    return SystemParams(
        dynamic=dynamic,
        threshold=thr,
        first_cap=knobs.first_bucket_bytes.astype(np.float64),
        period_s=np.where(dynamic, np.maximum(knobs.cycle_time_ms.astype(np.float64) * 1e-3, nego), 0.0),
        nego_s=nego,
        nego_msgs=msgs.astype(np.float64),
        a_s=np.broadcast_to(a, thr.shape).astype(np.float64),
        b_s_per_byte=np.broadcast_to(b * ratio, thr.shape).astype(np.float64),
        inflight=np.broadcast_to(m, thr.shape).astype(np.int64),
        gap_s=np.broadcast_to(gap, thr.shape).astype(np.float64),
        host_pre_s_per_byte=np.full(thr.shape, h_pre),
        host_post_s_per_byte=np.full(thr.shape, h_post),
        stride=np.broadcast_to(np.where(rr, knobs.num_streams, 1), thr.shape).astype(np.int64),
        link_b_s_per_byte=np.broadcast_to(link_b * ratio, thr.shape).astype(np.float64),
        link_gap_s=np.broadcast_to(link_gap, thr.shape).astype(np.float64),
        a2_s=np.asarray(a2, dtype=np.float64),
        b2_s_per_byte=np.asarray(b2 * ratio, dtype=np.float64),
        bucket_cost_s=np.full(thr.shape, float(getattr(host, "bucket_cost_s", 0.0))),
        sm_share=np.full(thr.shape, float(getattr(host, "comm_sm_share", 0.0))),
        gpu_s_per_byte=np.asarray(float(getattr(host, "comm_gpu_s_per_byte", 0.0)) * ratio, dtype=np.float64),
        loop_waits=dynamic & bool(getattr(host, "loop_waits", False)),
        floor_s=np.broadcast_to(np.where(floor > 0, floor + wait, 0.0), thr.shape).astype(np.float64),
        floor_p=np.full(thr.shape, float(getattr(network, "bound_sharpness", math.inf))),
    )


class Buffer(NamedTuple):
    """One fused buffer: tensors ``first..last`` (ready order), its gradient
    bytes, when it was dispatched, when its all-reduce ran and when its
    gradients were back in place (``done_s``, after host post-work)."""

    first: int
    last: int
    grad_bytes: float
    dispatch_s: float
    start_s: float
    end_s: float
    done_s: float


def schedule(ready_s: Sequence[float], grad_bytes: Sequence[float],
             p: tuple[float, ...]) -> tuple[list[Buffer], int, float, float]:
    """Reference scheduler for one configuration (a :meth:`SystemParams.row`).

    Returns the buffers in dispatch order, the number of negotiation rounds,
    the communication busy time (union of the buffers' intervals) and the
    delay ``D`` the buffers added to backward. Times are relative to the start
    of backward (``ready_s`` before any delay); the step's communication ends
    at the last buffer's ``done_s`` (module docstring).
    """
    (dynamic, thr, first_cap, period, nego, _msgs, a, b, m, gap, h_pre, h_post, k, b_link, g_link,
     a2, b2, cost, share, kappa, waits, floor, floor_p) = p
    spans: list[tuple] = []  # (first, last, bytes, dispatch, start, end) per buffer
    ends: list[float] = []
    fair: list[tuple[float, float, float]] = []  # round robin: (ready, latency part, work) per buffer
    cur_bytes = 0.0
    cur_disp = 0.0
    cur_first = 0
    first_bucket = True
    rounds = 0
    prev_tick = -1.0
    prev_end = -math.inf  # the latest end so far
    delay = 0.0  # D: what the buffers launched so far added to backward
    origin = 0.0  # O: where the loop's ticks start (the latest end when the loop waits)
    moves = cost > 0 or share > 0 or kappa > 0 or waits  # a buffer can shift the following dispatches
    n = len(ready_s)

    def dispatch(r: float) -> tuple[float, float]:
        if not dynamic:
            return r, r
        if r <= origin:
            tick = origin
        else:
            tick = origin + math.ceil((r - origin) / period) * period if period > 0 else r
        return tick, tick + nego

    for i in range(n + 1):
        if i < n:
            s = grad_bytes[i]
            r = ready_s[i] + delay
            if dynamic:
                if r <= origin:
                    tick = origin
                elif period > 0:
                    tick = origin + math.ceil((r - origin) / period) * period
                else:
                    tick = r
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
        # emit the current buffer (module docstring formulas)
        j = len(ends)
        slot = ends[j - k * m] if j >= k * m else 0.0
        ready = cur_disp + cost + h_pre * cur_bytes
        start = ready if ready > slot else slot
        aj, bj = a, b
        if a2 + b2 * cur_bytes < a + b * cur_bytes:  # the faster algorithm
            aj, bj = a2, b2
        bs = bj * cur_bytes
        if floor > 0:  # the latency bound
            aj = latency_bounded_scalar(aj + bs, floor, floor_p) - bs
        end = start + (aj + bs)
        serial = (ends[j - k] if j >= k else -math.inf) + gap + bs
        if serial > end:
            end = serial
        if k > 1:  # round robin: the streams' shares of the link are set once every buffer is known;
            # the link loses g_rr per collective (R*g_rr of one stream's work at the link's R streams)
            fair.append((ready, aj, bs + g_link * (b / b_link if b_link > 0 else k)))
        ends.append(end)
        if end > prev_end:
            prev_end = end
        spans.append((cur_first, i - 1, cur_bytes, cur_disp, start, end))
        if i < n:
            if moves:
                delay += cost + share * (aj + bs) + kappa * cur_bytes
                if waits:
                    origin = prev_end
                tick, disp = dispatch(ready_s[i] + delay)
            if dynamic and tick != prev_tick:
                rounds += 1
                prev_tick = tick
            first_bucket = False
            cur_bytes = s
            cur_first = i
            cur_disp = disp
    if fair:  # round robin: K flows share the link max-min fairly (simulators.fairshare)
        starts, ends = fair_share_schedule([f[0] for f in fair], [f[1] for f in fair], [f[2] for f in fair],
                                           k, m, b / b_link if b_link > 0 else k)
        spans = [(f, la, sz, dp, st, en) for (f, la, sz, dp, _, _), st, en in zip(spans, starts, ends)]
    # host post-work in buffer order; static fusion starts it at the end of backward
    done = 0.0 if dynamic else (ready_s[-1] + delay if n else 0.0)
    buffers = []
    busy = 0.0  # length of the union of the [start, end] intervals
    latest = -math.inf
    for first, last, size, disp, start, end in spans:
        busy += max(0.0, end - (start if start > latest else latest))
        latest = end if end > latest else latest
        done = (done if done > end else end) + h_post * size
        buffers.append(Buffer(first, last, size, disp, start, end, done))
    return buffers, rounds, busy, delay
