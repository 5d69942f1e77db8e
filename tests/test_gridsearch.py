"""commtune.plots.gridsearch is a thin layer over the search spaces: the same
knobs as search_spaces/*.yaml and the same rows as the grid backend."""
from __future__ import annotations

import numpy as np
import pytest

from commtune.cluster import make_cluster
from commtune.errors import CommtuneError
from commtune.knobs import KNOBS, Knobs
from commtune.models import load_model
from commtune.plots.gridsearch import grid_best, knob_grid
from commtune.scenario import Scenario
from commtune.search import SearchConfig, run_backend
from commtune.evaluators.simulator import SimulatorEvaluator
from commtune.search.space import load_space


def varied(arrays) -> set[str]:
    return {name for name in KNOBS if len(set(np.asarray(getattr(arrays, name)).tolist())) > 1}


def columns(arrays) -> dict[str, list]:
    return {name: np.asarray(getattr(arrays, name)).tolist() for name in KNOBS}


@pytest.fixture(scope="module")
def scenario():
    return Scenario(load_model("resnet50"), make_cluster(bw="25gbit"))


@pytest.mark.parametrize("name", ["horovod", "ddp", "default"])
def test_knob_grid_varies_exactly_the_spaces_knobs(name):
    space = load_space(name)
    arrays = knob_grid(name)
    assert varied(arrays) == set(space.param_names)
    for knob, value in space.fixed.items():  # fixed values and the base are honoured
        assert set(np.asarray(getattr(arrays, knob)).tolist()) == {value}
    assert len(arrays) == space.grid_size()


def test_horovod_grid_is_the_yaml_space():
    arrays = knob_grid("horovod")
    assert varied(arrays) == {"fusion_threshold_bytes", "cycle_time_ms", "num_streams", "hierarchical"}
    assert set(arrays.fusion_policy.tolist()) == {"dynamic"}
    assert set(arrays.negotiation.tolist()) == {"central"} and set(arrays.wire_precision.tolist()) == {"fp32"}
    assert len(arrays) == 16 * 10 * 4 * 2  # grid points of search_spaces/horovod.yaml


@pytest.mark.parametrize("name,points", [("horovod", None), ("horovod", 5), ("ddp", 3), ("default", None), ("default", 4)])
def test_grid_backend_and_knob_grid_build_identical_rows(scenario, name, points):
    space = load_space(name)
    seen = []

    class Recording(SimulatorEvaluator):
        def evaluate_batch(self, configs):
            seen.append(columns(configs))
            return super().evaluate_batch(configs)

    r = run_backend("optuna", SearchConfig(space, Recording(scenario), sampler="grid", grid_points=points))
    arrays = knob_grid(name, points=points)
    assert len(seen) == 1 and seen[0] == columns(arrays)
    assert r.extra["grid_size"] == len(arrays)
    best, m = grid_best(scenario.simulator, arrays)
    assert r.best_knobs == best and r.best_metrics["step_time_s"] == pytest.approx(m["step_time_s"], rel=1e-12)


def test_overrides_win_and_can_add_knobs():
    arrays = knob_grid("default", {"num_streams": [4], "hierarchical": [False]}, points=5)
    assert set(arrays.num_streams.tolist()) == {4} and set(arrays.hierarchical.tolist()) == {False}
    # conditions still apply: cycle time only under dynamic fusion, first bucket only under static
    dyn = arrays.fusion_policy == "dynamic"
    assert len(set(arrays.cycle_time_ms[~dyn].tolist())) == 1 and len(set(arrays.first_bucket_bytes[dyn].tolist())) == 1
    # a knob the horovod space does not search is varied only when asked explicitly
    hvd = knob_grid("horovod", {"wire_precision": ["fp32", "fp16"], "negotiation": ["decentralized"]})
    assert varied(hvd) == {"fusion_threshold_bytes", "cycle_time_ms", "num_streams", "hierarchical", "wire_precision"}
    assert set(hvd.negotiation.tolist()) == {"decentralized"}
    assert len(hvd) == 2 * len(knob_grid("horovod"))
    # sizes parse like everywhere else
    sized = knob_grid("ddp", {"fusion_threshold_bytes": ["25MB", 2**26]})
    assert set(sized.fusion_threshold_bytes.tolist()) == {25_000_000, 2**26}


def test_points_set_the_resolution():
    space = load_space("horovod")
    assert len(knob_grid("horovod", points=3)) == 3 * 3 * len(space.params[2].grid_values(3)) * 2
    assert space.params[0].grid_values() == space.params[0].grid_values(space.params[0].grid)


def test_base_keeps_the_spaces_fixed_knobs():
    arrays = knob_grid("ddp", base=Knobs(cycle_time_ms=7.0, fusion_policy="dynamic"))
    assert set(arrays.fusion_policy.tolist()) == {"static"}  # fixed in ddp.yaml
    assert set(arrays.cycle_time_ms.tolist()) == {7.0}  # from the given base


@pytest.mark.parametrize("space,overrides,words", [
    ("default", {"num_stream": [1]}, ["unknown knob", "num_streams"]),
    ("default", {"num_streams": []}, ["num_streams", "empty"]),
    ("default", {"num_streams": 4}, ["num_streams", "list"]),
    ("default", {"num_streams": [99]}, ["num_streams"]),
    ("ddp", {"cycle_time_ms": [1.0, 2.0]}, ["cycle_time_ms", "static"]),
])
def test_bad_overrides_are_one_line_errors(space, overrides, words):
    with pytest.raises(CommtuneError) as e:
        knob_grid(space, overrides)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


def test_unknown_space_is_an_error():
    with pytest.raises(CommtuneError, match="unknown search space"):
        knob_grid("horovd")
