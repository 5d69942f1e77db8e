"""`commtune show` and `commtune export` end to end (in-process)."""
from __future__ import annotations

import json

import pytest

from commtune import cli
from commtune.exporters import EXPORTERS
from commtune.units import MiB
from commtune.profiles import save_profile

from conftest import make_profile, parse_env
from test_exporters import OnlyHierarchical


@pytest.fixture
def run(monkeypatch, capsys):
    """Run the CLI; returns (rc, stdout, stderr)."""

    def _run(*argv: str):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            rc = exc.code
        out, err = capsys.readouterr()
        return rc, out, err

    return _run


@pytest.fixture
def profile_path(tmp_path):
    p = make_profile(fusion_threshold_bytes=64 * MiB, cycle_time_ms=3.5, num_streams=2, stream_mode="round_robin",
                     negotiation="decentralized", wire_precision="fp16")
    return save_profile(p, tmp_path / "resnet50-32gbit.json")


def test_export_stdout_and_warnings(run, profile_path):
    rc, out, err = run("export", profile_path, "--format", "horovod")
    assert rc == 0
    env = parse_env(out)
    assert env["HOROVOD_FUSION_THRESHOLD"] == "67108864" and env["HOROVOD_CYCLE_TIME"] == "3.5"
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("commtune: warning: horovod cannot express") for line in lines)
    assert any("wire_precision=fp16" in line for line in lines)


def test_export_to_file(run, profile_path, tmp_path):
    dest = tmp_path / "out" / "ds.json"
    dest.parent.mkdir()  # -o never creates folders
    rc, out, err = run("export", profile_path, "--format", "deepspeed", "-o", dest)
    assert rc == 0 and "wrote" in out
    d = json.loads(dest.read_text())
    assert d["zero_optimization"]["reduce_bucket_size"] == 64 * MiB // 4
    assert len(err.splitlines()) == len(d["_unsupported"]) > 0
    assert [p.name for p in dest.parent.iterdir()] == ["ds.json"]  # no temp files left


@pytest.mark.parametrize("fmt", [f for f in EXPORTERS if f != "fsdp2"])  # fsdp2 refuses sharding none
def test_export_every_format_parses(run, profile_path, fmt):
    rc, out, _ = run("export", profile_path, "--format", fmt)
    assert rc == 0
    json.loads(out) if EXPORTERS[fmt].suffix == ".json" else parse_env(out)


def _one_line_failure(rc, out, err, dest):
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("commtune: error:")
    assert not dest.exists()


def test_unknown_format(run, profile_path, tmp_path):
    dest = tmp_path / "x.env"
    rc, out, err = run("export", profile_path, "--format", "mpi", "-o", dest)
    _one_line_failure(rc, out, err, dest)
    assert "choose one of: ddp, horovod, nccl, deepspeed, fsdp2, megatron, json" in err


def test_nothing_expressible(run, profile_path, tmp_path, monkeypatch):
    monkeypatch.setitem(EXPORTERS, OnlyHierarchical.name, OnlyHierarchical)
    dest = tmp_path / "x.env"
    rc, out, err = run("export", profile_path, "--format", "only-hier", "-o", dest)
    _one_line_failure(rc, out, err, dest)
    assert "cannot express any tuned knob" in err


def test_corrupt_profile(run, profile_path, tmp_path):
    text = profile_path.read_text()
    profile_path.write_text(text[: len(text) // 2])
    dest = tmp_path / "x.env"
    for cmd in (["export", profile_path, "--format", "horovod", "-o", dest], ["show", profile_path]):
        rc, out, err = run(*cmd)
        _one_line_failure(rc, out, err, dest)
        assert "not valid JSON" in err


def test_unknown_schema(run, profile_path, tmp_path):
    d = json.loads(profile_path.read_text())
    d["schema"] = "commtune-profile/2"
    profile_path.write_text(json.dumps(d))
    dest = tmp_path / "x.json"
    for cmd in (["export", profile_path, "--format", "json", "-o", dest], ["show", profile_path]):
        rc, out, err = run(*cmd)
        _one_line_failure(rc, out, err, dest)
        assert "unknown profile schema 'commtune-profile/2'" in err


def test_missing_profile(run, tmp_path):
    dest = tmp_path / "x.json"
    rc, out, err = run("export", tmp_path / "nope.json", "--format", "json", "-o", dest)
    _one_line_failure(rc, out, err, dest)


def test_show(run, profile_path):
    rc, out, err = run("show", profile_path)
    assert rc == 0 and err == ""
    for text in ("resnet50", "fp-1234abcd", "25.56 M", "batch 64/GPU", "precision amp",
                 "16x8 V100", "64 MiB", "3.5 ms", "decentralized", "fp16",
                 "200 ms", "80.0%", "40,960 samples/s",
                 "ddp_default", "300 ms", "1.50x", "1.25x",
                 "lower bound 160 ms", "25.0% above", "sampler", "tpe"):
        assert text in out, text
    inactive = [line for line in out.splitlines() if "first_bucket_bytes" in line]
    assert inactive and inactive[0].lstrip().startswith("*")


def test_show_json(run, profile_path):
    rc, out, _ = run("show", profile_path, "--json")
    d = json.loads(out)
    assert rc == 0 and d["model"]["name"] == "resnet50"
    assert d["speedups"] == pytest.approx({"ddp_default": 1.5, "horovod_default": 1.25})
    assert "first_bucket_bytes" not in d["active_knobs"]
    assert d["lower_bound_distance"] == pytest.approx(0.25)
