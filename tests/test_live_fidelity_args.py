"""experiments/live_fidelity.py's options for a shape, models and compute no earlier run used (no cluster needed)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lf():
    spec = importlib.util.spec_from_file_location("live_fidelity", ROOT / "experiments" / "live_fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_extra_shape_and_model_parse(lf):
    assert lf.parse_extra_shape("5h=5:400mbit:150mbit:500us") == (
        "5h", {"hosts": 5, "bw": "400mbit", "per_stream": "150mbit", "latency": "500us"})
    assert lf.parse_extra_shape("2h=2:1gbit::1ms") == ("2h", {"hosts": 2, "bw": "1gbit", "latency": "1ms"})
    assert lf.parse_extra_shape("3h=3:2gbit") == ("3h", {"hosts": 3, "bw": "2gbit"})
    assert lf.parse_extra_model("bert=bert-base:0.045") == ("bert", ("bert-base", 0.045))


@pytest.mark.parametrize("bad", ["5h", "=5:1gbit", "5h=x:1gbit", "5h=5", "5h=5:1g:1m:1ms:extra"])
def test_bad_extra_shape_names_itself(lf, bad):
    with pytest.raises(SystemExit, match="--extra-shape .*expected NAME=HOSTS:BW"):
        lf.parse_extra_shape(bad)


@pytest.mark.parametrize("bad", ["bert", "bert=bert-base", "bert=bert-base:zz", "bert=bert-base:0", "=gpt2:0.1"])
def test_bad_extra_model_names_itself(lf, bad):
    with pytest.raises(SystemExit, match="--extra-model .*expected NAME=ZOO:SCALE"):
        lf.parse_extra_model(bad)


def test_predictions_follow_the_compute_times(lf):
    """A longer backward hides more of the communication: the same configuration predicts a longer step."""
    from commtune.cluster import ClusterSpec

    spec = ClusterSpec(nodes=2, gpus_per_node=1)
    k = [{"fusion_threshold_bytes": 4 * 2**20, "num_streams": 2}]
    short, = lf.predictions(spec, 2, k, "resnet50", 0.05, (50.0, 100.0))
    long, = lf.predictions(spec, 2, k, "resnet50", 0.05, (100.0, 200.0))
    assert long > short + 0.1  # 150 ms more compute
    assert lf.predictions(spec, 2, k, "resnet50", 0.05) == [long]  # the default is COMPUTE_MS = 100, 200
