"""DDP communication hooks: K concurrent streams (process groups) and wire precision.

AIACC-style multi-stream all-reduce: each stream is its own process group (its
own communicator, its own connections and worker/stream), so a per-flow cap
(cloud VPCs cap one TCP flow below the link rate) binds K times later.

* ``mode="split"``: each bucket is cut into K contiguous parts; part i is
  all-reduced on stream i, all K concurrently; the bucket completes when all
  parts have.
* ``mode="round_robin"``: bucket b goes whole to stream ``b % K``; successive
  buckets overlap on different streams.

Both compose with wire compression (``wire_precision="fp16"`` or ``"bf16"``):
the bucket is cast and divided by the world size before the all-reduce (as
torch's ``fp16_compress_hook``) and copied back into the bucket after.

Stream groups are created collectively with :func:`stream_groups` (every rank
calls it with the same arguments in the same order) and cached, so re-wrapping
a module (the AutoTuner) reuses them.
"""
# No `from __future__ import annotations`: DDP checks the hook's annotations are
# the real dist.GradBucket / torch.futures.Future[torch.Tensor] objects.
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from commtune.errors import CommtuneError
from commtune.runtime.ddp_plan import STREAM_MODES

MODES = STREAM_MODES  # the probe's name


class HookConfigError(CommtuneError, ValueError):
    """A bad hook argument (a CommtuneError; a ValueError for callers that expect one)."""

WIRE_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

# (ranks, backend) -> process groups created so far, in creation order.
_POOL: dict[tuple[tuple[int, ...], str], list[Any]] = {}


def _group_key(process_group: Any | None) -> tuple[tuple[int, ...], str]:
    pg = process_group if process_group is not None else dist.group.WORLD
    ranks = tuple(dist.get_process_group_ranks(pg))
    return ranks, str(dist.get_backend(pg))


def stream_groups(k: int, process_group: Any | None = None) -> list[Any]:
    """``k`` process groups over the ranks of ``process_group`` (default: the world).

    Collective: every rank of the default group must call it with the same ``k``
    in the same order (``dist.new_group`` is). Groups are cached and reused:
    asking for 4 after 2 creates two more.
    """
    if k < 1:
        raise CommtuneError(f"number of streams must be >= 1, got {k}")
    if not dist.is_initialized():
        raise CommtuneError("torch.distributed is not initialized: call dist.init_process_group first")
    key = _group_key(process_group)
    pool = _POOL.setdefault(key, [])
    while len(pool) < k:
        pool.append(dist.new_group(list(key[0]), backend=key[1]))
    return pool[:k]


def _forget_groups() -> None:
    """Drop the cache (after ``destroy_process_group``)."""
    _POOL.clear()


@dataclass
class MultiStreamState:
    """State of :func:`multistream_hook`: the K stream groups and how to use them.

    ``min_part_bytes``: in split mode, no part is made smaller than this (a
    small bucket uses fewer streams); 0 always splits K ways (when the bucket
    has at least K elements). ``log_buckets``: record ``(bucket index, bytes)``
    of every bucket the hook sees in ``bucket_log`` (tests, diagnostics).
    ``recorder``: called once per bucket when it is reduced, with
    ``(bucket_index, grad_bytes, launch_time, done_time)`` (``time.perf_counter``;
    the probe's per-bucket timings).
    """

    groups: list[Any]
    mode: str = "split"
    wire_precision: str = "fp32"
    min_part_bytes: int = 0
    log_buckets: bool = False
    bucket_log: list[tuple[int, int]] = field(default_factory=list)
    recorder: Callable[[int, int, float, float], None] | None = None

    def __post_init__(self) -> None:
        self.groups = list(self.groups)
        if not self.groups:
            raise HookConfigError("the multi-stream hook needs at least one process group")
        if self.mode not in STREAM_MODES:
            raise HookConfigError(f"stream mode must be one of {', '.join(STREAM_MODES)}, got {self.mode!r}")
        if self.wire_precision not in WIRE_DTYPES:
            raise HookConfigError(f"wire precision must be one of {', '.join(WIRE_DTYPES)}, got {self.wire_precision!r}")
        self.world_size = self.groups[0].size()

    @property
    def num_streams(self) -> int:
        return len(self.groups)


def multistream_hook(state: MultiStreamState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP comm hook (``ddp.register_comm_hook(state, multistream_hook)``)."""
    t0 = time.perf_counter()
    buffer = bucket.buffer()
    index = bucket.index()
    grad_bytes = buffer.numel() * buffer.element_size()
    if state.log_buckets:
        state.bucket_log.append((index, grad_bytes))
    dtype = WIRE_DTYPES[state.wire_precision]
    if dtype is None or dtype == buffer.dtype:
        wire = buffer.div_(state.world_size)
    else:
        wire = buffer.to(dtype).div_(state.world_size)
    k = state.num_streams
    if state.mode == "round_robin" or k == 1:
        group = state.groups[index % k]
        futs = [dist.all_reduce(wire, group=group, async_op=True).get_future()]
    else:
        parts_n = k
        if state.min_part_bytes > 0:
            parts_n = max(1, min(k, (wire.numel() * wire.element_size()) // state.min_part_bytes))
        parts_n = max(1, min(parts_n, wire.numel()))
        parts = wire.tensor_split(parts_n)
        futs = [dist.all_reduce(part, group=state.groups[i], async_op=True).get_future()
                for i, part in enumerate(parts)]

    def done(_: Any) -> torch.Tensor:
        for f in futs:
            f.value()  # re-raise a failed part
        if wire is not buffer:
            buffer.copy_(wire)
        if state.recorder is not None:
            state.recorder(index, grad_bytes, t0, time.perf_counter())
        return buffer

    if len(futs) == 1:
        return futs[0].then(done)
    return torch.futures.collect_all(futs).then(done)


def make_multistream_hook(groups: Sequence[Any], mode: str = "split", wire_precision: str = "fp32",
                          recorder: Callable[[int, int, float, float], None] | None = None, **options: Any):
    """A hook closed over its state: ``ddp.register_comm_hook(state=None, hook=hook)``.

    ``hook.state`` is the :class:`MultiStreamState` (bucket log, groups).
    ``options``: ``min_part_bytes``, ``log_buckets``.
    """
    st = MultiStreamState(list(groups), mode=mode, wire_precision=wire_precision, recorder=recorder, **options)

    def hook(state, bucket):  # no annotations: DDP checks them against the real types
        return multistream_hook(st, bucket)

    hook.state = st
    return hook
