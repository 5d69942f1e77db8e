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
