"""Live measurements: the all-reduce probe and its calibration fit, DDP step
timing of a synthetic model, DDP's per-bucket costs on one rank.

Layer: above the runtime (its worker groups and DDP plan) and the emulated cluster,
below the evaluators (the live evaluator times steps here). What compares the live
and simulated steps sits above both: :mod:`commtune.validation`.
Layers: ``tests/test_architecture.py``.
"""
from commtune.probe.fit import LinearFit, algbw, busbw, derive_link, fit_linear, fit_measurements
from commtune.probe.launch import LaunchSpec, ProbeFailure

__all__ = ["LaunchSpec", "LinearFit", "ProbeFailure", "algbw", "busbw", "derive_link", "fit_linear", "fit_measurements"]

from commtune._callable import make_callable  # noqa: E402

make_callable(__name__, "commtune.api:probe")  # commtune.probe(...) is the public API function
