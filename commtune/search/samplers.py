"""Optuna samplers by name, and the default engine's warm start.

The default engine (``--sampler auto``) is TPE (multivariate, grouped for the
conditional space) whose study starts from:

1. the baselines (PyTorch DDP default, Horovod default) projected into the
   space, so the search never reports worse than the defaults;
2. the best few of ``screen`` random configurations evaluated in one call of
   the *batch* simulator (milliseconds). These screening evaluations are not
   trials; the result reports their number as ``screened``. With an
   objective that cannot batch (a live cluster) the screening still runs on
   the simulator when the objective exposes one (simulator-informed starting
   points), else only the baselines are enqueued.
"""
from __future__ import annotations

import numpy as np

from commtune.errors import CommtuneError, did_you_mean
from commtune.knobs import BASELINES

WARM_START_TOP = 6


def make_sampler(name: str, seed: int | None):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")

    from commtune.extras import require, sampler_extra

    if sampler_extra(name):  # before any study or trial exists
        require(sampler_extra(name), f"--sampler {name}")
    s = optuna.samplers
    if name == "auto":
        return s.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                            n_startup_trials=10)
    if name == "tpe":
        return s.TPESampler(seed=seed)  # Optuna 5 defaults: multivariate, constant liar
    if name == "gp":
        return s.GPSampler(seed=seed, deterministic_objective=True)
    if name == "cmaes":
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "qmc":
        return s.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    from commtune.search import SAMPLERS

    raise CommtuneError(f"unknown sampler {name!r}{did_you_mean(name, SAMPLERS)}; samplers: {', '.join(SAMPLERS)}")


def warm_start_points(space, objective, seed: int | None, screen: int, top: int = WARM_START_TOP) -> tuple[list[dict], int]:
    """Params to enqueue first, and how many screening evaluations it took."""
    points: list[dict] = []
    for knobs in BASELINES.values():
        p = space.params_from_knobs(knobs)
        if p not in points:
            points.append(p)
    screened = 0
    evaluator = objective if getattr(objective, "supports_batch", False) else getattr(objective, "screening", None)
    if screen > 0 and evaluator is not None:
        rng = np.random.default_rng(seed)
        rows = space.sample_rows(rng, screen)
        step = np.asarray(evaluator.evaluate_batch(space.knob_arrays(rows))["step_time_s"])
        screened = len(rows)
        for i in np.argsort(step, kind="stable"):
            r = rows[int(i)]
            if r not in points:
                points.append(r)
            if len(points) >= top + len(BASELINES):
                break
    return points, screened
