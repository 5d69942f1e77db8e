"""Built-in model zoo: exact parameter tensors and per-sample FLOPs.

Every model lists the tensors of its reference implementation (torchvision
``resnet*``/``vgg*``, Hugging Face ``BertModel`` with pooler, ``GPT2Model`` and
``LlamaForCausalLM``) with the reference names and shapes, layer by layer in
forward order (``module.parameters()`` order within a layer).

Layer conventions (the same as :mod:`commtune.models.record` uses):

* One :class:`Layer` per module that owns parameters, in forward order.
  Parameter-free compute (ReLU/GELU/tanh, pooling, residual and embedding adds,
  attention scores + softmax + weighted sum) is *folded into the preceding
  parameter layer*: its backward runs before that layer's gradients are ready,
  so folding keeps gradient-ready times right.
* FLOPs are per sample, a multiply-add counts 2. Convolution
  ``2·Cin/groups·k²·Cout·Ho·Wo`` (+``Cout·Ho·Wo`` for a bias); linear
  ``2·in·out`` per token (+``out`` per token for a bias); batch/layer norm 5 per
  element; ReLU, add, tanh 1 per element; GELU 8 per element; softmax 5 per
  score; max pool ``k²`` per output; average pool 1 per input element;
  embedding lookup 1 per output element.
* Backward FLOPs: 2× forward for a module with weights (gradient with respect
  to its input and to its weights); 1× for folded parameter-free ops; 1× for a
  module whose input needs no gradient (the first convolution of image models,
  the embedding tables of text models).

* Attention FLOPs are the full, unmasked count (``QKᵀ`` and ``AV``, 2·seq·width
  each per token, also for causal models; GQA shares K/V heads but not the
  score FLOPs).
* Blocks (:attr:`Layer.block`, the module FSDP users wrap): one transformer
  layer (``h.<i>``, ``encoder.layer.<i>``, ``model.layers.<i>``), one ResNet
  bottleneck (``layer<s>.<i>``); VGG has none. Embeddings, final norms, heads
  and the ResNet stem have ``block=None`` (FSDP2's root unit).
* Activations saved for backward (:attr:`Layer.act_bytes`, per sample, a
  16-bit step): every tensor an op keeps for its backward, counted once (by the
  op that keeps it first), at 2 bytes per element; dropout masks 1 byte, max
  pool indices 8 bytes, the cross-entropy's fp32 log-probabilities 4 bytes per
  logit. Attention is the flash/SDPA form: Q, K, V, the output and an fp32
  log-sum-exp per head and token, no ``seq²`` scores, so a GPT-2/BERT block
  holds Korthikanti et al. 2022's 34·h bytes per token (their eq. 1 without
  the 5·a·s attention term) plus 4·a; a Llama block (no dropout, SwiGLU, GQA)
  12·h + 4·kv + 8·inner + 4·a. In-place ReLUs and residual adds keep nothing
  of their own; integer token ids are not counted.

``input_size`` is the image side length (square images) or the sequence length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

from commtune.errors import CommtuneError
from commtune.models.base import GradTensor, Layer, ModelProfile

# FLOPs per element of the parameter-free and normalisation ops (see docstring).
NORM_FLOPS = 5
ELEMENTWISE_FLOPS = 1
GELU_FLOPS = 8
SILU_FLOPS = 4  # x * sigmoid(x): exp, add, divide, multiply
ROPE_FLOPS = 3  # x * cos + rotate(x) * sin, per rotated element
SOFTMAX_FLOPS = 5

# Bytes per saved element (see docstring).
ACT_BYTES = 2  # a 16-bit activation
MASK_BYTES = 1  # a dropout mask (torch.bool)
INDEX_BYTES = 8  # a max-pool index (int64)
LSE_BYTES = 4  # flash attention's fp32 log-sum-exp, per head and token
LOSS_BYTES = 4  # the cross-entropy's fp32 log-probabilities, per logit


def _tensor(name: str, *shape: int) -> GradTensor:
    return GradTensor(name, math.prod(shape), tuple(shape))


@dataclass
class _Builder:
    """Accumulates layers in forward order; ``block`` is the block new layers join;
    ``matmul_shapes``: linear layers declare their :attr:`Layer.matmul`."""

    layers: list[Layer] = field(default_factory=list)
    block: str | None = None
    matmul_shapes: bool = False

    def add(self, name: str, tensors: list[GradTensor], fwd_flops: float,
            *, input_grad: bool = True, act: int = 0, inp: int = 0,
            matmul: tuple[int, int, int] | None = None) -> None:
        """Append a parameter layer; backward is 2× forward, 1× without input grad.

        ``act``/``inp``: activation bytes saved for backward / entering, per sample."""
        bwd = fwd_flops * (2 if input_grad else 1)
        self.layers.append(Layer(name, tuple(tensors), float(fwd_flops), float(bwd),
                                 block=self.block, act_bytes=int(act), input_bytes=int(inp), matmul=matmul))

    def fold(self, fwd_flops: float, *, act: int = 0, bwd_factor: int = 1) -> None:
        """Fold a parameter-free op (backward ``bwd_factor``× forward, default 1×)
        saving ``act`` bytes for backward into the last layer."""
        last = self.layers[-1]
        self.layers[-1] = replace(last, fwd_flops=last.fwd_flops + fwd_flops,
                                  bwd_flops=last.bwd_flops + bwd_factor * fwd_flops,
                                  act_bytes=last.act_bytes + int(act))


# ---------------------------------------------------------------- primitives

def _conv(b: _Builder, name: str, cin: int, cout: int, k: int, stride: int, pad: int,
          side: int, *, bias: bool = False, input_grad: bool = True,
          saves_input: bool = True) -> int:
    """Square 2-D convolution; returns the output side length. It saves its input
    for the weight gradient (``saves_input=False``: another layer keeps the same tensor)."""
    out = (side + 2 * pad - k) // stride + 1
    tensors = [_tensor(f"{name}.weight", cout, cin, k, k)]
    flops = 2 * cin * k * k * cout * out * out
    if bias:
        tensors.append(_tensor(f"{name}.bias", cout))
        flops += cout * out * out
    inp = ACT_BYTES * cin * side * side
    b.add(name, tensors, flops, input_grad=input_grad, act=inp if saves_input else 0, inp=inp)
    return out


def _batchnorm(b: _Builder, name: str, c: int, side: int) -> None:
    inp = ACT_BYTES * c * side * side
    b.add(name, [_tensor(f"{name}.weight", c), _tensor(f"{name}.bias", c)],
          NORM_FLOPS * c * side * side, act=inp, inp=inp)


def _linear(b: _Builder, name: str, fin: int, fout: int, tokens: int = 1,
            *, transposed: bool = False, bias: bool = True, saves_input: bool = True) -> None:
    """``nn.Linear`` (weight ``out×in``) or GPT-2 ``Conv1D`` (``transposed``: ``in×out``);
    it saves its input unless another layer keeps the same tensor (``saves_input=False``)."""
    shape = (fin, fout) if transposed else (fout, fin)
    tensors = [_tensor(f"{name}.weight", *shape)]
    flops = 2 * fin * fout * tokens
    if bias:
        tensors.append(_tensor(f"{name}.bias", fout))
        flops += fout * tokens
    inp = ACT_BYTES * fin * tokens
    b.add(name, tensors, flops, act=inp if saves_input else 0, inp=inp,
          matmul=(tokens, fin, fout) if b.matmul_shapes else None)


def _layernorm(b: _Builder, name: str, width: int, tokens: int, *, bias: bool = True) -> None:
    """LayerNorm (weight and bias) or RMSNorm (``bias=False``); saves its input."""
    tensors = [_tensor(f"{name}.weight", width)]
    if bias:
        tensors.append(_tensor(f"{name}.bias", width))
    inp = ACT_BYTES * width * tokens
    b.add(name, tensors, NORM_FLOPS * width * tokens, act=inp, inp=inp)


def _embedding(b: _Builder, name: str, rows: int, width: int, tokens: int) -> None:
    b.add(name, [_tensor(f"{name}.weight", rows, width)], width * tokens, input_grad=False)


def _maxpool(b: _Builder, c: int, side: int, k: int, stride: int, pad: int) -> int:
    """Max pool; it saves its input and the int64 indices of its output."""
    out = (side + 2 * pad - k) // stride + 1
    b.fold(k * k * c * out * out, act=ACT_BYTES * c * side * side + INDEX_BYTES * c * out * out)
    return out


def _attention(b: _Builder, width: int, heads: int, seq: int, kv_width: int | None = None) -> None:
    """Scores ``QKᵀ``, scaled masked softmax, weighted sum ``AV`` (full, unmasked count).

    Saved (flash/SDPA): Q (``width``), K and V (``kv_width``, GQA) and the fp32
    log-sum-exp per head; the output is the next projection's saved input."""
    kv = width if kv_width is None else kv_width
    b.fold(2 * seq * seq * width + SOFTMAX_FLOPS * heads * seq * seq + 2 * seq * seq * width,
           act=ACT_BYTES * (width + 2 * kv) * seq + LSE_BYTES * heads * seq)


# ---------------------------------------------------------------- ResNet (torchvision)

def _bottleneck(b: _Builder, prefix: str, cin: int, planes: int, stride: int,
                side: int) -> tuple[int, int]:
    """torchvision ``Bottleneck`` (v1.5: stride on the 3×3); returns (channels, side)."""
    cout = planes * 4
    b.block = prefix
    _conv(b, f"{prefix}.conv1", cin, planes, 1, 1, 0, side)
    _batchnorm(b, f"{prefix}.bn1", planes, side)
    b.fold(ELEMENTWISE_FLOPS * planes * side * side)  # relu
    out = _conv(b, f"{prefix}.conv2", planes, planes, 3, stride, 1, side)
    _batchnorm(b, f"{prefix}.bn2", planes, out)
    b.fold(ELEMENTWISE_FLOPS * planes * out * out)  # relu
    _conv(b, f"{prefix}.conv3", planes, cout, 1, 1, 0, out)
    _batchnorm(b, f"{prefix}.bn3", cout, out)
    if stride != 1 or cin != cout:  # its input is conv1's, saved there
        _conv(b, f"{prefix}.downsample.0", cin, cout, 1, stride, 0, side, saves_input=False)
        _batchnorm(b, f"{prefix}.downsample.1", cout, out)
    b.fold(2 * ELEMENTWISE_FLOPS * cout * out * out)  # residual add + relu
    b.block = None
    return cout, out


def _resnet(blocks: tuple[int, int, int, int], side: int) -> list[Layer]:
    b = _Builder()
    side = _conv(b, "conv1", 3, 64, 7, 2, 3, side, input_grad=False)
    _batchnorm(b, "bn1", 64, side)
    b.fold(ELEMENTWISE_FLOPS * 64 * side * side)  # relu
    side = _maxpool(b, 64, side, 3, 2, 1)
    channels = 64
    for stage, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for i in range(count):
            stride = 2 if stage > 1 and i == 0 else 1
            channels, side = _bottleneck(b, f"layer{stage}.{i}", channels, planes, stride, side)
    # adaptive avg pool to 1×1; the last in-place ReLU keeps its output
    b.fold(ELEMENTWISE_FLOPS * channels * side * side, act=ACT_BYTES * channels * side * side)
    _linear(b, "fc", channels, 1000)
    return b.layers


# ---------------------------------------------------------------- VGG (torchvision)

_VGG_CFG = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def _vgg(cfg: tuple, side: int) -> list[Layer]:
    """torchvision ``VGG`` without batch norm: ``features.N`` counts conv, ReLU and pool modules."""
    b = _Builder()
    channels, index = 3, 0
    for item in cfg:
        if item == "M":
            side = _maxpool(b, channels, side, 2, 2, 0)
            index += 1
            continue
        side = _conv(b, f"features.{index}", channels, item, 3, 1, 1, side,
                     bias=True, input_grad=index > 0)
        channels = item
        b.fold(ELEMENTWISE_FLOPS * channels * side * side)  # relu
        index += 2
    b.fold(ELEMENTWISE_FLOPS * channels * max(side, 7) ** 2)  # adaptive avg pool to 7×7
    relu_dropout = ACT_BYTES * 4096 + MASK_BYTES * 4096  # ReLU output + dropout mask
    _linear(b, "classifier.0", channels * 7 * 7, 4096)
    b.fold(ELEMENTWISE_FLOPS * 4096, act=relu_dropout)  # relu (dropout FLOPs counted free)
    _linear(b, "classifier.3", 4096, 4096)
    b.fold(ELEMENTWISE_FLOPS * 4096, act=relu_dropout)
    _linear(b, "classifier.6", 4096, 1000)
    return b.layers


# ---------------------------------------------------------------- BERT (HF BertModel)

@dataclass(frozen=True)
class _TransformerConfig:
    layers: int
    width: int
    heads: int
    vocab: int
    max_positions: int
    type_vocab: int = 0

    @property
    def inner(self) -> int:
        return 4 * self.width


def _bert(cfg: _TransformerConfig, seq: int) -> list[Layer]:
    """HF ``BertModel`` (absolute positions, with pooler)."""
    b, h = _Builder(), cfg.width
    _embedding(b, "embeddings.word_embeddings", cfg.vocab, h, seq)
    _embedding(b, "embeddings.position_embeddings", cfg.max_positions, h, seq)
    _embedding(b, "embeddings.token_type_embeddings", cfg.type_vocab, h, seq)
    b.fold(2 * ELEMENTWISE_FLOPS * seq * h)  # word + token type + position
    _layernorm(b, "embeddings.LayerNorm", h, seq)
    b.fold(0, act=MASK_BYTES * seq * h)  # dropout
    for i in range(cfg.layers):
        p = b.block = f"encoder.layer.{i}"
        for proj in ("query", "key", "value"):  # one input, saved by query
            _linear(b, f"{p}.attention.self.{proj}", h, h, seq, saves_input=proj == "query")
        _attention(b, h, cfg.heads, seq)
        _linear(b, f"{p}.attention.output.dense", h, h, seq)
        b.fold(ELEMENTWISE_FLOPS * seq * h, act=MASK_BYTES * seq * h)  # dropout, residual add
        _layernorm(b, f"{p}.attention.output.LayerNorm", h, seq)
        _linear(b, f"{p}.intermediate.dense", h, cfg.inner, seq)
        b.fold(GELU_FLOPS * seq * cfg.inner, act=ACT_BYTES * seq * cfg.inner)  # GELU input
        _linear(b, f"{p}.output.dense", cfg.inner, h, seq)
        b.fold(ELEMENTWISE_FLOPS * seq * h, act=MASK_BYTES * seq * h)  # dropout, residual add
        _layernorm(b, f"{p}.output.LayerNorm", h, seq)
    b.block = None
    _linear(b, "pooler.dense", h, h, 1)  # first token only
    b.fold(ELEMENTWISE_FLOPS * h, act=ACT_BYTES * h)  # tanh keeps its output
    return b.layers


# ---------------------------------------------------------------- GPT-2 (HF GPT2Model)

def _gpt2(cfg: _TransformerConfig, seq: int) -> list[Layer]:
    """HF ``GPT2Model`` (no LM head: it is tied to ``wte``)."""
    b, h = _Builder(), cfg.width
    _embedding(b, "wte", cfg.vocab, h, seq)
    _embedding(b, "wpe", cfg.max_positions, h, seq)
    b.fold(ELEMENTWISE_FLOPS * seq * h, act=MASK_BYTES * seq * h)  # token + position, dropout
    for i in range(cfg.layers):
        p = b.block = f"h.{i}"
        _layernorm(b, f"{p}.ln_1", h, seq)
        _linear(b, f"{p}.attn.c_attn", h, 3 * h, seq, transposed=True)
        _attention(b, h, cfg.heads, seq)
        _linear(b, f"{p}.attn.c_proj", h, h, seq, transposed=True)
        b.fold(ELEMENTWISE_FLOPS * seq * h, act=MASK_BYTES * seq * h)  # dropout, residual add
        _layernorm(b, f"{p}.ln_2", h, seq)
        _linear(b, f"{p}.mlp.c_fc", h, cfg.inner, seq, transposed=True)
        b.fold(GELU_FLOPS * seq * cfg.inner, act=ACT_BYTES * seq * cfg.inner)  # GELU input
        _linear(b, f"{p}.mlp.c_proj", cfg.inner, h, seq, transposed=True)
        b.fold(ELEMENTWISE_FLOPS * seq * h, act=MASK_BYTES * seq * h)  # dropout, residual add
    b.block = None
    _layernorm(b, "ln_f", h, seq)
    return b.layers


# ---------------------------------------------------------------- Llama (HF LlamaForCausalLM)

@dataclass(frozen=True)
class _LlamaConfig:
    """The shape fields of a Hugging Face ``LlamaConfig``."""

    layers: int
    width: int  # hidden_size
    heads: int
    kv_heads: int
    inner: int  # intermediate_size
    vocab: int
    max_positions: int
    tied: bool  # tie_word_embeddings

    @property
    def kv_width(self) -> int:
        return self.kv_heads * (self.width // self.heads)


def _llama(cfg: _LlamaConfig, seq: int, matmul_shapes: bool = False) -> list[Layer]:
    """HF ``LlamaForCausalLM``: RMSNorm, GQA attention with RoPE, SwiGLU MLP, no
    biases, LM head and cross-entropy loss (tied to ``embed_tokens`` if ``cfg.tied``).
    ``matmul_shapes``: the linear layers declare :attr:`Layer.matmul` (the zoo's
    entries do not, so their times stay FLOPs over one rate)."""
    b, h, kv, inner = _Builder(matmul_shapes=matmul_shapes), cfg.width, cfg.kv_width, cfg.inner
    _embedding(b, "model.embed_tokens", cfg.vocab, h, seq)
    for i in range(cfg.layers):
        p = b.block = f"model.layers.{i}"
        _layernorm(b, f"{p}.input_layernorm", h, seq, bias=False)
        _linear(b, f"{p}.self_attn.q_proj", h, h, seq, bias=False)  # q, k, v share one input
        _linear(b, f"{p}.self_attn.k_proj", h, kv, seq, bias=False, saves_input=False)
        _linear(b, f"{p}.self_attn.v_proj", h, kv, seq, bias=False, saves_input=False)
        b.fold(ROPE_FLOPS * (h + kv) * seq)  # rotary embedding of q and k
        _attention(b, h, cfg.heads, seq, kv_width=kv)
        _linear(b, f"{p}.self_attn.o_proj", h, h, seq, bias=False)
        b.fold(ELEMENTWISE_FLOPS * seq * h)  # residual add
        _layernorm(b, f"{p}.post_attention_layernorm", h, seq, bias=False)
        _linear(b, f"{p}.mlp.gate_proj", h, inner, seq, bias=False)
        b.fold(SILU_FLOPS * seq * inner, act=ACT_BYTES * seq * inner)  # SiLU keeps its input
        _linear(b, f"{p}.mlp.up_proj", h, inner, seq, bias=False, saves_input=False)
        b.fold(ELEMENTWISE_FLOPS * seq * inner, act=2 * ACT_BYTES * seq * inner)  # silu(g) * up
        _linear(b, f"{p}.mlp.down_proj", inner, h, seq, bias=False)
        b.fold(ELEMENTWISE_FLOPS * seq * h)  # residual add
    b.block = None
    _layernorm(b, "model.norm", h, seq, bias=False)
    head = 2 * h * cfg.vocab * seq
    loss_act = ACT_BYTES * h * seq + LOSS_BYTES * cfg.vocab * seq  # head input, log-probabilities
    if cfg.tied:  # the head's weight is embed_tokens.weight: its compute joins the norm
        b.fold(head, act=loss_act, bwd_factor=2)
    else:
        _linear(b, "lm_head", h, cfg.vocab, seq, bias=False)
        b.fold(0, act=loss_act - ACT_BYTES * h * seq)
    b.fold(SOFTMAX_FLOPS * cfg.vocab * seq)  # cross-entropy over the vocabulary
    return b.layers


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: ``builder(input_size)`` returns its layers in forward order."""

    name: str
    family: str  # "image" or "text"
    default_input_size: int
    builder: Callable[[int], list[Layer]]
    description: str
    min_input_size: int = 1
    max_input_size: int | None = None
    #: Samples per GPU when ``--batch-size`` is not given (decoders: sequences, as torchtitan's local batch).
    default_batch_size: int = 64

    def build(self, input_size: int | None = None) -> ModelProfile:
        """The profile for ``input_size`` (image side or sequence length; default if None)."""
        size = self.default_input_size if input_size is None else input_size
        self._check_size(size)
        desc = f"{size}x{size} image" if self.family == "image" else f"sequence length {size}"
        return ModelProfile(name=self.name, layers=tuple(self.builder(size)), input_desc=desc,
                            meta={"family": self.family, "input_size": size, "source": "zoo",
                                  "default_batch_size": self.default_batch_size})

    def _check_size(self, size: int) -> None:
        upper = self.max_input_size
        if (isinstance(size, bool) or not isinstance(size, int) or size < self.min_input_size
                or (upper is not None and size > upper)):
            what = "image side" if self.family == "image" else "sequence length"
            bound = f"{self.min_input_size}..{upper}" if upper else f">= {self.min_input_size}"
            raise CommtuneError(f"input size {size!r} does not fit model '{self.name}': "
                                f"{what} must be an integer {bound}")


#: Largest image side of the image models (8192 x 8192 pixels, 1,300x the FLOPs of 224 x 224).
MAX_IMAGE_SIDE = 8192

_BERT_BASE = _TransformerConfig(12, 768, 12, 30522, 512, 2)
_BERT_LARGE = _TransformerConfig(24, 1024, 16, 30522, 512, 2)
_GPT2 = _TransformerConfig(12, 768, 12, 50257, 1024)
_GPT2_MEDIUM = _TransformerConfig(24, 1024, 16, 50257, 1024)
# config.json of meta-llama/Llama-3.2-1B and meta-llama/Meta-Llama-3-8B (Hugging Face).
_LLAMA32_1B = _LlamaConfig(16, 2048, 32, 8, 8192, 128256, 131072, tied=True)
_LLAMA3_8B = _LlamaConfig(32, 4096, 32, 8, 14336, 128256, 8192, tied=False)


def _image(name: str, builder: Callable[[int], list[Layer]], description: str) -> ZooEntry:
    return ZooEntry(name, "image", 224, builder, description, min_input_size=32, max_input_size=MAX_IMAGE_SIDE)


def _text(name: str, builder: Callable, cfg: _TransformerConfig, default: int,
          description: str, batch_size: int = 64) -> ZooEntry:
    return ZooEntry(name, "text", default, lambda seq: builder(cfg, seq), description,
                    max_input_size=cfg.max_positions, default_batch_size=batch_size)


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    _image("resnet50", lambda s: _resnet((3, 4, 6, 3), s), "torchvision ResNet-50 (v1.5)"),
    _image("resnet101", lambda s: _resnet((3, 4, 23, 3), s), "torchvision ResNet-101 (v1.5)"),
    _image("resnet152", lambda s: _resnet((3, 8, 36, 3), s), "torchvision ResNet-152 (v1.5)"),
    _image("vgg16", lambda s: _vgg(_VGG_CFG["vgg16"], s), "torchvision VGG-16 (no BN)"),
    _image("vgg19", lambda s: _vgg(_VGG_CFG["vgg19"], s), "torchvision VGG-19 (no BN)"),
    _text("bert-base", _bert, _BERT_BASE, 128, "HF BertModel bert-base-uncased, with pooler"),
    _text("bert-large", _bert, _BERT_LARGE, 128, "HF BertModel bert-large-uncased, with pooler"),
    _text("gpt2", _gpt2, _GPT2, 1024, "HF GPT2Model 124M (LM head tied, not counted)"),
    _text("gpt2-medium", _gpt2, _GPT2_MEDIUM, 1024, "HF GPT2Model 355M (LM head tied)"),
    _text("llama3.2-1b", _llama, _LLAMA32_1B, 4096,
          "HF LlamaForCausalLM Llama-3.2-1B (GQA, SwiGLU, tied embeddings, with loss)", batch_size=1),
    _text("llama3-8b", _llama, _LLAMA3_8B, 4096,
          "HF LlamaForCausalLM Meta-Llama-3-8B (GQA, SwiGLU, untied LM head, with loss)", batch_size=1),
)}

# Extra spellings; lookup also ignores case, '-' and '_'.
ALIASES: dict[str, str] = {
    "bert-base-uncased": "bert-base",
    "bert-large-uncased": "bert-large",
    "gpt2-124m": "gpt2",
    "gpt2-small": "gpt2",
    "gpt2-355m": "gpt2-medium",
    "gpt2-345m": "gpt2-medium",
    "meta-llama/llama-3.2-1b": "llama3.2-1b",
    "meta-llama/meta-llama-3-8b": "llama3-8b",
    "meta-llama-3-8b": "llama3-8b",
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_LOOKUP: dict[str, str] = {_key(k): v for k, v in {**{n: n for n in ZOO}, **ALIASES}.items()}


def model_names() -> list[str]:
    """Names of the built-in models, in zoo order."""
    return list(ZOO)


def find_entry(name: str) -> ZooEntry | None:
    """The zoo entry for ``name`` (case-insensitive, aliases allowed), or None."""
    canonical = _LOOKUP.get(_key(name))
    return ZOO[canonical] if canonical else None
