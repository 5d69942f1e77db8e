"""Checks of a sharded configuration against the model and cluster it runs on.

The knob registry checks each sharded knob on its own (``--forward-prefetch 9``
is out of range anywhere). What only the scenario can tell is checked here,
before any simulation, search or export writes a file:

- ``shard_group_size`` (hybrid; 0 = the GPUs per node) must divide the world size;
- an integer ``reshard_after_forward`` must be a non-trivial divisor of the
  shard group (FSDP2's rule: not 1, not the group itself);
- ``forward_prefetch`` / ``backward_prefetch`` cannot exceed the units there
  are to prefetch: at most ``max(1, units - 1)`` (1 is every framework's
  default and harmless on a one-unit model).

Every problem is one :class:`~commtune.errors.CommtuneError` line naming the
value and what is accepted.

The search's choice of sharding lives here too: :func:`sharding_spaces` names
the spaces ``search --sharding`` searches (``auto``: all-reduce DP while the
model fits unsharded, else ZeRO-2/3, FSDP and HSDP), and :func:`check_fits`
refuses, in one line, a model that does not fit even fully sharded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from commtune.errors import CommtuneError
from commtune.knobs import KNOBS, SHARDED, Knobs

if TYPE_CHECKING:
    from commtune.cluster import ClusterSpec
    from commtune.models.base import ModelProfile
    from commtune.search.space import SearchSpace


@dataclass(frozen=True)
class ShardLayout:
    """How the world is split: ``group`` ranks shard each parameter, ``replicas`` groups hold copies."""

    world: int
    group: int

    @property
    def replicas(self) -> int:
        return self.world // self.group


def shard_layout(knobs: Knobs, cluster: "ClusterSpec") -> ShardLayout:
    """The shard group and replica count of ``knobs`` on ``cluster`` (checked).

    ``grad`` and ``full`` shard over the whole world; ``hybrid`` over
    ``shard_group_size`` ranks (0 = the GPUs per node)."""
    world = cluster.world_size
    if knobs.sharding != "hybrid":
        return ShardLayout(world, world)
    group = knobs.shard_group_size or cluster.gpus_per_node
    if group > world or world % group:
        divisors = [d for d in range(1, world + 1) if world % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        what = (f"shard_group_size {knobs.shard_group_size}" if knobs.shard_group_size
                else f"shard_group_size 0 (= {group} GPUs per node)")
        raise CommtuneError(f"{what} does not divide the world size {world} ({cluster.nodes}x"
                            f"{cluster.gpus_per_node}); give a divisor of {world}: {shown}")
    return ShardLayout(world, group)


def prefetch_limit(n_units: int) -> int:
    """The deepest prefetch that means something on ``n_units`` units: ``max(1, units - 1)``
    (1, every framework's default, is harmless on a one-unit model)."""
    return max(1, n_units - 1)


def cap_prefetch(knobs: Knobs, model: "ModelProfile") -> Knobs:
    """``knobs`` with its prefetch depths capped at the units there are to prefetch (``max(1, units - 1)``).

    The capped configuration is the same step (every unit ahead is already
    gathered), and the one :func:`check_sharding` and the runtime accept; a
    search writes its best this way."""
    import dataclasses

    if knobs.sharding not in SHARDED:
        return knobs
    from commtune.models.units import group_units

    most = prefetch_limit(len(group_units(model, knobs.unit_bytes)))
    return dataclasses.replace(knobs, forward_prefetch=min(knobs.forward_prefetch, most),
                               backward_prefetch=min(knobs.backward_prefetch, most))


def check_sharding(knobs: Knobs, model: "ModelProfile | None", cluster: "ClusterSpec") -> ShardLayout | None:
    """Check ``knobs`` against ``model`` and ``cluster``; the shard layout, or None for ``sharding: none``.

    ``model`` may be None (an export whose model cannot be loaded): then the
    unit-count checks are skipped."""
    if knobs.sharding not in SHARDED:
        return None
    layout = shard_layout(knobs, cluster)
    active = knobs.active()
    raf = active.get("reshard_after_forward")
    if isinstance(raf, int) and not isinstance(raf, bool):
        ok = [d for d in range(2, layout.group) if layout.group % d == 0]
        if raf not in ok:
            accepted = ", ".join(map(str, ok)) if ok else "none: use true or false"
            raise CommtuneError(f"reshard_after_forward {raf} is not a divisor of the shard group of {layout.group} "
                                f"ranks other than 1 and {layout.group}; give true, false or one of: {accepted}")
    if model is not None:
        from commtune.models.units import group_units

        n_units = len(group_units(model, knobs.unit_bytes))
        most = prefetch_limit(n_units)
        for name in ("forward_prefetch", "backward_prefetch"):
            if active.get(name, 0) > most:
                unit = KNOBS["unit_bytes"].show(knobs.unit_bytes) if knobs.unit_bytes else "0 (one unit per block)"
                raise CommtuneError(f"{name} {active[name]}: {model.name} has {n_units} sharding unit(s) under "
                                    f"unit_bytes {unit}, so at most {most} can be ahead; give 0 to {most}")
    return layout


def check_space_sharding(space: "SearchSpace", cluster: "ClusterSpec") -> None:
    """Check every shard group size and integer reshard size ``space`` can take on ``cluster``.

    A range of ``shard_group_size`` would sample sizes that do not divide the
    world, so searched group sizes must be choices. Prefetch counts are not
    checked per trial: the search simply finds prefetch beyond the units useless."""
    params = {p.name: p for p in space.params}

    def values(name: str) -> list[Any]:
        p = params.get(name)
        if p is None:
            return [getattr(space.base, name)]
        if p.kind != "choice":
            raise CommtuneError(f"search space {space.name!r}: knob {name}: give choices, not a range (on "
                                f"{cluster.nodes}x{cluster.gpus_per_node} GPUs only divisors of "
                                f"{cluster.world_size} apply)")
        return list(p.choices)

    for sharding in values("sharding"):
        if sharding not in SHARDED:
            continue
        for group in values("shard_group_size") if sharding == "hybrid" else [0]:
            for raf in values("reshard_after_forward") if sharding in ("full", "hybrid") else [True]:
                k = Knobs.from_dict({"sharding": sharding, "shard_group_size": group, "reshard_after_forward": raf},
                                    base=space.base)
                try:
                    check_sharding(k, None, cluster)
                except CommtuneError as exc:
                    raise CommtuneError(f"search space {space.name!r}: {exc}") from None


__all__ = ["ShardLayout", "check_sharding", "check_space_sharding", "shard_layout"]


#: The space ``search --sharding VALUE`` searches (``grad`` pins the zero space's sharding).
SHARDING_SPACE = {"none": "default", "grad": "zero", "full": "fsdp", "hybrid": "hsdp"}
#: The choices of ``search --sharding``.
SHARDING_CHOICES = ("auto", *SHARDING_SPACE)

#: The leanest sharded configuration: what must fit for any sharding to fit.
LEANEST = Knobs(sharding="full", unit_bytes=0, forward_prefetch=0, backward_prefetch=0,
                reshard_after_forward=True, reduce_precision="bf16")


def fits_unsharded(scenario: Any) -> bool:
    """Whether PyTorch DDP's defaults fit the device's memory."""
    from commtune.knobs import DDP_DEFAULT

    return scenario.memory(DDP_DEFAULT).peak <= scenario.memory_limit_bytes()


def check_fits(scenario: Any) -> None:
    """One CommtuneError line when the model does not fit a GPU even fully sharded."""
    from commtune.units import format_size

    m = scenario.memory(LEANEST)
    limit = scenario.memory_limit_bytes()
    if m.peak <= limit:
        return
    c = scenario.cluster
    raise CommtuneError(
        f"{scenario.model.name} needs {format_size(m.peak)} per GPU even fully sharded over {c.world_size} GPUs "
        f"(activations {format_size(m.activations)} at batch {scenario.batch_size}, model states "
        f"{format_size(m.params + m.grads + m.optimizer_states)}); the {c.device} has {format_size(limit)}: "
        f"use --activation-checkpointing, a smaller --batch-size or --input-size, more GPUs, or --device with "
        f"more memory")


def check_sharding_choice(sharding: str) -> str:
    """``sharding`` if it is a ``search --sharding`` choice, else one CommtuneError line."""
    if sharding not in SHARDING_CHOICES:
        raise CommtuneError(f"--sharding {sharding!r}: give one of {', '.join(SHARDING_CHOICES)}")
    return sharding


def sharding_spaces(scenario: Any, sharding: str) -> list[tuple[str, "SearchSpace"]]:
    """``(sharding, space)`` pairs ``search --sharding`` searches on ``scenario`` (best one wins)."""
    from commtune.search.space import load_space

    check_sharding_choice(sharding)
    if sharding == "auto":
        if fits_unsharded(scenario):
            return [("none", load_space("default"))]
        check_fits(scenario)
        wanted = ["grad", "full"] + (["hybrid"] if scenario.cluster.nodes > 1 else [])
    else:
        if sharding != "none":
            check_fits(scenario)
        wanted = [sharding]
    out = []
    for name in wanted:
        space = load_space(SHARDING_SPACE[name])
        if name == "grad":
            space = space.pinned("sharding", "grad")
        if name == "hybrid":
            space = _divisible_groups(space, scenario.cluster)
        out.append((name, space))
    return out


def _divisible_groups(space: "SearchSpace", cluster: "ClusterSpec") -> "SearchSpace":
    """The hsdp space with only the shard group sizes that divide this world size."""
    from dataclasses import replace

    params = []
    for p in space.params:
        if p.name == "shard_group_size":
            keep = tuple(g for g in p.choices if (g or cluster.gpus_per_node) <= cluster.world_size
                         and cluster.world_size % (g or cluster.gpus_per_node) == 0)
            p = replace(p, choices=keep)
        params.append(p)
    return replace(space, params=tuple(params))
