"""Shared test set-up: keep matplotlib/Jupyter/Ray state out of $HOME; profiles built in code."""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import pytest

from commtune.cluster import ClusterSpec
from commtune.knobs import Knobs
from commtune.profiles import Profile

_TMP = tempfile.mkdtemp(prefix="commtune-tests-")
for var in ("MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
    os.environ.setdefault(var, os.path.join(_TMP, var.lower()))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")

ENV_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S*)$")


def make_profile(precision: str = "amp", **knobs: Any) -> Profile:
    return Profile(
        model={"name": "resnet50", "fingerprint": "fp-1234abcd", "num_tensors": 161, "num_params": 25_557_032,
               "batch_size": 64, "precision": precision, "input_size": 224},
        cluster=ClusterSpec(),
        knobs=Knobs(**knobs),
        predicted={"step_time_s": 0.2, "scaling_efficiency": 0.8, "samples_per_s": 40960.0,
                   "comm_time_s": 0.15},
        baselines={"ddp_default": {"step_time_s": 0.3}, "horovod_default": {"step_time_s": 0.25}},
        lower_bound_s=0.16,
        provenance={"commtune_version": "0.1.0", "sampler": "tpe", "trials": 200, "seed": 7},
    )


def load_experiment(name: str):
    """The module of ``experiments/NAME.py`` (experiments are scripts, not a package);
    ``NAME`` may name a subfolder: ``investigations/noise_floor``."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(Path(name).name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines and # comments only; anything else fails the test."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = ENV_LINE.match(line)
        assert m, f"not a KEY=VALUE line: {line!r}"
        out[m[1]] = m[2]
    return out


@pytest.fixture
def profile_factory():
    return make_profile
