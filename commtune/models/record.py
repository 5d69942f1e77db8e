"""Record a model profile from a ``torch.nn.Module``: gradient order and layer times.

A *layer* is a module that directly owns parameters (``recurse=False``); its
tensors are listed in ``module.parameters()`` order under their full names.
Per training step (synthetic input, ``loss = mean of the outputs``):

* forward: a pre-hook on each layer module stamps the time; the time from one
  stamp to the next (and from the last to the end of the loss) belongs to the
  earlier layer, so parameter-free work after a module (activations, pooling,
  functional attention) is folded into the preceding layer, as in the zoo;
* backward: a hook on each parameter stamps when its gradient is ready
  (``register_post_accumulate_grad_hook``, else ``Tensor.register_hook``); the
  time since the previous stamp (or the start of backward) belongs to that
  parameter's layer.

Times are medians over the timed steps; on CUDA every stamp synchronizes.
Layers are ordered so that :meth:`ModelProfile.ready_order` follows the
measured order layer by layer (its reverse is forward order for ordinary
models); within a layer tensors keep ``parameters()`` order, since autograd may
finish a layer's weight and bias in either order. The exact measured order is
kept in ``profile.meta["ready_order"]`` (not written to the file).
Parameters that never receive a gradient are left out (listed in
``profile.meta["unused"]``). FLOPs are not measured (0). The optimizer step
(SGD, momentum 0.9, weight decay 1e-4, over the last step's gradients) is timed
``steps`` times after a warm-up step; its median is ``meta["optimizer_s"]``
(the simulator's optimizer phase; the file's ``optimizer_time_s``).

torch is optional: it is imported only here, lazily.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from commtune.errors import CommtuneError, did_you_mean
from commtune.io import check_regular_file
from commtune.models.base import GradTensor, Layer, ModelProfile

DEFAULT_IMAGE_SHAPE = (3, 224, 224)
ROOT_LAYER = "<root>"


@dataclass(frozen=True)
class RecordOptions:
    """How to drive the module: batch, synthetic input, device and step counts."""

    batch_size: int = 32
    input_shape: tuple[int, ...] | None = None  # per sample; default 3x224x224
    seq_len: int | None = None  # token-id input instead of a float tensor
    vocab: int | None = None  # default: the smallest nn.Embedding in the model
    device: str = "cpu"
    steps: int = 5
    warmup: int = 2
    name: str | None = None  # profile name; default: the module's class name

    def check(self) -> None:
        for key, low in (("batch_size", 1), ("steps", 1), ("warmup", 0)):
            value = getattr(self, key)
            if value < low:
                raise CommtuneError(f"--{key.replace('_', '-')} must be >= {low}, got {value}")
        if self.input_shape is not None and self.seq_len is not None:
            raise CommtuneError("give either --input-shape or --seq-len, not both")
        if self.seq_len is not None and self.seq_len < 1:
            raise CommtuneError(f"--seq-len must be >= 1, got {self.seq_len}")
        if self.input_shape is not None and any(d < 1 for d in self.input_shape):
            raise CommtuneError(f"--input-shape dimensions must be >= 1, got {self.input_shape}")


def import_torch() -> Any:
    """``torch``, or a CommtuneError telling how to install it."""
    try:
        import torch
    except ImportError:
        raise CommtuneError("recording a model needs PyTorch: pip install 'commtune[torch]'") from None
    return torch


# ---------------------------------------------------------------- factory

def load_factory(spec: str) -> Callable[[], Any]:
    """Resolve ``MODULE:FACTORY`` or ``path/to/file.py:FACTORY`` to a callable."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise CommtuneError(f"bad model factory {spec!r}: expected MODULE:FACTORY, e.g. "
                            f"mypkg.models:make_model or path/to/file.py:make_model")
    module = _import_file(module_part) if _is_file(module_part) else _import_module(module_part)
    factory = getattr(module, attr, None)
    if factory is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise CommtuneError(f"{module_part!r} has no attribute {attr!r}{did_you_mean(attr, names)}")
    if not callable(factory):
        raise CommtuneError(f"{spec!r} is not callable (it is a {type(factory).__name__})")
    return factory


def _is_file(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or os.sep in module_part


def _import_file(path_text: str) -> Any:
    path = Path(path_text)
    if not path.exists():
        raise CommtuneError(f"model factory file {path_text!r} does not exist")
    check_regular_file(path, "model factory file")  # a FIFO, device or folder is refused before the import reads it
    name = f"_commtune_factory_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CommtuneError(f"cannot import {path_text!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: any failure is the user's to fix
        sys.modules.pop(name, None)
        raise CommtuneError(f"cannot import {path_text!r}: {_describe(exc)}") from None
    return module


def _import_module(name: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise CommtuneError(f"cannot import module {name!r}: {_describe(exc)}") from None


def build_module(spec: str) -> Any:
    """Call the factory named by ``spec`` and check it returns a ``torch.nn.Module``."""
    torch = import_torch()
    factory = load_factory(spec)
    try:
        module = factory()
    except Exception as exc:
        raise CommtuneError(f"model factory {spec!r} failed: {_describe(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise CommtuneError(f"model factory {spec!r} returned {type(module).__name__}, "
                            f"expected a torch.nn.Module")
    return module


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


# ---------------------------------------------------------------- recording

def profile_factory(spec: str, options: RecordOptions) -> ModelProfile:
    """Build the module named by ``spec`` and record it (see :func:`record_module`)."""
    options.check()
    return record_module(build_module(spec), options)


def driving(module: Any, options: RecordOptions) -> tuple[Any, Any, Any, str, Callable[[Any], Any]]:
    """What :func:`record_module` drives ``module`` with: ``(module, device, example, input_desc, loss)``,
    the module moved to ``options.device`` in train mode, the synthetic input, its description and the
    scalar loss of an output (also for measurements of the same module elsewhere, e.g. the probe's DDP costs)."""
    torch = import_torch()
    options.check()
    device = _device(torch, options.device)
    module = module.to(device).train()
    example, input_desc = _make_input(torch, module, options, device)
    return module, device, example, input_desc, lambda out: _scalar_loss(torch, out)


def record_module(module: Any, options: RecordOptions) -> ModelProfile:
    """Run ``warmup + steps`` forward/backward steps and return the measured profile."""
    torch = import_torch()
    module, device, example, input_desc, _ = driving(module, options)
    recorder = _Recorder(torch, module, device.type == "cuda")
    try:
        for step in range(options.warmup + options.steps):
            recorder.step(example, keep=step >= options.warmup)
    finally:
        recorder.remove_hooks()
    layers = recorder.layers()
    if not layers:
        raise CommtuneError("the model has no parameter that received a gradient")
    optimizer_s = _time_optimizer(torch, module, options.steps, device.type == "cuda")
    return ModelProfile(
        name=options.name or type(module).__name__,
        layers=tuple(layers),
        input_desc=input_desc,
        measured_batch_size=options.batch_size,
        measured_device=str(device),
        meta={"source": "record", "ready_order": recorder.ready_order,
              "unused": recorder.unused(), "steps": options.steps, "optimizer_s": optimizer_s},
    )


def _time_optimizer(torch: Any, module: Any, steps: int, cuda: bool) -> float:
    """Median time of one SGD step (momentum 0.9, weight decay 1e-4) over the current gradients."""
    params = [p for p in module.parameters() if p.grad is not None]
    opt = torch.optim.SGD(params, lr=1e-6, momentum=0.9, weight_decay=1e-4)
    times = []
    for i in range(steps + 1):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first step allocates the momentum buffers
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _device(torch: Any, name: str) -> Any:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CommtuneError(f"--device {name}: CUDA is not available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CommtuneError(f"--device {name!r}: expected cpu or cuda") from None


def _make_input(torch: Any, module: Any, options: RecordOptions, device: Any) -> tuple[Any, str]:
    batch = options.batch_size
    if options.seq_len is not None:
        vocab = options.vocab or _smallest_vocab(torch, module)
        ids = torch.randint(0, vocab, (batch, options.seq_len), device=device)
        return ids, f"{options.seq_len} token ids (vocab {vocab})"
    shape = tuple(options.input_shape or DEFAULT_IMAGE_SHAPE)
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    return torch.randn((batch, *shape), device=device, dtype=dtype), "x".join(map(str, shape))


def _smallest_vocab(torch: Any, module: Any) -> int:
    sizes = [m.num_embeddings for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    if not sizes:
        raise CommtuneError("--seq-len needs --vocab (the model has no nn.Embedding to take it from)")
    return min(sizes)


def _scalar_loss(torch: Any, output: Any) -> Any:
    """Mean of every differentiable floating tensor in ``output`` (nested containers ok)."""
    found: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.requires_grad:
                found.append(value.float().mean())
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(output)
    if not found:
        raise CommtuneError("the model output holds no differentiable floating tensor to "
                            "back-propagate from")
    return torch.stack(found).sum()


class _Recorder:
    """Hooks and per-step timestamps; accumulates per-layer times over kept steps."""

    def __init__(self, torch: Any, module: Any, cuda: bool) -> None:
        self.torch, self.module, self.cuda = torch, module, cuda
        self.params: dict[str, Any] = dict(module.named_parameters())  # deduplicated
        self.owner = {n: n.rpartition(".")[0] or ROOT_LAYER
                      for n, p in self.params.items() if p.requires_grad}
        self.fwd: dict[str, list[float]] = {}
        self.bwd: dict[str, list[float]] = {}
        self.ready_order: list[str] = []
        self._fwd_events: list[tuple[float, str]] = []
        self._ready_events: list[tuple[float, str]] = []
        self._handles: list[Any] = []
        self._install()

    def _now(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()

    def _install(self) -> None:
        owners = set(self.owner.values())
        for name, sub in self.module.named_modules():
            layer = name or ROOT_LAYER
            if layer in owners:
                hook = (lambda layer: lambda *_: self._fwd_events.append((self._now(), layer)))(layer)
                self._handles.append(sub.register_forward_pre_hook(hook))
        for name in self.owner:
            param = self.params[name]
            stamp = (lambda name: lambda *_: self._ready_events.append((self._now(), name)))(name)
            if hasattr(param, "register_post_accumulate_grad_hook"):
                self._handles.append(param.register_post_accumulate_grad_hook(stamp))
            else:  # torch < 2.1: fires when the gradient is computed (returns None: no change)
                self._handles.append(param.register_hook(stamp))

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()

    def step(self, example: Any, keep: bool) -> None:
        for param in self.params.values():
            param.grad = None
        self._fwd_events.clear()
        self._ready_events.clear()
        start = self._now()
        try:
            loss = _scalar_loss(self.torch, self.module(example))
        except CommtuneError:
            raise
        except Exception as exc:
            raise CommtuneError(f"model forward failed on synthetic input of shape "
                                f"{tuple(example.shape)}: {_describe(exc)} "
                                f"(check --input-shape / --seq-len / --vocab)") from None
        fwd_end = self._now()
        loss.backward()
        bwd_end = self._now()
        if keep:
            _attribute(self.fwd, self._fwd_events, start, fwd_end)
            ready = [(t, self.owner[n]) for t, n in self._ready_events]
            _attribute_backward(self.bwd, ready, fwd_end, bwd_end)
            self.ready_order = _unique([n for _, n in self._ready_events])

    def unused(self) -> list[str]:
        return [n for n in self.owner if n not in self.ready_order]

    def layers(self) -> list[Layer]:
        """Layers in forward order = reverse of when each layer's gradients completed."""
        done_at: dict[str, int] = {}
        for index, name in enumerate(self.ready_order):
            done_at[self.owner[name]] = index
        ready = set(self.ready_order)
        out = []
        for layer in sorted(done_at, key=done_at.__getitem__, reverse=True):
            tensors = tuple(GradTensor(n, self.params[n].numel(), tuple(self.params[n].shape))
                            for n in self.owner if self.owner[n] == layer and n in ready)
            out.append(Layer(layer, tensors,
                             fwd_time_s=statistics.median(self.fwd.get(layer, [0.0])),
                             bwd_time_s=statistics.median(self.bwd.get(layer, [0.0]))))
        return out


def _attribute(acc: dict[str, list[float]], events: list[tuple[float, str]],
               start: float, end: float) -> None:
    """Forward: each interval belongs to the layer stamped at its start (first: from ``start``)."""
    per_layer: dict[str, float] = {}
    stamps = [t for t, _ in events] + [end]
    for i, (t, layer) in enumerate(events):
        begin = start if i == 0 else t
        per_layer[layer] = per_layer.get(layer, 0.0) + stamps[i + 1] - begin
    for layer, seconds in per_layer.items():
        acc.setdefault(layer, []).append(seconds)


def _attribute_backward(acc: dict[str, list[float]], events: list[tuple[float, str]],
                        start: float, end: float) -> None:
    """Backward: each interval belongs to the layer stamped at its end; the tail to the last."""
    per_layer: dict[str, float] = {}
    previous = start
    for t, layer in events:
        per_layer[layer] = per_layer.get(layer, 0.0) + t - previous
        previous = t
    if events:
        last = events[-1][1]
        per_layer[last] += end - previous
    for layer, seconds in per_layer.items():
        acc.setdefault(layer, []).append(seconds)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
