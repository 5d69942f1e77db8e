"""Compute-device presets: effective training throughput per precision.

The numbers live in ``commtune/data/devices.yaml`` with their source. A
measured model profile (per-layer times) overrides these estimates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import yaml

from commtune.errors import CommtuneError, did_you_mean
from commtune.units import parse_size

PRECISIONS = ("fp32", "amp", "fp16", "bf16")


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    tflops: dict[str, float]
    memory_bytes: int = 0  # the GPU's memory capacity (devices.yaml ``memory``)
    framework: dict = field(default_factory=dict, compare=False, hash=False)
    optimizer: dict = field(default_factory=dict, compare=False, hash=False)

    def optimizer_s(self, num_params: int, num_tensors: int) -> float:
        """Estimated optimizer step (SGD with momentum, one kernel chain per
        tensor): ``s_per_tensor * T + bytes_per_param * P / mem_bw``."""
        o = self.optimizer
        if not o:
            return 0.0
        return (float(o["s_per_tensor"]) * num_tensors
                + float(o["bytes_per_param"]) * num_params / float(o["mem_bw_Bps"]))

    def flops_per_s(self, precision: str) -> float:
        if precision not in PRECISIONS:
            raise CommtuneError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if precision not in self.tflops:
            raise CommtuneError(
                f"device {self.name} has no {precision} throughput; choose one of: {', '.join(self.tflops)}"
            )
        return self.tflops[precision] * 1e12


@lru_cache(maxsize=1)
def all_devices() -> dict[str, Device]:
    data = yaml.safe_load(resources.files("commtune.data").joinpath("devices.yaml").read_text())
    return {
        name: Device(name, d["description"], {k: float(v) for k, v in d["tflops"].items()},
                     parse_size(d["memory"], what=f"devices.yaml {name}: memory", allow_zero=False),
                     dict(d.get("framework") or {}), dict(d.get("optimizer") or {}))
        for name, d in data.items()
    }


def device_memory_bytes(name: str) -> int:
    """The memory capacity of device ``name`` in bytes (e.g. H100: 80 GiB)."""
    return get_device(name).memory_bytes


def framework_defaults(device: str) -> dict:
    """The device class's framework costs as ``ClusterSpec`` fields (seconds;
    ``devices.yaml`` writes them with units). Unknown devices: none."""
    from commtune.units import parse_duration

    dev = all_devices().get(device)
    if dev is None:
        return {}
    out: dict = {}
    for key, value in dev.framework.items():
        if key in ("bucket_cost", "tensor_hook", "step_overhead", "collective_jitter"):
            out[f"{key}_s"] = parse_duration(value, what=f"devices.yaml {device}: {key}")
        else:
            out[key] = value
    return out


def device_names() -> list[str]:
    return list(all_devices())


def get_device(name: str) -> Device:
    devices = all_devices()
    for key, dev in devices.items():
        if key.lower() == str(name).lower():
            return dev
    raise CommtuneError(
        f"unknown device {name!r}{did_you_mean(str(name).upper(), list(devices))}; choose one of: {', '.join(devices)}"
    )


def grad_bytes_per_element(precision: str) -> int:
    """Bytes of one gradient element as training produces it: fp32 and AMP
    keep fp32 gradients (fp32 master weights); pure fp16/bf16 training has
    2-byte gradients."""
    return 2 if precision in ("fp16", "bf16") else 4
