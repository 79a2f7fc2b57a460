"""``compile``: ``torch.compile`` (inductor); on CUDA in ``reduce-overhead`` mode (CUDA graphs),
since batch-1 GPU inference is launch-bound."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.harness.engines.base import Engine, is_dynamic
from prunebench.harness.profiles import HardwareProfile


class _Compiled(nn.Module):
    def __init__(self, model: nn.Module, compiled: object) -> None:
        super().__init__()
        self.model, self._compiled = model, compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self._compiled(x)
        return out.clone() if x.is_cuda else out  # CUDA graphs reuse their output buffer


class CompileEngine(Engine):
    """Inductor over the BN-folded network."""

    name = "compile"

    def version(self) -> str:
        return f"torch {torch.__version__} inductor"

    def supports(self, model: nn.Module, profile: HardwareProfile) -> str | None:
        method = is_dynamic(model)
        if method:
            return (f"its per-input decisions ({method}) break the compiled graph on every "
                    "input (data-dependent control flow in NumPy)")
        return None

    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        from prunebench.harness.pruning.dynamic.folding import fold_batchnorm

        folded = fold_batchnorm(model)
        mode = "reduce-overhead" if profile.is_cuda else "default"
        compiled = torch.compile(folded, mode=mode, dynamic=False)
        with torch.inference_mode():
            for _ in range(3):  # compile (and record graphs) now, not inside a timed pass
                compiled(example)
        return _Compiled(folded, compiled).eval()
