"""One typed option schema for every pruning method's ``PruningConfig.options``.

Every registered method declares ``options: OptionSchema``: one :class:`Option` per key, with its
type (``bool``, ``int``, ``float`` or ``str``), default, allowed range or choices and help. The
same schema checks values that are already typed (a JSON config, a search, the Python API:
:meth:`OptionSchema.parse`) and parses command-line text (``--option KEY=VALUE``:
:meth:`OptionSchema.parse_text`), so both accept and refuse the same values with the same
messages. Typed values follow JSON: an ``int`` option takes a whole number (not ``true``), a
``float`` option takes any finite number, a ``bool`` option takes ``true``/``false`` or ``1``/``0``.
On the command line a ``bool`` also reads ``yes``/``no`` and ``on``/``off``, in any case.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prunebench.harness.errors import PrunebenchError

TYPES: tuple[type, ...] = (bool, int, float, str)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    """One method option.

    ``min`` / ``max`` bound a number (inclusive; ``min_exclusive`` makes the lower bound strict,
    as for a learning rate ``> 0``); ``choices`` lists the allowed values of a string. A default
    of ``None`` means the method derives the value (e.g. from the training recipe), which the
    ``help`` says; ``None`` is never a value a user passes. ``example`` is the value error
    messages suggest (the default when not given).
    """

    name: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    min_exclusive: bool = False
    example: Any = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"option {self.name!r}: type must be one of bool, int, float, str")
        if self.choices and self.type is not str:
            raise TypeError(f"option {self.name!r}: choices are for str options")
        if (self.min is not None or self.max is not None) and self.type not in (int, float):
            raise TypeError(f"option {self.name!r}: min/max are for int and float options")
        for value in (self.default, self.example):
            if value is not None and self._check(value) is None:
                raise TypeError(f"option {self.name!r}: {value!r} is not {self.kind}")

    # ------------------------------------------------------------------ what it accepts
    @property
    def range(self) -> str:
        """The allowed values in words, e.g. ``>= 1``, ``in (0, 1]``, ``one of a, b``."""
        if self.type is bool:
            return "1/0, true/false, yes/no, on/off"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low = "(" if self.min_exclusive else "["
        if self.min is not None and self.max is not None:
            return f"in {low}{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f"{'>' if self.min_exclusive else '>='} {self.min:g}"
        if self.max is not None:
            return f"<= {self.max:g}"
        return ""

    @property
    def kind(self) -> str:
        """Type and range in words, e.g. ``an int >= 1`` or ``a bool (1/0, true/false, ...)``."""
        article = "an" if self.type is int else "a"
        text = f"{article} {self.type.__name__}"
        if self.type is bool:
            return f"{text} ({self.range})"
        return f"{text}, {self.range}" if self.choices else f"{text} {self.range}".rstrip()

    @property
    def example_text(self) -> str:
        """``name=value`` as a user would type it (a bool suggests the value that is not the
        default)."""
        value = self.example if self.example is not None else self.default
        if self.type is bool and self.example is None:
            value = not self.default
        elif value is None:
            value = self.choices[0] if self.choices else (self.min if self.min is not None
                                                           else 1)
        if isinstance(value, bool):
            value = str(value).lower()
        return f"{self.name}={value}"

    def _check(self, value: Any) -> Any:
        """``value`` typed and in range, or ``None`` when it is not allowed."""
        if self.type is bool:
            if isinstance(value, bool):
                return value
            return bool(value) if isinstance(value, int) and value in (0, 1) else None
        if isinstance(value, bool):  # JSON true is not a number
            return None
        if self.type is str:
            return value if isinstance(value, str) and (not self.choices
                                                        or value in self.choices) else None
        if self.type is int and not isinstance(value, int):
            return None
        if self.type is float:
            if not isinstance(value, int | float) or not math.isfinite(value):
                return None
            value = float(value)
        if self.min is not None and (value <= self.min if self.min_exclusive
                                     else value < self.min):
            return None
        if self.max is not None and value > self.max:
            return None
        return value

    def _from_text(self, text: str) -> Any:
        """Command-line text -> a typed value (not yet range-checked), or ``None``."""
        if self.type is bool:
            low = text.lower()
            return True if low in _TRUE else False if low in _FALSE else None
        if self.type is str:
            return text
        try:
            return self.type(text)
        except ValueError:
            return None


class OptionSchema:
    """The options of one method: a tuple of :class:`Option` with unique names."""

    __slots__ = ("_options",)

    def __init__(self, *options: Option) -> None:
        names = [o.name for o in options]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise TypeError(f"options declared twice: {dupes}")
        self._options: dict[str, Option] = {o.name: o for o in options}

    def __add__(self, other: OptionSchema) -> OptionSchema:
        return OptionSchema(*self, *other)

    def __iter__(self) -> Iterator[Option]:
        return iter(self._options.values())

    def __len__(self) -> int:
        return len(self._options)

    def __contains__(self, name: object) -> bool:
        return name in self._options

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __repr__(self) -> str:
        return f"OptionSchema({', '.join(self._options)})"

    # ------------------------------------------------------------------ parsing
    def parse(self, method: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """Typed, range-checked copy of ``options`` (only the keys given; see :meth:`defaults`).

        An unknown key, a wrong type or a value out of range raises a :class:`PrunebenchError`
        naming the option, its type and range (or the method's options).
        """
        out: dict[str, Any] = {}
        for key, value in options.items():
            option = self._option(method, key)
            typed = option._check(value)
            if typed is None:
                raise _bad(method, option, repr(value))
            out[key] = typed
        return out

    def parse_text(self, method: str, text: str) -> tuple[str, Any]:
        """``"KEY=VALUE"`` from the command line -> ``(key, typed value)``.

        Errors are one line naming the option, its type, its range and an example.
        """
        key, sep, raw = text.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            example = next(iter(self), None)
            hint = f"; use e.g. {example.example_text}" if example else ""
            raise PrunebenchError(f"option {text!r} of method {method!r} is not KEY=VALUE{hint}")
        option = self._option(method, key)
        value = option._from_text(raw)
        typed = option._check(value) if value is not None else None
        if typed is None:
            raise _bad(method, option, raw)
        return key, typed

    def defaults(self) -> dict[str, Any]:
        """Every option's default (``None`` where the method derives it)."""
        return {o.name: o.default for o in self}

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-ready row per option: name, type, default, range, help (for listings)."""
        return [{"name": o.name, "type": o.type.__name__, "default": o.default,
                 "range": o.range, "help": o.help} for o in self]

    def _option(self, method: str, key: str) -> Option:
        option = self._options.get(key)
        if option is not None:
            return option
        if not self._options:
            raise PrunebenchError(f"unknown option {key!r}: method {method!r} takes no options")
        close = difflib.get_close_matches(key, list(self._options), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PrunebenchError(f"unknown option {key!r} for method {method!r}{hint}; its "
                              f"options: {', '.join(sorted(self._options))}")


def _bad(method: str, option: Option, shown: str) -> PrunebenchError:
    return PrunebenchError(f"option {option.name}={shown} of method {method!r} must be "
                           f"{option.kind}; e.g. {option.example_text}")
