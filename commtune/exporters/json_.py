"""Plain JSON: every knob and the predicted metrics, for other tools."""
from __future__ import annotations

from commtune.exporters.base import Draft, JsonExporter


class JsonKnobsExporter(JsonExporter):
    name = "json"
    description = "all knobs and predicted metrics as plain JSON"

    def translate(self, d: Draft) -> None:
        p = d.profile
        for knob, value in p.knobs.to_dict().items():
            d.set(f"knobs.{knob}", value, knob if knob in d.active else None)
        d.set("active_knobs", list(d.active))
        d.set("predicted", p.predicted)
        d.set("baselines", p.baselines)
        d.set("lower_bound_s", p.lower_bound_s)
