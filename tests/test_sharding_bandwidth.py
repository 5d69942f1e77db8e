"""experiments/sharding_bandwidth.py: the scenario, the sweep's rows on two bandwidths, the claim and bad input."""
from __future__ import annotations

import math

import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def sb():
    return load_experiment("sharding_bandwidth")


@pytest.fixture(scope="module")
def rows(sb, tmp_path_factory):
    storage = f"sqlite:///{tmp_path_factory.mktemp('sb')}/studies.db"
    return sb.sweep(["10gbit", "400gbit"], trials=4, seed=0, storage=storage, screen=64)


def test_scenario_changes_only_the_link_rate(sb):
    slow, fast = sb.make_scenario("10gbit"), sb.make_scenario("400gbit")
    assert slow.cluster.inter_bw_Bps * 40 == pytest.approx(fast.cluster.inter_bw_Bps)
    for c in (slow.cluster, fast.cluster):
        assert (c.nodes, c.gpus_per_node, c.device) == (16, 8, "H100")
        assert math.isinf(c.per_stream_Bps)
    for field in ("intra_bw_Bps", "intra_latency_s", "inter_latency_s"):
        assert getattr(slow.cluster, field) == getattr(fast.cluster, field), field
    assert (slow.batch_size, slow.precision, slow.model.name) == (2, "bf16", "llama3-8b")


def test_hsdp_default_is_fsdp2_on_the_node(sb):
    from commtune.knobs import FSDP2_DEFAULT

    k = sb.DEFAULTS["hybrid"]
    assert k.sharding == "hybrid" and k.shard_group_size == 0
    assert {n: v for n, v in k.active().items() if n not in ("sharding", "shard_group_size")} == \
        {n: v for n, v in FSDP2_DEFAULT.active().items() if n != "sharding"}


def test_sweep_rows(sb, rows):
    assert [(r["bw"], r["sharding"]) for r in rows] == [(bw, s) for bw in ("10gbit", "400gbit") for s in sb.SHARDINGS]
    for r in rows:
        d, t = r["default"], r["tuned"]
        limit = sb.make_scenario(r["bw"]).memory_limit_bytes()
        assert d["fits"] == (d["peak_memory_bytes"] <= limit)
        if t["fits"]:
            assert t["peak_memory_bytes"] <= limit and t["knobs"]["sharding"] == r["sharding"]
            assert math.isfinite(t["step_time_s"]) and t["trials"] == 4
        else:
            assert t["step_time_s"] is None and r["gain"] is None
    ddp = [r for r in rows if r["sharding"] == "none"]
    # an 8B model with Adam holds 16 bytes per parameter unsharded: more than an H100 has
    assert all(not r["default"]["fits"] and not r["tuned"]["fits"] for r in ddp)
    assert all(r["tuned"]["fits"] for r in rows if r["sharding"] != "none")
    # a slower link cannot make a configuration faster
    for s in ("grad", "full", "hybrid"):
        slow, fast = (next(r for r in rows if r["sharding"] == s and r["bw"] == bw) for bw in ("10gbit", "400gbit"))
        assert slow["default"]["step_time_s"] > fast["default"]["step_time_s"]


def test_winners_and_claim(sb, rows):
    tuned = sb.winners(rows, "tuned")
    for bw, names in tuned.items():
        best = min(r["tuned"]["step_time_s"] for r in rows if r["bw"] == bw and r["tuned"]["fits"])
        fastest = next(r["sharding"] for r in rows if r["bw"] == bw and r["tuned"]["step_time_s"] == best)
        assert fastest in names and "none" not in names
        assert list(names) == [s for s in sb.SHARDINGS if s in names]
    text = "\n".join(sb.claim(rows))
    assert "DDP: no configuration fits" in text and "Best tuned" in text
    assert sb.table(rows).count("\n") == len(rows) + 1


def test_winners_ties_and_nothing_fits(sb):
    def row(bw, s, step, fits=True):
        return {"bw": bw, "sharding": s, "tuned": {"step_time_s": step, "fits": fits}}

    rows = [row("10gbit", "grad", 1.005), row("10gbit", "full", 1.0), row("10gbit", "hybrid", 1.2),
            row("25gbit", "full", None, False)]
    assert sb.winners(rows, "tuned") == {"10gbit": ("grad", "full"), "25gbit": ()}
    assert sb._ranges(sb.winners(rows, "tuned")) == "ZeRO-2 / FSDP at 10 Gbit/s; nothing fits at 25 Gbit/s"


@pytest.mark.parametrize("argv, words", [
    (["--trials", "0"], "--trials 0"),
    (["--bandwidths", "10gbit,"], "--bandwidths"),
    (["--bandwidths", "fast"], "fast"),
    (["--bandwidths", "10gbit,10gbit"], "twice"),
    (["--bandwidths", ",".join(f"{i}gbit" for i in range(1, 14))], "at most 12"),
])
def test_bad_input_is_one_line_exit_2(sb, argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COMMTUNE_RESULTS", str(tmp_path))
    assert sb.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sharding_bandwidth: ") and words in err and "\n" not in err
    assert not list(tmp_path.iterdir())
