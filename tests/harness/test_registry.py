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


def test_lazy_loaders_run_once_when_a_name_they_may_hold_is_asked() -> None:
    calls: list[str] = []
    reg: Registry[int] = Registry("widget")
    reg.add("plain", 0)

    def load(r: Registry[int]) -> None:
        calls.append("lazy")
        r.add("lazy_a", 1)

    reg.add_lazy(load, lambda name: name.startswith("lazy_"))
    assert reg.get("plain") == 0 and calls == []  # registered names never trigger it
    assert "other" not in reg and calls == []  # nor names it cannot hold
    assert reg.get("lazy_a") == 1 and calls == ["lazy"]
    assert reg.list() == ["lazy_a", "plain"] and calls == ["lazy"]  # once only
    with pytest.raises(UnknownNameError, match="unknown widget 'lazy_b'; known widgets: "
                       "lazy_a, plain"):
        reg.get("lazy_b")


def test_resolvers_register_names_that_say_where_an_object_is() -> None:
    reg: Registry[str] = Registry("thing")

    def resolve(name: str) -> tuple[str, dict[str, object]] | None:
        if not name.startswith("at:"):
            return None
        if name == "at:bad":
            raise PrunebenchError("no such place")
        return name.upper(), {"where": name[3:]}

    reg.add_resolver(resolve)
    assert reg.get("at:home") == "AT:HOME" and reg.metadata("at:home")["where"] == "home"
    assert reg.list() == ["at:home"]  # registered on first use
    assert "at:bad" not in reg  # a rejected name is simply not there
    with pytest.raises(PrunebenchError, match="no such place"):
        reg.get("at:bad")  # ... and get() says why
    with pytest.raises(UnknownNameError):
        reg.get("elsewhere")
