"""Grid backend: every point of the discretised space, evaluated with the
batch simulator (``Objective.evaluate_batch``) in chunks."""
from __future__ import annotations

import dataclasses

import numpy as np

from commtune.search import SearchConfig, SearchResult

CHUNK = 65536


def grid_space(space, points: int | None):
    if not points:
        return space
    params = tuple(p if p.kind == "choice" else dataclasses.replace(p, grid=points) for p in space.params)
    return dataclasses.replace(space, params=params)


def run(config: SearchConfig) -> SearchResult:
    space = grid_space(config.space, config.grid_points)
    rows = space.grid_rows()
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
