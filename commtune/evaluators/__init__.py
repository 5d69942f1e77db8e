"""Evaluators: knobs in, metrics out (the simulator, live DDP); see :mod:`commtune.evaluators.base`."""
