"""``fidelity``: predicted against measured step times, with the y = x line.

Input is a CSV (header row) or JSON file of points with a predicted and a
measured time. Column/key names: ``predicted``/``measured`` (seconds), or
with a unit suffix ``_s``/``_ms``/``_us`` (e.g. ``predicted_ms``); an optional
``label`` (or ``config``/``name``) names each point and an optional ``group``
(e.g. the stream count) colours it. JSON may be a list of
objects or an object holding one under ``points``, ``results`` or ``rows``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from commtune.errors import CommtuneError
from commtune.io import read_text


_SCALE = {"": 1.0, "_s": 1.0, "_ms": 1e-3, "_us": 1e-6}


def _value(row: dict, what: str, where: str) -> float:
    for suffix, scale in _SCALE.items():
        key = what + suffix
        if key in row and row[key] not in (None, ""):
            try:
                v = float(row[key]) * scale
            except (TypeError, ValueError):
                raise CommtuneError(f"{where}: {key}={row[key]!r} is not a number") from None
            if not (v > 0 and math.isfinite(v)):
                raise CommtuneError(f"{where}: {key}={row[key]!r} must be a positive time")
            return v
    raise CommtuneError(f"{where}: no '{what}' value (columns {what}, {what}_s, {what}_ms or {what}_us)")


def load_points(path: str) -> list[dict]:
    """``[{predicted_s, measured_s, label}]`` from a CSV or JSON file."""
    p = Path(path)
    text = read_text(p, "points file")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommtuneError(f"{str(p)!r} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        if isinstance(data, dict):
            data = next((data[k] for k in ("points", "results", "rows") if isinstance(data.get(k), list)), None)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise CommtuneError(f"{str(p)!r}: expected a list of {{predicted, measured}} objects")
        rows = data
    elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows = list(csv.DictReader(io.StringIO(text), delimiter="\t" if p.suffix.lower() == ".tsv" else ","))
    else:
        raise CommtuneError(f"{str(p)!r}: give a .csv or .json file of predicted/measured points")
    if not rows:
        raise CommtuneError(f"{str(p)!r} holds no points")
    points = []
    for i, row in enumerate(rows):
        where = f"{p.name}: point {i + 1}"
        label = next((str(row[k]) for k in ("label", "config", "name") if row.get(k) not in (None, "")), str(i + 1))
        points.append({"predicted_s": _value(row, "predicted", where), "measured_s": _value(row, "measured", where),
                       "label": label, "group": None if row.get("group") in (None, "") else str(row["group"])})
    return points


def error_stats(points: list[dict]) -> dict[str, float]:
    """Mean/max absolute percentage error and the rank correlation."""
    from commtune.stats import ape, spearman

    pr = np.array([q["predicted_s"] for q in points])
    me = np.array([q["measured_s"] for q in points])
    e = ape(pr, me) * 100
    out = {"n": len(points), "mape_pct": float(e.mean()), "max_ape_pct": float(e.max())}
    if len(points) > 2:
        out["spearman"] = spearman(pr, me)
    return out


def plot_fidelity(points: list[dict], title: str | None = None, band_pct: float = 10.0, annotate: bool = False):
    """Scatter of measured (x) against predicted (y), in ms, equal axes."""
    from commtune.plots import new_figure, styled

    fig = new_figure(5.6, 5.0)
    with styled():
        draw_fidelity(fig.add_subplot(), points, title=title, band_pct=band_pct, annotate=annotate)
    return fig


def save_fidelity(points: list[dict], path, title: str | None = None, band_pct: float = 10.0,
                  annotate: bool = False, dpi: int = 110) -> str:
    """Write the scatter of ``points`` to ``path`` (PNG/SVG/PDF by extension) atomically."""
    from commtune.plots import save_figure

    save_figure(plot_fidelity(points, title=title, band_pct=band_pct, annotate=annotate), path, dpi=dpi)
    return str(path)


def draw_fidelity(ax, points: list[dict], title: str | None = None, band_pct: float = 10.0, annotate: bool = False) -> dict:
    """Draw the fidelity scatter on ``ax``; returns :func:`error_stats`."""
    pr = np.array([q["predicted_s"] for q in points]) * 1e3
    me = np.array([q["measured_s"] for q in points]) * 1e3
    st = error_stats(points)
    lo, hi = min(pr.min(), me.min()), max(pr.max(), me.max())
    pad = (hi - lo) * 0.08 or hi * 0.1
    lo, hi = max(0.0, lo - pad), hi + pad
    xs = np.array([lo, hi])
    ax.plot(xs, xs, color="black", lw=1.2, label="y = x (perfect prediction)")
    if band_pct > 0:
        ax.fill_between(xs, xs * (1 - band_pct / 100), xs * (1 + band_pct / 100), color="0.6", alpha=0.2,
                        lw=0, label=f"±{band_pct:g}%")
    groups = sorted({q.get("group") for q in points}, key=lambda g: (g is None, _natural(g)))
    for i, g in enumerate(groups):
        sel = [j for j, q in enumerate(points) if q.get("group") == g]
        ax.scatter(me[sel], pr[sel], s=36, color=f"C{i}", edgecolors="black", linewidths=0.5, zorder=3,
                   label=f"{len(sel)} configurations" if g is None else f"{g} ({len(sel)})")
    if annotate:
        for q, x, y in zip(points, me, pr):
            ax.annotate(q["label"], (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("measured step time (ms)")
    ax.set_ylabel("predicted step time (ms)")
    text = f"MAPE {st['mape_pct']:.1f}%, max {st['max_ape_pct']:.1f}%"
    if "spearman" in st:
        text += f"\nSpearman rank corr. {st['spearman']:.2f}"
    ax.text(0.97, 0.03, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
            bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    ax.legend(loc="upper left")
    ax.set_title(title or "Simulator fidelity: predicted vs measured")
    return st


def _natural(g):
    try:
        return (0, float(str(g).split()[0]))
    except (ValueError, IndexError):
        return (1, str(g))
