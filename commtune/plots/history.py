"""``history``: best-so-far step time against trial number, one line per sampler.

Sources:

* an Optuna storage (``--storage sqlite:///s.db`` or a journal ``.log`` file)
  with one or more ``--study`` names (default: every study in it); a study's
  sampler is its ``sampler`` user attribute, else its name;
* a JSON file from the search benchmark. Accepted shapes (values are the
  objective, step time in seconds, per trial in trial order)::

    {"samplers": {"tpe": {"histories": [[...], [...]]}, ...}}
    {"samplers": {"tpe": [[...], [...]]}, ...}
    {"runs": [{"sampler": "tpe", "seed": 0, "values": [...]}, ...]}

  and optional reference lines ``{"baselines": {"horovod_default": 0.41}}``
  / ``"lower_bound_s": 0.06`` / ``"grid_best_s"``.

Several runs of one sampler (seeds) are drawn as their median with the
min-max range shaded.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from commtune.errors import CommtuneError
from commtune.io import read_text


_VALUE_KEYS = ("values", "history", "trace", "step_times_s", "objective", "trials")
_BEST_KEYS = ("best_so_far", "best_so_far_s", "best")


# --------------------------------------------------------------------- sources
def _as_values(obj: Any, where: str) -> list[float]:
    if isinstance(obj, dict):
        for key in _BEST_KEYS + _VALUE_KEYS:
            if key in obj:
                return _as_values(obj[key], where)
        raise CommtuneError(f"{where}: no trial values (expected one of {', '.join(_VALUE_KEYS)})")
    if not isinstance(obj, list) or not obj:
        raise CommtuneError(f"{where}: expected a non-empty list of trial values")
    out = []
    for v in obj:
        if isinstance(v, dict):
            v = v.get("value", v.get("step_time_s"))
        if v is None:
            out.append(math.nan)  # a failed/pruned trial
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise CommtuneError(f"{where}: trial value {v!r} is not a number") from None
    return out


def _as_runs(obj: Any, where: str) -> list[list[float]]:
    """One sampler's entry: a run, or a list of runs (seeds)."""
    if isinstance(obj, dict):
        for key in ("histories", "runs", "seeds"):
            if key in obj:
                inner = obj[key]
                if isinstance(inner, dict):
                    inner = list(inner.values())
                return [_as_values(r, f"{where}.{key}[{i}]") for i, r in enumerate(inner)]
        return [_as_values(obj, where)]
    if isinstance(obj, list) and obj and all(isinstance(r, (list, dict)) for r in obj):
        return [_as_values(r, f"{where}[{i}]") for i, r in enumerate(obj)]
    return [_as_values(obj, where)]


def histories_from_json(path: str) -> tuple[dict[str, list[list[float]]], dict[str, float]]:
    """Per-sampler runs and reference lines from a search-benchmark JSON file."""
    p = Path(path)
    text = read_text(p, "benchmark JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommtuneError(f"{str(p)!r} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    where = p.name
    runs: dict[str, list[list[float]]] = {}
    if isinstance(data, dict) and isinstance(data.get("samplers"), dict):
        for name, entry in data["samplers"].items():
            runs[str(name)] = _as_runs(entry, f"{where}: samplers.{name}")
    elif isinstance(data, dict) and isinstance(data.get("samplers"), list) or isinstance(data, dict) and isinstance(data.get("runs"), list) or isinstance(data, list):
        items = data if isinstance(data, list) else data.get("runs") or data.get("samplers")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "sampler" not in item:
                raise CommtuneError(f"{where}: run {i} is not an object with a 'sampler' key")
            runs.setdefault(str(item["sampler"]), []).extend(_as_runs(item, f"{where}: runs[{i}]"))
    else:
        raise CommtuneError(f"{where}: expected {{'samplers': {{name: runs}}}} or {{'runs': [...]}} (see `commtune plot history --help`)")
    if not runs:
        raise CommtuneError(f"{where}: holds no sampler runs")
    refs: dict[str, float] = {}
    if isinstance(data, dict):
        for name, v in (data.get("baselines") or {}).items():
            v = v.get("step_time_s") if isinstance(v, dict) else v
            if isinstance(v, (int, float)):
                refs[str(name)] = float(v)
        for key, label in (("lower_bound_s", "lower bound"), ("grid_best_s", "grid optimum")):
            if isinstance(data.get(key), (int, float)):
                refs[label] = float(data[key])
    return runs, refs


def histories_from_storage(storage: str, studies: list[str]) -> dict[str, list[list[float]]]:
    """One curve per study of an Optuna storage (``studies``, default all), labelled
    by study name and sampler: studies are never merged into one curve (a
    storage may hold unrelated studies)."""
    import optuna

    from commtune.search.storage import check_storage

    url = check_storage(storage, must_exist=True)  # reading never creates a database
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if url.startswith("journal://"):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            path = url[len("journal://"):]
            if not Path(path).exists():
                raise CommtuneError(f"journal file {path!r} does not exist")
            st = JournalStorage(JournalFileBackend(path))
        else:
            st = optuna.storages.get_storage(url)
        summaries = optuna.get_all_study_summaries(st, include_best_trial=False)
    except CommtuneError:
        raise
    except Exception as exc:  # sqlalchemy/optuna raise many types for a bad URL
        raise CommtuneError(f"cannot open storage {storage!r}: {str(exc).splitlines()[0]}") from None
    names = [s.study_name for s in summaries]
    if not names:
        raise CommtuneError(f"storage {storage!r} holds no study; give the storage a search wrote")
    wanted = studies or names
    runs: dict[str, list[list[float]]] = {}
    for name in wanted:
        if name not in names:
            raise CommtuneError(f"storage {storage!r} has no study {name!r}; it has: {', '.join(names) or 'none'}")
        study = optuna.load_study(study_name=name, storage=st)
        if len(study.directions) != 1:
            raise CommtuneError(f"study {name!r} is multi-objective; plot history needs one objective")
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        values = [t.value if t.state == optuna.trial.TrialState.COMPLETE else None for t in trials]
        if not any(v is not None for v in values):
            raise CommtuneError(f"study {name!r} has no complete trials")
        sampler = study.user_attrs.get("sampler")
        label = f"{name} ({sampler})" if sampler and str(sampler) != name else name
        runs[label] = [[math.nan if v is None else float(v) for v in values]]  # one curve per study, never merged
    return runs


# ------------------------------------------------------------------- drawing
def best_so_far(values: list[float]) -> np.ndarray:
    """Running minimum (failed trials, NaN, keep the previous best)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isnan(v), np.inf, v)
    out = np.minimum.accumulate(v)
    return np.where(np.isinf(out), np.nan, out)


def plot_history(runs: dict[str, list[list[float]]], refs: dict[str, float] | None = None,
                 title: str | None = None, log_y: bool = False):
    """Median best-so-far step time (ms) per sampler, range over runs shaded."""
    from commtune.plots import new_figure, styled

    fig = new_figure(7.0, 4.3)
    with styled():
        ax = fig.add_subplot()
        for i, (name, rs) in enumerate(sorted(runs.items())):
            n = max(len(r) for r in rs)
            curves = np.full((len(rs), n), np.nan)
            for j, r in enumerate(rs):
                b = best_so_far(r)
                curves[j, : len(b)] = b
                curves[j, len(b):] = b[-1]
            x = np.arange(1, n + 1)
            color = f"C{i}"
            med = np.nanmedian(curves, axis=0) * 1e3
            label = f"{name} (median of {len(rs)})" if len(rs) > 1 else name
            ax.step(x, med, where="post", color=color, lw=1.8, label=label)
            if len(rs) > 1:
                ax.fill_between(x, np.nanmin(curves, axis=0) * 1e3, np.nanmax(curves, axis=0) * 1e3,
                                step="post", color=color, alpha=0.15, lw=0)
        for k, (name, v) in enumerate((refs or {}).items()):
            ax.axhline(v * 1e3, color="0.35", ls=("--", ":", "-.")[k % 3], lw=1.1, label=f"{name} ({v * 1e3:.1f} ms)")
        ax.set_xlabel("trial")
        ax.set_ylabel("best step time so far (ms)")
        if log_y:
            from commtune.plots import plain_log_axis

            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        ax.set_title(title or "Search progress: best-so-far step time per sampler")
        ax.legend(loc="upper right", ncols=1 if len(runs) + len(refs or {}) < 7 else 2)
    return fig
