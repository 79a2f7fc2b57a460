"""One small generic registry, keyed by name, with frozen metadata (timm-style)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from prunebench.harness.errors import PrunebenchError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes, factories, instances) with read-only metadata.

    ``kind`` names what is registered ("model", "dataset", ...) so errors read well. Entries
    that are costly to enumerate (every torchvision model, installed entry points) come from
    *lazy loaders* (:meth:`add_lazy`), run once when a name they may hold is looked up or the
    registry is listed; names that describe where an object lives (``package.module:factory``)
    come from *resolvers* (:meth:`add_resolver`), asked when a name is not registered.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, Mapping[str, Any]] = {}
        self._lazy: list[tuple[Callable[[Registry[T]], None], Callable[[str], bool]]] = []
        self._resolvers: list[Callable[[str], tuple[T, Mapping[str, Any]] | None]] = []

    def add_lazy(self, loader: Callable[[Registry[T]], None],
                 applies: Callable[[str], bool] | None = None) -> None:
        """Run ``loader(self)`` (which calls :meth:`add`) once, before the first listing or the
        first lookup of an unregistered name for which ``applies(name)`` holds (any name when
        ``applies`` is ``None``)."""
        self._lazy.append((loader, applies or (lambda name: True)))

    def add_resolver(self, resolve: Callable[[str], tuple[T, Mapping[str, Any]] | None]) -> None:
        """Ask ``resolve(name)`` for an unregistered name: ``(object, metadata)`` registers it
        under that name, ``None`` passes; it raises to reject a name it recognises."""
        self._resolvers.append(resolve)

    def _load(self, name: str | None) -> None:
        """Run the pending lazy loaders that may hold ``name`` (all: ``None``)."""
        for entry in list(self._lazy):
            loader, applies = entry
            if name is None or applies(name):
                self._lazy.remove(entry)  # before calling: a loader may look names up
                loader(self)

    def _find(self, name: str) -> bool:
        if name in self._items:
            return True
        for resolve in self._resolvers:
            found = resolve(name)
            if found is not None:
                self.add(name, found[0], **found[1])
                return True
        self._load(name)
        return name in self._items

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
        if self._find(name):
            return self._items[name]
        known = ", ".join(self.list()) or "(none)"
        raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")

    def metadata(self, name: str) -> Mapping[str, Any]:
        """Frozen metadata given at registration."""
        self.get(name)
        return self._meta[name]

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted (lazy loaders run)."""
        self._load(None)
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return self._find(name)
        except PrunebenchError:  # a resolver rejected the name (e.g. a module that is missing)
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load(None)
        return len(self._items)
