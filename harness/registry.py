"""One small generic registry, keyed by name, with frozen metadata (timm-style)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from prunebench.harness.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes, factories, instances) with read-only metadata.

    ``kind`` names what is registered ("model", "dataset", ...) so errors read well.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, Mapping[str, Any]] = {}

    def add(self, name: str, obj: T, **metadata: Any) -> T:
        """Register ``obj`` under ``name``; a second registration of a name is an error."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        self._meta[name] = MappingProxyType(dict(metadata))
        return obj

    def register(self, name: str | None = None, **metadata: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; the name defaults to the object's ``__name__``."""

        def deco(obj: T) -> T:
            self.add(name or obj.__name__, obj, **metadata)  # type: ignore[attr-defined]
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``; unknown names raise with the known ones listed."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {known}"
            ) from None

    def metadata(self, name: str) -> Mapping[str, Any]:
        """Frozen metadata given at registration."""
        self.get(name)
        return self._meta[name]

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)
