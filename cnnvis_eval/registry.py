"""One registry type, for the methods (Explainer classes) and the metrics (Metric classes).

A :class:`Registry` maps names to classes: ``add`` (or the ``register`` decorator) adds
one, ``get`` looks one up with an :class:`~cnnvis_eval.errors.InputError` that lists the
registered names (and the closest matches), ``names`` lists them sorted.  Depends only on
:mod:`cnnvis_eval.errors` (see docs/architecture.md).
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> class registry.

    Parameters
    ----------
    kind : str
        What is registered ("method", "metric"), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name``; registering a different item twice is a ValueError."""
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: set ``cls.name = name`` and register the class."""

        def deco(cls):
            cls.name = name
            return self.add(name, cls)

        return deco

    def remove(self, name: str) -> None:
        """Unregister ``name`` (no error when absent), e.g. a class registered by a test."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The item registered as ``name``.

        Raises
        ------
        InputError
            ``unknown {kind} 'x'. Did you mean ...? Available: ...``.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), list(self._items), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InputError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, item) pairs, sorted by name."""
        return sorted(self._items.items())

    def __contains__(self, name) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


__all__ = ["Registry"]
