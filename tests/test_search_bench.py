"""The search benchmark's --quick mode (JSON figures, default engine target)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_json():
    r = subprocess.run([sys.executable, "experiments/bench_search.py", "--quick", "--json", "--samplers", "auto,random"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    fig = d["figures"]["resnet50@32gbit"]
    assert set(fig) == {"auto", "random", "horovod-replica"}
    auto = fig["auto"]
    assert auto["median_trials_to_1pct"] is not None and auto["median_trials_to_1pct"] <= 30
    assert auto["best_step_s"] < fig["horovod-replica"]["best_step_s"]
