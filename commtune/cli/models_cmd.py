"""``commtune models``: list the built-in models and their gradient sizes."""
from __future__ import annotations

import argparse
import json
from typing import Any

from commtune.limits import RANGES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the built-in models",
                              description="List the built-in models: gradient tensors, "
                                          "parameters, fp32 gradient bytes and FLOPs per sample.")
    p.add_argument("names", nargs="*", metavar="MODEL", help="only these models (default: all)")
    p.add_argument("--input-size", type=RANGES["input_size"].argtype("--input-size"), metavar="N",
                   help="image side or sequence length (default: each model's own)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)


def model_rows(names: list[str], input_size: int | None) -> list[dict[str, Any]]:
    """One summary dict per model (zoo names or profile files)."""
    from commtune.models import load_model, model_names

    rows = []
    for spec in names or model_names():
        profile = load_model(spec, input_size)
        rows.append({
            "name": profile.name,
            "family": profile.meta.get("family", "file"),
            "input": profile.input_desc,
            "num_tensors": profile.num_tensors,
            "num_params": profile.num_params,
            "grad_bytes": profile.grad_bytes(4),
            "fwd_gflops": round(sum(l.fwd_flops for l in profile.layers) / 1e9, 3),
            "bwd_gflops": round(sum(l.bwd_flops for l in profile.layers) / 1e9, 3),
            "fingerprint": profile.fingerprint(),
        })
    return rows


_COLUMNS = [("name", "MODEL", "{}"), ("input", "INPUT", "{}"), ("num_tensors", "TENSORS", "{}"),
            ("num_params", "PARAMS", "{:,}"), ("grad_bytes", "GRAD BYTES (fp32)", "{:,}"),
            ("fwd_gflops", "FWD GFLOP/SAMPLE", "{:.2f}")]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned plain-text table: text columns left, numbers right."""
    cells = [[head for _, head, _ in _COLUMNS]]
    cells += [[fmt.format(row[key]) for key, _, fmt in _COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    numeric = [i >= 2 for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(line, widths, numeric))
        .rstrip() for line in cells)


def run(args: argparse.Namespace) -> int:
    rows = model_rows(args.names, args.input_size)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0
