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
    - ``finetune_epochs``: the pipeline's recovery stage (:mod:`harness.pruning.pipeline`):
      epochs of plain fine-tuning after the static stage and before any dynamic gating, with the
      recipe's lr in a fresh cosine schedule (0: none). A static method's own
      ``options["finetune_epochs"]`` is that method's recovery (it can iterate and distil).
    - ``static_method`` / ``static_options``: a hybrid network's static stage. Only with a
      dynamic ``method``; ``ratios`` / ``global_ratio`` then belong to the static stage.

    Every network :func:`harness.pruning.pipeline.build` makes is described by this one record,
    so a recorded trial or sweep point can be rebuilt from it.
    """

    method: str = "dense"
    ratios: dict[str, float] = field(default_factory=dict)
    global_ratio: float | None = None
    keep: dict[str, float] = field(default_factory=dict)
    global_keep: float | None = None
    exec_mode: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    finetune_epochs: int = 0
    static_method: str | None = None
    static_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, r in {**self.ratios, **({"global_ratio": self.global_ratio}
                                          if self.global_ratio is not None else {})}.items():
            if not 0.0 <= float(r) < 1.0:
                raise PrunebenchError(
                    f"pruning ratio {r!r} for {name!r} is outside [0, 1); use e.g. 0.5 to remove "
                    "half of the filters"
                )
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int) \
                or self.finetune_epochs < 0:
            raise PrunebenchError(f"finetune_epochs {self.finetune_epochs!r} must be a whole "
                                  "number >= 0 (e.g. 2)")
        if self.static_options and self.static_method is None:
            raise PrunebenchError("static_options need a static_method (the hybrid network's "
                                  "static stage, e.g. 'l1')")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (sorted keys) for JSON.

        The pipeline fields appear only when set, so a single-stage config keeps the JSON (and
        :attr:`key`) it had before they existed.
        """
        out: dict[str, Any] = {
            "method": self.method,
            "ratios": dict(sorted(self.ratios.items())),
            "global_ratio": self.global_ratio,
            "keep": dict(sorted(self.keep.items())),
            "global_keep": self.global_keep,
            "exec_mode": self.exec_mode,
            "options": dict(sorted(self.options.items())),
        }
        if self.finetune_epochs:
            out["finetune_epochs"] = self.finetune_epochs
        if self.static_method is not None:
            out["static_method"] = self.static_method
            out["static_options"] = dict(sorted(self.static_options.items()))
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), stable across runs."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        allowed = {"method", "ratios", "global_ratio", "keep", "global_keep", "exec_mode",
                   "options", "finetune_epochs", "static_method", "static_options"}
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
