"""What the sharded-data-parallelism exporters (FSDP2, DeepSpeed ZeRO, Megatron-Core) share.

- :func:`profile_model`: the profile stores only the model's name and
  fingerprint, so the units are rebuilt by loading the model by name
  (:func:`commtune.models.load_model`) and checking the fingerprint matches;
  when it cannot be loaded or differs, exports fall back to unit sizes only.
- :func:`unit_elements`: ``unit_bytes`` counts fp32 bytes (numel x 4), so a
  unit holds ``unit_bytes // 4`` parameter elements, whatever the compute
  precision; frameworks that size buckets in elements get that number.

The all-reduce knobs (fusion, streams, hierarchical, wire precision) are
inactive under sharding, so no sharded exporter sees them.
"""
from __future__ import annotations

from dataclasses import dataclass

from commtune.errors import CommtuneError
from commtune.exporters.base import Draft
from commtune.models.base import ModelProfile
from commtune.models.units import UNIT_BYTES_PER_ELEMENT, Unit, group_units
from commtune.profiles import Profile
from commtune.sharding_checks import ShardLayout, check_sharding

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
