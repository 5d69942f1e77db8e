"""``commtune models``: table, JSON and errors."""
from __future__ import annotations

import json

from cli_stubs import run_cli
from commtune.models import model_names


def test_json_lists_every_model(capsys) -> None:
    assert run_cli(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == model_names()
    resnet = rows[0]
    assert resnet["num_tensors"] == 161 and resnet["num_params"] == 25_557_032
    assert resnet["grad_bytes"] == 4 * 25_557_032
    assert {"name", "num_tensors", "num_params", "grad_bytes", "fwd_gflops"} <= set(resnet)


def test_table(capsys) -> None:
    assert run_cli(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "MODEL" and len(lines) == 1 + len(model_names())
    bert = next(line for line in lines if line.startswith("bert-base "))
    assert "109,482,240" in bert and "22.42" in bert


def test_input_size_and_selection(capsys) -> None:
    assert run_cli(["models", "--json", "--input-size", "448", "resnet50"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["input"] == "448x448 image" and row["fwd_gflops"] > 32


def test_unknown_model(capsys) -> None:
    assert run_cli(["models", "resnt50"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnt50'" in err and "did you mean 'resnet50'" in err
    assert err.count("\n") == 1


def test_bad_input_size(capsys) -> None:
    assert run_cli(["models", "bert-base", "--input-size", "4096"]) == 2
    assert "sequence length must be an integer 1..512" in capsys.readouterr().err
