"""What the sharded-data-parallelism exporters (FSDP2, DeepSpeed ZeRO, Megatron-Core) share.

- :func:`profile_model`: the profile stores only the model's name and
  fingerprint, so the units are rebuilt by loading the model by name
  (:func:`commtune.models.load_model`) and checking the fingerprint matches;
  when it cannot be loaded or differs, exports fall back to unit sizes only.
- :func:`unit_elements`: ``unit_bytes`` counts fp32 bytes (numel x 4), so a
  unit holds ``unit_bytes // 4`` parameter elements, whatever the compute
  precision; frameworks that size buckets in elements get that number.
- :func:`all_reduce_knobs`: the all-reduce DP knobs (fusion, cycle,
  negotiation, streams, hierarchical, wire precision) that stay active under
  sharding, recorded in one way for every sharded target.
"""
from __future__ import annotations

from dataclasses import dataclass

from commtune.errors import CommtuneError
from commtune.exporters.base import Draft
from commtune.models.base import ModelProfile
from commtune.models.units import UNIT_BYTES_PER_ELEMENT, Unit, group_units
from commtune.profiles import Profile
from commtune.sharding_checks import ShardLayout, check_sharding

#: The all-reduce fusion knobs: under sharding the unit (``unit_bytes``) is the fusion granularity.
FUSION_KNOBS = ("fusion_policy", "fusion_threshold_bytes", "first_bucket_bytes", "cycle_time_ms")


@dataclass(frozen=True)
class ProfileModel:
    """The profile's model reloaded (None when impossible, with the reason) and its units."""

    model: ModelProfile | None
    units: list[Unit] | None
    reason: str = ""


def profile_model(profile: Profile) -> ProfileModel:
    """The model of ``profile`` by name, if its fingerprint matches, and its units under the profile's knobs."""
    from commtune.models import load_model
    from commtune.models.zoo import find_entry

    name = str(profile.model.get("name"))
    size = profile.model.get("input_size")
    try:
        model = load_model(name, input_size=size if find_entry(name) is not None else None)
    except CommtuneError as exc:
        return ProfileModel(None, None, f"model {name!r} cannot be loaded here ({exc})")
    if model.fingerprint() != profile.model.get("fingerprint"):
        return ProfileModel(None, None, f"model {name!r} here has fingerprint {model.fingerprint()}, the profile "
                                        f"{profile.model.get('fingerprint')} (another version of the model)")
    return ProfileModel(model, group_units(model, profile.knobs.unit_bytes))


def sharded_layout(d: Draft, pm: ProfileModel, target: str) -> ShardLayout:
    """The checked shard layout of the draft's profile; ``sharding: none`` is a one-line refusal."""
    layout = check_sharding(d.profile.knobs, pm.model, d.profile.cluster)
    if layout is None:
        raise CommtuneError(f"profile has sharding none (all-reduce data parallelism), which {target} does not "
                            "run; export it with --format ddp/horovod/deepspeed, or search a sharded space "
                            "(--space fsdp, hsdp or zero)")
    return layout


def unit_elements(unit_bytes: int) -> int:
    """Parameter elements in a unit of ``unit_bytes`` fp32 bytes."""
    return int(unit_bytes) // UNIT_BYTES_PER_ELEMENT


def largest_unit_elements(pm: ProfileModel) -> int | None:
    return max(u.numel for u in pm.units) if pm.units else None


def all_reduce_knobs(d: Draft, target: str, streams: str) -> None:
    """Record the all-reduce DP knobs that stay active under sharding.

    ``streams`` says how ``target`` places its collectives on streams (one
    stream per collective kind, in every framework here)."""
    a = d.active
    for knob in FUSION_KNOBS:
        if knob in a:
            d.unsupported_knob(knob, f"{target} communicates per sharding unit (unit_bytes); the all-reduce "
                                     "fusion knobs have no counterpart")
    if "negotiation" in a:
        d.unsupported_knob("negotiation", f"{target} does not negotiate readiness: every rank runs the same "
                                          "collectives in the same order")
    if a["num_streams"] == 1:
        d.apply("num_streams", streams)
        d.apply("stream_mode", "one stream: the stream mode has no effect")
    else:
        d.unsupported_knob("num_streams", f"{streams}; more streams have no setting")
        d.unsupported_knob("stream_mode", f"{streams}; there is no choice of stream mode")
    if a["hierarchical"]:
        d.unsupported_knob("hierarchical", f"{target} issues flat collectives per unit (NCCL picks the algorithm); "
                                           "the two-level form of sharded data parallelism is sharding: hybrid")
    else:
        d.apply("hierarchical", f"{target}'s flat collectives per unit")
    if a["wire_precision"] == "fp16":
        d.unsupported_knob("wire_precision", "under sharding the gradient wire precision is reduce_precision "
                                             "(fp32 or bf16); fp16 compression of an all-reduce has no counterpart")
    else:
        d.apply("wire_precision", "gradients travel in reduce_precision under sharding")
