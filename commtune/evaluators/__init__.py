"""Evaluators: knobs in, metrics out (the simulator, live DDP); see :mod:`commtune.evaluators.base`.

Layer: above the probe and the runtime (the live evaluator measures DDP steps on their
workers) and below the orchestration that uses them (:mod:`commtune.tuning`,
:mod:`commtune.validation`); search engines see an evaluator only as an objective.
Layers: ``tests/test_architecture.py``.
"""
