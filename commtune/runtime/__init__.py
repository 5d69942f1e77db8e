"""The runtime engine: tuned profiles drive real PyTorch DDP training.

* :func:`load_profile` -- read and validate a profile (:func:`commtune.profiles.load_profile`);
* :func:`wrap` -- ``DistributedDataParallel`` with the profile applied (bucket
  sizes, first bucket, K streams, wire precision), after checking the model
  fingerprint and the world size; a sharded profile goes to :func:`shard`;
* :func:`shard` -- FSDP2 ``fully_shard`` per unit as the profile groups the
  layers (prefetch, reshard after forward, reduce dtype, HSDP mesh);
* :mod:`~commtune.runtime.ddp_plan` -- how knobs map onto DDP (torch-free);
* :class:`AutoTuner` -- tune the knobs on the live job during its first steps
  (Optuna ask/tell on rank 0, broadcast, rebuild DDP), lock in the best, write a
  profile, re-tune when the step time drifts;
* :mod:`~commtune.runtime.synthetic` -- a module mirroring a model profile.

Names are imported on first use (``import commtune.runtime`` does not import torch).
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AutoTuner": "tuner", "Config": "tuner", "DEFAULT_SPACE": "tuner", "TUNABLE": "tuner", "parse_space": "tuner",
    "CommtuneWarning": "checks", "build_ddp": "apply", "check_model": "checks", "check_world_size": "checks",
    "wrap": "apply",
    "DDPPlan": "ddp_plan", "plan_for": "ddp_plan", "first_bucket_bytes": "ddp_plan", "STREAM_MODES": "ddp_plan",
    "module_fingerprint": "fingerprint", "module_profile": "fingerprint",
    "MultiStreamState": "hooks", "make_multistream_hook": "hooks", "multistream_hook": "hooks",
    "stream_groups": "hooks",
    "shard": "shard", "plan_shard": "shard", "ShardPlan": "shard",
}

_TORCH_FREE = {"ddp_plan", "fingerprint"}  # the other modules import torch

__all__ = sorted([*_WHERE, "load_profile"])


def __getattr__(name: str) -> Any:
    if name == "load_profile":
        from commtune.profiles import load_profile

        return load_profile
    if name in _WHERE:
        if _WHERE[name] not in _TORCH_FREE:
            from commtune.extras import require

            require("torch", f"commtune.runtime.{name}")
        return getattr(importlib.import_module(f"commtune.runtime.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'commtune.runtime' has no attribute {name!r}")
