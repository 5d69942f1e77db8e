"""Optuna samplers by name, and the default engine's warm start.

The default engine (``--sampler auto``) is TPE (multivariate, grouped for the
conditional space) whose study starts from:

1. the baselines of the space's sharding (PyTorch DDP and Horovod defaults for
   all-reduce spaces; FSDP2, ZeRO-3 and ZeRO-2 defaults for sharded ones)
   projected into the space, less those the screening finds infeasible (over
   the GPU's memory), so the search never reports worse than the defaults;
2. the best few of a *screening* on the batch simulator (:func:`screen_space`):
   ``screen`` random configurations, then :data:`REFINE_ROUNDS` rounds of
   neighbours of the best ones at shrinking steps (random points alone thin out
   as a space grows: the default space's 4,096 hold a quarter as many DDP-like
   points as the ddp space's, and TPE's trials do not make up for it);
3. the screened best of every other bundled space this space can express
   exactly (e.g. ``ddp`` inside ``default``), screened with the same seed, so the
   larger space starts from at least what its subspace's screening reaches.

The screening evaluations are not trials; the result reports their number as
``screened``. With an objective that cannot batch (a live cluster) the
screening still runs on the simulator when the objective exposes one
(simulator-informed starting points), else only the baselines are enqueued.
"""
from __future__ import annotations

import numpy as np

from commtune.errors import CommtuneError, did_you_mean
from commtune.knobs import BASELINES, SHARDED_BASELINES, Knobs

WARM_START_TOP = 6
#: Screening refinement: rounds, parents per round, neighbours per round, first step (share of a range).
REFINE_ROUNDS = 4
REFINE_PARENTS = 8
REFINE_POINTS = 512
REFINE_SCALE = 0.08


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


def space_baselines(space) -> list[Knobs]:
    """The frameworks' defaults whose sharding ``space`` takes (all-reduce or sharded)."""
    shardings = space.sharding_values()
    return [k for k in (*BASELINES.values(), *SHARDED_BASELINES.values()) if k.sharding in shardings]


def _seeded(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def screen_space(space, evaluator, seed: int | None, screen: int,
                 extra: list[dict] = ()) -> tuple[list[dict], np.ndarray]:
    """Screen ``space`` on a batch evaluator: rows and step times, best first.

    ``screen`` random rows (and the ``extra`` rows) are evaluated in one batch;
    then each of :data:`REFINE_ROUNDS` rounds evaluates :data:`REFINE_POINTS`
    neighbours of the best :data:`REFINE_PARENTS` distinct rows so far, the step
    halving every round. Infeasible rows (infinite step time) sort last; the
    same seed gives the same rows."""
    rng = _seeded(seed)
    rows = list(extra) + space.sample_rows(rng, screen)
    steps = np.asarray(evaluator.evaluate_batch(space.knob_arrays(rows))["step_time_s"], dtype=float)
    scale = REFINE_SCALE
    for _ in range(REFINE_ROUNDS):
        parents = _best_distinct(rows, steps, REFINE_PARENTS)
        if not parents:
            break
        new = space.neighbour_rows(rng, parents, REFINE_POINTS, scale)
        rows += new
        steps = np.concatenate([steps, np.asarray(evaluator.evaluate_batch(space.knob_arrays(new))["step_time_s"],
                                                  dtype=float)])
        scale /= 2
    order = np.argsort(steps, kind="stable")
    return [rows[int(i)] for i in order], steps[order]


def _best_distinct(rows: list[dict], steps: np.ndarray, k: int) -> list[dict]:
    """The ``k`` best distinct feasible rows."""
    out: list[dict] = []
    for i in np.argsort(steps, kind="stable"):
        if not np.isfinite(steps[int(i)]) or len(out) >= k:
            break
        if rows[int(i)] not in out:
            out.append(rows[int(i)])
    return out


def subspace_starts(space, evaluator, seed: int | None, screen: int, top: int) -> list[dict]:
    """The screened best ``top`` rows of every other bundled space that ``space`` expresses
    exactly (its sharding values a subset of ``space``'s), as rows of ``space``."""
    from commtune.search.space import iter_bundled

    out: list[dict] = []
    shardings = space.sharding_values()
    for sub in iter_bundled():
        if sub.fingerprint() == space.fingerprint() or not sub.sharding_values() <= shardings:
            continue
        rows, steps = screen_space(sub, evaluator, seed, screen)
        for r in _best_distinct(rows, steps, top):
            p = space.projects_exactly(sub.knobs_from_params(r))
            if p is not None and p not in out:
                out.append(p)
    return out


def warm_start_points(space, objective, seed: int | None, screen: int, top: int = WARM_START_TOP) -> tuple[list[dict], int]:
    """Params to enqueue first (baselines, then the screened best), and how many screening
    evaluations it took."""
    baselines: list[dict] = []
    for knobs in space_baselines(space):
        p = space.params_from_knobs(knobs)
        if p not in baselines:
            baselines.append(p)
    evaluator = objective if getattr(objective, "supports_batch", False) else getattr(objective, "screening", None)
    if screen <= 0 or evaluator is None:
        return baselines, 0
    counted = _Counting(evaluator)
    base_steps = np.asarray(counted.evaluate_batch(space.knob_arrays(baselines))["step_time_s"], dtype=float)
    points = [p for p, t in zip(baselines, base_steps) if np.isfinite(t)]
    starts = subspace_starts(space, counted, seed, screen, top)
    rows, steps = screen_space(space, counted, seed, screen, extra=starts)
    limit = top + len(points)
    for r, t in zip(rows, steps):
        if len(points) >= limit or not np.isfinite(t):
            break
        if r not in points:
            points.append(r)
    return points or baselines, counted.rows


class _Counting:
    """A batch evaluator that counts the rows it evaluates."""

    def __init__(self, evaluator) -> None:
        self.evaluator, self.rows = evaluator, 0

    def evaluate_batch(self, arrays):
        self.rows += len(arrays)
        return self.evaluator.evaluate_batch(arrays)
