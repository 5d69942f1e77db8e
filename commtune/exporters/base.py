"""The exporter interface and the helpers every exporter shares.

An exporter turns a :class:`~commtune.profiles.Profile` into the settings of
one training stack. It fills a :class:`Draft` in :meth:`Exporter.translate`:
each *active* knob (``Knobs.active()``) is either *applied* (written as a
setting, or equal to the only behaviour the target has) or *unsupported*
(reported with a reason) -- never dropped. The base class checks that, fails
when the target can express none of the active knobs, and renders the draft
as an env file (:class:`EnvExporter`) or JSON (:class:`JsonExporter`).
"""
from __future__ import annotations

import json
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from commtune import __version__
from commtune.errors import CommtuneError
from commtune.knobs import KNOBS
from commtune.profiles import Profile
from commtune.units import format_time


@dataclass(frozen=True)
class Unsupported:
    """A knob value the target cannot express, and why (with a hint when there is one)."""

    knob: str
    value: Any
    reason: str

    def describe(self) -> str:
        return f"{self.knob}={KNOBS[self.knob].show(self.value)}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"knob": self.knob, "value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class ExportResult:
    """What an export produced: the file text, its suffix (``.env``/``.json``),
    how each expressed knob was applied, and the knobs it could not express."""

    exporter: str
    text: str
    suffix: str
    applied: dict[str, str]
    unsupported: list[Unsupported]

    def warnings(self) -> list[str]:
        """One line per unsupported knob (the CLI prints them on stderr)."""
        return [f"{self.exporter} cannot express {u.describe()}" for u in self.unsupported]


@dataclass
class Draft:
    """Settings under construction for one profile.

    ``active`` holds the knobs the profile's configuration depends on; an
    exporter reads them from here so that inactive knobs are never exported.
    """

    profile: Profile
    active: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, list[str]] = field(default_factory=dict)
    applied: dict[str, str] = field(default_factory=dict)
    unsupported: list[Unsupported] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, knob: str | None = None, comment: str | None = None) -> None:
        """Write ``key = value``; ``knob`` names the knob it expresses (None: a fixed setting)."""
        self.settings[key] = value
        if comment:
            self.comments.setdefault(key, []).append(one_line(comment))
        if knob is not None:
            self._check_active(knob)
            how = f"{key}={format_value(value)}"
            self.applied[knob] = f"{self.applied[knob]}, {how}" if knob in self.applied else how

    def apply(self, knob: str, how: str) -> None:
        """Record a knob the target honours without a setting (its only or default behaviour)."""
        self._check_active(knob)
        self.applied[knob] = one_line(how)

    def unsupported_knob(self, knob: str, reason: str) -> None:
        self._check_active(knob)
        self.unsupported.append(Unsupported(knob, self.active[knob], one_line(reason)))

    def note(self, text: str) -> None:
        self.notes.append(one_line(text))

    def _check_active(self, knob: str) -> None:
        if knob not in self.active:
            raise RuntimeError(f"exporter touched inactive or unknown knob {knob!r}")


class Exporter(ABC):
    """One export target. Subclasses set ``name``, ``description``, ``suffix``
    and implement :meth:`translate` and :meth:`render`."""

    name: ClassVar[str]
    description: ClassVar[str]
    suffix: ClassVar[str]

    def export(self, profile: Profile) -> ExportResult:
        """Translate ``profile``; raises CommtuneError when nothing tuned is expressible."""
        draft = Draft(profile=profile, active=profile.knobs.active())
        self.translate(draft)
        unsupported = {u.knob for u in draft.unsupported}
        both = unsupported & set(draft.applied)
        missing = set(draft.active) - unsupported - set(draft.applied)
        if both or missing:  # a bug in the exporter, not the user's mistake
            raise RuntimeError(f"{self.name} exporter: knobs {sorted(both | missing)} must be applied xor unsupported")
        if not draft.applied:
            raise CommtuneError(
                f"the {self.name} format cannot express any tuned knob of this profile "
                f"({'; '.join(u.describe() for u in draft.unsupported)})"
            )
        return ExportResult(self.name, self.render(draft), self.suffix, dict(draft.applied), list(draft.unsupported))

    @abstractmethod
    def translate(self, draft: Draft) -> None:
        """Fill ``draft``: every active knob applied or unsupported."""

    @abstractmethod
    def render(self, draft: Draft) -> str:
        """The output text."""


class EnvExporter(Exporter):
    """Renders ``KEY=VALUE`` lines with ``#`` comments (source it with ``set -a; . FILE; set +a``)."""

    suffix = ".env"

    def render(self, draft: Draft) -> str:
        lines = [f"# {line}" for line in header_lines(self, draft.profile)]
        lines.append("# load with: set -a; . THIS_FILE; set +a   (or mpirun -x / docker --env-file)")
        for note in draft.notes:
            lines.append(f"# note: {note}")
        for key, value in draft.settings.items():
            if key in draft.comments:
                lines.append("")
                lines.extend(f"# {c}" for c in draft.comments[key])
            lines.append(f"{key}={shlex.quote(format_value(value))}")
        if draft.unsupported:
            lines.append("")
            lines.append(f"# NOT EXPRESSIBLE in {self.name} settings (apply by hand or accept the difference):")
            lines.extend(f"#   {u.describe()}" for u in draft.unsupported)
        inactive = inactive_knobs(draft)
        if inactive:
            lines.append(f"# not tuned (inactive in this configuration): {', '.join(inactive)}")
        return "\n".join(lines) + "\n"


class JsonExporter(Exporter):
    """Renders a JSON object; dotted setting keys become nested objects.
    Notes go in ``"_notes"``, unsupported knobs in ``"_unsupported"``."""

    suffix = ".json"

    def render(self, draft: Draft) -> str:
        out: dict[str, Any] = {"_commtune": source_info(self, draft.profile)}
        for key, value in draft.settings.items():
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        if draft.notes or draft.comments:
            out["_notes"] = draft.notes + [f"{k}: {c}" for k, cs in draft.comments.items() for c in cs]
        out["_unsupported"] = [u.to_dict() for u in draft.unsupported]
        return json.dumps(out, indent=2) + "\n"


def source_info(exporter: Exporter, profile: Profile) -> dict[str, Any]:
    """Where an export came from (embedded in JSON outputs)."""
    m = profile.model
    return {
        "format": exporter.name, "profile_schema": profile.schema, "commtune_version": __version__,
        "model": m.get("name"), "fingerprint": m.get("fingerprint"), "precision": m.get("precision"),
        "cluster": profile.cluster.describe(),
        "predicted_step_time_s": profile.predicted.get("step_time_s"),
    }


def header_lines(exporter: Exporter, profile: Profile) -> list[str]:
    """Comment lines naming the target, the model, the cluster and the prediction."""
    m = profile.model
    lines = [
        f"commtune export --format {exporter.name}: {exporter.description}",
        f"model {m.get('name')} (fingerprint {m.get('fingerprint')}, precision {m.get('precision', '?')}, "
        f"batch {m.get('batch_size', '?')}/GPU)",
        f"cluster {profile.cluster.describe()}",
    ]
    step = profile.predicted.get("step_time_s")
    if isinstance(step, (int, float)):
        lines.append(f"predicted step time {format_time(step)} (profile schema {profile.schema}, commtune {__version__})")
    return [one_line(line) for line in lines]


def all_reduce_only(d: Draft, target: str) -> bool:
    """Record ``sharding`` for a target that only does all-reduce data parallelism.

    True: the profile is all-reduce DP and the exporter goes on. False: it is
    sharded, every active knob is recorded as unsupported, and the exporter
    stops (the export then fails in one line: nothing is expressible)."""
    if d.active["sharding"] == "none":
        d.apply("sharding", f"all-reduce data parallelism, {target}'s form")
        return True
    d.unsupported_knob("sharding", f"{target} replicates parameters and all-reduces gradients; sharded data "
                                   "parallelism needs --format fsdp2, deepspeed (ZeRO) or megatron")
    for knob in d.active:
        if knob != "sharding":
            d.unsupported_knob(knob, f"a knob of sharded data parallelism, which {target} does not do")
    return False


def inactive_knobs(draft: Draft) -> list[str]:
    return [k for k in KNOBS if k not in draft.active]


def format_value(value: Any) -> str:
    """A setting value as text: integers plain, floats shortest (3.5, not 3.500000)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def one_line(text: str) -> str:
    return " ".join(str(text).split())
