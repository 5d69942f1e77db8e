"""Model profile files: round trip, short form, and one-line errors for bad files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from commtune.errors import CommtuneError
from commtune.models import GradTensor, Layer, ModelProfile, load_model
from commtune.models.profile_file import FORMAT, from_dict, load, save, to_dict


def _measured() -> ModelProfile:
    return ModelProfile(
        name="toy", input_desc="3x32x32", measured_batch_size=8, measured_device="cpu",
        layers=(Layer("conv", (GradTensor("conv.weight", 216, (8, 3, 3, 3)),), 1e6, 1e6, 1e-4, 2e-4),
                Layer("fc", (GradTensor("fc.weight", 80), GradTensor("fc.bias", 10)),
                      bwd_time_s=3e-5)))


@pytest.mark.parametrize("ext", [".yaml", ".yml", ".json"])
@pytest.mark.parametrize("profile", [_measured(), load_model("resnet50")], ids=["toy", "resnet50"])
def test_round_trip(tmp_path: Path, ext: str, profile: ModelProfile) -> None:
    path = tmp_path / f"model{ext}"
    save(profile, path)
    back = load(path)
    assert back == profile
    assert [t.shape for t in back.tensors()] == [t.shape for t in profile.tensors()]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


@pytest.mark.parametrize("ext", [".yaml", ".json"])
def test_blocks_and_activations_round_trip(tmp_path: Path, ext: str) -> None:
    """``block``, ``act_bytes`` and ``input_bytes`` (left out of equality) survive a save."""
    profile = load_model("gpt2", 64)
    save(profile, tmp_path / f"m{ext}")
    back = load(tmp_path / f"m{ext}")
    fields = [(l.block, l.act_bytes, l.input_bytes) for l in profile.layers]
    assert [(l.block, l.act_bytes, l.input_bytes) for l in back.layers] == fields
    assert fields[2] == ("h.0", 2 * 768 * 64, 2 * 768 * 64)


def test_old_files_have_no_blocks(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text(json.dumps(to_dict(_measured())))
    back = load(tmp_path / "old.json")
    assert all(l.block is None and l.act_bytes == 0 == l.input_bytes for l in back.layers)
    assert "block" not in to_dict(back)["layers"][0]


def test_saved_layout(tmp_path: Path) -> None:
    save(_measured(), tmp_path / "m.json")
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["format"] == FORMAT and data["batch_size"] == 8 and data["device"] == "cpu"
    assert data["layers"][1] == {"name": "fc", "bwd_time_s": 3e-5, "fwd_flops": 0.0, "bwd_flops": 0.0,
                                 "tensors": [{"name": "fc.weight", "numel": 80},
                                             {"name": "fc.bias", "numel": 10}]}


def test_short_form_is_ready_order(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({"name": "hand", "tensors": [
        {"name": "fc.bias", "numel": 10, "bwd_time_s": 0.001},
        {"name": "fc.weight", "shape": [10, 512], "bwd_time_s": 0.002},
        {"name": "emb", "numel": 6, "shape": [2, 3]}]}))
    profile = load(path)
    assert [t.name for t in profile.ready_order()] == ["fc.bias", "fc.weight", "emb"]
    assert [layer.name for layer in profile.layers] == ["emb", "fc.weight", "fc.bias"]
    assert profile.layers[1].tensors[0] == GradTensor("fc.weight", 5120)
    assert profile.layers[1].bwd_time_s == 0.002 and profile.layers[0].bwd_time_s is None
    assert profile.measured_batch_size is None
    save(profile, tmp_path / "back.yaml")
    assert load(tmp_path / "back.yaml") == profile


def _good() -> dict:
    return to_dict(_measured())


def _with(change) -> dict:
    data = _good()
    change(data)
    return data


BAD = {
    "not a mapping": ([1, 2], "top level"),
    "no format": (_with(lambda d: d.pop("format")), "format"),
    "future format": (_with(lambda d: d.update(format="commtune-model/9")), "commtune-model/9"),
    "no name": (_with(lambda d: d.pop("name")), "'name'"),
    "no layers": (_with(lambda d: d.pop("layers")), "layers"),
    "layers not list": (_with(lambda d: d.update(layers={"a": 1})), "layers"),
    "empty layers": (_with(lambda d: d.update(layers=[])), "layers"),
    "unknown key": (_with(lambda d: d["layers"][0].update(bwd_time=1)), "layers[0].bwd_time"),
    "negative time": (_with(lambda d: d["layers"][0].update(fwd_time_s=-1)), "layers[0].fwd_time_s"),
    "string time": (_with(lambda d: d["layers"][1].update(bwd_time_s="fast")), "layers[1].bwd_time_s"),
    "zero numel": (_with(lambda d: d["layers"][1]["tensors"][0].update(numel=0)),
                   "layers[1].tensors[0].numel"),
    "float numel": (_with(lambda d: d["layers"][1]["tensors"][1].update(numel=2.5)),
                    "layers[1].tensors[1].numel"),
    "bool numel": (_with(lambda d: d["layers"][1]["tensors"][1].update(numel=True)),
                   "layers[1].tensors[1].numel"),
    "shape mismatch": (_with(lambda d: d["layers"][0]["tensors"][0].update(shape=[2, 2])),
                       "layers[0].tensors[0].numel"),
    "bad shape": (_with(lambda d: d["layers"][0]["tensors"][0].update(shape=[2, -1], numel=None)),
                  "layers[0].tensors[0].shape[1]"),
    "no numel": (_with(lambda d: d["layers"][1]["tensors"][0].pop("numel")), "layers[1].tensors[0]"),
    "tensor not mapping": (_with(lambda d: d["layers"][1].update(tensors=["fc.w"])), "layers[1].tensors[0]"),
    "no tensors at all": (_with(lambda d: [layer.update(tensors=[]) for layer in d["layers"]]), "tensors"),
    "duplicate tensor": (_with(lambda d: d["layers"][1]["tensors"][1].update(name="fc.weight")),
                         "duplicate"),
    "bad batch": (_with(lambda d: d.update(batch_size=0)), "batch_size"),
    "bad device": (_with(lambda d: d.update(device=3)), "device"),
    "bad block": (_with(lambda d: d["layers"][0].update(block=3)), "layers[0].block"),
    "empty block": (_with(lambda d: d["layers"][0].update(block="")), "layers[0].block"),
    "negative act": (_with(lambda d: d["layers"][1].update(act_bytes=-1)), "layers[1].act_bytes"),
    "float input": (_with(lambda d: d["layers"][1].update(input_bytes=2.5)), "layers[1].input_bytes"),
    "short negative": ({"name": "x", "tensors": [{"name": "a", "numel": 3, "bwd_time_s": -2}]},
                       "tensors[0].bwd_time_s"),
    "short numel": ({"name": "x", "tensors": [{"name": "a", "numel": -3}]}, "tensors[0].numel"),
    "short empty": ({"name": "x", "tensors": []}, "tensors"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("ext", [".json", ".yaml"])
def test_malformed_files(tmp_path: Path, case: str, ext: str) -> None:
    data, where = BAD[case]
    path = tmp_path / f"bad{ext}"
    path.write_text(json.dumps(data) if ext == ".json" else yaml.safe_dump(data))
    with pytest.raises(CommtuneError) as err:
        load(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and where in msg


@pytest.mark.parametrize("name, text, needle", [
    ("bad.json", '{"name": "x", ', "not valid JSON (line 1"),
    ("bad.yaml", "name: x\n  layers: [\n", "not valid YAML (line"),
    ("empty.yaml", "", "top level"),
    ("bad.txt", "{}", "unsupported model profile extension '.txt'"),
])
def test_unparseable(tmp_path: Path, name: str, text: str, needle: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(CommtuneError, match=None) as err:
        load(tmp_path / name)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(CommtuneError, match="cannot read model profile .*No such file"):
        load(tmp_path / "absent.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(CommtuneError, match="cannot read"):
        load(tmp_path / "dir.yaml")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CommtuneError, match="cannot read"):
        load(tmp_path / "bin.json")


def test_load_model_takes_files(tmp_path: Path) -> None:
    save(_measured(), tmp_path / "toy.yaml")
    assert load_model(str(tmp_path / "toy.yaml")) == _measured()
    with pytest.raises(CommtuneError, match="cannot read model profile .*No such file"):
        load_model(str(tmp_path / "missing.json"))
    with pytest.raises(CommtuneError, match="built-in models only"):
        load_model(str(tmp_path / "toy.yaml"), 128)


def test_save_errors(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CommtuneError, match="cannot write"):
        save(_measured(), tmp_path / "a-file" / "model.yaml")
    with pytest.raises(CommtuneError, match="extension"):
        save(_measured(), tmp_path / "model.txt")


def test_from_dict_names_source() -> None:
    with pytest.raises(CommtuneError, match=r"^<profile>: name"):
        from_dict({**_good(), "name": ""})
