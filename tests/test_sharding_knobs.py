"""The sharded-data-parallelism knobs and the unit grouping they rely on."""
import pytest

from commtune.errors import CommtuneError
from commtune.knobs import DDP_DEFAULT, FSDP2_DEFAULT, KNOBS, SHARDING_KNOBS, Knobs
from commtune.models.base import GradTensor, Layer, ModelProfile
from commtune.models.units import group_units


def test_defaults_are_all_reduce_and_inactive():
    k = Knobs()
    assert k.sharding == "none"
    assert set(k.active()) & set(SHARDING_KNOBS) == {"sharding"}
    assert set(k.identity()) == set(KNOBS) - set(SHARDING_KNOBS)
    assert DDP_DEFAULT.identity() == {n: v for n, v in DDP_DEFAULT.to_dict().items() if n not in SHARDING_KNOBS}


def test_sharded_knobs_apply_by_sharding():
    full = set(FSDP2_DEFAULT.active())
    assert {"unit_bytes", "forward_prefetch", "backward_prefetch", "reshard_after_forward", "reduce_precision"} <= full
    assert "shard_group_size" not in full
    assert "shard_group_size" in Knobs(sharding="hybrid").active()
    grad = set(Knobs(sharding="grad").active())
    assert "backward_prefetch" not in grad and "reshard_after_forward" not in grad and "unit_bytes" in grad
    assert "sharding" in FSDP2_DEFAULT.identity()


@pytest.mark.parametrize("text,value", [("true", True), ("false", False), ("8", 8), (1, True), (0, False), (4.0, 4)])
def test_reshard_after_forward_takes_bool_or_int(text, value):
    v = KNOBS["reshard_after_forward"].parse(text)
    assert v == value and type(v) is type(value)


@pytest.mark.parametrize("bad", ["maybe", "65", "-3", 2.5])
def test_reshard_after_forward_rejects(bad):
    with pytest.raises(CommtuneError, match="reshard_after_forward"):
        KNOBS["reshard_after_forward"].parse(bad)


def test_prefetch_bounds():
    with pytest.raises(CommtuneError, match=r"out of range; give an integer in \[0 units, 4 units\]"):
        Knobs(sharding="full", forward_prefetch=5)


def _model(blocks):
    layers = []
    for i, (n, block) in enumerate(blocks):
        layers.append(Layer(f"l{i}", (GradTensor(f"w{i}", n),) if n else (), block=block))
    return ModelProfile("m", tuple(layers))


def test_units_by_block_with_root():
    m = _model([(10, None), (5, "b0"), (0, "b0"), (7, "b1"), (3, None)])
    units = group_units(m, 0)
    assert [(u.name, u.layers, u.numel) for u in units] == [("root", (0, 4), 13), ("b0", (1, 2), 5), ("b1", (3,), 7)]


def test_units_per_layer_without_blocks():
    m = _model([(0, None), (4, None), (0, None), (6, None), (0, None)])
    assert [(u.layers, u.numel) for u in group_units(m, 0)] == [((0, 1), 4), ((2, 3, 4), 6)]


def test_units_greedy_in_ready_order():
    m = _model([(3, None), (3, None), (2, None), (10, None), (1, None)])
    # ready order: l4 (1), l3 (10), l2 (2), l1 (3), l0 (3); cap 6 elements = 24 bytes
    units = group_units(m, 24)
    assert [(u.layers, u.numel) for u in units] == [((0,), 3), ((1, 2), 5), ((3,), 10), ((4,), 1)]
    assert sum(u.numel for u in units) == m.num_params
    one = group_units(m, 2**36)
    assert len(one) == 1 and one[0].layers == (0, 1, 2, 3, 4)


def test_all_reduce_knobs_only_matter_without_sharding():
    ar = {"fusion_policy", "fusion_threshold_bytes", "first_bucket_bytes", "cycle_time_ms", "num_streams",
          "stream_mode", "negotiation", "hierarchical", "wire_precision"}
    assert ar <= set(Knobs(fusion_policy="dynamic").active()) | {"first_bucket_bytes"}
    assert not ar & set(FSDP2_DEFAULT.active())  # children of inactive parents are inactive too
    assert list(KNOBS)[0] == "sharding"  # parents before children


def test_cap_prefetch_is_the_same_step():
    from commtune.cluster import preset
    from commtune.scenario import Scenario
    from commtune.sharding_checks import cap_prefetch, check_sharding

    m = _model([(10, None), (5, "b0"), (0, "b0"), (7, "b1"), (3, None)])  # 3 units: root, b0, b1
    deep = Knobs(sharding="full", forward_prefetch=4, backward_prefetch=3)
    capped = cap_prefetch(deep, m)
    assert (capped.forward_prefetch, capped.backward_prefetch) == (2, 2)
    assert cap_prefetch(Knobs(), m) == Knobs()
    sc = Scenario(m, preset("vpc-32gbit", nodes=2, gpus_per_node=2), batch_size=1)
    assert sc.simulator.run(deep).step_time_s == sc.simulator.run(capped).step_time_s
    check_sharding(capped, m, sc.cluster)  # what a search writes, export and the runtime accept
    with pytest.raises(CommtuneError, match="forward_prefetch 4"):
        check_sharding(deep, m, sc.cluster)
