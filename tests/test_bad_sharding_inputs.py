"""Bad input for the sharded-data-parallelism knobs: exit 2, one stderr line naming the value, nothing written."""
from __future__ import annotations

import os

import pytest

from commtune.cli import main
from commtune.profiles import save_profile

from conftest import make_profile

SIM = ["simulate", "--model", "resnet50"]

CASES = [
    ("sharding-bogus", [*SIM, "--sharding", "bogus"], ("bogus", "none", "hybrid")),
    ("unit-bytes-negative", [*SIM, "--unit-bytes", "-1"], ("-1", "unit_bytes")),
    ("unit-bytes-huge", [*SIM, "--unit-bytes", "1PiB"], ("1PiB",)),
    ("reshard-maybe", [*SIM, "--reshard-after-forward", "maybe"], ("maybe", "true, false or an integer")),
    ("reshard-one-too-big", [*SIM, "--reshard-after-forward", "65"], ("65",)),
    ("forward-prefetch-9", [*SIM, "--forward-prefetch", "9"], ("9", "[0 units, 4 units]")),
    ("backward-prefetch-neg", [*SIM, "--backward-prefetch", "-1"], ("-1",)),
    ("reduce-precision-fp8", [*SIM, "--reduce-precision", "fp8"], ("fp8", "bf16")),
    ("group-not-dividing", [*SIM, "--sharding", "hybrid", "--shard-group-size", "3"],
     ("shard_group_size 3", "world size 128", "16, 32")),
    ("group-per-node-not-dividing", [*SIM, "--sharding", "hybrid", "--nodes", "3", "--gpus-per-node", "8",
                                     "--shard-group-size", "16"], ("16", "24")),
    ("reshard-not-divisor", [*SIM, "--sharding", "full", "--reshard-after-forward", "3"],
     ("reshard_after_forward 3", "2, 4, 8")),
    ("prefetch-beyond-units", [*SIM, "--sharding", "full", "--unit-bytes", "4GiB", "--forward-prefetch", "2"],
     ("forward_prefetch 2", "1 sharding unit", "0 to 1")),
    ("search-group-not-dividing", ["search", "--model", "resnet50", "--space", "hsdp", "--nodes", "1",
                                   "--gpus-per-node", "2", "--trials", "2", "--no-profile"],
     ("hsdp", "shard_group_size 4", "world size 2")),
    ("export-group-not-dividing", ["export", "hybrid3.json", "--format", "json", "-o", "out.json"],
     ("shard_group_size 3",)),
    ("export-fsdp2-none", ["export", "none.json", "--format", "fsdp2", "-o", "out.json"], ("sharding none", "ddp")),
    ("export-prefetch-beyond", ["export", "prefetch.json", "--format", "deepspeed", "-o", "out.json"],
     ("forward_prefetch 3", "resnet50")),
]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    from commtune.models import load_model

    save_profile(make_profile(sharding="hybrid", shard_group_size=3), tmp_path / "hybrid3.json")
    save_profile(make_profile(), tmp_path / "none.json")
    p = make_profile(sharding="full", unit_bytes=2**36, forward_prefetch=3)
    p.model["fingerprint"] = load_model("resnet50").fingerprint()
    save_profile(p, tmp_path / "prefetch.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_sharding_input(argv, needles, scratch, capsys):
    before = sorted(os.listdir(scratch))
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err!r}"
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert sorted(os.listdir(scratch)) == before


def test_good_sharded_values_pass_the_checks(scratch, capsys):
    assert main([*SIM, "--sharding", "hybrid", "--shard-group-size", "16", "--reshard-after-forward", "8"]) == 0
    assert main([*SIM, "--sharding", "full", "--reshard-after-forward", "false", "--forward-prefetch", "4"]) == 0


def test_export_help_lists_the_sharded_formats(capsys):
    assert main(["export", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fsdp2: PyTorch FSDP2" in out and "megatron: Megatron-Core" in out


def test_export_sharded_profile_to_fsdp2_file(scratch, capsys):
    from commtune.models import load_model

    p = make_profile(sharding="full", unit_bytes=2**36)
    p.model["fingerprint"] = load_model("resnet50").fingerprint()
    save_profile(p, scratch / "full.json")
    assert main(["export", "full.json", "--format", "fsdp2", "-o", "fsdp2.json"]) == 0
    import json

    d = json.loads((scratch / "fsdp2.json").read_text())
    assert len(d["units"]) == 1 and d["mesh"]["shape"] == [128]
