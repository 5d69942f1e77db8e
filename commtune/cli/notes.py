"""One-line notes printed next to a result where a figure would otherwise mislead."""
from __future__ import annotations

from commtune.knobs import Knobs
from commtune.units import format_size


def first_bucket_note(knobs: Knobs, first_bytes: float | None = None) -> str | None:
    """Why the first bucket is larger than the bucket cap (static policy), or None.

    ``first_bytes``: the first bucket's simulated size (None: compare the caps only)."""
    if knobs.fusion_policy != "static":
        return None
    cap, first_cap = knobs.fusion_threshold_bytes, knobs.first_bucket_bytes
    size = first_cap if first_bytes is None else first_bytes
    if cap <= 0 or size <= cap:
        return None
    if first_bytes is None:
        head = f"first_bucket_bytes {format_size(first_cap)} > bucket cap {format_size(cap)}"
        why = "it has its own cap, as in DDP (default 1 MiB)"
    else:
        head = f"first bucket {format_size(first_bytes)} > bucket cap {format_size(cap)}"
        why = f"it has its own cap, first_bucket_bytes {format_size(first_cap)}, as in DDP"
    return (f"{head}: the first bucket holds the gradients ready first; {why}, and a bucket takes whole "
            f"tensors until it reaches its cap (so it can pass it by one tensor)")
