"""A live objective for search: knobs in, measured metrics out.

``LiveEvaluator(launch, model, ...)`` times real DDP steps of the synthetic
model (:mod:`commtune.probe.ddp_step`) on the ranks of ``launch`` (a
:class:`~commtune.probe.launch.LaunchSpec`: local ranks or the emulated
cluster). ``evaluate(knobs)`` runs one launch per call;
``evaluate_many(list)`` times several configurations in one launch (cheaper:
the ranks start once); with ``passes`` > 1 the list is timed that many times,
alternating its order, and the step times are pooled per configuration. Only DDP-relevant knobs matter (static fusion: bucket
cap, first bucket; streams; wire precision); others are ignored, and
``fusion_policy`` is reported as static. Results are cached per knob setting.
"""
from __future__ import annotations

import statistics
from typing import Sequence

from commtune.knobs import Knobs
from commtune.probe.ddp_step import synthetic_profile, sim_workload, time_ddp_configs


class LiveEvaluator:
    def __init__(self, launch, model="resnet50", *, scale: float = 0.25, forward_s: float = 0.1,
                 backward_s: float = 0.2, share: str = "flops", compute: str = "emulated",
                 mode: str | None = None, steps: int = 5, warmup: int = 2, passes: int = 1):
        self.launch = launch
        self.profile = synthetic_profile(model, scale, forward_s, backward_s, share) \
            if not (hasattr(model, "measured_batch_size") and model.measured_batch_size == 1 and scale == 1.0) else model
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        self.compute, self.mode, self.steps, self.warmup, self.passes = compute, mode, steps, warmup, passes
        self.cache: dict[Knobs, dict] = {}
        self.calls = 0

    @property
    def workload(self):
        """The simulator's Workload of the same synthetic model (same per-layer times)."""
        return sim_workload(self.profile)

    @staticmethod
    def _key(knobs: Knobs) -> Knobs:
        return Knobs.from_dict({"fusion_policy": "static"}, base=knobs)

    def _metrics(self, r: dict) -> dict:
        return {"step_time_s": r["step_time_s"], "step_times_s": r["step_times_s"],
                "pass_medians_s": r.get("pass_medians_s", [r["step_time_s"]]),
                "num_buffers": len(r["buckets"]), "buckets": r["buckets"]}

    def evaluate_many(self, configs: Sequence[Knobs]) -> list[dict]:
        keys = [self._key(k) for k in configs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if todo:
            self.calls += 1
            # passes > 1: time the list several times in one launch, alternating its order
            # (forward, reverse, ...), so slow drifts of the host load hit every configuration
            # alike; the step times of all passes are pooled.
            order = [k for p in range(self.passes) for k in (todo if p % 2 == 0 else todo[::-1])]
            results = time_ddp_configs(self.profile, order, self.launch, self.steps, self.warmup,
                                       compute=self.compute, mode=self.mode)
            pooled: dict[Knobs, list[dict]] = {}
            for k, r in zip(order, results):
                pooled.setdefault(k, []).append(r)
            for k, rs in pooled.items():
                r = dict(rs[-1])
                r["step_times_s"] = [t for x in rs for t in x["step_times_s"]]
                r["step_time_s"] = statistics.median(r["step_times_s"])
                r["pass_medians_s"] = [x["step_time_s"] for x in rs]
                self.cache[k] = self._metrics(r)
        return [self.cache[k] for k in keys]

    def evaluate(self, knobs: Knobs) -> dict:
        """``{"step_time_s": median measured step, "step_times_s", "num_buffers", "buckets"}``."""
        return self.evaluate_many([knobs])[0]

    __call__ = evaluate
