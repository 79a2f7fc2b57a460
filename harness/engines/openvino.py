"""``openvino``: convert the module with OpenVINO's PyTorch frontend and compile it for the CPU
with the profile's threads, the latency hint and f32 inference precision (no silent bf16)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from prunebench.harness.engines.base import Engine, is_dynamic
from prunebench.harness.profiles import HardwareProfile


class _Compiled(nn.Module):
    def __init__(self, compiled: object) -> None:
        super().__init__()
        self.compiled = compiled
        self.request = compiled.create_infer_request()  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy())})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


class OpenVinoEngine(Engine):
    """OpenVINO on the CPU."""

    name = "openvino"
    folding = "conv+bn (openvino transformations)"
    preferred_alignment = 8

    def version(self) -> str:
        import openvino

        return f"openvino {openvino.__version__}"

    def supports(self, model: nn.Module, profile: HardwareProfile) -> str | None:
        method = is_dynamic(model)
        if method:
            return (f"the per-input width choice of {method} is not expressed in the converted "
                    "graph (its decision runs in NumPy)")
        if profile.is_cuda:
            return "prunebench runs OpenVINO on the CPU only"
        if profile.dtype != "float32":
            return f"this engine runs float32 only (profile dtype {profile.dtype})"
        return None

    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        import openvino as ov

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            converted = ov.convert_model(model.eval(), example_input=example)
        config = {"INFERENCE_NUM_THREADS": profile.resolved_threads(),
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "NUM_STREAMS": 1}
        return _Compiled(ov.Core().compile_model(converted, "CPU", config)).eval()
