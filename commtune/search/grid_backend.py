"""Grid backend: every point of the discretised space, evaluated with the
batch simulator (``Objective.evaluate_batch``) in chunks.

The grid is :meth:`SearchSpace.grid_rows` (``points`` per numeric range,
default: the space's own), the same rows :func:`commtune.plots.gridsearch.knob_grid`
builds."""
from __future__ import annotations

import numpy as np

from commtune.search import SearchConfig, SearchResult

CHUNK = 65536


def run(config: SearchConfig) -> SearchResult:
    space = config.space
    rows = space.grid_rows(points=config.grid_points)
    objective = config.objective
    steps = np.empty(len(rows))
    for lo in range(0, len(rows), CHUNK):
        chunk = rows[lo: lo + CHUNK]
        steps[lo: lo + len(chunk)] = objective.evaluate_batch(space.knob_arrays(chunk))[objective.metric]
        if config.progress:
            config.progress(lo + len(chunk), len(rows), float(steps[: lo + len(chunk)].min()))
    i = int(np.argmin(steps))
    knobs = space.knobs_from_params(rows[i])
    return SearchResult(
        best_knobs=knobs, best_metrics=objective.evaluate(knobs), trials=len(rows), new_trials=len(rows),
        backend="grid", sampler="grid", history=[], extra={"grid_size": len(rows)},
    )
