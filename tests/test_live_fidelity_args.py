"""experiments/live_fidelity.py's options for a shape, models and compute no earlier run used (no cluster needed)."""
from __future__ import annotations

import sys

import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def lf():
    return load_experiment("live_fidelity")


def test_extra_shape_and_model_parse(lf):
    assert lf.parse_extra_shape("5h=5:400mbit:150mbit:500us") == (
        "5h", {"hosts": 5, "bw": "400mbit", "per_stream": "150mbit", "latency": "500us"})
    assert lf.parse_extra_shape("2h=2:1gbit::1ms") == ("2h", {"hosts": 2, "bw": "1gbit", "latency": "1ms"})
    assert lf.parse_extra_shape("3h=3:2gbit") == ("3h", {"hosts": 3, "bw": "2gbit"})
    assert lf.parse_extra_model("bert=bert-base:0.045") == ("bert", ("bert-base", 0.045))


@pytest.mark.parametrize("bad", ["5h", "=5:1gbit", "5h=x:1gbit", "5h=5", "5h=5:1g:1m:1ms:extra"])
def test_bad_extra_shape_names_itself(lf, bad):
    with pytest.raises(ValueError, match="--extra-shape .*expected NAME=HOSTS:BW"):
        lf.parse_extra_shape(bad)


@pytest.mark.parametrize("bad", ["bert", "bert=bert-base", "bert=bert-base:zz", "bert=bert-base:0", "=gpt2:0.1"])
def test_bad_extra_model_names_itself(lf, bad):
    with pytest.raises(ValueError, match="--extra-model .*expected NAME=ZOO:SCALE"):
        lf.parse_extra_model(bad)


@pytest.mark.parametrize("argv", [["--extra-shape", "5h=x:1gbit"], ["--extra-model", "b=gpt2:0"],
                                  ["--compute-ms", "80"], ["--compute-ms", "a,b"], ["--compute-ms=-1,2"]])
def test_bad_option_is_one_line_and_exit_2(lf, monkeypatch, capsys, tmp_path, argv):
    monkeypatch.setattr(sys, "argv", ["live_fidelity.py", *argv, "--out", str(tmp_path / "out")])
    assert lf.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(argv[0].split("=")[0]) and "expected" in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_predictions_follow_the_compute_times(lf):
    """A longer backward hides more of the communication: the same configuration predicts a longer step."""
    from commtune.cluster import ClusterSpec

    spec = ClusterSpec(nodes=2, gpus_per_node=1)
    k = [{"fusion_threshold_bytes": 4 * 2**20, "num_streams": 2}]
    short, = lf.predictions(spec, 2, k, "resnet50", 0.05, (50.0, 100.0))
    long, = lf.predictions(spec, 2, k, "resnet50", 0.05, (100.0, 200.0))
    assert long > short + 0.1  # 150 ms more compute
    assert lf.predictions(spec, 2, k, "resnet50", 0.05) == [long]  # the default is COMPUTE_MS = 100, 200
