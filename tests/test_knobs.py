import pytest

from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, HOROVOD_DEFAULT, KNOBS, Knobs


def test_registry_defaults_build_knobs():
    k = Knobs()
    for name, knob in KNOBS.items():
        assert getattr(k, name) == knob.default


def test_baselines_match_upstream_defaults():
    assert DDP_DEFAULT.fusion_threshold_bytes == 25 * 2**20
    assert DDP_DEFAULT.first_bucket_bytes == 2**20
    assert HOROVOD_DEFAULT.fusion_threshold_bytes == 128 * 2**20
    assert HOROVOD_DEFAULT.cycle_time_ms == 1.0
    assert HOROVOD_DEFAULT.negotiation == "central"
    assert HOROVOD_DEFAULT.stream_mode == "round_robin" and DDP_DEFAULT.stream_mode == "split"


@pytest.mark.parametrize("values,match", [
    ({"num_streams": 0}, "num_streams"), ({"negotiation": "p2p"}, "central"),
    ({"fusion_threshold_bytes": "-1MB"}, "size"), ({"cycle_time_ms": "fast"}, "number"),
    ({"bogus": 1}, "unknown knob"),
])
def test_bad_knob_values(values, match):
    with pytest.raises(CommtuneError, match=match):
        Knobs.from_dict(values)


def test_sizes_accept_strings_and_integral_floats():
    assert Knobs(fusion_threshold_bytes="64MiB").fusion_threshold_bytes == 64 * 2**20
    assert Knobs(fusion_threshold_bytes=2.5e7).fusion_threshold_bytes == 25_000_000


def test_active_applies_conditions():
    assert "cycle_time_ms" not in DDP_DEFAULT.active()
    assert "first_bucket_bytes" in DDP_DEFAULT.active()
    assert "first_bucket_bytes" not in HOROVOD_DEFAULT.active()


def test_stream_mode_is_one_registry_knob():
    from commtune.runtime.hooks import STREAM_MODES
    from commtune.runtime.tuner import DEFAULT_SPACE, parse_space

    knob = KNOBS["stream_mode"]
    assert knob.flag == "--stream-mode" and knob.choices == ("split", "round_robin") and knob.default == "split"
    assert STREAM_MODES == knob.choices and DEFAULT_SPACE["stream_mode"] == list(knob.choices)
    with pytest.raises(CommtuneError, match="knob stream_mode: 'zigzag' is not one of split, round_robin"):
        Knobs(stream_mode="zigzag")
    with pytest.raises(CommtuneError, match="stream_mode"):
        parse_space({"stream_mode": ["split", "zigzag"]})


def test_profiles_carry_stream_mode_and_old_ones_load(tmp_path):
    import json

    from conftest import make_profile

    from commtune.profiles import load_profile, save_profile

    path = save_profile(make_profile(num_streams=2, stream_mode="round_robin"), tmp_path / "p.json")
    d = json.loads(path.read_text())
    assert d["knobs"]["stream_mode"] == "round_robin" and load_profile(path).knobs.stream_mode == "round_robin"
    del d["knobs"]["stream_mode"]  # written before stream_mode was a knob
    path.write_text(json.dumps(d))
    assert load_profile(path).knobs.stream_mode == "split"
    d["provenance"]["stream_mode"] = "round_robin"  # the AutoTuner kept it in the provenance
    path.write_text(json.dumps(d))
    assert load_profile(path).knobs.stream_mode == "round_robin"
