"""`commtune simulate` / `presets`: output schema and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from commtune.cli import main

KEYS = {"step_time_s", "compute_time_s", "comm_time_s", "exposed_comm_s", "scaling_efficiency",
        "samples_per_s", "num_buffers"}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_json_has_the_metrics(capsys):
    code, out, _ = run(capsys, "simulate", "--model", "resnet50", "--bw", "32gbit", "--nodes", "16",
                       "--gpus-per-node", "8", "--fusion", "64MB", "--cycle-ms", "5", "--streams", "2", "--json")
    assert code == 0
    d = json.loads(out)
    assert KEYS <= d.keys()
    assert d["knobs"]["fusion_threshold_bytes"] == 64_000_000 and d["knobs"]["num_streams"] == 2
    assert d["cluster"]["per_stream_Bps"] == pytest.approx(1.25e9)  # the 32 Gbit/s VPC preset's cap
    assert d["step_time_s"] >= d["compute_time_s"] > 0


def test_flags_change_the_result(capsys):
    base = ["simulate", "--model", "resnet50", "--bw", "32gbit", "--json"]
    one = json.loads(run(capsys, *base)[1])
    tuned = json.loads(run(capsys, *base, "--streams", "4", "--hierarchical", "--negotiation", "decentralized",
                           "--wire-precision", "fp16")[1])
    assert tuned["step_time_s"] < one["step_time_s"]
    flat = json.loads(run(capsys, *base, "--flat")[1])
    assert flat["knobs"]["hierarchical"] is False


def test_trace_is_chrome_trace_json(capsys, tmp_path):
    path = tmp_path / "t.json"
    code, out, _ = run(capsys, "simulate", "--model", "resnet50", "--bw", "25gbit", "--streams", "2",
                       "--trace", str(path))
    assert code == 0 and "trace written" in out
    events = json.loads(path.read_text())["traceEvents"]
    comm = [e for e in events if e.get("cat") == "comm"]
    assert comm and {e["tid"] for e in comm} == {0, 1}
    assert any(e.get("name") == "forward" for e in events)
    run(capsys, "simulate", "--model", "resnet50", "--bw", "25gbit", "--streams", "3", "--fusion", "16MB",
        "--stream-mode", "round_robin", "--trace", str(path))
    comm = [e for e in json.loads(path.read_text())["traceEvents"] if e.get("cat") == "comm"]
    assert [e["tid"] for e in comm] == [j % 3 for j in range(len(comm))] and len(comm) > 3  # one stream per buffer


def test_model_profile_file_is_accepted(capsys, tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("name: tiny\ntensors:\n  - {name: fc.bias, numel: 10, bwd_time_s: 0.001}\n"
                 "  - {name: fc.weight, numel: 10000, bwd_time_s: 0.002}\n")
    code, out, _ = run(capsys, "simulate", "--model", str(f), "--bw", "10gbit", "--nodes", "2", "--json")
    assert code == 0 and json.loads(out)["model"] == "tiny"


def test_presets_lists_the_named_clusters(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0
    for name in ("vpc-32gbit", "ib-100g", "eth-10g", "eth-25g", "V100", "A100", "H100", "T4"):
        assert name in out


@pytest.mark.parametrize("argv,needle", [
    (["--model", "resnt50"], "did you mean 'resnet50'"),
    (["--model", "resnet50", "--bw", "32gbt"], "'32gbt'"),
    (["--model", "resnet50", "--bw=-5gbit"], "'-5gbit'"),
    (["--model", "resnet50", "--bw", "0"], "'0'"),
    (["--model", "resnet50", "--streams", "0"], "--streams 0"),
    (["--model", "resnet50", "--fusion", "lots"], "--fusion lots"),
    (["--model", "resnet50", "--cluster", "vpc-23gbit"], "did you mean 'vpc-32gbit'"),
    (["--model", "resnet50", "--cluster", "/nonexistent/c.yaml"], "cannot read cluster file"),
    (["--model", "/nonexistent/model.yaml"], "model.yaml"),
    (["--model", "resnet50", "--device", "K80"], "unknown device"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, "simulate", *argv)
    assert code == 2
    assert err.count("\n") == 1 and needle in err
    assert "Traceback" not in err


def test_malformed_profile_file(capsys, tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("{not json")
    code, _, err = run(capsys, "simulate", "--model", str(f))
    assert code == 2 and err.count("\n") == 1 and "bad.json" in err


def test_argparse_errors_are_one_line_exit_2():
    p = subprocess.run([sys.executable, "-m", "commtune", "simulate", "--model", "resnet50", "--nodes", "-3"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_stream_mode_flag(capsys):
    # static buckets: the same buffers in both modes (under dynamic fusion the modes' different
    # collective times shift backward, through per-bucket interference, and so the loop's ticks)
    base = ["simulate", "--model", "resnet50", "--bw", "32gbit", "--streams", "4", "--fusion", "16MB",
            "--fusion-policy", "static", "--json"]
    split = json.loads(run(capsys, *base)[1])
    rr = json.loads(run(capsys, *base, "--stream-mode", "round_robin")[1])
    assert split["knobs"]["stream_mode"] == "split" and rr["knobs"]["stream_mode"] == "round_robin"
    assert rr["num_buffers"] == split["num_buffers"] and rr["step_time_s"] != split["step_time_s"]
    code, _, err = run_fails(capsys, *base, "--stream-mode", "zigzag")
    assert code == 2 and "zigzag" in err


def run_fails(capsys, *argv):
    code = main(list(argv))  # usage errors return 2 (no SystemExit from main)
    out, err = capsys.readouterr()
    return code, out, err
