"""Resource targets and budgets of the attention methods: ``KIND=VALUE`` specs and their limits.

AAP's ``target`` (``accuracy-loss=0.5``, ``params=0.5``, ``macs=...``, ``latency-ms=1.2``) and
PAAM's ``budget`` (``params=0.5``, ``macs=...``) are parsed by :func:`parse_spec`; a params or
MACs value at most 1 is a fraction of the dense network's (:func:`resource_limit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prunebench.harness.errors import PrunebenchError


def parse_spec(text: Any, kinds: Sequence[str], what: str, example: str) -> tuple[str, float]:
    """``"kind=value"`` (or a one-item dict) -> ``(kind, value)``; errors name the fix."""
    if isinstance(text, Mapping) and len(text) == 1:
        text = "{}={}".format(*next(iter(text.items())))
    if not isinstance(text, str) or text.count("=") != 1:
        raise PrunebenchError(f"{what} {text!r} is not KIND=VALUE; use e.g. {example} "
                              f"(kinds: {', '.join(kinds)})")
    kind, raw = (s.strip() for s in text.split("="))
    if kind not in kinds:
        raise PrunebenchError(f"unknown {what} kind {kind!r} in {text!r}; use one of "
                              f"{', '.join(kinds)} (e.g. {example})")
    try:
        value = float(raw)
    except ValueError:
        raise PrunebenchError(f"{what} value {raw!r} in {text!r} is not a number; use e.g. "
                              f"{example}") from None
    if not value > 0 and not (kind == "accuracy-loss" and value == 0):
        raise PrunebenchError(f"{what} value {value} in {text!r} must be positive; use e.g. "
                              f"{example}")
    return kind, value


def resource_limit(value: float, dense: float) -> float:
    """A count, or a fraction of the dense figure when ``value <= 1``."""
    return value * dense if value <= 1 else value
