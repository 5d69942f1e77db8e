"""Read and write model profile files (YAML for .yaml/.yml, JSON for .json).

Layered form (what :func:`save` writes and ``commtune profile-model`` records)::

    format: commtune-model/1
    name: my-model
    batch_size: 32          # batch the times were measured with, or null
    device: cuda            # where they were measured, or null
    input_desc: 3x224x224   # optional, free text
    optimizer_time_s: 0.004 # optional: one optimizer step (SGD momentum), measured
    layers:                 # forward order
      - name: conv1
        fwd_time_s: 0.0012  # optional, >= 0 (null = not measured)
        bwd_time_s: 0.0025  # optional, >= 0
        fwd_flops: 2.36e8   # optional, per sample, >= 0 (default 0)
        bwd_flops: 2.36e8   # optional, >= 0 (default 0)
        block: layer1.0     # optional: the module sharding wraps as one unit (default none: root)
        act_bytes: 1605632  # optional: activation bytes saved for backward per sample, 16-bit (default 0)
        input_bytes: 401408 # optional: bytes of the layer's input per sample, 16-bit (default 0)
        tensors:            # module.parameters() order; may be empty
          - {name: conv1.weight, numel: 9408, shape: [64, 3, 7, 7]}

Each tensor gives ``numel`` (positive integer) or ``shape`` (positive
integers) or both (then they must agree).

Hand-written short form: no ``format``/``layers``; ``tensors`` lists the
gradient tensors in *ready (backward) order*, each with ``name``, ``numel`` or
``shape`` and optionally ``bwd_time_s``/``fwd_time_s``/``fwd_flops``/
``bwd_flops``. It becomes one layer per tensor, in reverse order::

    name: toy
    tensors:
      - {name: fc.bias, numel: 10, bwd_time_s: 0.0001}
      - {name: fc.weight, shape: [10, 512], bwd_time_s: 0.002}

Any problem raises :class:`~commtune.errors.CommtuneError` with one line naming
the file, the offending key (``layers[3].tensors[0].numel``) and what is accepted.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from commtune.errors import CommtuneError, did_you_mean
from commtune.io import atomic_write_text, read_text
from commtune.models.base import GradTensor, Layer, ModelProfile

FORMAT = "commtune-model/1"
EXTENSIONS = (".yaml", ".yml", ".json")

_TOP_KEYS = ("format", "name", "batch_size", "device", "input_desc", "optimizer_time_s", "layers")
_SHORT_TOP_KEYS = ("name", "batch_size", "device", "input_desc", "optimizer_time_s", "tensors")
_LAYER_KEYS = ("name", "fwd_time_s", "bwd_time_s", "fwd_flops", "bwd_flops", "block",
               "act_bytes", "input_bytes", "tensors")
_TENSOR_KEYS = ("name", "numel", "shape")
_SHORT_TENSOR_KEYS = ("name", "numel", "shape", "fwd_time_s", "bwd_time_s",
                      "fwd_flops", "bwd_flops")


def is_profile_path(spec: str) -> bool:
    """True if ``spec`` names a profile file by its extension."""
    return Path(spec).suffix.lower() in EXTENSIONS


# ---------------------------------------------------------------- load

def load(path: str | os.PathLike) -> ModelProfile:
    """Read a profile file (layered or short form)."""
    path = Path(path)
    _check_extension(path)
    text = read_text(path, "model profile")
    return from_dict(_parse(path, text), source=str(path))


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommtuneError(f"{path}: not valid JSON (line {exc.lineno}, "
                                f"column {exc.colno}: {exc.msg})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or _one_line(exc)
        raise CommtuneError(f"{path}: not valid YAML ({where}{problem})") from None


def from_dict(data: Any, source: str = "<profile>") -> ModelProfile:
    """Validate a parsed profile (either form) and build the :class:`ModelProfile`."""
    r = _Reader(source)
    if not isinstance(data, dict):
        r.fail("top level", f"must be a mapping with 'name' and 'layers' (or 'tensors'), "
                            f"got {_kind(data)}")
    short = "format" not in data and "layers" not in data and "tensors" in data
    if not short:
        _check_format(r, data)
    r.keys(data, "top level", _SHORT_TOP_KEYS if short else _TOP_KEYS, required=("name",))
    layers = _short_layers(r, data) if short else _layers(r, data)
    if not any(layer.tensors for layer in layers):
        r.fail("tensors" if short else "layers", "no parameter tensors; at least one is needed")
    names = [t.name for layer in layers for t in layer.tensors]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        r.fail("tensors", f"duplicate tensor name {dup!r}; names must be unique")
    return ModelProfile(
        name=r.string(data["name"], "name"),
        layers=tuple(layers),
        input_desc=r.optional(data, "input_desc", r.string, ""),
        measured_batch_size=r.optional(data, "batch_size", r.positive_int, None),
        measured_device=r.optional(data, "device", r.string, None),
        meta=_meta(source, r.optional(data, "optimizer_time_s", r.non_negative, None)),
    )


def _meta(source: str, optimizer_s: float | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": source}
    if optimizer_s is not None:
        meta["optimizer_s"] = optimizer_s
    return meta


def _check_format(r: _Reader, data: dict) -> None:
    if "format" not in data:
        r.fail("format", f"missing; expected format: {FORMAT} (or the short form with "
                         f"only 'name' and 'tensors')")
    if data["format"] != FORMAT:
        r.fail("format", f"unknown version {data['format']!r}; this commtune reads {FORMAT!r}")
    if "layers" not in data:
        r.fail("layers", "missing; expected a list of layers in forward order")


def _layers(r: _Reader, data: dict) -> list[Layer]:
    items = r.list(data["layers"], "layers")
    return [_layer(r, item, f"layers[{i}]") for i, item in enumerate(items)]


def _layer(r: _Reader, item: Any, where: str) -> Layer:
    r.keys(item, where, _LAYER_KEYS, required=("name",))
    tensors = r.list(item.get("tensors", []), f"{where}.tensors", allow_empty=True)
    return Layer(
        name=r.string(item["name"], f"{where}.name"),
        tensors=tuple(_tensor(r, t, f"{where}.tensors[{j}]", _TENSOR_KEYS)
                      for j, t in enumerate(tensors)),
        block=r.optional(item, "block", r.string, None, where),
        act_bytes=r.optional(item, "act_bytes", r.non_negative_int, 0, where),
        input_bytes=r.optional(item, "input_bytes", r.non_negative_int, 0, where),
        **_numbers(r, item, where),
    )


def _short_layers(r: _Reader, data: dict) -> list[Layer]:
    items = r.list(data["tensors"], "tensors")
    layers = []
    for i, item in enumerate(items):
        where = f"tensors[{i}]"
        tensor = _tensor(r, item, where, _SHORT_TENSOR_KEYS)
        layers.append(Layer(tensor.name, (tensor,), **_numbers(r, item, where)))
    return layers[::-1]


def _numbers(r: _Reader, item: dict, where: str) -> dict[str, Any]:
    return {
        "fwd_time_s": r.optional(item, "fwd_time_s", r.non_negative, None, where),
        "bwd_time_s": r.optional(item, "bwd_time_s", r.non_negative, None, where),
        "fwd_flops": r.optional(item, "fwd_flops", r.non_negative, 0.0, where),
        "bwd_flops": r.optional(item, "bwd_flops", r.non_negative, 0.0, where),
    }


def _tensor(r: _Reader, item: Any, where: str, allowed: tuple[str, ...]) -> GradTensor:
    r.keys(item, where, allowed, required=("name",))
    name = r.string(item["name"], f"{where}.name")
    shape = None
    if item.get("shape") is not None:
        dims = r.list(item["shape"], f"{where}.shape")
        shape = tuple(r.positive_int(d, f"{where}.shape[{k}]") for k, d in enumerate(dims))
    if item.get("numel") is None:
        if shape is None:
            r.fail(where, "needs 'numel' (a positive integer) or 'shape' (a list of them)")
        return GradTensor(name, math.prod(shape), shape)
    numel = r.positive_int(item["numel"], f"{where}.numel")
    if shape is not None and math.prod(shape) != numel:
        r.fail(f"{where}.numel", f"{numel} does not match shape {list(shape)} "
                                 f"({math.prod(shape)} elements)")
    return GradTensor(name, numel, shape)


class _Reader:
    """Type checks that fail with ``<file>: <key>: <problem>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> None:
        raise CommtuneError(f"{self.source}: {where}: {message}")

    def keys(self, item: Any, where: str, allowed: tuple[str, ...],
             required: tuple[str, ...]) -> None:
        if not isinstance(item, dict):
            self.fail(where, f"must be a mapping with keys {', '.join(allowed)}; got {_kind(item)}")
        for key in item:
            if key not in allowed:
                self.fail(f"{where}.{key}", f"unknown key{did_you_mean(str(key), allowed)}; "
                                            f"accepted: {', '.join(allowed)}")
        for key in required:
            if key not in item:
                self.fail(where, f"missing key {key!r}")

    def list(self, value: Any, where: str, allow_empty: bool = False) -> list:
        if not isinstance(value, list) or (not value and not allow_empty):
            self.fail(where, f"must be a non-empty list, got {_kind(value)}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(where, f"must be a non-empty string, got {_kind(value)}")
        return value

    def positive_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(where, f"must be a positive integer, got {value!r}")
        return value

    def non_negative_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where, f"must be an integer >= 0, got {value!r}")
        return value

    def non_negative(self, value: Any, where: str) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            self.fail(where, f"must be a number >= 0, got {value!r}")
        return float(value)

    def optional(self, item: dict, key: str, check, default, where: str = "") -> Any:
        value = item.get(key)
        return default if value is None else check(value, f"{where}.{key}" if where else key)


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:60]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_extension(path: Path) -> None:
    if path.suffix.lower() not in EXTENSIONS:
        raise CommtuneError(f"{path}: unsupported model profile extension "
                            f"{path.suffix or '(none)'!r}; use {', '.join(EXTENSIONS)}")


# ---------------------------------------------------------------- save

def to_dict(profile: ModelProfile) -> dict[str, Any]:
    """The layered form of ``profile`` (what :func:`save` writes)."""
    data: dict[str, Any] = {"format": FORMAT, "name": profile.name,
                            "batch_size": profile.measured_batch_size,
                            "device": profile.measured_device}
    if profile.input_desc:
        data["input_desc"] = profile.input_desc
    if (profile.meta or {}).get("optimizer_s") is not None:
        data["optimizer_time_s"] = float(profile.meta["optimizer_s"])
    data["layers"] = [_layer_dict(layer) for layer in profile.layers]
    return data


def _layer_dict(layer: Layer) -> dict[str, Any]:
    out: dict[str, Any] = {"name": layer.name}
    for key in ("fwd_time_s", "bwd_time_s"):
        if getattr(layer, key) is not None:
            out[key] = getattr(layer, key)
    out["fwd_flops"] = layer.fwd_flops
    out["bwd_flops"] = layer.bwd_flops
    if layer.block is not None:
        out["block"] = layer.block
    for key in ("act_bytes", "input_bytes"):
        if getattr(layer, key):
            out[key] = getattr(layer, key)
    out["tensors"] = [_tensor_dict(t) for t in layer.tensors]
    return out


def _tensor_dict(tensor: GradTensor) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tensor.name, "numel": tensor.numel}
    if tensor.shape is not None:
        out["shape"] = list(tensor.shape)
    return out


def save(profile: ModelProfile, path: str | os.PathLike) -> None:
    """Write ``profile`` in the layered form, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    _check_extension(path)
    data = to_dict(profile)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=1) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    atomic_write_text(path, text)
