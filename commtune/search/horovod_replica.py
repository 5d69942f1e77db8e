"""A replica of Horovod's autotuner (``horovod/common/optim``), as a baseline.

Horovod tunes ``fusion_buffer_threshold_mb`` in [0, 64] and ``cycle_time_ms``
in [1, 100] jointly with Bayesian optimisation (parameter_manager.cc,
bayesian_optimization.cc, gaussian_process.cc, after Martin Krasser's
notebook):

* Gaussian process with an isotropic squared-exponential kernel on the raw
  (unscaled) parameters; length scale ``l`` and ``sigma_f`` fit by L-BFGS on
  the negative log marginal likelihood; ``noise`` = 0.8 added as
  ``noise**2`` to the kernel diagonal;
* scores normalised (mean/std) once there are >= 3 samples;
* expected improvement with xi = 0.01 against the best *predicted* mean at
  the samples; maximised by L-BFGS-B from 25 random restarts;
* 4 fixed starting points (4 MB, 5 ms), (32, 50), (16, 25), (8, 10), then 20
  BO samples (DEFAULT_BAYES_OPT_MAX_SAMPLES).

The score is throughput (Horovod: bytes all-reduced per microsecond, which
for a fixed model is proportional to 1/step time). Other knobs keep
Horovod's defaults. Horovod then tunes the categorical knobs coordinate-wise;
that stage is not replicated here (the brief fixes them to the defaults).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm

from commtune.knobs import HOROVOD_DEFAULT, Knobs
from commtune.units import MiB

BOUNDS = np.array([[0.0, 64.0], [1.0, 100.0]])  # fusion MB, cycle ms
START_POINTS = [(4.0, 5.0), (32.0, 50.0), (16.0, 25.0), (8.0, 10.0)]
MAX_SAMPLES = 20
NOISE = 0.8
XI = 0.01
RESTARTS = 25


def _kernel(a: np.ndarray, b: np.ndarray, l: float, sigma_f: float) -> np.ndarray:
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T
    return sigma_f**2 * np.exp(-0.5 / l**2 * sq)


class GaussianProcess:
    def __init__(self, noise: float = NOISE):
        self.noise = noise

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GaussianProcess":
        self.x, self.y = x, y
        n = len(x)

        def nll(theta):
            l, sf = theta
            k = _kernel(x, x, l, sf) + self.noise**2 * np.eye(n)
            try:
                c = np.linalg.cholesky(k)
            except np.linalg.LinAlgError:
                return 1e25
            alpha = np.linalg.solve(c.T, np.linalg.solve(c, y))
            return float(np.sum(np.log(np.diag(c))) + 0.5 * y @ alpha + 0.5 * n * np.log(2 * np.pi))

        res = minimize(nll, x0=[1.0, 1.0], bounds=[(1e-5, None), (1e-5, None)], method="L-BFGS-B")
        self.l, self.sigma_f = (float(v) for v in res.x)
        k = _kernel(x, x, self.l, self.sigma_f) + self.noise**2 * np.eye(n)
        self.k_inv = np.linalg.inv(k)
        return self

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ks = _kernel(self.x, xs, self.l, self.sigma_f)
        mu = ks.T @ self.k_inv @ self.y
        var = self.sigma_f**2 - np.sum(ks * (self.k_inv @ ks), 0)
        return mu, np.sqrt(np.maximum(var, 1e-12))


def expected_improvement(gp: GaussianProcess, xs: np.ndarray, xi: float = XI) -> np.ndarray:
    mu, sigma = gp.predict(xs)
    best = np.max(gp.predict(gp.x)[0])
    imp = mu - best - xi
    z = imp / sigma
    ei = imp * norm.cdf(z) + sigma * norm.pdf(z)
    return np.where(sigma > 0, ei, 0.0)


def _knobs(x: np.ndarray, base: Knobs) -> Knobs:
    return dataclasses.replace(base, fusion_threshold_bytes=int(round(x[0] * MiB)), cycle_time_ms=float(x[1]))


def horovod_autotune(evaluate, seed: int = 0, base: Knobs = HOROVOD_DEFAULT, max_samples: int = MAX_SAMPLES,
                     start_points=START_POINTS):
    """Run the replica; ``evaluate(knobs) -> step time``. Returns (best knobs,
    best step time, step time per evaluation in order)."""
    rng = np.random.default_rng(seed)
    xs: list[np.ndarray] = []
    scores: list[float] = []
    steps: list[float] = []

    def sample(x):
        t = float(evaluate(_knobs(x, base)))
        xs.append(np.asarray(x, float))
        steps.append(t)
        scores.append(1.0 / t)

    for p in start_points:
        sample(np.array(p))
    for _ in range(max_samples):
        y = np.asarray(scores)
        if len(y) >= 3:
            y = (y - y.mean()) / (y.std() or 1.0)
        gp = GaussianProcess().fit(np.asarray(xs), y)
        best_x, best_v = None, np.inf
        for x0 in rng.uniform(BOUNDS[:, 0], BOUNDS[:, 1], size=(RESTARTS, 2)):
            res = minimize(lambda x: -expected_improvement(gp, x.reshape(1, -1))[0], x0, bounds=BOUNDS,
                           method="L-BFGS-B", options={"maxiter": 100, "ftol": 1e-5})
            if res.fun < best_v:
                best_v, best_x = res.fun, res.x
        sample(np.clip(best_x, BOUNDS[:, 0], BOUNDS[:, 1]))
    i = int(np.argmin(steps))
    return _knobs(xs[i], base), steps[i], steps


#: the knobs the replica varies (the evaluator must be able to apply them)
TUNED = ("fusion_threshold_bytes", "cycle_time_ms")


def run(config):
    """The ``horovod`` backend: the replica on ``config.objective`` from Horovod's defaults.

    ``config.trials`` evaluations (Horovod: 24 = 4 start points + 20 BO samples);
    the space is not used (Horovod tunes its two knobs on its own ranges);
    nothing is stored."""
    from commtune.errors import CommtuneError
    from commtune.search import SearchResult

    evaluator = config.objective
    if config.trials < 1:
        raise CommtuneError(f"--trials must be at least 1, got {config.trials}")
    if evaluator.applies is not None and not set(TUNED) <= set(evaluator.applies):
        raise CommtuneError(f"the Horovod autotune replica tunes {' and '.join(TUNED)}; the "
                            f"{evaluator.name} evaluator cannot apply them")
    starts = min(config.trials, len(START_POINTS))
    best = float("inf")
    done = 0

    def evaluate(knobs: Knobs) -> float:
        nonlocal best, done
        t = float(evaluator.evaluate(knobs)[evaluator.metric])
        best, done = min(best, t), done + 1
        if config.progress:
            config.progress(done, config.trials, best)
        return t

    knobs, _, steps = horovod_autotune(evaluate, seed=config.seed or 0, max_samples=config.trials - starts,
                                       start_points=START_POINTS[:starts])
    return SearchResult(best_knobs=knobs, best_metrics=evaluator.evaluate(knobs), trials=len(steps),
                        new_trials=len(steps), backend="horovod", sampler="horovod-bo", history=steps,
                        extra={"evaluations": len(steps)})
