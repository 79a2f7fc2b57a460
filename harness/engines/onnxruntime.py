"""``onnxruntime``: export with ``torch.onnx`` and run an ``InferenceSession`` with the profile's
threads and every graph optimisation (its optimiser folds BN and fuses activations); the CPU
execution provider, and the CUDA one on a GPU when this onnxruntime build has it."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import numpy as np
import torch
from torch import nn

from prunebench.harness.engines.base import Engine, is_dynamic
from prunebench.harness.profiles import HardwareProfile


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The ONNX model of ``model`` for inputs shaped like ``example`` (static shapes).

    Uses torch.onnx's TorchScript-based exporter, because a search exports every trial: in one
    check on ResNet-20 (``torch.onnx.export(model, (x,), dynamo=True)`` against ``dynamo=False``,
    timed once each on this 2-core VM while other jobs ran) it took 1.2 s where the dynamo
    exporter took 9.2 s. Every lowering is checked against eager (`Engine.lower`).
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, opset_version=17,
                          do_constant_folding=True)
    return buffer.getvalue()


class _Session(nn.Module):
    def __init__(self, session: object, device: torch.device) -> None:
        super().__init__()
        self.session, self.device = session, device
        self.input_name = session.get_inputs()[0].name  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())}
        out = self.session.run(None, feed)[0]  # type: ignore[attr-defined]
        return torch.from_numpy(out).to(self.device)


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime, all graph optimisations."""

    name = "onnxruntime"
    folding = "conv+bn (onnxruntime optimiser)"
    preferred_alignment = 8  # its blocked-layout conv kernels want channel multiples of 8/16

    def version(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} (torch.onnx TorchScript exporter)"

    def _provider(self, profile: HardwareProfile) -> str:
        return "CUDAExecutionProvider" if profile.is_cuda else "CPUExecutionProvider"

    def supports(self, model: nn.Module, profile: HardwareProfile) -> str | None:
        import onnxruntime

        method = is_dynamic(model)
        if method:
            return (f"the per-input width choice of {method} is not expressed in the exported "
                    "graph (its decision runs in NumPy)")
        if profile.dtype != "float32":
            return f"this engine runs float32 only (profile dtype {profile.dtype})"
        if self._provider(profile) not in onnxruntime.get_available_providers():
            return (f"this onnxruntime has no {self._provider(profile)} (install "
                    "onnxruntime-gpu for CUDA)")
        return None

    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = profile.resolved_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(export_onnx(model, example), options,
                                       providers=[self._provider(profile)])
        return _Session(session, example.device).eval()
