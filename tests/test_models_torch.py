"""The zoo against plain-torch re-implementations of the reference models."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from commtune.models import load_model  # noqa: E402
from torch_reference_models import REFERENCE  # noqa: E402


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_tensors_match_named_parameters(name: str) -> None:
    build, _ = REFERENCE[name]
    with torch.device("meta"):
        module = build()
    expected = [(n, tuple(p.shape), p.numel()) for n, p in module.named_parameters()]
    got = [(t.name, t.shape, t.numel) for t in load_model(name).tensors()]
    assert got == expected


def _counted_flops(name: str, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    build, family = REFERENCE[name]
    with torch.device("meta"):
        module = build()
        x = torch.zeros(1, 3, size, size) if family == "image" else torch.zeros(1, size, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name, size", [("resnet50", 224), ("resnet101", 160), ("vgg16", 224),
                                        ("bert-base", 128), ("gpt2", 1024), ("gpt2", 200)])
def test_forward_flops_match_torch_flop_counter(name: str, size: int) -> None:
    """torch counts only matmuls/convs; the zoo adds norms, activations, biases (< 3 %)."""
    counted = _counted_flops(name, size)
    zoo = sum(layer.fwd_flops for layer in load_model(name, size).layers)
    assert counted <= zoo <= 1.03 * counted
