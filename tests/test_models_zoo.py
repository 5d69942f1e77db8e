"""Built-in zoo: exact tensor counts, order, fingerprints and FLOP sanity."""
from __future__ import annotations

import pytest

from commtune.errors import CommtuneError
from commtune.models import ZOO, load_model, model_names
from commtune.models.zoo import find_entry

EXPECTED = {  # name: (tensors, params)
    "resnet50": (161, 25_557_032),
    "resnet101": (314, 44_549_160),
    "resnet152": (467, 60_192_808),
    "vgg16": (32, 138_357_544),
    "vgg19": (38, 143_667_240),
    "bert-base": (199, 109_482_240),
    "bert-large": (391, 335_141_888),
    "gpt2": (148, 124_439_808),
    "gpt2-medium": (292, 354_823_168),
    "llama3.2-1b": (146, 1_235_814_400),  # published 1.23B, embeddings tied
    "llama3-8b": (291, 8_030_261_248),  # published 8.03B
}


def _fwd(name: str, size: int | None = None) -> float:
    return sum(layer.fwd_flops for layer in load_model(name, size).layers)


def test_names_cover_the_zoo() -> None:
    assert model_names() == list(EXPECTED)
    assert set(ZOO) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exact_counts(name: str) -> None:
    profile = load_model(name)
    assert (profile.num_tensors, profile.num_params) == EXPECTED[name]
    assert profile.grad_bytes() == 4 * EXPECTED[name][1]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_layer_structure(name: str) -> None:
    profile = load_model(name)
    assert profile.ready_order() == profile.tensors()[::-1]
    names = [t.name for t in profile.tensors()]
    assert len(set(names)) == len(names)
    assert len({layer.name for layer in profile.layers}) == len(profile.layers)
    for layer in profile.layers:
        assert layer.tensors, "parameter-free ops are folded into a parameter layer"
        assert all(t.name.startswith(layer.name + ".") for t in layer.tensors)
        assert layer.fwd_flops > 0 and layer.fwd_flops <= layer.bwd_flops <= 2 * layer.fwd_flops
        assert layer.fwd_time_s is None and layer.bwd_time_s is None


def test_reference_names() -> None:
    names = {m: [t.name for t in load_model(m).tensors()] for m in ("resnet50", "bert-base", "gpt2")}
    assert names["resnet50"][:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight",
                                     "layer1.0.bn1.weight", "layer1.0.bn1.bias"]
    assert "layer1.0.downsample.0.weight" in names["resnet50"]
    assert names["resnet50"][-2:] == ["fc.weight", "fc.bias"]
    assert "encoder.layer.0.attention.self.query.weight" in names["bert-base"]
    assert names["bert-base"][-2:] == ["pooler.dense.weight", "pooler.dense.bias"]
    assert names["gpt2"][:4] == ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias"]
    assert "h.0.attn.c_attn.weight" in names["gpt2"] and names["gpt2"][-1] == "ln_f.bias"


def test_backward_rule() -> None:
    resnet = load_model("resnet50").layers
    assert resnet[0].name == "conv1" and resnet[0].bwd_flops == resnet[0].fwd_flops  # no input grad
    fc = resnet[-1]
    assert fc.name == "fc" and fc.bwd_flops == 2 * fc.fwd_flops
    bert = {layer.name: layer for layer in load_model("bert-base").layers}
    emb = bert["embeddings.word_embeddings"]
    assert emb.bwd_flops == emb.fwd_flops


def test_fingerprints_differ_and_are_stable() -> None:
    prints = {name: load_model(name).fingerprint() for name in EXPECTED}
    assert len(set(prints.values())) == len(prints)
    assert load_model("resnet50", 128).fingerprint() == prints["resnet50"]  # sizes only
    assert prints["resnet50"] == "sha256:a1806ec9ee380e0f"


def test_flop_sanity() -> None:
    assert _fwd("resnet50") == pytest.approx(8.2e9, rel=0.02)  # ≈ 4.1 GMACs
    assert _fwd("vgg16") == pytest.approx(2 * 15.47e9, rel=0.02)
    assert _fwd("resnet101") == pytest.approx(2 * 7.8e9, rel=0.03)
    for name, seq in (("bert-base", 128), ("gpt2", 1024), ("bert-base", 512)):
        profile = load_model(name, seq)
        width = profile.tensors()[-1].numel  # last LayerNorm/pooler bias
        tables = sum(t.numel for t in profile.tensors() if "embeddings.weight" in t.name
                     or "_embeddings." in t.name or t.name in ("wte.weight", "wpe.weight"))
        pooler = (width * width + width) * (seq - 1) if name.startswith("bert") else 0
        expected = 2 * (profile.num_params - tables) * seq - 2 * pooler + 12 * 4 * seq * seq * width
        assert _fwd(name, seq) == pytest.approx(expected, rel=0.03)
    assert _fwd("bert-base") == pytest.approx(22e9, rel=0.03)
    assert _fwd("resnet50", 448) == pytest.approx(4 * _fwd("resnet50"), rel=0.01)


def test_backward_about_twice_forward() -> None:
    for name in EXPECTED:
        profile = load_model(name)
        ratio = sum(l.bwd_flops for l in profile.layers) / sum(l.fwd_flops for l in profile.layers)
        assert 1.8 < ratio <= 2.0


@pytest.mark.parametrize("spec", ["ResNet50", "bert_base", "BERT-BASE-UNCASED", "gpt2-124m", "GPT2"])
def test_aliases(spec: str) -> None:
    assert find_entry(spec) is not None
    assert load_model(spec).name in EXPECTED


def test_unknown_model_suggests() -> None:
    with pytest.raises(CommtuneError) as err:
        load_model("resnt50")
    msg = str(err.value)
    assert "'resnt50'" in msg and "did you mean 'resnet50'" in msg and "gpt2" in msg
    assert ".yaml/.json" in msg and "\n" not in msg


@pytest.mark.parametrize("name, size", [("bert-base", 513), ("gpt2", 0), ("resnet50", 16),
                                        ("vgg16", True)])
def test_bad_input_size(name: str, size: int) -> None:
    with pytest.raises(CommtuneError, match="input size"):
        load_model(name, size)


def test_defaults_and_descriptions() -> None:
    assert ZOO["resnet50"].default_input_size == 224 and ZOO["resnet50"].family == "image"
    assert ZOO["bert-base"].default_input_size == 128 and ZOO["gpt2"].default_input_size == 1024
    assert load_model("gpt2").meta["input_size"] == 1024
