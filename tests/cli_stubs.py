"""Run ``commtune.cli.main`` even where sibling command modules are not written yet.

A listed command module that does not exist is replaced by a stub that
registers nothing; modules that exist are used as they are.
"""
from __future__ import annotations

import importlib
import sys
import types

from commtune.cli import COMMANDS, main


def _stub_missing_commands() -> None:
    for name in COMMANDS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            stub = types.ModuleType(name)
            stub.register = lambda subparsers: None
            sys.modules[name] = stub


def run_cli(argv: list[str]) -> int:
    _stub_missing_commands()
    return main(argv)
