"""Sharding units: the groups of layers that share one all-gather and one reduce-scatter.

Sharded data parallelism (FSDP2 ``fully_shard``, ZeRO-3, HSDP) communicates
per *unit*. :func:`group_units` forms them from a model and the
``unit_bytes`` knob:

- ``unit_bytes == 0``: one unit per model block (:attr:`Layer.block`, what
  FSDP users wrap: one transformer block), plus one *root* unit holding every
  layer outside a block (embeddings, final norm, head), as ``fully_shard`` on
  the root module does. A model without block annotations gets one unit per
  layer that owns parameters.
- ``unit_bytes > 0``: consecutive layers in ready (backward) order grouped
  greedily up to ``unit_bytes`` of fp32 parameters (numel x 4), as DDP fills
  buckets; a layer larger than the cap is a unit of its own.

Layers without parameters join the unit of their neighbours, so every layer
belongs to exactly one unit and compute can be charged per unit.
"""
from __future__ import annotations

from dataclasses import dataclass

from commtune.models.base import ModelProfile

#: Bytes per parameter element that ``unit_bytes`` counts (fp32, as every size knob does).
UNIT_BYTES_PER_ELEMENT = 4


@dataclass(frozen=True)
class Unit:
    """One sharding unit: layer indices (forward order, ascending) and its parameter count."""

    name: str
    layers: tuple[int, ...]
    numel: int

    @property
    def first(self) -> int:
        """Index of the unit's first layer in forward order (where forward needs it gathered)."""
        return self.layers[0]

    @property
    def last(self) -> int:
        """Index of the unit's last layer in forward order (where backward needs it first)."""
        return self.layers[-1]

    def param_bytes(self, bytes_per_element: int = UNIT_BYTES_PER_ELEMENT) -> int:
        return self.numel * bytes_per_element


def group_units(model: ModelProfile, unit_bytes: int = 0) -> list[Unit]:
    """The units of ``model`` under ``unit_bytes``, in forward order of first use."""
    if unit_bytes < 0:
        raise ValueError(f"unit_bytes {unit_bytes} is negative")
    numels = layer_numels(model)
    if unit_bytes == 0 and any(layer.block is not None for layer in model.layers):
        groups = _by_block(model)
    elif unit_bytes == 0:
        groups = _by_layer(numels)
    else:
        groups = _greedy_ready_order(numels, unit_bytes // UNIT_BYTES_PER_ELEMENT or 1)
    units = [Unit(name, tuple(sorted(idx)), sum(numels[i] for i in idx)) for name, idx in groups]
    return sorted(units, key=lambda u: u.first)


#: the unit of the layers outside every block: FSDP2's root module takes them, and keeps them
#: gathered from the forward into the backward (its default for the root)
ROOT_UNIT = "root"


def layer_numels(model: ModelProfile) -> list[int]:
    """Parameter elements of each layer of ``model``, forward order."""
    return [sum(t.numel for t in layer.tensors) for layer in model.layers]


def _by_block(model: ModelProfile) -> list[tuple[str, list[int]]]:
    """One group per block name (consecutive layers), plus the root group of the rest."""
    groups: dict[str, list[int]] = {}
    root: list[int] = []
    for i, layer in enumerate(model.layers):
        (groups.setdefault(layer.block, []) if layer.block is not None else root).append(i)
    out = [(name, idx) for name, idx in groups.items()]
    if root:
        out.append((ROOT_UNIT, root))
    return out


def _by_layer(numels: list[int]) -> list[tuple[str, list[int]]]:
    """One group per layer with parameters; parameter-less layers join the next group in forward order."""
    out: list[tuple[str, list[int]]] = []
    pending: list[int] = []
    for i, n in enumerate(numels):
        pending.append(i)
        if n > 0:
            out.append((f"unit{len(out)}", pending))
            pending = []
    if pending:
        if out:
            out[-1][1].extend(pending)
        else:
            out.append(("unit0", pending))
    return out


def _greedy_ready_order(numels: list[int], cap: int) -> list[tuple[str, list[int]]]:
    """Layers in ready order (last first) filled into groups of at most ``cap`` elements."""
    out: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i in reversed(range(len(numels))):
        n = numels[i]
        if current and size > 0 and n > 0 and size + n > cap:
            out.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        out.append(current)
    return [(f"unit{k}", idx) for k, idx in enumerate(reversed(out))]
