"""`commtune validate --sharding`: the held-out FSDP2 draw, --configs, the report of sharded rows
(fast), and a tiny sharded validation on 2 local gloo ranks (slow; behaviour only, no timings)."""
from __future__ import annotations

import re

import pytest

from commtune.errors import CommtuneError
from commtune.knobs import FSDP2_DEFAULT
from commtune.models.units import group_units
from commtune.runtime.synthetic import synthetic_profile
from commtune.validation import (describe_knobs, fidelity_points, format_report, held_out_sharded,
                                 parse_sharded_configs)

MiB = 2**20


@pytest.fixture(scope="module")
def gpt2():
    return synthetic_profile("gpt2", 0.02, 0.1, 0.2)


def test_held_out_sharded_draw_stays_within_the_units_and_varies_every_knob(gpt2):
    configs = held_out_sharded(gpt2, 12, seed=3)
    assert len(configs) == 12 and all(k.sharding == "full" for k in configs)
    total = sum(t.numel for la in gpt2.layers for t in la.tensors) * 4
    assert [k.unit_bytes for k in configs[::4]] == [0, 0, 0]  # every fourth: one unit per block
    caps = [k.unit_bytes for i, k in enumerate(configs) if i % 4]
    assert all(total / 32 <= c <= total for c in caps) and len(set(caps)) == len(caps)
    for k in configs:
        most = max(1, len(group_units(gpt2, k.unit_bytes)) - 1)
        assert 1 <= k.forward_prefetch <= min(4, most) and 0 <= k.backward_prefetch <= min(4, most)
    assert {k.reshard_after_forward for k in configs} == {True, False}
    assert {k.reduce_precision for k in configs} == {"fp32", "bf16"}
    assert held_out_sharded(gpt2, 12, seed=3) == configs and held_out_sharded(gpt2, 12, seed=4) != configs
    mixed = held_out_sharded(gpt2, 4, seed=0, shardings=("grad", "hybrid"), shard_group_size=2)
    assert [k.sharding for k in mixed] == ["grad", "hybrid", "grad", "hybrid"]
    assert all(k.shard_group_size == 2 for k in mixed[1::2])
    assert all(k.reshard_after_forward is True and k.backward_prefetch == 1 for k in mixed[::2])  # inactive: defaults


def test_held_out_sharded_refuses_more_than_the_model_has(gpt2):
    from commtune.models.base import GradTensor, Layer, ModelProfile

    one = ModelProfile("one", (Layer("l", (GradTensor("w", 100),), fwd_time_s=0.01, bwd_time_s=0.02),),
                       measured_batch_size=1)
    with pytest.raises(CommtuneError, match="one has only .* distinct sharded configurations"):
        held_out_sharded(one, 12)


def test_parse_sharded_configs():
    a, b = parse_sharded_configs("0:1:1, 4MiB:2:0:keep:bf16")
    assert a == FSDP2_DEFAULT
    assert (b.unit_bytes, b.forward_prefetch, b.backward_prefetch, b.reshard_after_forward, b.reduce_precision) == (
        4 * MiB, 2, 0, False, "bf16")
    (g,) = parse_sharded_configs("1MiB:2", "grad")
    assert g.sharding == "grad" and g.forward_prefetch == 2
    assert describe_knobs(b) == "full, unit 4 MiB, prefetch 2/0, keep, bf16 reduce"
    assert describe_knobs(a) == "full, unit per block, prefetch 1/1" and describe_knobs(g) == "grad, unit 1 MiB, prefetch 2"
    for bad, needle in [("4MiB", "UNIT:FWD"), ("4MiB:x", "integers"), ("4MiB:9", "0-4"), ("4MiB:1:1:drop", "reshard or keep"),
                        ("4MiB:1:1:keep:fp16", "fp32 or bf16"), ("", "empty"), ("4QB:1", "unit")]:
        with pytest.raises(CommtuneError, match=needle):
            parse_sharded_configs(bad)


def _row(config, measured, predicted, knobs, units=(4, 4)):
    return {"config": config, "knobs": knobs.to_dict(), "measured_s": measured, "predicted_s": predicted,
            "error": predicted / measured - 1, "spread": 0.01, "pass_spread": 0.0, "live_units": units[0],
            "sim_units": units[1], "extrapolation": []}


def test_report_of_sharded_rows_gives_mape_worst_and_pick_as_for_ddp():
    from commtune.validation import compare

    a, b = parse_sharded_configs("0:1:1,4MiB:2:0:keep")
    rows = [_row(describe_knobs(a), 0.50, 0.52, a), _row(describe_knobs(b), 0.40, 0.38, b, units=(3, 2))]
    res = {"rows": rows, "summary": compare([0.52, 0.38], [0.50, 0.40], [0.01, 0.01], [0.0, 0.0])}
    s = res["summary"]
    assert s["mape"] == pytest.approx((0.04 + 0.05) / 2) and s["worst_index"] == 1
    assert s["sim_best"] == s["live_best"] == 1 and s["pick_gap"] == 0.0
    text = format_report(res)
    assert "full, unit 4 MiB, prefetch 2/0, keep" in text and "MAPE 4.50%, worst 5.00%" in text
    assert text.count("UNITS live") == 1 and "UNITS live 3 / simulated 2" in text  # the mirror's units disagreed
    assert [p["group"] for p in fidelity_points(res)] == ["full, reshard", "full, keep"]


def test_predictions_of_sharded_configurations_use_the_sharded_timeline(gpt2):
    """The same simulator validate builds: sharded rows are per-unit collectives, and the knobs move them."""
    from commtune.cluster import ClusterSpec
    from commtune.runtime.synthetic import sim_workload
    from commtune.validation import sim_cluster
    from simulators import Simulator

    sim = Simulator(sim_workload(gpt2), sim_cluster(ClusterSpec(nodes=1, gpus_per_node=1, inter_bw_Bps=62.5e6), 3, 3))
    a, b = parse_sharded_configs("0:1:1,0:1:1:keep")
    ra, rb = sim.run(a), sim.run(b)
    assert ra.num_buffers == len(group_units(gpt2, 0)) and ra.collectives
    assert rb.step_time_s < ra.step_time_s  # no re-gather in backward


@pytest.mark.parametrize("argv, needle", [
    (["--sharding", "zero3"], "none or a comma list of grad, full, hybrid"),
    (["--sharding", "full", "--buckets", "1MiB"], "--buckets sets DDP's buckets"),
    (["--sharding", "full", "--mode", "split"], "--mode sets DDP's"),
    (["--shard-group-size", "2"], "applies to --sharding hybrid"),
    (["--sharding", "hybrid", "--shard-group-size", "x"], "shard_group_size: 'x' is not an integer"),
    (["--sharding", "full,grad", "--configs", "0:1"], "one sharding per run"),
    (["--sharding", "full", "--configs", "0:1,1GiB:2:1"], "forward_prefetch 2: .* 1 sharding unit.* at most 1"),
    (["--sharding", "hybrid", "--shard-group-size", "3", "--configs", "0:1,0:2"], "does not divide the world size 2"),
    (["--sharding", "full", "--held-out", "100000000"], "held-out"),
])
def test_bad_sharded_validate_flags_one_line_exit_2(argv, needle, capsys, tmp_path):
    from commtune.cli import main

    calib = tmp_path / "calib.yaml"
    calib.write_text("inter_bw: 1gbit\nnodes: 2\ngpus_per_node: 1\n")
    plot = tmp_path / "v.png"
    rc = main(["validate", "--cluster", str(calib), "--ranks", "2", "--model", "gpt2", "--scale", "0.0005",
               "--plot", str(plot), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(needle, err), err
    assert not plot.exists()


@pytest.mark.slow
def test_sharded_validate_on_two_local_ranks(tmp_path, monkeypatch, capsys):
    """A tiny held-out sharded validation end to end: FSDP2 steps measured on 2 gloo ranks, the sharded
    timeline's predictions beside them, the report and the plot (behaviour only: no timing asserted)."""
    import json

    from commtune.cli import main
    from commtune.probe.probe import calibration, write_calibration

    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    recs = [{"streams": k, "size_bytes": s, "count": s // 4, "time_s": 2e-4 + s / 1e9}
            for k in (1, 2) for s in (2**16, 2**20, 2**22)]
    spec, extra = calibration({"world_size": 2, "engine": "gloo", "records": recs}, hosts=1)
    calib = tmp_path / "calib.yaml"
    write_calibration(str(calib), spec, extra)
    png = tmp_path / "v.png"
    args = ["validate", "--cluster", str(calib), "--ranks", "2", "--model", "gpt2", "--scale", "0.002",
            "--forward-ms", "20", "--backward-ms", "40", "--sharding", "full", "--held-out", "3", "--steps", "2",
            "--warmup", "1", "--passes", "1", "--no-drift-check", "--plot", str(png), "--timeout", "120"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 held-out sharded configurations" in out and "MAPE" in out and "simulator's pick" in out
    assert "full, unit per block" in out and "UNITS" not in out  # live and simulated units agree
    assert png.exists() and png.stat().st_size > 1000
    assert main(args[:-4] + ["--configs", "0:1:1,0:1:0:keep", "--json", "--plot", ""]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["config"] for r in res["rows"]] == ["full, unit per block, prefetch 1/1", "full, unit per block, prefetch 1/0, keep"]
    assert all(r["measured_s"] > 0 and r["predicted_s"] > 0 and r["live_units"] == r["sim_units"] for r in res["rows"])
    assert set(res["summary"]) >= {"mape", "worst", "pick_gap", "sim_best", "live_best"}
