"""The runtime engine: tuned profiles drive real PyTorch DDP training.

* :func:`load_profile` -- read and validate a profile, ``(knobs, profile)``;
* :func:`wrap` -- ``DistributedDataParallel`` with the profile applied (bucket
  sizes, first bucket, K streams, wire precision), after checking the model
  fingerprint and the world size;
* :class:`AutoTuner` -- tune the knobs on the live job during its first steps
  (Optuna ask/tell on rank 0, broadcast, rebuild DDP), lock in the best, write a
  profile, re-tune when the step time drifts.
"""
from commtune.runtime.apply import (
    CommtuneWarning,
    DDPPlan,
    build_ddp,
    check_model,
    check_world_size,
    first_bucket_bytes,
    load_profile,
    plan_for,
    wrap,
)
from commtune.runtime.tuner import DEFAULT_SPACE, TUNABLE, AutoTuner, Config, parse_space
from commtune.runtime.fingerprint import module_fingerprint, module_profile
from commtune.runtime.hooks import STREAM_MODES, MultiStreamState, make_multistream_hook, multistream_hook, stream_groups

__all__ = [
    "AutoTuner",
    "Config",
    "DEFAULT_SPACE",
    "TUNABLE",
    "parse_space",
    "CommtuneWarning",
    "DDPPlan",
    "MultiStreamState",
    "STREAM_MODES",
    "build_ddp",
    "check_model",
    "check_world_size",
    "first_bucket_bytes",
    "load_profile",
    "make_multistream_hook",
    "module_fingerprint",
    "module_profile",
    "multistream_hook",
    "plan_for",
    "stream_groups",
    "wrap",
]
