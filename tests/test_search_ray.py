"""Ray Tune backend: one short local run (slow: starting Ray takes seconds)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from commtune.cli import main as run_cli

pytest.importorskip("ray.tune")


@pytest.mark.slow
def test_ray_backend_completes_trials(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="ctr", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    try:
        rc = run_cli(["search", "--model", "resnet50", "--backend", "ray", "--trials", "6", "--concurrency", "2",
                      "--ray-temp-dir", temp, "--storage", f"sqlite:///{tmp_path}/ray.db", "--study", "ray",
                      "--json", "--quiet", "--workdir", str(tmp_path)])
        out = capsys.readouterr()
        assert rc == 0, out.err[-2000:]
        d = json.loads(out.out)
        assert d["backend"] == "ray" and d["trials"] == 6 and d["ray_nodes"] == 1
        assert d["predicted_step_time_s"] <= min(d["baselines"].values())
        assert os.path.exists(d["profile_path"])
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_bad_ray_address_fails_fast_in_one_line(tmp_path, capsys):
    import time

    t0 = time.monotonic()
    rc = run_cli(["search", "--model", "resnet50", "--backend", "ray", "--ray-address", "127.0.0.1:1", "--trials", "3",
                  "--storage", "memory", "--no-profile", "--quiet", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Ray head at 127.0.0.1:1" in err, err
    assert len(err.strip().splitlines()) == 1 and time.monotonic() - t0 < 30
