"""Search spaces: which knobs a search varies, over which values.

A space is a YAML file (bundled ones live in the top-level ``search_spaces``
package; the format is documented in ``search_spaces/default.yaml``),
validated against the one knob registry :data:`commtune.knobs.KNOBS`. Every
problem is one :class:`CommtuneError` line naming the file, the knob and the
problem.

Conditions come from the registry's ``applies_when``: a knob whose parent is
searched is only sampled when the parent takes a value it applies to (e.g.
``cycle_time_ms`` only under the dynamic fusion policy); otherwise it keeps
its base value.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

import search_spaces
from commtune.errors import CommtuneError, did_you_mean
from commtune.io import read_text
from commtune.knobs import BASELINES, KNOBS, SHARDED_BASELINES, Knobs
from commtune.limits import RANGES, check_count

_SPEC_KEYS = {"value", "choices", "low", "high", "log", "step", "grid"}
DEFAULT_GRID_POINTS = 8


@dataclass(frozen=True)
class Param:
    """One searched knob."""

    name: str
    kind: str  # "choice", "int" (also sizes) or "float"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    grid: int = DEFAULT_GRID_POINTS
    condition: tuple[str, tuple[Any, ...]] | None = None

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)

    def widen(self, value: Any) -> "Param":
        """This param with room for ``value`` (an enqueued value outside the space)."""
        if self.kind == "choice":
            return self if value in self.choices else replace(self, choices=(*self.choices, value))
        return replace(self, low=min(self.low, value), high=max(self.high, value))

    @property
    def size(self) -> float:
        """Number of distinct values (inf for a continuous or log-scale range)."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int" and not self.log:
            return (self.high - self.low) // (self.step or 1) + 1
        return math.inf

    def grid_values(self, points: int | None = None) -> list[Any]:
        """The discretised values: every choice, or ``points`` (default: the
        space's ``grid``) points of a numeric range (log-spaced for log ranges)."""
        if self.kind == "choice":
            return list(self.choices)
        n = max(1, points or self.grid)
        if self.log:
            vals = np.geomspace(self.low, self.high, n)
        else:
            vals = np.linspace(self.low, self.high, n)
        if self.step:
            vals = self.low + np.round((vals - self.low) / self.step) * self.step
            vals = np.clip(vals, self.low, self.high)
        if self.kind == "int":
            vals = np.round(vals).astype(np.int64)
            return sorted({int(v) for v in vals})
        return sorted({float(v) for v in vals})

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random values (uniform, or log-uniform for log ranges)."""
        if self.kind == "choice":
            idx = rng.integers(0, len(self.choices), n)
            return np.asarray(self.choices, dtype=object)[idx]
        u = rng.random(n)
        if self.log:
            vals = np.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            vals = self.low + u * (self.high - self.low)
        if self.step:
            vals = np.clip(self.low + np.round((vals - self.low) / self.step) * self.step, self.low, self.high)
        if self.kind == "int":
            return np.clip(np.round(vals), self.low, self.high).astype(np.int64)
        return vals

    def perturb(self, values: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        """``values`` moved by a random step of about ``scale`` of the range (of its log for log
        ranges), clipped and quantised as :meth:`sample` does; choices are returned unchanged."""
        if self.kind == "choice":
            return values
        z = rng.standard_normal(len(values)) * scale
        x = np.asarray(values, dtype=float)
        if self.log:
            vals = np.exp(np.log(x) + z * (math.log(self.high) - math.log(self.low)))
        else:
            vals = x + z * (self.high - self.low)
        vals = np.clip(vals, self.low, self.high)
        if self.step:
            vals = np.clip(self.low + np.round((vals - self.low) / self.step) * self.step, self.low, self.high)
        if self.kind == "int":
            return np.clip(np.round(vals), self.low, self.high).astype(np.int64)
        return vals

    def project(self, value: Any) -> Any:
        """The in-range value nearest to ``value`` (for warm-start points)."""
        if self.kind == "choice":
            return value if value in self.choices else self.choices[0]
        v = min(max(value, self.low), self.high)
        if self.step:
            v = min(self.low + round((v - self.low) / self.step) * self.step, self.high)
        return int(round(v)) if self.kind == "int" else float(v)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "choice":
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high, log=self.log, step=self.step, grid=self.grid)
        if self.condition:
            d["when"] = {self.condition[0]: list(self.condition[1])}
        return d


@dataclass(frozen=True)
class SearchSpace:
    name: str
    source: str
    base: Knobs
    params: tuple[Param, ...]
    description: str = ""
    #: Knobs the file fixes (``knob: VALUE``); they are part of ``base`` and
    #: survive :meth:`rebased`.
    fixed: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def fingerprint(self) -> str:
        blob = json.dumps({"base": self.base.identity(), "params": [[p.name, p.to_dict()] for p in self.params]},
                          sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "base": self.base.to_dict(),
                "params": {p.name: p.to_dict() for p in self.params}}

    def _active(self, p: Param, values: dict[str, Any]) -> bool:
        if p.condition is None:
            return True
        parent, allowed = p.condition
        return values.get(parent, getattr(self.base, parent)) in allowed

    # -- define-by-run (Optuna) ----------------------------------------------------
    def suggest(self, trial) -> dict[str, Any]:
        """Sample this space in an Optuna trial; returns the sampled params."""
        values: dict[str, Any] = {}
        for p in self.params:
            if self._active(p, values):
                values[p.name] = p.suggest(trial)
        return values

    def knobs_from_params(self, params: dict[str, Any]) -> Knobs:
        """The full configuration for sampled params (inactive and unsearched
        knobs keep the base value)."""
        values = {k: v for k, v in params.items() if k in KNOBS}
        return Knobs.from_dict(values, base=self.base)

    def params_from_knobs(self, knobs: Knobs) -> dict[str, Any]:
        """Project a configuration onto this space (for enqueueing it)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if self._active(p, values):
                values[p.name] = p.project(getattr(knobs, p.name))
        return values

    # -- batch ---------------------------------------------------------------------
    def _expand(self, choose, params: Iterable[Param] | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{}]
        for p in self.params if params is None else params:
            new_rows = []
            for r in rows:
                if self._active(p, r):
                    new_rows.extend({**r, p.name: v} for v in choose(p))
                else:
                    new_rows.append(r)
            rows = new_rows
        return rows

    def _grid_params(self, values: dict[str, list[Any]]) -> tuple[list[Param], dict[str, list[Any]]]:
        """The params a grid expands (the space's, plus any knob ``values``
        names that the space does not search, with registry conditions) and
        the parsed value lists."""
        parsed: dict[str, list[Any]] = {}
        for name, vals in values.items():
            if name not in KNOBS:
                raise CommtuneError(f"grid values: unknown knob {name!r}{did_you_mean(str(name), list(KNOBS))}")
            if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
                raise CommtuneError(f"grid values: knob {name}: give a list of values, got {vals!r}")
            out: list[Any] = []
            for v in vals:
                v = KNOBS[name].parse(v.item() if hasattr(v, "item") else v)
                if v not in out:
                    out.append(v)
            if not out:
                raise CommtuneError(f"grid values: knob {name}: empty list of values")
            parsed[name] = out
        params = {p.name: p for p in self.params}
        for name, vals in parsed.items():
            if name not in params:
                params[name] = Param(name, "choice", choices=tuple(vals))
        ordered = []
        for name in KNOBS:  # registry order: parents before children
            if name not in params:
                continue
            p = params[name]
            cond = KNOBS[name].applies_when
            if cond is not None and p.condition is None:
                parent, allowed = cond
                if parent in params:
                    p = replace(p, condition=(parent, tuple(allowed)))
                elif getattr(self.base, parent) not in allowed:
                    raise CommtuneError(
                        f"grid values: knob {name}: only matters when {parent} is {'/'.join(map(str, allowed))}, "
                        f"but space {self.name!r} fixes {parent} to {getattr(self.base, parent)}"
                    )
            ordered.append(p)
        return ordered, parsed

    def grid_rows(self, values: dict[str, list[Any]] | None = None,
                  points: int | None = None) -> list[dict[str, Any]]:
        """Every combination of the discretised params (conditions applied).

        ``values`` gives the value list of any knob: it replaces a searched
        knob's grid values, and a knob the space does not search is varied over
        the given values (under the registry's conditions). ``points`` sets the
        points per numeric range (default: each param's ``grid``). This is the
        one way a grid is built (``--sampler grid``, :mod:`commtune.plots.gridsearch`).
        """
        self.check_grid_size(values, points)
        params, parsed = self._grid_params(values or {})
        return self._expand(lambda p: parsed[p.name] if p.name in parsed else p.grid_values(points), params)

    def grid_size(self, values: dict[str, list[Any]] | None = None, points: int | None = None) -> int:
        """``len(grid_rows(values, points))``, counted without building the rows."""
        from collections import Counter

        if points is not None:
            RANGES["grid_points"].check(points, "grid points")
        params, parsed = self._grid_params(values or {})
        parents = {p.condition[0] for p in params if p.condition}
        # rows grouped by the values of the knobs that conditions look at
        groups: Counter = Counter({(): 1})
        for p in params:
            vals = parsed[p.name] if p.name in parsed else p.grid_values(points)
            new: Counter = Counter()
            for key, count in groups.items():
                row = dict(key)
                if not self._active(p, row):
                    new[key] += count
                elif p.name in parents:
                    for v in vals:
                        new[tuple(sorted({**row, p.name: v}.items()))] += count
                else:
                    new[key] += count * len(vals)
            groups = new
        return sum(groups.values())

    def check_grid_size(self, values: dict[str, list[Any]] | None = None, points: int | None = None) -> int:
        """The grid size, or a CommtuneError when it exceeds the memory/time bound (before any row is built)."""
        n = self.grid_size(values, points)
        shown = f"{n:,}" + (f" ({points} points per numeric range)" if points is not None else "")
        return check_count("grid_configs", n, f"grid of space {self.name!r}:", shown)

    def pinned(self, name: str, value: Any) -> "SearchSpace":
        """This space with knob ``name`` fixed to ``value`` (params that then no longer apply are dropped)."""
        value = KNOBS[name].parse(value)
        p = self.params[self.param_names.index(name)] if name in self.param_names else None
        if p is not None and (value not in p.choices if p.kind == "choice" else not p.low <= value <= p.high):
            raise CommtuneError(f"space {self.name!r} does not search {name} {KNOBS[name].show(value)}")
        base = Knobs.from_dict({name: value}, base=self.base)
        params = tuple(p for p in self.params if p.name != name
                       and (p.condition is None or p.condition[0] != name or value in p.condition[1]))
        return replace(self, base=base, params=params, fixed={**self.fixed, name: value})

    def rebased(self, base: Knobs) -> "SearchSpace":
        """This space over another base configuration (the file's fixed knobs still apply)."""
        return replace(self, base=Knobs.from_dict(self.fixed, base=base))

    def sample_rows(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        """``n`` random points (conditions applied)."""
        cols = {p.name: p.sample(rng, n) for p in self.params}
        rows = []
        for i in range(n):
            r: dict[str, Any] = {}
            for p in self.params:
                if self._active(p, r):
                    v = cols[p.name][i]
                    r[p.name] = v.item() if hasattr(v, "item") else v
            rows.append(r)
        return rows

    def neighbour_rows(self, rng: np.random.Generator, parents: list[dict[str, Any]], n: int,
                       scale: float, resample: float = 0.15) -> list[dict[str, Any]]:
        """``n`` points near ``parents`` (taken in turn): each param keeps its parent's value
        moved by :meth:`Param.perturb` (``scale``), or with probability ``resample`` takes a
        fresh random value (how choices change); a param that becomes active takes a fresh one."""
        if not parents:
            return []
        fresh = {p.name: p.sample(rng, n) for p in self.params}
        keep = rng.random((n, len(self.params))) >= resample
        moved = {}
        for p in self.params:
            if p.kind != "choice":  # a parent without the param (inactive there) never keeps it: any base
                base = np.asarray([parents[i % len(parents)].get(p.name, p.low) for i in range(n)])
                moved[p.name] = p.perturb(base, rng, scale)
        rows = []
        for i in range(n):
            parent, r = parents[i % len(parents)], {}
            for j, p in enumerate(self.params):
                if not self._active(p, r):
                    continue
                if p.name in parent and keep[i, j]:
                    v = moved[p.name][i] if p.name in moved else parent[p.name]
                else:
                    v = fresh[p.name][i]
                r[p.name] = v.item() if hasattr(v, "item") else v
            rows.append(r)
        return rows

    def projects_exactly(self, knobs: Knobs) -> dict[str, Any] | None:
        """The params of ``knobs`` in this space, or None when the space cannot express every
        knob that matters for ``knobs`` (its active knobs)."""
        params = self.params_from_knobs(knobs)
        return params if self.knobs_from_params(params).active() == knobs.active() else None

    def sharding_values(self) -> set[Any]:
        """The ``sharding`` values this space takes."""
        p = next((p for p in self.params if p.name == "sharding"), None)
        return set(p.choices) if p is not None else {self.base.sharding}

    def knob_arrays(self, rows: list[dict[str, Any]]):
        """Rows of params as a :class:`simulators.KnobArrays` batch."""
        from simulators.system import KnobArrays

        n = len(rows)
        cols = {}
        for name in KNOBS:
            default = getattr(self.base, name)
            cols[name] = np.asarray([r.get(name, default) for r in rows])
        return KnobArrays.from_columns(n, **cols)


def _parse_value(where: str, knob, value: Any) -> Any:
    try:
        return knob.parse(value)
    except CommtuneError as exc:
        msg = str(exc)
        prefix = f"knob {knob.name}: "
        raise CommtuneError(f"{where}: knob {knob.name}: {msg[len(prefix):] if msg.startswith(prefix) else msg}") from None


def parse_param(where: str, name: str, spec: Any) -> tuple[Param | None, Any]:
    """One knob's entry of a space (``{value}``, ``{choices}``, ``{low, high, log, step, grid}``
    or a plain value): (param, None) for a searched knob or (None, value) for a fixed one.
    The AutoTuner's spaces use the same grammar."""
    knob = KNOBS[name]
    bad = lambda problem: CommtuneError(f"{where}: knob {name}: {problem}")  # noqa: E731
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            raise bad("a list is not a value; write {choices: [...]} to search over values")
        if spec is None:
            raise bad("no value or range given")
        return None, _parse_value(where, knob, spec)
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise bad(f"unknown key {key!r}{did_you_mean(key, sorted(_SPEC_KEYS))}; keys are: {', '.join(sorted(_SPEC_KEYS))}")
    if "value" in spec:
        if len(spec) > 1:
            raise bad("'value' (fixed) cannot be combined with a range or choices")
        return None, _parse_value(where, knob, spec["value"])
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise bad("'choices' cannot be combined with low/high/log/step/grid")
        choices = spec["choices"]
        if not isinstance(choices, list):
            raise bad(f"choices must be a list, got {type(choices).__name__}")
        if not choices:
            raise bad("empty choices")
        parsed = []
        for c in choices:
            v = _parse_value(where, knob, c)
            if v not in parsed:
                parsed.append(v)
        if len(parsed) == 1:
            return None, parsed[0]
        return Param(name, "choice", choices=tuple(parsed)), None
    if knob.kind in ("bool", "choice", "bool_or_int"):
        raise bad(f"a {knob.kind} knob takes choices or a fixed value, not a range")
    if "low" not in spec or "high" not in spec:
        raise bad("a range needs both low and high (or give choices or a fixed value)")
    for key in ("low", "high"):
        if isinstance(spec[key], bool) or spec[key] is None:
            raise bad(f"{key}: {spec[key]!r} is not a number")
    low = _parse_value(where, knob, spec["low"])
    high = _parse_value(where, knob, spec["high"])
    if low > high:
        raise bad(f"inverted range: low {knob.show(low)} > high {knob.show(high)}")
    if low == high:
        raise bad(f"empty range: low == high == {knob.show(low)} (write a fixed value instead)")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise bad(f"log must be true or false, got {log!r}")
    if log and low <= 0:
        raise bad(f"a log-scale range needs low > 0, got {knob.show(low)}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float, str)):
            raise bad(f"step: {step!r} is not a number")
        step = _parse_value(where, knob, step) if knob.kind == "size" else step
        if not isinstance(step, (int, float)) or step <= 0:
            raise bad(f"step must be a positive number, got {spec['step']!r}")
        if log:
            raise bad("step and log cannot be combined")
        if knob.kind in ("int", "size") and float(step) != int(step):
            raise bad(f"step of an integer knob must be an integer, got {step!r}")
    grid = spec.get("grid", DEFAULT_GRID_POINTS)
    try:
        RANGES["grid_points"].check(grid, "grid")
    except CommtuneError as exc:
        raise bad(f"{exc} (points for --sampler grid)") from None
    kind = "float" if knob.kind == "float" else "int"
    return Param(name, kind, low=low, high=high, log=log, step=step, grid=grid), None


def parse_space(data: Any, where: str, name: str | None = None) -> SearchSpace:
    """Validate a parsed YAML document; ``where`` names it in error messages."""
    if not isinstance(data, dict):
        raise CommtuneError(f"{where}: a search space must be a mapping with a 'knobs' section")
    unknown = set(data) - {"name", "description", "base", "knobs"}
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise CommtuneError(f"{where}: unknown top-level key {key!r}; keys are: name, description, base, knobs")
    base_name = data.get("base")
    bases = {**BASELINES, **SHARDED_BASELINES}
    if base_name is None:
        base = Knobs()
    elif isinstance(base_name, str) and base_name in bases:
        base = bases[base_name]
    else:
        raise CommtuneError(
            f"{where}: unknown base {base_name!r}{did_you_mean(str(base_name), list(bases))}; "
            f"bases are: {', '.join(bases)}"
        )
    knobs = data.get("knobs")
    if not isinstance(knobs, dict) or not knobs:
        raise CommtuneError(f"{where}: 'knobs' must be a non-empty mapping of knob name to range, choices or value")
    for k in knobs:
        if k not in KNOBS:
            raise CommtuneError(
                f"{where}: unknown knob {k!r}{did_you_mean(str(k), list(KNOBS))}; knobs are: {', '.join(KNOBS)}"
            )
    fixed: dict[str, Any] = {}
    params: dict[str, Param] = {}
    for k in KNOBS:  # registry order: parents (fusion_policy) before children
        if k not in knobs:
            continue
        p, v = parse_param(where, k, knobs[k])
        if p is None:
            fixed[k] = v
        else:
            params[k] = p
    base = Knobs.from_dict(fixed, base=base)
    # Conditions from the registry.
    out = []
    for k, p in params.items():
        cond = KNOBS[k].applies_when
        if cond is not None:
            parent, allowed = cond
            if parent in params:
                live = tuple(v for v in params[parent].choices if v in allowed)
                if not live:
                    raise CommtuneError(
                        f"{where}: knob {k}: only matters when {parent} is {'/'.join(map(str, allowed))}, "
                        f"which the space never samples"
                    )
                if len(live) < len(params[parent].choices):
                    p = Param(**{**p.__dict__, "condition": (parent, tuple(allowed))})
            elif getattr(base, parent) not in allowed:
                raise CommtuneError(
                    f"{where}: knob {k}: only matters when {parent} is {'/'.join(map(str, allowed))}, "
                    f"but {parent} is fixed to {getattr(base, parent)}"
                )
        out.append(p)
    if not out:
        raise CommtuneError(f"{where}: every knob is fixed; nothing to search")
    desc = data.get("description") or ""
    return SearchSpace(name=str(data.get("name") or name or "custom"), source=where, base=base,
                       params=tuple(out), description=str(desc), fixed=fixed)


def _load_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CommtuneError(f"{where}: invalid YAML ({line}{problem})") from None


def load_space(name_or_file: str | os.PathLike) -> SearchSpace:
    """A bundled space by name (``default``, ``ddp``, ``horovod``, ``fsdp``, ``hsdp``, ``zero``) or a YAML file."""
    spec = str(name_or_file)
    bundled = search_spaces.names()
    if spec in bundled:
        where = f"search space {spec!r}"
        return parse_space(_load_yaml(search_spaces.read_text(spec), where), where, name=spec)
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or os.sep in spec or p.exists():
        return parse_space(_load_yaml(read_text(spec, "search space file"), spec), spec, name=p.stem)
    raise CommtuneError(
        f"unknown search space {spec!r}{did_you_mean(spec, bundled)}; bundled: {', '.join(bundled)} (or a YAML file)"
    )


def iter_bundled() -> Iterable[SearchSpace]:
    for n in search_spaces.names():
        yield load_space(n)


__all__ = ["Param", "SearchSpace", "load_space", "parse_space", "iter_bundled"]
