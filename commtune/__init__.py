"""commtune: auto-tune the communication knobs of data-parallel training.

Data flow: model profile + cluster spec + knobs -> evaluator (the simulator,
``simulators``, or live DDP steps) -> metrics -> search -> profile -> runtime /
exporters.

The public API (:mod:`commtune.api`): :func:`simulate`, :func:`search`,
:func:`load_profile`, :func:`wrap`, :func:`probe`, :func:`validate`,
:class:`CommtuneError`; also :func:`make_scenario` and :func:`make_knobs`. Importing
commtune is cheap: the functions import what they need on use.
"""
from __future__ import annotations

from typing import Any

from commtune.errors import CommtuneError

__version__ = "0.1.0"

_API = ("simulate", "search", "load_profile", "wrap", "probe", "validate", "make_scenario", "make_knobs", "SearchRun")
__all__ = ["CommtuneError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    # ``commtune.search`` and ``commtune.probe`` are also subpackages: importing them
    # binds the module here; their module class is callable and runs the API function.
    if name in ("search", "probe"):
        import importlib

        return importlib.import_module(f"commtune.{name}")
    if name in _API:
        from commtune import api

        return getattr(api, name)
    raise AttributeError(f"module 'commtune' has no attribute {name!r}")
