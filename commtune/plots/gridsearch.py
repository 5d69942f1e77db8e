"""Exhaustive grid over a search space, evaluated with the batch simulator.

The plots and experiments need "the best configuration" of a scenario without
a search library: a full Cartesian grid (thousands to tens of thousands of
configurations) takes well under a second with :meth:`Simulator.run_batch`.

This is a thin layer over :mod:`commtune.search.space`: the knobs a grid
varies, their ranges, fixed values and conditions are those of the named
search space (``search_spaces/<name>.yaml`` or a YAML file), and the rows are
:meth:`SearchSpace.grid_rows` -- the same grid as ``commtune search --sampler
grid`` (with ``--grid-points`` = ``points``).

>>> arrays = knob_grid("default")                          # doctest: +SKIP
>>> arrays = knob_grid("default", {"num_streams": [4]}, points=16)  # doctest: +SKIP
>>> best, metrics = grid_best(scenario.simulator, arrays)  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from commtune.knobs import Knobs
from commtune.search.space import SearchSpace, load_space
from simulators import KnobArrays


def knob_grid(space: str | os.PathLike | SearchSpace = "default", overrides: dict[str, list[Any]] | None = None,
              base: Knobs | None = None, points: int | None = None) -> KnobArrays:
    """Every combination of the grid values of ``space`` as a batch.

    ``space``: a bundled space name (``default``, ``ddp``, ``horovod``), a YAML
    file or a :class:`SearchSpace`. ``overrides`` maps a knob to its value list
    and wins over the space: a searched knob takes exactly these values, and a
    knob the space does not search is varied over them (say so where you use
    it: the space then is no longer the file's). ``points``: points per numeric
    range (default: each range's ``grid`` in the file). Knobs the grid does not
    vary keep the space's base configuration; ``base`` replaces the file's
    ``base:`` (the file's fixed knobs still apply).
    """
    sp = space if isinstance(space, SearchSpace) else load_space(space)
    if base is not None:
        sp = sp.rebased(base)
    return sp.knob_arrays(sp.grid_rows(overrides, points))


def grid_best(simulator, arrays: KnobArrays, metric: str = "step_time_s") -> tuple[Knobs, dict[str, float]]:
    """The configuration of ``arrays`` with the smallest ``metric`` and all its metrics."""
    m = simulator.run_batch(arrays)
    i = int(np.argmin(m[metric]))
    return arrays.knobs(i), {k: float(v[i]) for k, v in m.items()}
