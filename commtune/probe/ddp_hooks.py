"""DDP communication hooks that reduce gradient buckets over K process groups.

:func:`make_multistream_hook` returns a ``register_comm_hook`` hook that
all-reduces each bucket over K concurrent streams (process groups created with
``dist.new_group``; each group has its own connections, so K groups are K
TCP flows under gloo or K communicators under NCCL):

* ``mode="split"``: each bucket is cut into K contiguous parts, part i on
  group i, all launched at once (``async_op=True``); the bucket is done when
  all parts are (the AIACC scheme the simulator models);
* ``mode="round_robin"``: bucket i goes whole to group ``i % K``; successive
  buckets travel concurrently on different groups.

``wire_precision="fp16"`` casts the bucket to float16 for the wire and back
(as ``torch.distributed.algorithms.ddp_comm_hooks.default_hooks.fp16_compress_hook``).
Gradients are averaged (divided by the world size), as DDP does.

``recorder`` (optional) is called once per bucket with
``(bucket_index, grad_bytes, launch_time, done_time)`` (``time.perf_counter``);
the DDP step timer uses it for per-bucket timings. This module depends only on
torch, so the runtime engine can reuse it for real training.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.distributed as dist

MODES = ("split", "round_robin")


def make_multistream_hook(
    groups: Sequence,
    mode: str = "split",
    wire_precision: str = "fp32",
    recorder: Callable[[int, int, float, float], None] | None = None,
):
    """A DDP comm hook reducing each bucket over ``groups`` (see module docstring).

    Register with ``ddp.register_comm_hook(state=None, hook=hook)``.
    """
    groups = list(groups)
    if not groups:
        raise ValueError("make_multistream_hook needs at least one process group")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if wire_precision not in ("fp32", "fp16"):
        raise ValueError(f"wire_precision must be fp32 or fp16, got {wire_precision!r}")
    k = len(groups)
    world = dist.get_world_size(groups[0])

    def hook(state, bucket):  # no annotations: DDP checks them against real types
        t0 = time.perf_counter()
        buf = bucket.buffer()
        grad_bytes = buf.numel() * buf.element_size()
        compress = wire_precision == "fp16" and buf.dtype != torch.float16
        wire = buf.to(torch.float16) if compress else buf
        wire.div_(world)
        if mode == "split" and k > 1:
            parts = [p for p in wire.tensor_split(min(k, wire.numel())) if p.numel()]
            futs = [dist.all_reduce(p, group=g, async_op=True).get_future() for p, g in zip(parts, groups)]
            fut = torch.futures.collect_all(futs)
        else:
            g = groups[bucket.index() % k]
            fut = dist.all_reduce(wire, group=g, async_op=True).get_future()

        def done(_f) -> torch.Tensor:
            if compress:
                buf.copy_(wire)
            if recorder is not None:
                recorder(bucket.index(), grad_bytes, t0, time.perf_counter())
            return buf

        return fut.then(done)

    return hook
