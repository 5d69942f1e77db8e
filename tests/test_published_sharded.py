"""The published sharded measurements (experiments/data/published_sharded.yaml) and their split.

Data checks only, no simulation: the file loads, every point has the fields and a cited source,
the quotes hold the recorded figure, the split is the one experiments/published_sharded.py
reports, and malformed files are one-line errors. Where the sharded simulator is present, the
predictions of the held-out points are checked to be finite and positive.
"""
from __future__ import annotations

import copy
import math

import pytest
import yaml
from conftest import load_experiment

from commtune.errors import CommtuneError


@pytest.fixture(scope="module")
def ps():
    return load_experiment("published_sharded")


@pytest.fixture(scope="module")
def data(ps):
    return ps.load_data()


def test_every_point_has_fields_and_a_source_with_url(ps, data):
    assert len(data["points"]) >= 10
    for p in data["points"]:
        for field in ps.POINT_FIELDS:
            assert field in p, (p["id"], field)
        src = data["sources"][p["source"]]
        assert src["url"].startswith("https://") and src["title"] and src["hardware"]
        assert p["quote"].strip()


def test_quotes_contain_the_recorded_figure(data):
    """The measured value appears in the point's quote (as printed: '5,762', '3700', '95%', '0.20' as '20%')."""
    for p in data["points"]:
        v = p["measured"]["value"]
        if p["measured"]["metric"] == "scaling_efficiency":
            printed = {f"{round(100 * v)}%"}
        else:
            printed = {f"{v:,.0f}", f"{v:.0f}"}
        assert any(s in p["quote"] for s in printed), (p["id"], printed)


def test_split_is_the_scripts(ps, data):
    parts = ps.split(data)
    ids = {u: [p["id"] for p in parts[u]] for u in ps.USES}
    assert ids["calibration"] == ["titan-h100-8b-8gpu", "titan-h100-8b-8gpu-compile", "ibm-a100-7b", "ibm-a100-70b",
                                  "ibm-h100-7b", "ibm-h100-70b"]
    assert ids["held_out"] == ["titan-h100-8b-128gpu", "titan-h100-8b-128gpu-compile", "ibm-a100-13b",
                               "ibm-a100-34b", "ibm-h100-13b", "ibm-h100-34b"]
    assert sum(len(v) for v in ids.values()) == len(data["points"])
    assert not set(ids["calibration"]) & set(ids["held_out"])
    # one calibration point per stack and parameter (rate; the IBM stacks also fit their device's matmul
    # tile cost, on two shapes): held-out points are predicted with parameters fitted elsewhere
    stacks = [p["stack"] for p in parts["calibration"]]
    assert {s: stacks.count(s) for s in stacks} == {"titan-h100-eager": 1, "titan-h100-compile": 1,
                                                    "ibm-a100": 2, "ibm-h100": 2}
    assert {p["stack"] for p in parts["held_out"]} <= set(stacks) and len(ids["held_out"]) >= 6
    for p in parts["excluded"]:
        assert p["exclude_reason"].strip()


def test_step_time_derivation(ps, data):
    """Step time = local batch x sequence length / tokens per second per GPU (torchtitan 8 GPUs: 2 x 8192 / 5762)."""
    (p,) = [p for p in data["points"] if p["id"] == "titan-h100-8b-8gpu"]
    assert math.isclose(ps.measured_step_s(p), 2 * 8192 / 5762)


def test_models_and_clusters_are_defined(ps, data):
    used = [p for p in data["points"] if p["use"] != "excluded"]
    for p in used:
        m, c = data["models"][p["model"]], data["clusters"][p["cluster"]]
        assert m["hidden"] % m["heads"] == 0 and m["heads"] % m["kv_heads"] == 0
        assert p["gpus"] % c["gpus_per_node"] == 0
    # the zoo shape the file names is the published Llama-3-8B count (ANCHORS: 8,030,261,248)
    assert data["models"]["llama3-8b"]["params"] == 8_030_261_248


def _write(tmp_path, data) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["points"][0].pop("quote"), "lacks quote"),
    (lambda d: d["points"][0].update(source="nowhere"), "cites 'nowhere'"),
    (lambda d: d["points"][0].update(use="train"), "use 'train'"),
    (lambda d: d["points"][1].update(id=d["points"][0]["id"]), "appears twice"),
    (lambda d: d["points"][0].update(seq_len=10**6), "seq_len 1000000"),
    (lambda d: d["points"][0].update(gpus=12), "gpus 12"),
    (lambda d: d["points"][0]["measured"].update(value=-1), "positive measured.value"),
    (lambda d: [p.pop("ac_fraction") for p in d["points"] if p["id"] == "ibm-a100-13b"], "ac_fraction None"),
    (lambda d: [p.update(ac_fraction=2) for p in d["points"] if p["id"] == "ibm-h100-13b"], "ac_fraction 2"),
    (lambda d: [p.update(use="excluded", exclude_reason="x") for p in d["points"]
                if p.get("stack") == "ibm-h100" and p["use"] == "calibration"], "no calibration point"),
])
def test_malformed_file_is_one_line(ps, data, tmp_path, edit, message):
    bad = copy.deepcopy(data)
    edit(bad)
    with pytest.raises(CommtuneError) as e:
        ps.load_data(_write(tmp_path, bad))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_held_out_predictions_where_the_simulator_exists(ps, data):
    if ps.missing_requirement():
        pytest.skip(ps.missing_requirement())
    parts = ps.split(data)
    (p,) = [p for p in parts["held_out"] if p["id"] == "titan-h100-8b-128gpu"]
    r = ps.predict(data, p, 1.0)
    assert r["step_time_s"] > 0 and math.isfinite(r["tokens_per_s_per_gpu"])


def test_one_shape_fits_no_tile_cost(ps, data):
    """A device whose stacks calibrate on one model shape each gets k0 = 0 (rate and k0 not separable)."""
    if ps.missing_requirement():
        pytest.skip(ps.missing_requirement())
    (p,) = [p for p in data["points"] if p["id"] == "ibm-a100-7b"]
    k0, ks = ps.fit_device(data, {"ibm-a100": [p]})
    assert k0 == 0.0 and math.isclose(ps.predict(data, p, ks["ibm-a100"])["step_time_s"], ps.measured_step_s(p),
                                      rel_tol=1e-3)
