"""``openvino``: convert the network's ONNX export (the one ONNX Runtime runs, dynamic networks'
``If`` branches included) with OpenVINO's ONNX frontend and compile it for the CPU with the
profile's threads, the latency hint and f32 inference precision (no silent bf16). Dense, static
and dynamic networks take the same route, so their folding is the same."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunebench.harness.engines.base import Engine, OpProfile
from prunebench.harness.engines.onnxruntime import (
    check_dynamic_batch,
    export_onnx,
    export_reason,
)
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
    preferred_alignment = 16  # aligned to 16: 0.90 of ideal, to 8: 0.64 (bench_static, 2026-12-01)

    def version(self) -> str:
        import openvino

        return f"openvino {openvino.__version__} (ONNX frontend, torch.onnx TorchScript exporter)"

    dynamic_methods = ("antidote_fast",)
    dynamic_max_batch = 1

    def supports(self, model: nn.Module, profile: HardwareProfile) -> str | None:
        if profile.is_cuda:
            return "prunebench runs OpenVINO on the CPU only"
        return export_reason(self, model, profile)

    def _compile(self, model: nn.Module, example: torch.Tensor, profile: HardwareProfile,
                 perf_count: bool = False) -> object:
        import openvino as ov

        check_dynamic_batch(model, example)
        with tempfile.TemporaryDirectory(prefix="prunebench-ov-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(export_onnx(model, example))
            converted = ov.convert_model(str(path))
        config = {"INFERENCE_NUM_THREADS": profile.resolved_threads(),
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "NUM_STREAMS": 1, **({"PERF_COUNT": True} if perf_count else {})}
        return ov.Core().compile_model(converted, "CPU", config)

    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        return _Compiled(self._compile(model, example, profile)).eval()

    def op_profile(self, model: nn.Module, example: torch.Tensor, profile: HardwareProfile,
                   runs: int = 50) -> OpProfile:
        """OpenVINO's own performance counters (``PERF_COUNT``): each executed node's real
        time by node type, summed over ``runs`` runs after ``runs // 5`` warm-up runs."""
        runner = _Compiled(self._compile(model, example, profile, perf_count=True))
        by_op: dict[str, float] = {}
        with torch.inference_mode():
            for _ in range(max(1, runs // 5)):
                runner(example)
            for _ in range(runs):
                runner(example)
                for info in runner.request.profiling_info:
                    if str(info.status).endswith("EXECUTED"):
                        key = info.node_type
                        by_op[key] = by_op.get(key, 0.0) + info.real_time.total_seconds() * 1e3
        return OpProfile("openvino performance counters (PERF_COUNT)",
                         {k: v / runs for k, v in by_op.items()}, runs)
