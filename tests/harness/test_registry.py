"""The generic registry: registration, lookup, listing, metadata, errors."""

from __future__ import annotations

import pytest

from prunebench.harness.errors import PrunebenchError, UnknownNameError
from prunebench.harness.registry import Registry


def test_add_get_list_and_metadata() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("b", 2, colour="blue")
    reg.add("a", 1)
    assert reg.get("b") == 2
    assert reg.list() == ["a", "b"]
    assert reg.list("b*") == ["b"]
    assert list(reg) == ["a", "b"] and len(reg) == 2 and "a" in reg and "z" not in reg
    assert reg.metadata("b")["colour"] == "blue"
    with pytest.raises(TypeError):
        reg.metadata("b")["colour"] = "red"  # type: ignore[index]


def test_register_decorator_uses_name_or_dunder_name() -> None:
    reg: Registry[object] = Registry("thing")

    @reg.register()
    def alpha() -> None: ...

    @reg.register("beta", size=3)
    def _impl() -> None: ...

    assert reg.get("alpha") is alpha and reg.get("beta") is _impl
    assert reg.metadata("beta")["size"] == 3


def test_unknown_name_lists_known_and_is_a_user_error() -> None:
    reg: Registry[int] = Registry("gadget")
    reg.add("one", 1)
    reg.add("two", 2)
    with pytest.raises(UnknownNameError) as info:
        reg.get("three")
    assert isinstance(info.value, PrunebenchError)
    assert str(info.value) == "unknown gadget 'three'; known gadgets: one, two"


def test_duplicate_registration_is_refused() -> None:
    reg: Registry[int] = Registry("gizmo")
    reg.add("x", 1)
    with pytest.raises(ValueError, match="gizmo 'x' is already registered"):
        reg.add("x", 2)
    assert reg.get("x") == 1
