"""``commtune.search`` and ``commtune.probe`` are subpackages and also API functions:
the package module's class is swapped for one whose call runs the function."""
from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Calling module ``module_name`` calls ``target`` (``"package.module:function"``)."""
    mod_path, _, func = target.partition(":")

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(mod_path), func)(*args, **kwargs)

    CallableModule.__call__.__doc__ = f"Runs :func:`{mod_path}.{func}`."
    sys.modules[module_name].__class__ = CallableModule
