"""The pruning *amount*: a frozen, JSON round-trippable configuration.

Importance (how channels are scored), amount (this config) and cut (how the network is changed or
executed) stay apart, as in Torch-Pruning. Per-layer values are keyed by module name (the names
``model.named_modules()`` gives), which map one-to-one to Optuna parameter names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from prunebench.harness.errors import PrunebenchError


@dataclass(frozen=True)
class PruningConfig:
    """How much to prune, and with which registered method.

    - ``method``: a name in ``prunebench.harness.pruning.METHODS`` (``"dense"`` for no pruning).
    - ``ratios``: static pruning ratio in [0, 1) per module (or coupled group leader) name.
    - ``global_ratio``: one ratio for every prunable layer (uniform, or ranked globally when
      ``options["allocation"] == "global"``); per-layer ``ratios`` override it.
    - ``keep``: dynamic keep-ratio (0, 1] or threshold per gated module name.
    - ``global_keep``: one keep-ratio/threshold for every gated layer; ``keep`` overrides it.
    - ``exec_mode``: dynamic execution mode (``masked``, ``gathered``, ``fast``), else ``None``.
    - ``options``: method-specific settings (``round_to``, ``finetune_epochs``, ``criterion``...).
    """

    method: str = "dense"
    ratios: dict[str, float] = field(default_factory=dict)
    global_ratio: float | None = None
    keep: dict[str, float] = field(default_factory=dict)
    global_keep: float | None = None
    exec_mode: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, r in {**self.ratios, **({"global_ratio": self.global_ratio}
                                          if self.global_ratio is not None else {})}.items():
            if not 0.0 <= float(r) < 1.0:
                raise PrunebenchError(
                    f"pruning ratio {r!r} for {name!r} is outside [0, 1); use e.g. 0.5 to remove "
                    "half of the filters"
                )

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (sorted keys) for JSON."""
        return {
            "method": self.method,
            "ratios": dict(sorted(self.ratios.items())),
            "global_ratio": self.global_ratio,
            "keep": dict(sorted(self.keep.items())),
            "global_keep": self.global_keep,
            "exec_mode": self.exec_mode,
            "options": dict(sorted(self.options.items())),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), stable across runs."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        allowed = {"method", "ratios", "global_ratio", "keep", "global_keep", "exec_mode",
                   "options"}
        extra = sorted(set(data) - allowed)
        if extra:
            raise PrunebenchError(
                f"unknown pruning config keys {extra}; allowed: {sorted(allowed)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> PruningConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    @property
    def key(self) -> str:
        """A short stable hash of the canonical JSON (for caches and file names)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.to_json())


DENSE = PruningConfig()
