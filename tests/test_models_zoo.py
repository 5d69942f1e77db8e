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


# ---------------------------------------------------------------- decoders, blocks, activations

#: Fingerprints (gradient sizes in ready order) of the models before blocks and activations existed.
OLD_FINGERPRINTS = {"resnet50": "sha256:a1806ec9ee380e0f", "gpt2": "sha256:afda5968436dce99"}


def _llama_params(layers: int, h: int, kv: int, inner: int, vocab: int, tied: bool) -> int:
    block = 2 * h * h + 2 * h * kv + 3 * h * inner + 2 * h  # q, o, k, v, SwiGLU, two RMSNorms
    return layers * block + h + vocab * h * (1 if tied else 2)


def test_llama_shapes_match_the_published_configs() -> None:
    assert _llama_params(16, 2048, 512, 8192, 128256, tied=True) == 1_235_814_400
    assert _llama_params(32, 4096, 1024, 14336, 128256, tied=False) == 8_030_261_248
    small = {t.name: t.shape for t in load_model("llama3.2-1b").tensors()}
    assert small["model.layers.0.self_attn.k_proj.weight"] == (512, 2048)  # 8 KV heads of 64
    assert small["model.layers.15.mlp.gate_proj.weight"] == (8192, 2048)
    assert small["model.embed_tokens.weight"] == (128256, 2048) and "lm_head.weight" not in small
    assert not any(name.endswith(".bias") for name in small)
    big = [t.name for t in load_model("llama3-8b").tensors()]
    assert big[-1] == "lm_head.weight" and big[-2] == "model.norm.weight"


@pytest.mark.parametrize("name", ["llama3.2-1b", "llama3-8b"])
def test_llama_flops(name: str) -> None:
    """Forward FLOPs: 2 per weight per token (the LM head included, tied or not)
    plus the full attention scores and values, 4·seq²·h per layer."""
    seq = 1024
    profile = load_model(name, seq)
    h, layers = profile.tensors()[0].shape[1], sum(1 for l in profile.layers if l.name.endswith("o_proj"))
    vocab = profile.tensors()[0].shape[0]
    untied = profile.tensors()[-1].name == "lm_head.weight"
    matmul_weights = profile.num_params - (vocab * h if untied else 0)  # the lookup table is no matmul
    expected = 2 * matmul_weights * seq + 4 * seq * seq * h * layers
    assert _fwd(name, seq) == pytest.approx(expected, rel=0.01)
    head = profile.layers[-1]  # lm_head, or model.norm holding the tied head's compute
    assert head.name == ("lm_head" if untied else "model.norm")
    assert head.fwd_flops >= 2 * h * vocab * seq and head.bwd_flops >= 2 * 2 * h * vocab * seq


def test_blocks() -> None:
    gpt2 = load_model("gpt2").layers
    assert {l.block for l in gpt2} == {None} | {f"h.{i}" for i in range(12)}
    assert [l.name for l in gpt2 if l.block is None] == ["wte", "wpe", "ln_f"]
    bert = load_model("bert-base").layers
    assert [l.name for l in bert if l.block is None] == [
        "embeddings.word_embeddings", "embeddings.position_embeddings",
        "embeddings.token_type_embeddings", "embeddings.LayerNorm", "pooler.dense"]
    llama = load_model("llama3-8b").layers
    assert [l.name for l in llama if l.block is None] == ["model.embed_tokens", "model.norm", "lm_head"]
    assert sum(1 for l in llama if l.block == "model.layers.31") == 9
    resnet = load_model("resnet50").layers
    assert [l.name for l in resnet if l.block is None] == ["conv1", "bn1", "fc"]
    assert {l.block for l in resnet if l.name.startswith("layer3.5.")} == {"layer3.5"}
    assert {l.block for l in load_model("vgg16").layers} == {None}
    for name in EXPECTED:  # every layer of a block belongs to its module
        assert all(l.name.startswith(l.block + ".") for l in load_model(name).layers if l.block)


def test_blocks_and_activations_leave_old_models_alone() -> None:
    for name, fingerprint in OLD_FINGERPRINTS.items():
        assert load_model(name).fingerprint() == fingerprint
    layer = load_model("gpt2").layers[3]
    from dataclasses import replace
    assert replace(layer, block=layer.block, act_bytes=0, input_bytes=0) == layer  # not compared


def test_transformer_activations_per_token() -> None:
    """A GPT-2 block saves 34·h + 4·a bytes per token (Korthikanti et al. with
    flash attention); a Llama block 12·h + 4·kv + 8·inner + 4·a."""
    seq = 256
    gpt2 = load_model("gpt2", seq).layers
    per_block = sum(l.act_bytes for l in gpt2 if l.block == "h.0")
    assert per_block == (34 * 768 + 4 * 12) * seq
    bert = load_model("bert-base", seq).layers
    assert sum(l.act_bytes for l in bert if l.block == "encoder.layer.7") == (34 * 768 + 4 * 12) * seq
    llama = load_model("llama3.2-1b", seq).layers
    assert sum(l.act_bytes for l in llama if l.block == "model.layers.0") == \
        (12 * 2048 + 4 * 512 + 8 * 8192 + 4 * 32) * seq
    root = {l.name: l.act_bytes for l in llama if l.block is None}
    assert root == {"model.embed_tokens": 0, "model.norm": (2 * 2048 + 2 * 2048 + 4 * 128256) * seq}
    first = next(l for l in llama if l.block == "model.layers.3")
    assert first.input_bytes == 2 * 2048 * seq  # what a checkpointed block keeps
    assert sum(l.act_bytes for l in load_model("gpt2", 2 * seq).layers) == \
        2 * sum(l.act_bytes for l in gpt2)  # linear in the sequence (no seq² scores)


def test_cnn_activations() -> None:
    """ResNet-50 bottleneck layer1.0 at 224: 56×56 maps, conv inputs + BN inputs, 2 bytes each;
    the downsample shares conv1's input."""
    s, layers = 56, {l.name: l for l in load_model("resnet50").layers}
    block = sum(l.act_bytes for l in layers.values() if l.block == "layer1.0")
    elements = (64 + 64 + 64 + 64 + 64 + 256 + 256) * s * s  # conv1 in, bn1, conv2 in, bn2, conv3 in, bn3, ds bn
    assert block == 2 * elements
    assert layers["layer1.0.downsample.0"].act_bytes == 0
    assert layers["layer1.0.conv1"].input_bytes == 2 * 64 * s * s
    # stem: image, bn1 input, max pool input and int64 indices
    assert layers["conv1"].act_bytes == 2 * 3 * 224 * 224
    assert layers["bn1"].act_bytes == 2 * 64 * 112 * 112 * 2 + 8 * 64 * 56 * 56
    vgg = load_model("vgg16").layers
    assert vgg[-1].act_bytes == 2 * 4096 and vgg[-2].act_bytes == 2 * 4096 + 2 * 4096 + 4096
