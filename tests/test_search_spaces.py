"""Search spaces: bundled files, validation of malformed files (one line each)."""
from __future__ import annotations

import pytest

import search_spaces
from commtune.errors import CommtuneError
from commtune.knobs import KNOBS, SHARDING_KNOBS
from commtune.search.space import load_space


def test_bundled_spaces_load_and_respect_registry():
    assert set(search_spaces.names()) >= {"default", "ddp", "horovod"}
    default = load_space("default")
    assert set(default.param_names) == set(KNOBS) - set(SHARDING_KNOBS)  # every all-reduce knob
    ddp = load_space("ddp")
    assert ddp.base.fusion_policy == "static" and "fusion_policy" not in ddp.param_names
    assert {"fusion_threshold_bytes", "first_bucket_bytes", "num_streams", "wire_precision"} <= set(ddp.param_names)
    hvd = load_space("horovod")
    assert hvd.base.fusion_policy == "dynamic"
    assert set(hvd.param_names) == {"fusion_threshold_bytes", "cycle_time_ms", "num_streams", "hierarchical"}
    # conditions from applies_when
    cond = {p.name: p.condition for p in default.params}
    assert cond["cycle_time_ms"] == ("fusion_policy", ("dynamic",))
    assert cond["first_bucket_bytes"] == ("fusion_policy", ("static",))
    assert {p.name: p.log for p in default.params}["fusion_threshold_bytes"]


def test_grid_rows_apply_conditions():
    rows = load_space("default").grid_rows()
    assert all(("cycle_time_ms" in r) == (r["fusion_policy"] == "dynamic") for r in rows)
    assert all(("first_bucket_bytes" in r) == (r["fusion_policy"] == "static") for r in rows)


def test_fixed_value_forms(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("knobs:\n  fusion_policy: static\n  num_streams: {value: 2}\n  fusion_threshold_bytes: {low: 1MiB, high: 64MiB, log: true}\n")
    s = load_space(str(f))
    assert s.base.num_streams == 2 and s.base.fusion_policy == "static"
    assert s.param_names == ["fusion_threshold_bytes"]


BAD = [
    ("knobs:\n  fusion_treshold_bytes: {low: 1MiB, high: 2MiB}\n", ["unknown knob", "fusion_treshold_bytes"]),
    ("knobs:\n  num_streams: {low: 4, high: 4}\n", ["num_streams", "empty range"]),
    ("knobs:\n  num_streams: {low: 8, high: 2}\n", ["num_streams", "inverted range"]),
    ("knobs:\n  num_streams: {choices: []}\n", ["num_streams", "empty choices"]),
    ("knobs:\n  cycle_time_ms: {low: fast, high: 5}\n", ["cycle_time_ms", "not a number"]),
    ("knobs:\n  num_streams: {low: 1.5, high: 4}\n", ["num_streams", "not an integer"]),
    ("knobs:\n  hierarchical: {low: 0, high: 1}\n", ["hierarchical", "choices"]),
    ("knobs:\n  wire_precision: {choices: [fp32, bf8]}\n", ["wire_precision", "bf8"]),
    ("knobs:\n  num_streams: {low: 1, high: 64}\n", ["num_streams", "out of range"]),
    ("knobs:\n  fusion_threshold_bytes: {low: 0, high: 64MiB, log: true}\n", ["fusion_threshold_bytes", "log"]),
    ("knobs:\n  num_streams: {lo: 1, high: 4}\n", ["num_streams", "unknown key"]),
    ("knobs:\n  num_streams: {low: 1, high: 4, log: maybe}\n", ["num_streams", "log must be"]),
    ("knobs:\n  fusion_policy: static\n  cycle_time_ms: {low: 1, high: 5}\n", ["cycle_time_ms", "fixed to static"]),
    ("knobs:\n  num_streams: [1, 2]\n", ["num_streams", "choices"]),
    ("knobs: {}\n", ["knobs"]),
    ("- just\n- a list\n", ["mapping"]),
    ("knobs:\n  num_streams: {low: 1, high: 4\n", ["invalid YAML", "line"]),
    ("base: pytorch\nknobs:\n  num_streams: {low: 1, high: 4}\n", ["unknown base"]),
]


@pytest.mark.parametrize("text,needles", BAD)
def test_malformed_space_is_one_clear_line(tmp_path, text, needles):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(CommtuneError) as ei:
        load_space(str(f))
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(f) in msg
    for n in needles:
        assert n in msg, msg


def test_unknown_space_name_and_missing_file():
    with pytest.raises(CommtuneError, match="unknown search space 'horovd'.*did you mean 'horovod'"):
        load_space("horovd")
    with pytest.raises(CommtuneError, match="cannot read search space file"):
        load_space("/nonexistent/space.yaml")


def test_spaces_are_package_data():
    text = open("pyproject.toml").read()
    assert "search_spaces" in text
    from importlib import resources

    assert resources.files("search_spaces").joinpath("default.yaml").is_file()


def test_sharded_spaces():
    from commtune.knobs import FSDP2_DEFAULT, ZERO3_DEFAULT

    fsdp, hsdp, zero = load_space("fsdp"), load_space("hsdp"), load_space("zero")
    assert fsdp.base.sharding == "full" and hsdp.base.sharding == "hybrid"
    assert fsdp.base.forward_prefetch == FSDP2_DEFAULT.forward_prefetch and zero.base.unit_bytes == ZERO3_DEFAULT.unit_bytes
    params = {p.name: p for p in fsdp.params}
    assert params["unit_bytes"].choices[0] == 0 and params["unit_bytes"].choices[-1] == 4 * 2**30
    assert params["reshard_after_forward"].choices == (True, False)
    assert params["backward_prefetch"].grid_values() == [0, 1, 2, 3, 4]
    assert fsdp.grid_size() == 10 * 4 * 5 * 2 * 2
    assert {p.name: p for p in hsdp.params}["shard_group_size"].choices == (0, 2, 4, 16)
    assert {p.name: p for p in zero.params}["sharding"].choices == ("grad", "full")
    rows = zero.grid_rows()
    arrays = zero.knob_arrays(rows)
    assert len(rows) == 2 * 9 * 5 * 2 and arrays.reshard_after_forward.dtype.kind == "i"
    # sharded spaces get their own study identity; all-reduce spaces keep theirs (sharded knobs left out)
    assert len({s.fingerprint() for s in (fsdp, hsdp, zero, load_space("default"))}) == 4


def test_sharded_space_grammar(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("base: zero2_default\nknobs:\n  reshard_after_forward: {choices: [true, 8]}\n  sharding: full\n")
    s = load_space(str(f))
    assert s.base.sharding == "full" and s.params[0].choices == (True, 8)
    f.write_text("knobs:\n  sharding: full\n  reshard_after_forward: {low: 2, high: 8}\n")
    with pytest.raises(CommtuneError, match="reshard_after_forward: a bool_or_int knob takes choices"):
        load_space(str(f))
    f.write_text("base: fsdp3_default\nknobs:\n  num_streams: 2\n")
    with pytest.raises(CommtuneError, match="unknown base 'fsdp3_default'.*fsdp2_default"):
        load_space(str(f))
    f.write_text("knobs:\n  forward_prefetch: {low: 0, high: 4}\n")
    with pytest.raises(CommtuneError, match="forward_prefetch: only matters when sharding is grad/full/hybrid"):
        load_space(str(f))


def test_space_sharding_checked_against_the_cluster():
    from commtune.cluster import ClusterSpec
    from commtune.sharding_checks import check_space_sharding

    check_space_sharding(load_space("hsdp"), ClusterSpec(nodes=16, gpus_per_node=8))
    check_space_sharding(load_space("default"), ClusterSpec(nodes=1, gpus_per_node=1))
    with pytest.raises(CommtuneError, match="search space 'hsdp': shard_group_size 16 does not divide the world size 8"):
        check_space_sharding(load_space("hsdp"), ClusterSpec(nodes=1, gpus_per_node=8))
