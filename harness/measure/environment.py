"""Provenance of a measurement: software versions, threads, devices, kernels backends."""

from __future__ import annotations

import platform
from typing import Any

import torch
from torch import nn

from prunebench.harness.fingerprint import machine_fingerprint
from prunebench.harness.profiles import HardwareProfile


def _driver_version() -> str | None:
    """The NVIDIA driver version through NVML, or ``None`` without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001  (no bindings or no driver: simply no driver to report)
        return None
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        pynvml.nvmlShutdown()


def conv_backend(model: nn.Module | None, profile: HardwareProfile) -> str:
    """Which convolution backend PyTorch will dispatch to for this setting, as far as it says.

    On CPU, float32/bfloat16 ``conv2d`` goes to oneDNN (mkldnn) when it is built and enabled,
    otherwise to PyTorch's own (slow_conv2d / thnn) kernels. On CUDA, cuDNN when enabled.
    """
    has_conv = model is None or any(isinstance(m, nn.Conv2d) for m in model.modules())
    if not has_conv:
        return "none (no convolutions)"
    if profile.is_cuda:
        enabled = torch.backends.cudnn.enabled and torch.backends.cudnn.is_available()
        return "cudnn" if enabled else "native-cuda"
    if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled:
        return "mkldnn"
    return "native-cpu"


RUNTIMES = ("onnx", "onnxruntime", "openvino", "torchvision", "torch-pruning", "optuna")


def runtime_versions() -> dict[str, str | None]:
    """Installed versions of the runtimes and libraries a measurement may depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in RUNTIMES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def collect_environment(profile: HardwareProfile, model: nn.Module | None = None, *,
                        forced: bool = False, threads: int | None = None) -> dict[str, Any]:
    """A JSON-serialisable description of the software and hardware a measurement ran on."""
    fp = machine_fingerprint()
    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "threads": threads if threads is not None else profile.resolved_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "engine": profile.engine,
        "flush_denormal": profile.device == "cpu",  # FTZ/DAZ while timing (profiles.applied)
        "cpu_model": fp.cpu_model,
        "cores": fp.cores,
        "gpu_name": fp.gpu_name,
        "gpu_count": fp.gpu_count,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "driver_version": _driver_version() if fp.gpu_name else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "cudnn_enabled": bool(torch.backends.cudnn.enabled),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "mkl_available": torch.backends.mkl.is_available(),
        "openmp_available": torch.backends.openmp.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "conv_backend": conv_backend(model, profile),
        "profile": profile.name,
        "profile_version": profile.version,
        "profile_path": str(profile.path) if profile.path else None,
        "fingerprint": fp.short(),
        "forced": forced,
    }
    env["runtime_versions"] = runtime_versions()
    return env
