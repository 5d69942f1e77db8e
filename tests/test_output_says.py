"""What the output says is what the figure is (issue 28 §6): labelled compute terms, framework
costs apart from communication, why a first bucket passes the cap, what plain DDP cannot apply,
one curve per study, one meaning of a bandwidth, and a --help for users."""
from __future__ import annotations

import csv
import re

import pytest

from commtune.cli import main
from commtune.knobs import Knobs
from commtune.units import MiB

SIM = ["simulate", "--model", "resnet50", "--bw", "32gbit"]
TIME = r"([\d.]+) (ms|µs)"


def _ms(text: str) -> float:
    value, unit = re.fullmatch(TIME, text).groups()
    return float(value) * (1e-3 if unit == "µs" else 1.0)


def _rows(out: str) -> dict[str, str]:
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"^  (\S[\w ()]*?)\s{2,}(.+)$", out, re.M)}


def test_simulate_labels_each_compute_term_and_they_add_up(capsys):
    assert main([*SIM, "--nodes", "4"]) == 0
    rows = _rows(capsys.readouterr().out)
    m = re.fullmatch(rf"{TIME} = forward {TIME} \+ backward {TIME} \+ optimizer {TIME}", rows["compute (one GPU)"])
    assert m, rows["compute (one GPU)"]
    total, *parts = (_ms(f"{m.group(i)} {m.group(i + 1)}") for i in (1, 3, 5, 7))
    assert parts[2] > 0 and total == pytest.approx(sum(parts), rel=2e-3)  # the optimizer is named, not hidden
    step = _ms(rows["step time"].split(" = ")[0])
    exposed, framework = (_ms(rows[k].split(" (")[0]) for k in ("exposed communication", "framework costs"))
    assert step == pytest.approx(total + exposed + framework, rel=2e-3)


def test_one_gpu_says_there_is_no_network(capsys):
    assert main([*SIM, "--nodes", "1", "--gpus-per-node", "1"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "no network" in rows["communication busy"] and "no network" in rows["framework costs"]
    assert "no network" in rows["exposed communication"]
    assert _ms(rows["framework costs"].split(" (")[0]) > 0


def test_first_bucket_over_the_cap_says_why(capsys):
    knobs = ["--fusion-policy", "static", "--fusion", "14.27MiB", "--first-bucket", "42.67MiB"]
    assert main([*SIM, *knobs]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("fused buffers"))
    why = lines[at + 1]
    assert re.search(r"first bucket [\d.]+ MiB > bucket cap 14.27 MiB", why), why
    assert "first_bucket_bytes 42.67 MiB" in why and "whole tensors" in why
    assert main([*SIM, "--fusion-policy", "static", "--fusion", "25MiB", "--first-bucket", "1MiB"]) == 0
    assert "bucket cap" not in capsys.readouterr().out  # nothing to explain


def test_notes_name_what_plain_ddp_cannot_apply():
    from commtune.cli.notes import first_bucket_note
    from commtune.runtime.ddp_plan import runtime_only

    k = Knobs(fusion_policy="static", fusion_threshold_bytes=14 * MiB, first_bucket_bytes=42 * MiB, num_streams=6)
    (line,) = runtime_only(k)
    assert "num_streams=6" in line and "commtune.runtime.wrap" in line and "plain DDP" in line
    assert runtime_only(Knobs(num_streams=1)) == []
    assert "first_bucket_bytes 42 MiB > bucket cap 14 MiB" in first_bucket_note(k)
    assert first_bucket_note(Knobs(fusion_policy="dynamic", first_bucket_bytes=42 * MiB)) is None


def test_search_says_streams_need_the_runtime(tmp_path, capsys):
    space = tmp_path / "k6.yaml"
    space.write_text("base: ddp_default\nknobs:\n  fusion_policy: static\n  num_streams: 6\n"
                     "  fusion_threshold_bytes: {low: 1MiB, high: 64MiB, log: true}\n")
    assert main(["search", "--model", "resnet50", "--bw", "32gbit", "--space", str(space), "--trials", "4",
                 "--screen", "16", "--storage", "memory", "--no-profile"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"note: num_streams=6 .*only commtune\.runtime\.wrap applies it", out), out


def test_history_keeps_unrelated_studies_apart(tmp_path):
    optuna = pytest.importorskip("optuna")
    from commtune.plots.history import histories_from_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 's.db'}"
    for name, offset in (("resnet50-a", 0.1), ("bert-b", 5.0)):  # same sampler, unrelated studies
        st = optuna.create_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=0))
        st.set_user_attr("sampler", "tpe")
        st.optimize(lambda t, o=offset: t.suggest_float("x", 0, 1) + o, n_trials=3)
    runs = histories_from_storage(url, [])
    assert sorted(runs) == ["bert-b (tpe)", "resnet50-a (tpe)"] and all(len(r) == 1 for r in runs.values())
    assert list(histories_from_storage(url, ["bert-b"])) == ["bert-b (tpe)"]


def test_sweep_bandwidth_means_what_search_bw_means(tmp_path):
    out, table = tmp_path / "s.png", tmp_path / "s.csv"
    base = ["plot", "sweep", "--model", "resnet50", "--nodes", "2", "--bws", "32gbit,100gbit", "--space", "ddp",
            "--grid-points", "3", "--csv", str(table), "-o", str(out)]
    assert main(base) == 0
    rows = list(csv.DictReader(table.open()))
    from commtune.cluster import make_cluster

    assert [r["cluster"] for r in rows] == [make_cluster(bw=b).name for b in ("32gbit", "100gbit")]
    assert rows[0]["cluster"] != rows[1]["cluster"]  # each rate picks its preset, as `search --bw`
    assert main([*base, "--cluster", "vpc-32gbit"]) == 0
    rows = list(csv.DictReader(table.open()))
    assert {r["cluster"] for r in rows} == {"vpc-32gbit"} and {r["per_stream_gbit"] for r in rows} == {"10.0"}


def test_help_opens_with_what_commtune_does(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    intro = out.split("\n\n")[1]
    assert intro.startswith("commtune auto-tunes the communication knobs of data-parallel training")
    assert "commtune search --model resnet50 --bw 32gbit" in out and "one module per sub-command" not in out
