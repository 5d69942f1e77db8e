"""experiments/investigations/noise_floor.py: grouping of stored calibrations and the spread formulas (no cluster)."""
from __future__ import annotations

import json
import sys

import pytest
import yaml
from conftest import load_experiment


@pytest.fixture(scope="module")
def nf():
    return load_experiment("investigations/noise_floor")


def _calib(path, created, times):
    records = [{"streams": 8, "bucket_bytes": 2**20, "stream_mode": "split", "step_time_s": t} for t in times]
    path.write_text(yaml.safe_dump({"provenance": {"created_at": created}, "ddp_calibration_measurements": records}))


def test_shape_and_tag(nf):
    assert nf.shape_and_tag("x/calib-4h-1g-cap300m-q18.yaml") == ("4h-1g-cap300m", "q18")
    assert nf.shape_and_tag("calib-4h-1g-cap300m-quiet2-q16.yaml") == ("4h-1g-cap300m", "q16/quiet2")
    assert nf.shape_and_tag("calib-4h-1g-cap300m-busy-q14c.yaml") == ("4h-1g-cap300m-busy", "q14c")
    assert nf.shape_and_tag("calib-4h-1g-cap300m.yaml") is None  # untagged: before the runs
    assert nf.shape_and_tag("calib-3h-2g-1ms-rrgap.yaml") is None


def test_runs_counted_once_and_spread(nf, tmp_path):
    _calib(tmp_path / "calib-2h-q1.yaml", "t1", [0.300])
    _calib(tmp_path / "calib-2h-q1c.yaml", "t1", [0.300])  # the same probe re-fitted: counted once
    _calib(tmp_path / "calib-2h-quiet2-q2.yaml", "t2", [0.330])
    _calib(tmp_path / "calib-2h-q10.yaml", "t3", [0.450])
    runs = nf.calibration_runs(str(tmp_path))
    assert list(runs) == ["2h"] and [r["tag"] for r in runs["2h"]] == ["q1", "q2/quiet2", "q10"]  # run order
    (row,) = nf.spread_table(runs["2h"])
    assert row["n"] == 3 and row["median_s"] == pytest.approx(0.330)
    assert row["mad"] == pytest.approx(0.030 / 0.330)  # |deviations| 0.03, 0, 0.12 -> median 0.03
    assert row["range"] == pytest.approx(0.150 / 0.330)


def test_pass_disagreement(nf, tmp_path):
    rows = [{"pass_medians_s": [0.40, 0.45]},  # pass spread 0.05 / 0.425 = 11.8 %
            {"pass_medians_s": [0.40, 0.41]},
            {"pass_medians_s": [0.40]}]  # one pass: not counted
    (tmp_path / "live_fidelity-q1.json").write_text(json.dumps({"shapes": {"3h": {"models": {"conv": {"rows": rows}}}}}))
    assert nf.pass_disagreement(str(tmp_path)) == {"3h": {"points": 2, "beyond": 1}}


def test_missing_results_dir_is_one_line(nf, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["noise_floor.py", str(tmp_path / "nope")])
    assert nf.main() == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and len(err.strip().splitlines()) == 1
