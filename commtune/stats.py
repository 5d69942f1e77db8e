"""The statistics commtune reports: relative errors, rank correlation, quantiles.

One implementation each (numpy/scipy), used by validation, the fidelity plot,
the AutoTuner and the experiments.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def ape(predicted: Sequence[float], measured: Sequence[float]) -> np.ndarray:
    """Absolute percentage errors as fractions, ``|p - m| / m`` per point."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return np.abs(p - m) / m


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error as a fraction (0.05 = 5 %)."""
    return float(np.mean(ape(predicted, measured)))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (tied values share their mean rank); NaN for
    fewer than three points or a constant side."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(spearmanr(a, b).statistic) if len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation between order statistics; NaN if empty."""
    if len(values) == 0:
        return float("nan")
    return float(np.quantile(np.asarray(values, dtype=float), q))


def relative_spread(values: Sequence[float]) -> float:
    """``(max - min) / median`` of ``values`` (e.g. one configuration's per-pass medians); 0 for one value."""
    v = np.asarray(values, dtype=float)
    return float(np.ptp(v) / np.median(v)) if len(v) > 1 else 0.0


def resolved_concordance(predicted: Sequence[float], measured: Sequence[float], noise: Sequence[float],
                         floor: float = 0.02) -> tuple[float, int, int]:
    """How often the prediction orders two points as measured, over the pairs the
    measurement resolves: ``(concordant fraction, resolved pairs, all pairs)``.

    A pair is resolved when the measured values differ, relative to the smaller,
    by more than both points' ``noise`` (e.g. the spread of their pass medians)
    and ``floor``; nearly tied points, whose measured order is the noise, do not
    count (Spearman counts them). NaN when no pair is resolved.
    """
    p, m, e = (np.asarray(x, dtype=float) for x in (predicted, measured, noise))
    i, j = np.triu_indices(len(m), k=1)
    diff = np.abs(m[i] - m[j]) / np.minimum(m[i], m[j])
    resolved = diff > np.maximum(np.maximum(e[i], e[j]), floor)
    same = np.sign(p[i] - p[j]) == np.sign(m[i] - m[j])
    n = int(resolved.sum())
    return (float(same[resolved].mean()) if n else float("nan")), n, int(len(i))
