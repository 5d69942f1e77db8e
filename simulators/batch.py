"""Many configurations at once: the reference scheduler compiled, one row per configuration.

:func:`schedule_batch` packs the configurations into one float matrix
(:meth:`~simulators.system.SystemParams.matrix`) and runs
:func:`simulators.kernels.schedule_rows` over it: the reference scheduler
(:func:`simulators.system.schedule`) of every row, split and round robin alike
(round robin's fair-share event loop included), in one compiled call, with the
reference's arithmetic in its order. Tests hold it to the reference.
"""
from __future__ import annotations

import numpy as np

from simulators.kernels import kernels
from simulators.system import SystemParams


def schedule_batch(ready_s: np.ndarray, grad_bytes: np.ndarray, p: SystemParams) -> dict[str, np.ndarray]:
    """Return per-configuration ``comm_end_s`` (done of the last buffer),
    ``comm_busy_s``, ``num_buffers``, ``rounds`` (negotiation rounds) and
    ``delay_s`` (what the buffers added to backward)."""
    out = np.zeros((len(p), 5))
    kernels().schedule_rows(np.ascontiguousarray(ready_s, dtype=np.float64),
                            np.ascontiguousarray(grad_bytes, dtype=np.float64), p.matrix(), out)
    return {"comm_end_s": out[:, 0], "comm_busy_s": out[:, 1], "num_buffers": out[:, 2].astype(np.int64),
            "rounds": out[:, 3].astype(np.int64), "delay_s": out[:, 4]}
