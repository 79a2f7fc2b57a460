"""``torchscript``: traced and frozen TorchScript (BN folded by freezing, no Python dispatch)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from prunebench.harness.engines.base import Engine, is_dynamic
from prunebench.harness.profiles import HardwareProfile


class TorchScriptEngine(Engine):
    """``torch.jit.trace`` + ``torch.jit.freeze``."""

    name = "torchscript"
    folding = "conv+bn (freeze)"

    def version(self) -> str:
        return f"torch {torch.__version__}"

    def supports(self, model: nn.Module, profile: HardwareProfile) -> str | None:
        method = is_dynamic(model)
        if method:  # tracing would freeze one input's choices
            return (f"tracing cannot express input-dependent pruning ({method}): it would "
                    "freeze one input's choices")
        return None

    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript is deprecated in torch 2.x
            return torch.jit.freeze(torch.jit.trace(model.eval(), example))
