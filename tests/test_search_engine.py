"""Search engines on the simulator: determinism, grid vs brute force, lower bound."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commtune.cluster import make_cluster
from commtune.knobs import KNOBS, SHARDING_KNOBS, Knobs
from commtune.models import load_model
from commtune.scenario import Scenario
from commtune.search import SearchConfig, run_backend
from commtune.search.horovod_replica import horovod_autotune
from commtune.evaluators.base import EVALUATORS, Evaluator, make_evaluator
from commtune.evaluators.simulator import SimulatorEvaluator
from commtune.search.space import load_space


@pytest.fixture(scope="module")
def scenario():
    return Scenario(load_model("resnet50"), make_cluster(bw="32gbit"))


def _run(scenario, sampler, seed=0, trials=15, space="default", **kw):
    obj = SimulatorEvaluator(scenario)
    return run_backend("optuna", SearchConfig(load_space(space), obj, sampler=sampler, trials=trials, seed=seed,
                                              study_name="t", **kw))


@pytest.mark.parametrize("sampler", ["auto", "tpe", "random", "qmc", "cmaes"])
def test_same_seed_same_result(scenario, sampler):
    a = _run(scenario, sampler, seed=7, trials=12)
    b = _run(scenario, sampler, seed=7, trials=12)
    assert a.history == b.history and a.best_knobs == b.best_knobs
    assert a.trials == 12


def test_different_seed_differs(scenario):
    assert _run(scenario, "random", seed=1, trials=8).history != _run(scenario, "random", seed=2, trials=8).history


def test_auto_starts_from_baselines_and_never_loses_to_them(scenario):
    r = _run(scenario, "auto", trials=12)
    obj = SimulatorEvaluator(scenario)
    assert r.extra["screened"] > 0
    assert r.history[0] == pytest.approx(obj.evaluate(Knobs.from_dict({}, base=__import__("commtune.knobs").knobs.DDP_DEFAULT))["step_time_s"])
    assert r.best_metrics["step_time_s"] <= min(obj.evaluate(k)["step_time_s"] for k in
                                                __import__("commtune.knobs").knobs.BASELINES.values())


def test_grid_finds_bruteforce_optimum_on_tiny_space(scenario, tmp_path):
    f = tmp_path / "tiny.yaml"
    f.write_text(
        "base: horovod_default\nknobs:\n"
        "  fusion_threshold_bytes: {low: 1MiB, high: 256MiB, log: true, grid: 5}\n"
        "  cycle_time_ms: {choices: [0.5, 2, 10]}\n"
        "  num_streams: {choices: [1, 2, 4]}\n"
        "  hierarchical: {choices: [false, true]}\n"
    )
    space = load_space(str(f))
    r = run_backend("optuna", SearchConfig(space, SimulatorEvaluator(scenario), sampler="grid"))
    sizes = space.params[0].grid_values()
    assert len(sizes) == 5
    brute = []
    for fz, cyc, ns, h in itertools.product(sizes, [0.5, 2.0, 10.0], [1, 2, 4], [False, True]):
        k = Knobs.from_dict({"fusion_threshold_bytes": fz, "cycle_time_ms": cyc, "num_streams": ns,
                             "hierarchical": h}, base=space.base)
        brute.append((scenario.simulator.run(k).step_time_s, k))
    best_t, best_k = min(brute, key=lambda x: x[0])
    assert r.extra["grid_size"] == len(brute) == 90
    assert r.best_metrics["step_time_s"] == pytest.approx(best_t, rel=1e-9)
    assert r.best_knobs == best_k


def test_evaluator_registry_is_pluggable(scenario):
    class Fake(Evaluator):
        name = "fake"

        def evaluate(self, knobs):
            return {"step_time_s": 1.0 + knobs.num_streams}

    EVALUATORS["fake"] = lambda sc, **_: Fake()
    try:
        obj = make_evaluator("fake", scenario)
        r = run_backend("optuna", SearchConfig(load_space("horovod"), obj, sampler="random", trials=6, seed=0))
        assert r.best_metrics["step_time_s"] == min(r.history)
        assert obj.evaluate_batch([Knobs(), Knobs(num_streams=3)])["step_time_s"].tolist() == [2.0, 4.0]
    finally:
        del EVALUATORS["fake"]


@pytest.mark.slow
def test_horovod_replica_runs_24_evaluations(scenario):
    k, best, hist = horovod_autotune(lambda k: scenario.simulator.run(k).step_time_s, seed=0)
    assert len(hist) == 24 and best == min(hist)
    assert 0 <= k.fusion_threshold_bytes <= 64 * 2**20 and 1 <= k.cycle_time_ms <= 100
    assert k.num_streams == 1 and not k.hierarchical


_models = {}


def _sim(model, bw):
    if (model, bw) not in _models:
        sc = Scenario(load_model(model), make_cluster(bw=bw))
        _models[(model, bw)] = (sc, SimulatorEvaluator(sc).lower_bound_s())
    return _models[(model, bw)]


knob_values = st.fixed_dictionaries({
    "fusion_policy": st.sampled_from(["dynamic", "static"]),
    "fusion_threshold_bytes": st.integers(0, 2**30),
    "first_bucket_bytes": st.integers(0, 2**28),
    "cycle_time_ms": st.floats(0.0, 100.0),
    "num_streams": st.integers(1, 16),
    "negotiation": st.sampled_from(["central", "decentralized"]),
    "hierarchical": st.booleans(),
    "wire_precision": st.sampled_from(["fp32", "fp16"]),
})


@settings(max_examples=60, deadline=None)
@given(knob_values, st.sampled_from(["resnet50", "bert-base", "vgg16"]), st.sampled_from(["10gbit", "32gbit", "100gbit"]))
def test_lower_bound_below_every_step_time(values, model, bw):
    sc, lb = _sim(model, bw)
    t = sc.simulator.run(Knobs(**values)).step_time_s
    assert lb <= t * (1 + 1e-9)


def test_lower_bound_below_grid_and_search(scenario):
    obj = SimulatorEvaluator(scenario)
    space = load_space("default")
    steps = obj.evaluate_batch(space.knob_arrays(space.grid_rows()))["step_time_s"]
    assert obj.lower_bound_s() <= np.min(steps) * (1 + 1e-9)
    assert set(KNOBS) - set(SHARDING_KNOBS) == set(space.param_names)  # every all-reduce knob


def test_horovod_backend_through_the_registry(scenario):
    from commtune.search import backend_names

    assert {"optuna", "ray", "grid", "horovod"} <= set(backend_names())
    r = run_backend("horovod", SearchConfig(load_space("default"), SimulatorEvaluator(scenario), trials=6, seed=0))
    assert (r.backend, r.trials, len(r.history)) == ("horovod", 6, 6)
    assert r.best_metrics["step_time_s"] == min(r.history)
    assert r.best_knobs.fusion_policy == "dynamic" and 1 <= r.best_knobs.cycle_time_ms <= 100


def test_horovod_backend_refuses_an_evaluator_that_cannot_apply_its_knobs(scenario):
    from commtune.errors import CommtuneError

    class DDPOnly(Evaluator):
        name = "ddp-only"
        applies = ("fusion_threshold_bytes", "num_streams")

        def evaluate(self, knobs):
            return {"step_time_s": 1.0}

    with pytest.raises(CommtuneError, match="cannot apply them"):
        run_backend("horovod", SearchConfig(load_space("default"), DDPOnly(), trials=4))


def test_unknown_backend_one_line():
    from commtune.errors import CommtuneError

    with pytest.raises(CommtuneError, match="did you mean 'optuna'"):
        run_backend("optuma", SearchConfig(load_space("default"), None))
