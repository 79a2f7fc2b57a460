"""``eager``: PyTorch eager in inference mode, every adjacent conv/BN pair folded.

Folding is applied to dense, static and dynamic networks alike (a dynamic network's fast blocks
are folded when built), so a speedup never credits one side with folding the other lacks.
"""

from __future__ import annotations

import torch
from torch import nn

from prunebench.harness.engines.base import Engine
from prunebench.harness.profiles import HardwareProfile


class _InferenceMode(nn.Module):
    """Runs the wrapped network under ``torch.inference_mode``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)


class EagerEngine(Engine):
    """PyTorch eager with conv/BN folding."""

    name = "eager"
    dynamic_methods = ("*",)

    def version(self) -> str:
        return f"torch {torch.__version__}"

    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        from prunebench.harness.pruning.dynamic.folding import fold_batchnorm

        if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            return _InferenceMode(model).eval()  # nothing to fold (e.g. fast blocks): no copy
        folded = fold_batchnorm(model)
        for attr in ("prunebench_dynamic", "prunebench_arch"):  # deepcopy keeps them; be sure
            if hasattr(model, attr):
                setattr(folded, attr, getattr(model, attr))
        return _InferenceMode(folded).eval()
