"""Named plug-ins (evaluators, search backends): registered by a decorator, or
found lazily by importing the module that defines them, so a name can be
listed and checked without loading torch or Ray."""
from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from commtune.errors import CommtuneError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """``kind`` names one entry in errors ("objective"), ``plural`` the list ("objectives").
    ``lazy`` maps names to modules; importing one registers it, or, with ``attr``,
    the module's attribute ``attr`` is the entry."""

    def __init__(self, kind: str, plural: str, lazy: dict[str, str] | None = None, attr: str | None = None) -> None:
        self.kind, self.plural, self.attr = kind, plural, attr
        self.lazy = dict(lazy or {})
        self.items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name``."""

        def deco(obj: T) -> T:
            self.items[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.lazy, *self.items]))

    def get(self, name: str) -> T:
        """The entry ``name`` (importing its module on first use); unknown names: one-line CommtuneError."""
        if name not in self.items and name in self.lazy:
            module = importlib.import_module(self.lazy[name])
            if self.attr is not None:
                self.items.setdefault(name, getattr(module, self.attr))
        if name not in self.items:
            names = self.names()
            raise CommtuneError(f"unknown {self.kind} {name!r}{did_you_mean(name, names)}; "
                                f"{self.plural}: {', '.join(names)}")
        return self.items[name]


__all__ = ["Registry"]
