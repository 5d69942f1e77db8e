"""Optional dependencies: one guard for every feature that needs an extra.

``require("cmaes", "--sampler cmaes")`` looks the extra's modules up (without
importing them: ``ray.tune`` alone takes over a second) and turns a missing
one into one CommtuneError line naming the extra to install, before any work
(no study, trial or file is created first).
"""
from __future__ import annotations

import importlib.util

from commtune.errors import CommtuneError

#: extra (``pip install 'commtune[EXTRA]'``) -> modules it provides
EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "ray": ("ray.tune",),
    "gp": ("torch",),  # Optuna's GPSampler; greenlet only speeds it up
    "cmaes": ("cmaes",),
    "mpi": ("mpi4py",),
}


def require(extra: str, feature: str) -> None:
    """Raise a one-line CommtuneError when ``extra`` is not installed."""
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a dotted name whose parent package is missing
            found = False
        if not found:
            raise CommtuneError(f"{feature} needs the optional dependency {module.split('.')[0]!r}, which is not "
                                f"installed: pip install 'commtune[{extra}]'") from None


def sampler_extra(sampler: str) -> str | None:
    """The extra an Optuna sampler name needs (None: core dependencies suffice)."""
    return {"gp": "gp", "cmaes": "cmaes"}.get(sampler)
