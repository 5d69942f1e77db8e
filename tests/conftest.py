"""Shared test set-up: keep matplotlib/Jupyter/Ray state out of $HOME."""
from __future__ import annotations

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="commtune-tests-")
for var in ("MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
    os.environ.setdefault(var, os.path.join(_TMP, var.lower()))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")
