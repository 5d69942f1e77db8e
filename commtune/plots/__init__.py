"""Plots of commtune's simulations, searches and measurements.

One module per plot kind; its drawing functions (``plot_*``) take data and
options and return a figure; notebooks, experiments and the CLI
(:mod:`commtune.cli.plot_cmd`, which turns flags into data) call them.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so
no GUI backend is ever touched; :func:`save_figure` writes PNG, SVG or PDF by
the file's extension.

>>> from commtune.plots import heatmap           # doctest: +SKIP
>>> fig = heatmap.plot_heatmap(scenario)          # doctest: +SKIP
>>> save_figure(fig, "heatmap.png")               # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from commtune.errors import CommtuneError, did_you_mean
from commtune.io import atomic_write

#: plot kind -> module, in the order ``commtune plot --help`` lists them.
KINDS: dict[str, str] = {
    "history": "commtune.plots.history",
    "heatmap": "commtune.plots.heatmap",
    "timeline": "commtune.plots.timeline",
    "sweep": "commtune.plots.sweep",
    "fidelity": "commtune.plots.fidelity",
}

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

#: Font sizes every commtune figure uses (legible at 100% in a report).
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def plot_module(kind: str) -> ModuleType:
    """The module implementing plot ``kind``."""
    if kind not in KINDS:
        raise CommtuneError(f"unknown plot kind {kind!r}{did_you_mean(kind, list(KINDS))}; choose one of: {', '.join(KINDS)}")
    return importlib.import_module(KINDS[kind])


def new_figure(width_in: float = 7.0, height_in: float = 4.2, **kwargs):
    """A pyplot-free figure with commtune's style and constrained layout."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width_in, height_in), layout="constrained", **kwargs)
    return fig


def styled():
    """Context manager applying :data:`STYLE` while artists are created."""
    import matplotlib

    return matplotlib.rc_context(STYLE)


def plain_log_axis(axis) -> None:
    """Tick labels of a log axis as plain numbers (60, 100, 200), not 6x10^1;
    intermediate ticks are labelled when the axis spans under two decades."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.6)))


def check_output_path(path: str | os.PathLike) -> str:
    """The format for ``path`` from its extension, or a CommtuneError."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise CommtuneError(
            f"cannot tell the image format of {str(path)!r}: use a file ending in {', '.join(FORMATS)}"
        )
    return FORMATS[ext]


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (PNG/SVG/PDF by extension) atomically."""
    fmt = check_output_path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
