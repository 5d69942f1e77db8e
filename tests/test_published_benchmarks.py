"""The shipped V100 framework costs against the published DDP points (experiments/published_benchmarks.py).

Deterministic model outputs, not timings: the calibration points stay reproduced and the held-out
ones stay within the issue's step-time target with the values ``devices.yaml`` ships.
"""
from __future__ import annotations

import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def pb():
    return load_experiment("published_benchmarks")


def test_shipped_v100_costs_reproduce_calibration_and_held_out_ddp_points(pb):
    from commtune.devices import framework_defaults

    shipped = pb.with_sm_share({k: framework_defaults("V100")[k] for k in pb.FRAMEWORK_FIELDS}, "V100")
    calib = pb.summary(pb.ddp_points(pb.DDP_CALIBRATION_MODELS, shipped))
    held = pb.summary(pb.ddp_points([m for m in pb.DDP_TABLE if m not in pb.DDP_CALIBRATION_MODELS], shipped))
    assert calib["mape_pct"] <= 1.0
    assert held["mape_pct"] <= 5.0 and held["worst_pct"] <= 5.0


def ddp_directions(pb) -> list[dict]:
    from commtune.devices import framework_defaults

    shipped = pb.with_sm_share({k: framework_defaults("V100")[k] for k in pb.FRAMEWORK_FIELDS}, "V100")
    return pb.directions(pb.ddp_points(list(pb.DDP_TABLE), shipped))


def test_small_bucket_penalty_direction_matches_the_ddp_benchmark(pb):
    """Every DDP direction, for both models: 1 MB slower than 25 MB, the penalty growing from 2 to 16
    GPUs (the per-collective rank synchronisation, ``collective_jitter_s``), DDP on one GPU slower."""
    ds = ddp_directions(pb)
    assert len(ds) == 6
    for d in ds:
        assert d["same_direction"], d


def test_without_rank_synchronisation_the_penalty_growth_is_missed(pb):
    """The growth comes from the per-collective wait: the shipped costs with ``collective_jitter_s = 0``
    predict the ResNet-50 1 MB penalty shrinking or flat from 2 to 16 GPUs (the earlier known miss)."""
    from commtune.devices import framework_defaults

    costs = dict({k: framework_defaults("V100")[k] for k in pb.FRAMEWORK_FIELDS}, collective_jitter_s=0.0)
    ds = pb.directions(pb.ddp_points(["resnet50"], pb.with_sm_share(costs, "V100")))
    (d,) = [d for d in ds if d["effect"] == "resnet50: the 1 MB penalty grows from 2 to 16 GPUs"]
    assert d["predicted"] < d["measured"] / 2


def test_horovod_points_with_shipped_costs(pb):
    """The held-out Horovod points with the shipped costs (issue 14's target: MAPE <= 10 %, worst <= 20 %),
    and both of the source's orderings: VGG-16 falls from 128 to 512 GPUs and is below ResNet-101 at 512."""
    from commtune.devices import framework_defaults

    shipped = pb.with_sm_share({k: framework_defaults("V100")[k] for k in pb.FRAMEWORK_FIELDS}, "P100")
    rows = pb.hvd_points(shipped)
    s = pb.summary(rows)
    assert s["mape_pct"] <= 10.0 and s["worst_pct"] <= 20.0
    for d in pb.directions(rows):
        assert d["same_direction"], d
