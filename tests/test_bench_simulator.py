"""experiments/bench_simulator.py: what it measures and writes (tiny sizes; not a timing test)."""
from __future__ import annotations

import json

import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench_simulator")


def test_writes_both_mixes_with_the_load(bench, monkeypatch, tmp_path, capsys):
    import experiments._common as common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert bench.main(["--batch", "64", "--repeats", "1", "--models", "resnet50", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((tmp_path / "bench_simulator.json").read_text())
    assert printed == stored
    assert [(r["model"], r["stream_modes"]) for r in stored["rows"]] == [("resnet50", "both"), ("resnet50", "split")]
    assert all(r["batch_evals_per_s"] > 0 and r["single_eval_us"] > 0 for r in stored["rows"])
    assert stored["batch_evals_per_s"] == stored["rows"][0]["batch_evals_per_s"]  # the headline: first model, both
    assert len(stored["load_avg_1_5_15"]) == 3 and stored["batch_size"] == 64
    assert stored["sharded_batch_evals_per_s"] > 0 and stored["sharded_single_eval_us"] > 0
    assert stored["targets"] == {"batch_evals_per_s": 200_000, "single_eval_us": 50.0}
    md = (tmp_path / "bench_simulator.md").read_text()
    assert "| resnet50 | both |" in md and "| resnet50 | split |" in md and "| sharded |" in md
    assert "load average" in md and (tmp_path / "bench_simulator.png").stat().st_size > 0


def test_configurations_draw_the_asked_stream_modes(bench):
    both = {k.stream_mode for k in bench.random_configs(200)}
    assert both == {"split", "round_robin"}
    assert {k.stream_mode for k in bench.random_configs(200, stream_modes=("split",))} == {"split"}
    assert all(k.sharding == "none" for k in bench.random_configs(50))
    assert {k.sharding for k in bench.random_sharded_configs(100)} == {"grad", "full", "hybrid"}


@pytest.mark.parametrize("argv, flag", [(["--batch", "0"], "--batch"), (["--repeats", "x"], "--repeats"),
                                        (["--models", "nope"], "--models"), (["--stream-modes", "rr"], "--stream-modes")])
def test_bad_flags_are_one_line_and_exit_2(bench, argv, flag, capsys, tmp_path, monkeypatch):
    import experiments._common as common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    with pytest.raises(SystemExit) as exc:
        bench.main(argv + ["--no-write"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"error: argument {flag}: " in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not list(tmp_path.iterdir())
