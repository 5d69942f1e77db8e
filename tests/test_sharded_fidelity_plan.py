"""experiments/sharded_fidelity.py without a cluster: the dry run's plan (shapes, held-out configurations,
commands, time estimate; nothing started, nothing written), the search of the mirror on a calibration, the
grid around its answer and the gain figures."""
from __future__ import annotations

import subprocess

import pytest
from conftest import load_experiment

sf = load_experiment("sharded_fidelity")


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, monkeypatch, capsys):
    def refuse(*a, **kw):
        raise AssertionError(f"the dry run started {a[:1]}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    assert sf.main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, shape in sf.SHAPES.items():
        assert f"commtune cluster up --prefix sf --hosts {shape['hosts']} --bw {shape['bw']}" in out
        assert f"calib-{name}.yaml" in out
    assert out.count("commtune probe --emulated") == len(sf.SHAPES)  # the probe's defaults: no size, stream, budget flag
    assert out.count("held-out sharded validate") == len(sf.SHAPES) * len(sf.MODELS)
    assert out.count("--sharding full --steps 10 --held-out 5") == len(sf.SHAPES) * len(sf.MODELS)
    assert "llama3.2-1b --scale 0.002" in out and "gpt2 --scale 0.02" in out
    assert out.count("commtune search") == 1 and "--space" in out and "live grid" in out
    assert "full, unit per block, prefetch" in out  # the held-out configurations themselves
    total = float(out.rsplit("estimated total: ", 1)[1].split()[0])
    assert 8 < total <= 20  # two default probes (5 min each at most) and the live runs
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_names_are_one_line_exit_2(capsys):
    assert sf.main(["--dry-run", "--shapes", "9h"]) == 2
    assert sf.main(["--dry-run", "--gain-models", "vgg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown '9h'" in err[0] and "unknown 'vgg'" in err[1]


def test_the_mirror_is_searched_on_the_calibration_and_its_grid_is_valid_configs(tmp_path, capsys):
    from commtune.cli import main
    from commtune.knobs import FSDP2_DEFAULT
    from commtune.models.units import group_units
    from commtune.probe.probe import calibration, write_calibration
    from commtune.validation import parse_sharded_configs

    recs = [{"streams": k, "size_bytes": s, "count": s // 4, "time_s": 2e-4 + s / 6e7}
            for k in (1, 2) for s in (2**16, 2**20, 2**22)]
    spec, extra = calibration({"world_size": 3, "engine": "gloo", "records": recs}, hosts=3)
    calib = tmp_path / "calib.yaml"
    write_calibration(str(calib), spec, extra)
    profile_file, space_file = sf.write_model_files(str(tmp_path), "llama")
    assert main(sf.search_argv(str(calib), 3, profile_file, space_file, str(tmp_path / "w"))) == 0
    best = sf.searched_knobs(capsys.readouterr().out)
    assert best.sharding == "full"
    prof = sf.mirror(*sf.MODELS["llama"])
    grid = sf.grid_around(best, prof)
    assert 3 <= len(grid) <= 6 and best not in grid
    for k in grid:
        assert k.forward_prefetch <= max(1, len(group_units(prof, k.unit_bytes)) - 1)
    args = [sf.config_arg(k) for k in (best, FSDP2_DEFAULT, *grid)]
    assert parse_sharded_configs(",".join(args)) == [best, FSDP2_DEFAULT, *grid]  # validate --configs reads them back
    assert sf.grid_around(FSDP2_DEFAULT, prof)[0].unit_bytes == sf.param_bytes(prof) // 8


def test_gain_and_markdown():
    rows = [{"config": c, "measured_s": t} for c, t in (("searched", 0.40), ("default", 0.50), ("n1", 0.39))]
    g = sf.gain({"rows": rows}, "searched", "default")
    assert g["gain"] == pytest.approx(0.25) and g["grid_best"] == "n1"
    assert g["grid_gap"] == pytest.approx(0.40 / 0.39 - 1) and g["targets_met"] == {"beats_default": True,
                                                                                    "grid_gap": True}
    summary = {"mape": 0.04, "worst": 0.12, "spearman": 0.9, "pick_gap": 0.01}
    results = {"targets": sf.TARGETS, "models": sf.MODELS, "compute_ms": list(sf.COMPUTE_MS),
               "shapes": {"3h-500m": {"shape": sf.SHAPES["3h-500m"], "models": {
                   "llama": {"summary": summary, "rows": [{}] * 5, "targets_met": sf.targets_met(summary)}},
                   "gain": {"llama": g}}}}
    md = sf.markdown(results)
    assert "| 3h-500m | llama | 5 | 4.00% | 12.00% | 0.900 | 1.00% | mape, pick_gap |" in md
    assert "| 3h-500m | llama | searched | 400.0 ms | 500.0 ms | +25.0% | n1 | 2.56% |" in md
