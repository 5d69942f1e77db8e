"""Moved to :mod:`commtune.runtime.hooks` (one implementation for the probe and the
runtime engine); re-exported here so probe code keeps working.

``make_multistream_hook(groups, mode="split"|"round_robin", wire_precision="fp32",
recorder=None)`` returns a hook for ``ddp.register_comm_hook(state=None, hook=hook)``;
``recorder(bucket_index, grad_bytes, launch_time, done_time)`` is called per bucket.
"""
from commtune.runtime.hooks import MODES, make_multistream_hook

__all__ = ["MODES", "make_multistream_hook"]
