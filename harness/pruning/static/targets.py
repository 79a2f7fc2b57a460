"""Resource targets and budgets of the attention methods: ``KIND=VALUE`` specs and their limits.

AAP's ``target`` (``accuracy-loss=0.5``, ``params=0.5``, ``macs=...``, ``latency-ms=1.2``) and
PAAM's ``budget`` (``params=0.5``, ``macs=...``) are parsed by :func:`parse_spec`; a params or
MACs value at most 1 is a fraction of the dense network's (:func:`resource_limit`). Such a method
takes either its own amount or ratios, never both (:func:`uses_ratios`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prunebench.harness.errors import PrunebenchError

if TYPE_CHECKING:
    from prunebench.harness.pruning.config import PruningConfig


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


def uses_ratios(method: str, config: PruningConfig, opts: Mapping[str, Any], amount_key: str,
                example: str) -> bool:
    """Whether ratios (not the method's own amount) set how much an attention method prunes.

    Such a method takes exactly one of its own amount (``amount_key`` in the parsed ``opts``,
    e.g. AAP's target or PAAM's budget) or ratios; keep-ratios and execution modes are
    dynamic-only.
    """
    if config.keep or config.global_keep is not None or config.exec_mode:
        raise PrunebenchError(f"static method {method!r} takes a {amount_key} (or ratios), not "
                              "keep-ratios or an execution mode")
    has_ratio = bool(config.ratios) or config.global_ratio is not None
    if has_ratio == (amount_key in opts):
        raise PrunebenchError(f"method {method!r} needs exactly one of a {amount_key} "
                              f"({example}) or ratios")
    return has_ratio
