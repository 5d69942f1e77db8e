"""`commtune plot`: every kind writes a non-empty image; bad input is one line, exit 2."""
from __future__ import annotations

import json

import pytest

from commtune.cli import main as run_cli

SCEN = ["--model", "resnet50", "--cluster", "vpc-32gbit", "--nodes", "4"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


@pytest.fixture
def bench_json(tmp_path):
    p = tmp_path / "bench.json"
    p.write_text(json.dumps({
        "samplers": {"random": {"histories": [[0.3, 0.25, 0.28, 0.2], [0.4, 0.22, 0.21, 0.21]]},
                     "tpe": [[0.3, 0.2, 0.15, 0.14]]},
        "baselines": {"horovod_default": 0.41}, "lower_bound_s": 0.06,
    }))
    return p


def test_heatmap_png(tmp_path, capsys):
    out = tmp_path / "h.png"
    assert run_cli(["plot", "heatmap", *SCEN, "--points", "9", "--max-streams", "3", "-o", str(out)]) == 0
    _png_ok(out)


def test_timeline_svg(tmp_path):
    out = tmp_path / "t.svg"
    assert run_cli(["plot", "timeline", *SCEN, "--streams", "2", "--fusion", "16MiB", "-o", str(out)]) == 0
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_sweep_png_and_csv(tmp_path):
    out, csv = tmp_path / "s.png", tmp_path / "s.csv"
    assert run_cli(["plot", "sweep", *SCEN, "--bws", "10gbit,100gbit", "--space", "ddp", "--csv", str(csv),
                    "-o", str(out)]) == 0
    _png_ok(out)
    lines = csv.read_text().splitlines()
    assert len(lines) == 3 and "tuned_step_s" in lines[0]


def test_sweep_horovod_space_keeps_fp32_wire(tmp_path):
    out, csv = tmp_path / "s.png", tmp_path / "s.csv"
    assert run_cli(["plot", "sweep", *SCEN, "--bws", "10gbit,100gbit", "--space", "horovod", "--grid-points", "4",
                    "--csv", str(csv), "-o", str(out)]) == 0
    _png_ok(out)
    text = csv.read_text()
    assert "fp16" not in text and "dynamic" in text  # search_spaces/horovod.yaml does not search the wire precision


def test_history_from_json(tmp_path, bench_json):
    out = tmp_path / "hist.png"
    assert run_cli(["plot", "history", str(bench_json), "-o", str(out)]) == 0
    _png_ok(out)


def test_history_from_optuna_storage(tmp_path):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 's.db'}"
    for name, sampler in (("rs", optuna.samplers.RandomSampler(seed=0)), ("tpe", optuna.samplers.TPESampler(seed=0))):
        st = optuna.create_study(study_name=name, storage=url, sampler=sampler)
        st.set_user_attr("sampler", name)
        st.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2 + 0.1, n_trials=6)
    out = tmp_path / "h.png"
    assert run_cli(["plot", "history", "--storage", url, "-o", str(out)]) == 0
    _png_ok(out)


def test_fidelity_csv_and_json(tmp_path):
    csv = tmp_path / "f.csv"
    csv.write_text("label,predicted_ms,measured_ms\na,100,105\nb,200,190\nc,300,320\n")
    out = tmp_path / "f.png"
    assert run_cli(["plot", "fidelity", str(csv), "--annotate", "-o", str(out)]) == 0
    _png_ok(out)
    js = tmp_path / "f.json"
    js.write_text(json.dumps({"points": [{"predicted": 0.1, "measured": 0.11}, {"predicted": 0.2, "measured": 0.19}]}))
    assert run_cli(["plot", "fidelity", str(js), "-o", str(tmp_path / "g.png")]) == 0


@pytest.mark.parametrize("argv, needle", [
    (["plot", "heatmap", "--model", "resnet50", "-o", "x.jpg"], "image format"),
    (["plot", "heatmap", "--model", "nosuchmodel", "-o", "{tmp}/x.png"], "nosuchmodel"),
    (["plot", "heatmap", "--model", "resnet50", "--fusion", "lots", "-o", "{tmp}/x.png"], "--fusion"),
    (["plot", "heatmap", "--model", "resnet50", "--points", "1", "-o", "{tmp}/x.png"], "--points"),
    (["plot", "sweep", "--model", "resnet50", "--bws", "10gbit", "-o", "{tmp}/x.png"], "at least two"),
    (["plot", "sweep", "--model", "resnet50", "--bws", "10gbit,fast", "-o", "{tmp}/x.png"], "--bws"),
    (["plot", "sweep", "--model", "resnet50", "--bws", "10gbit,25gbit", "--space", "horovd", "-o", "{tmp}/x.png"],
     "unknown search space"),
    (["plot", "sweep", "--model", "resnet50", "--bws", "10gbit,25gbit", "--grid-points", "1", "-o", "{tmp}/x.png"],
     "--grid-points"),
    (["plot", "history", "{tmp}/missing.json", "-o", "{tmp}/x.png"], "cannot read"),
    (["plot", "history", "{tmp}/bad.json", "-o", "{tmp}/x.png"], "not valid JSON"),
    (["plot", "history", "-o", "{tmp}/x.png"], "either a JSON file or --storage"),
    (["plot", "history", "--storage", "{tmp}/none.db", "-o", "{tmp}/x.png"], "does not exist"),
    (["plot", "fidelity", "{tmp}/bad.csv", "-o", "{tmp}/x.png"], "no 'measured' value"),
    (["plot", "fidelity", "{tmp}/neg.csv", "-o", "{tmp}/x.png"], "positive time"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.csv").write_text("predicted,other\n1,2\n")
    (tmp_path / "neg.csv").write_text("predicted,measured\n1,-2\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_unknown_kind_is_usage_error(capsys):
    assert run_cli(["plot", "pie", "-o", "x.png"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_fidelity_stats_rank_ties_like_validate():
    """Tied predictions share their mean rank, the same Spearman `commtune validate` reports."""
    import math

    from commtune.plots.fidelity import error_stats
    from commtune.validation import compare

    pred, meas = [1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]
    st = error_stats([{"predicted_s": p, "measured_s": m} for p, m in zip(pred, meas)])
    assert st["spearman"] == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))  # ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4)
    assert st["spearman"] == compare(pred, meas)["spearman"]
