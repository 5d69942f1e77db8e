"""Shared helpers of the experiment scripts: where results go and how.

Every script writes ``experiments/results/<name>.{json,csv,png,md}``; the
markdown summary holds the measured figures and a one-line conclusion.
Scripts run from the repository root (``python experiments/<name>.py``).
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Keep matplotlib's cache out of $HOME when run by hand on a shared machine.
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "commtune-mpl"))
os.environ.setdefault("MPLBACKEND", "Agg")

from commtune.io import atomic_write_json, atomic_write_text  # noqa: E402

#: Points per numeric range of the experiments' exhaustive grids
#: (:func:`commtune.plots.gridsearch.knob_grid`, ``points=``): the ranges,
#: fixed values and conditions are the named search space's
#: (``search_spaces/*.yaml``); 21 log-spaced points put the fusion threshold
#: at 2^0.5 steps over 1 MiB..1 GiB and cover every stream count 1..8.
GRID_POINTS = 21

RESULTS = Path(os.environ.get("COMMTUNE_RESULTS", ROOT / "experiments" / "results"))


def out(name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / name


def write_json(name: str, data) -> Path:
    return atomic_write_json(out(name), data)


def write_csv(name: str, rows: list[dict]) -> Path:
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return atomic_write_text(out(name), buf.getvalue())


def write_md(name: str, text: str) -> Path:
    return atomic_write_text(out(name), text.rstrip() + "\n")


def save(fig, name: str) -> Path:
    from commtune.plots import save_figure

    return save_figure(fig, out(name))


def md_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """Markdown table of ``rows``; ``cols`` is (key, header); floats pre-formatted by caller."""
    head = "| " + " | ".join(h for _, h in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def dumps(obj) -> str:
    return json.dumps(obj, indent=2)
