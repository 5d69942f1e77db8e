"""Tuned profiles: versioned JSON files with the best knobs for a model and cluster.

A profile is what ``commtune search`` writes and what the runtime
(``commtune.runtime``) and the exporters read. Format ``commtune-profile/1``::

    {
      "schema": "commtune-profile/1",
      "model": {"name", "fingerprint", "num_tensors", "num_params",
                "batch_size", "precision", "input_size"},
      "cluster": {ClusterSpec fields: nodes, gpus_per_node, inter_bw_Bps, ...},
      "knobs": {knob name: value, every knob in commtune.knobs.KNOBS},
      "predicted": {"step_time_s", "scaling_efficiency", ... simulator metrics},
      "baselines": {"ddp_default": {"step_time_s": ...}, "horovod_default": {...}},
      "lower_bound_s": float,
      "provenance": {"commtune_version", "backend", "sampler", "trials", "seed",
                     "study", "storage", "objective", "created_at"},
      "measured": {"step_time_s", "step_times_s", "launch", "confirmed": [...], ...}
    }

``measured`` is optional (written only by live and multi-fidelity searches:
measured DDP step times of the synthetic model, whose simulator prediction is
then ``predicted``); readers that do not know it ignore it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from commtune import __version__
from commtune.cluster import ClusterSpec
from commtune.errors import CommtuneError
from commtune.io import atomic_write_json, read_text
from commtune.knobs import Knobs

SCHEMA = "commtune-profile/1"
SUPPORTED_SCHEMAS = (SCHEMA,)
_REQUIRED = ("schema", "model", "cluster", "knobs", "predicted", "provenance")


@dataclass(frozen=True)
class Profile:
    model: dict[str, Any]
    cluster: ClusterSpec
    knobs: Knobs
    predicted: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    lower_bound_s: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    measured: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema": self.schema,
            "model": self.model,
            "cluster": self.cluster.to_dict(),
            "knobs": self.knobs.to_dict(),
            "predicted": self.predicted,
            "baselines": self.baselines,
            "lower_bound_s": self.lower_bound_s,
            "provenance": self.provenance,
        }
        if self.measured:
            d["measured"] = self.measured
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "profile") -> "Profile":
        if not isinstance(d, dict):
            raise CommtuneError(f"{where}: not a commtune profile (expected a JSON object)")
        schema = d.get("schema")
        if schema not in SUPPORTED_SCHEMAS:
            raise CommtuneError(
                f"{where}: unknown profile schema {schema!r}; this commtune reads {', '.join(SUPPORTED_SCHEMAS)}"
            )
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise CommtuneError(f"{where}: missing key {missing[0]!r}")
        model = d["model"]
        if not isinstance(model, dict) or "name" not in model or "fingerprint" not in model:
            raise CommtuneError(f"{where}: 'model' must hold at least 'name' and 'fingerprint'")
        if not isinstance(d["knobs"], dict):
            raise CommtuneError(f"{where}: 'knobs' must be a mapping of knob name to value")
        values = dict(d["knobs"])
        if "stream_mode" not in values and isinstance(d["provenance"], dict) and d["provenance"].get("stream_mode"):
            values["stream_mode"] = d["provenance"]["stream_mode"]  # profiles from before stream_mode was a knob
        try:
            knobs = Knobs.from_dict(values)
        except CommtuneError as exc:
            raise CommtuneError(f"{where}: {exc}") from None
        if not isinstance(d["cluster"], dict):
            raise CommtuneError(f"{where}: 'cluster' must be a mapping")
        cluster = ClusterSpec.from_dict(d["cluster"], where=f"{where}: cluster")
        return cls(
            model=model, cluster=cluster, knobs=knobs, predicted=dict(d["predicted"]),
            baselines=dict(d.get("baselines") or {}), lower_bound_s=d.get("lower_bound_s"),
            provenance=dict(d["provenance"]), schema=schema, measured=dict(d.get("measured") or {}),
        )


def model_summary(scenario) -> dict[str, Any]:
    """The ``model`` section for a :class:`commtune.scenario.Scenario`."""
    m = scenario.model
    return {
        "name": m.name, "fingerprint": m.fingerprint(), "num_tensors": m.num_tensors,
        "num_params": m.num_params, "batch_size": scenario.batch_size, "precision": scenario.precision,
        "input_size": m.meta.get("input_size") if m.meta else None,
        **({"activation_checkpointing": True} if scenario.activation_checkpointing else {}),
    }


def provenance(**fields: Any) -> dict[str, Any]:
    """Provenance with version and UTC creation time filled in."""
    return {"commtune_version": __version__, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields}


def save_profile(profile: Profile, path: str | os.PathLike) -> Path:
    """Write atomically; returns the path."""
    return atomic_write_json(path, profile.to_dict())


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a profile; every problem is one CommtuneError line."""
    p = Path(path)
    text = read_text(p, "profile")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommtuneError(f"profile {str(p)!r} is not valid JSON (line {exc.lineno}: {exc.msg}); is it corrupted?") from None
    return Profile.from_dict(data, where=f"profile {str(p)!r}")


def default_profile_path(model: str, bw_text: str, root: str | os.PathLike = "profiles") -> Path:
    """``profiles/<model>-<bw>.json`` with the bandwidth as given on the command line."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{model}-{bw_text}")
    return Path(root) / f"{safe}.json"
