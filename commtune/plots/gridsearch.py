"""Exhaustive grid over the knob space, evaluated with the batch simulator.

The plots and experiments need "the best configuration" of a scenario without
a search library: a full Cartesian grid (tens of thousands of configurations)
takes well under a second with :meth:`Simulator.run_batch`. The ranges follow
the default search space (fusion 1 MiB..1 GiB, first bucket 256 KiB..256 MiB,
cycle 0.2..50 ms, 1..8 streams, both negotiations, flat/hierarchical,
fp32/fp16 on the wire).

>>> arrays = knob_grid("default")                     # doctest: +SKIP
>>> best, metrics = grid_best(scenario.simulator, arrays)  # doctest: +SKIP
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from commtune.errors import CommtuneError
from commtune.knobs import Knobs
from simulators import KnobArrays

MiB = 2**20

#: Values per knob of the grid (the default search space's ranges).
GRID: dict[str, list[Any]] = {
    "fusion_threshold_bytes": [int(v) for v in np.geomspace(1 * MiB, 1024 * MiB, 21)],
    "first_bucket_bytes": [int(v) for v in np.geomspace(MiB // 4, 256 * MiB, 6)],
    "cycle_time_ms": [0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0],
    "num_streams": [1, 2, 3, 4, 6, 8],
    "negotiation": ["central", "decentralized"],
    "hierarchical": [False, True],
    "wire_precision": ["fp32", "fp16"],
}

#: Which knobs each named space varies, per fusion policy.
SPACES: dict[str, dict[str, tuple[str, ...]]] = {
    "default": {
        "dynamic": ("fusion_threshold_bytes", "cycle_time_ms", "num_streams", "negotiation", "hierarchical", "wire_precision"),
        "static": ("fusion_threshold_bytes", "first_bucket_bytes", "num_streams", "hierarchical", "wire_precision"),
    },
    "horovod": {
        "dynamic": ("fusion_threshold_bytes", "cycle_time_ms", "num_streams", "negotiation", "hierarchical", "wire_precision"),
    },
    "ddp": {
        "static": ("fusion_threshold_bytes", "first_bucket_bytes", "num_streams", "wire_precision"),
    },
}


def knob_grid(space: str = "default", overrides: dict[str, list[Any]] | None = None,
              base: Knobs | None = None) -> KnobArrays:
    """All combinations of :data:`GRID` values for the knobs ``space`` varies.

    ``overrides`` replaces the value list of any knob (e.g. fewer streams);
    knobs a space does not vary keep ``base``'s value (default: registry).
    """
    if space not in SPACES:
        raise CommtuneError(f"unknown grid space {space!r}; choose one of: {', '.join(SPACES)}")
    values = {**GRID, **(overrides or {})}
    base = base or Knobs()
    columns: dict[str, list[Any]] = {name: [] for name in KnobArrays.__dataclass_fields__}
    for policy, varied in SPACES[space].items():
        lists = [values[name] for name in varied]
        for combo in itertools.product(*lists):
            row = dict(zip(varied, combo))
            row["fusion_policy"] = policy
            for name in columns:
                columns[name].append(row.get(name, getattr(base, name)))
    n = len(columns["num_streams"])
    return KnobArrays.from_columns(n, **{k: np.asarray(v) for k, v in columns.items()})


def grid_best(simulator, arrays: KnobArrays, metric: str = "step_time_s") -> tuple[Knobs, dict[str, float]]:
    """The configuration of ``arrays`` with the smallest ``metric`` and all its metrics."""
    m = simulator.run_batch(arrays)
    i = int(np.argmin(m[metric]))
    return arrays.knobs(i), {k: float(v[i]) for k, v in m.items()}
