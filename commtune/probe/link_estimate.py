"""What the probe's pilot measured of the link (:class:`LinkEstimate`), and the ring estimate
of a collective from it: the probe's planner (:mod:`commtune.probe.plan`) and the calibration
runs' estimates (:mod:`commtune.probe.ddp_calib`, :mod:`commtune.probe.fsdp_calib`) use it."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LinkEstimate:
    """What the pilot measured: latency per ring step and the rate of one stream and of all."""

    alpha_s: float
    per_flow_Bps: float  # math.inf: no transfer time seen
    link_Bps: float

    def rate_Bps(self, streams: int) -> float:
        return min(streams * self.per_flow_Bps, self.link_Bps)

    def collective_s(self, steps_per_peer: int, size_bytes: float, streams: int, ranks: int) -> float:
        """Ring estimate: ``s(n-1)*alpha + s(n-1)/n * S / min(K*c, B)`` for ``s`` steps per peer."""
        steps = steps_per_peer * (ranks - 1)
        rate = self.rate_Bps(streams)
        return steps * self.alpha_s + (steps * size_bytes / (ranks * rate) if math.isfinite(rate) else 0.0)

    def to_dict(self) -> dict:
        return {"alpha_s": self.alpha_s, "per_flow_Bps": None if math.isinf(self.per_flow_Bps) else self.per_flow_Bps,
                "link_Bps": None if math.isinf(self.link_Bps) else self.link_Bps}
