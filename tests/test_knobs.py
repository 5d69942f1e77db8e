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
