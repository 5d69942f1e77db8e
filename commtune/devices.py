"""Compute-device presets: effective training throughput per precision.

The numbers live in ``commtune/data/devices.yaml`` with their source. A
measured model profile (per-layer times) overrides these estimates.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from commtune.errors import CommtuneError, did_you_mean

PRECISIONS = ("fp32", "amp", "fp16", "bf16")


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    tflops: dict[str, float]

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
        name: Device(name, d["description"], {k: float(v) for k, v in d["tflops"].items()})
        for name, d in data.items()
    }


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
