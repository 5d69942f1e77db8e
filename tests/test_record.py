"""Recording a torch module: gradient-ready order, times, file, CLI."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from commtune.cli import main as run_cli
from commtune.errors import CommtuneError  # noqa: E402
from commtune.models import load_model  # noqa: E402
from commtune.models.record import RecordOptions, load_factory, record_module  # noqa: E402

FACTORY_FILE = textwrap.dedent("""
    import torch
    from torch import nn

    def cnn():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.scale = nn.Parameter(torch.ones(16))
            self.head = nn.Linear(16, 3)
            self.unused = nn.Linear(2, 2)

        def forward(self, ids):
            return {"logits": self.head(self.emb(ids) * self.scale), "ids": ids}

    def tokens():
        return Tokens()

    def not_a_module():
        return 42

    def broken():
        raise ValueError("no weights here")
""")


@pytest.fixture()
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(FACTORY_FILE)
    return path


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                         nn.LayerNorm(32), nn.Linear(32, 5))


def test_mlp_ready_order_and_times() -> None:
    module = _mlp()
    profile = record_module(module, RecordOptions(batch_size=4, input_shape=(12,), steps=3, warmup=1))
    names = [n for n, _ in module.named_parameters()]
    assert [t.name for t in profile.tensors()] == names
    assert [t.name for t in profile.ready_order()] == names[::-1]
    measured = profile.meta["ready_order"]  # within one layer autograd's order may vary
    assert sorted(measured) == sorted(names)
    assert list(dict.fromkeys(n.split(".")[0] for n in measured)) == ["5", "4", "2", "0"]
    assert [layer.name for layer in profile.layers] == ["0", "2", "4", "5"]
    assert all(layer.fwd_time_s > 0 and layer.bwd_time_s > 0 for layer in profile.layers)
    assert profile.measured_batch_size == 4 and profile.measured_device == "cpu"
    assert profile.num_params == sum(p.numel() for p in module.parameters())
    assert profile.tensors()[0].shape == (32, 12)


def test_root_parameters_dict_output_and_unused(factory_file: Path) -> None:
    module = load_factory(f"{factory_file}:tokens")()
    profile = record_module(module, RecordOptions(batch_size=2, seq_len=7, steps=1, warmup=0))
    assert [layer.name for layer in profile.layers] == ["emb", "<root>", "head"]
    assert profile.meta["unused"] == ["unused.weight", "unused.bias"]
    assert profile.input_desc == "7 token ids (vocab 50)"


def test_cli_end_to_end(factory_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cnn.yaml"
    rc = run_cli(["profile-model", f"{factory_file}:cnn", "--batch-size", "2",
                  "--input-shape", "3,16,16", "--steps", "2", "--warmup", "1", "-o", str(out)])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    profile = load_model(str(out))
    assert profile.name == "Sequential" and profile.has_measured_times
    # the optimizer step is measured, written and becomes the workload's optimizer phase
    assert profile.meta["optimizer_s"] > 0
    from simulators import build_workload
    assert build_workload(profile, "V100", batch_size=2, precision="fp32").optimizer_s == profile.meta["optimizer_s"]
    assert [t.name for t in profile.ready_order()] == ["5.bias", "5.weight", "1.bias", "1.weight",
                                                        "0.bias", "0.weight"]


def test_cli_module_path(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "my_models_pkg.py").write_text(FACTORY_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "tok.json"
    assert run_cli(["profile-model", "my_models_pkg:tokens", "--seq-len", "5", "--vocab", "9",
                    "--batch-size", "2", "--steps", "1", "--warmup", "0", "--name", "tok",
                    "-o", str(out)]) == 0
    assert load_model(str(out)).name == "tok"


@pytest.mark.parametrize("target, needle", [
    ("no_colon_here", "expected MODULE:FACTORY"),
    ("{f}:not_a_module", "returned int, expected a torch.nn.Module"),
    ("{f}:broken", "ValueError: no weights here"),
    ("{f}:cnm", "did you mean 'cnn'"),
    ("missing_dir/x.py:make", "does not exist"),
    ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
])
def test_cli_bad_factory(factory_file: Path, tmp_path: Path, capsys, target: str, needle: str) -> None:
    rc = run_cli(["profile-model", target.format(f=factory_file), "-o", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--input-shape", "5,16,16"], "forward failed on synthetic input"),
    (["--steps", "0"], "--steps"),
    (["--seq-len", "4", "--input-shape", "3,8,8"], "not both"),
])
def test_cli_bad_options(factory_file: Path, tmp_path: Path, capsys, extra: list, needle: str) -> None:
    rc = run_cli(["profile-model", f"{factory_file}:cnn", "--batch-size", "2", *extra,
                  "-o", str(tmp_path / "x.yaml")])
    assert rc == 2 and needle in capsys.readouterr().err


def test_cli_bad_output_name(factory_file: Path, capsys) -> None:
    assert run_cli(["profile-model", f"{factory_file}:cnn", "-o", "model.txt"]) == 2
    assert ".yaml, .yml or .json" in capsys.readouterr().err


def test_missing_torch_message(monkeypatch) -> None:
    import builtins

    from commtune.models import record

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(CommtuneError, match=r"pip install 'commtune\[torch\]'"):
        record.import_torch()


def test_ddp_costs_fit_and_cli(factory_file: Path, tmp_path: Path, capsys) -> None:
    from commtune.probe.ddp_costs import fit_ddp_costs

    # closed form: step = base + T*hook + K*cost
    fit = fit_ddp_costs(0.1, [0.1 + 10 * 2e-6 + k * 5e-5 for k in (3, 12, 40)], [3, 12, 40], 10)
    assert fit["bucket_cost_s"] == pytest.approx(5e-5) and fit["tensor_hook_s"] == pytest.approx(2e-6)
    out = tmp_path / "cnn.yaml"
    rc = run_cli(["profile-model", f"{factory_file}:cnn", "--batch-size", "2", "--input-shape", "3,16,16",
                  "--steps", "2", "--warmup", "1", "--ddp-costs", "-o", str(out)])
    assert rc == 0
    assert "bucket_cost:" in capsys.readouterr().out
