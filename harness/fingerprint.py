"""What machine is this: CPU model, GPU name, core count (matched against profile fingerprints)."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class MachineFingerprint:
    """The identity of this machine as far as measurements are concerned."""

    cpu_model: str
    gpu_name: str | None
    cores: int
    gpu_count: int = 0

    def short(self) -> str:
        """One line, e.g. ``"Intel(R) Xeon(R) Processor | 2 cores | no GPU"``."""
        gpu = f"{self.gpu_count}x {self.gpu_name}" if self.gpu_name else "no GPU"
        return f"{self.cpu_model} | {self.cores} cores | {gpu}"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model string (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_names() -> list[str]:
    """Names of the visible GPUs: through torch when CUDA is usable, else through NVML."""
    if torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []  # no driver: no GPU this process could measure
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    finally:
        pynvml.nvmlShutdown()


@functools.lru_cache(maxsize=1)
def machine_fingerprint() -> MachineFingerprint:
    """This machine's fingerprint (computed once per process)."""
    gpus = gpu_names()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return MachineFingerprint(cpu_model=cpu_model(), gpu_name=gpus[0] if gpus else None,
                              cores=cores, gpu_count=len(gpus))
