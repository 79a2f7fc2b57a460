"""Where and how training runs: the device, mixed precision, memory format and data loading.

A :class:`TrainRuntime` is *how* a recipe is executed, not *what* is trained: it never enters a
checkpoint's cache key, but it is recorded beside the result (checkpoint metadata, a run's
``config.json``). Measuring stays on the hardware profile's device; training may run elsewhere.
:func:`resolve_runtime` turns the command-line values (``--train-device auto|cpu|cuda[:N]``,
``--amp bf16|fp16``, ``--channels-last``, ``--workers N``, ``--deterministic``) into one, and
refuses a request the machine cannot meet (one line, exit code 2) before any work starts.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from prunebench.harness.errors import PrunebenchError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")
# cuBLAS needs a fixed workspace for reproducible results (PyTorch's reproducibility notes)
_CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class TrainRuntime:
    """A resolved training runtime.

    ``device`` is ``"cpu"`` or ``"cuda:N"`` (``requested`` keeps what was asked, e.g. ``"auto"``);
    ``amp`` is ``None``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 adds loss scaling);
    ``channels_last`` trains in NHWC memory format; ``workers`` is the DataLoader's worker
    processes (0: in the main process); ``pin_memory`` is on for CUDA; ``deterministic`` makes
    PyTorch use deterministic kernels only (and fail where none exists).
    """

    device: str = "cpu"
    requested: str = "cpu"
    amp: str | None = None
    channels_last: bool = False
    workers: int = 0
    pin_memory: bool = False
    deterministic: bool = False

    @property
    def is_cuda(self) -> bool:
        """Whether training runs on a CUDA device."""
        return self.device.startswith("cuda")

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format of the model and its inputs while training."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field plus the device's name (e.g. the GPU model)."""
        out = asdict(self)
        out["device_name"] = (torch.cuda.get_device_name(torch.device(self.device))
                              if self.is_cuda else "cpu")
        return out


CPU_RUNTIME = TrainRuntime()


def parse_device(text: str) -> str:
    """``auto|cpu|cuda[:N]`` -> ``"cpu"`` or ``"cuda:N"`` on this machine.

    ``auto`` is the first CUDA device when one is present, else the CPU. A CUDA request on a
    machine without one (or an index past the last device) raises :class:`PrunebenchError`.
    """
    match = _DEVICE.match(str(text).strip().lower())
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise PrunebenchError(f"--train-device {text!r} is not a device; use {DEVICE_CHOICES}")
    kind, index = match.group(1), match.group(2)
    present = torch.cuda.is_available()
    if kind == "cpu" or (kind == "auto" and not present):
        return "cpu"
    if kind == "auto":
        return "cuda:0"
    if not present:
        raise PrunebenchError(f"--train-device {text}: this machine has no CUDA device "
                              "(torch.cuda.is_available() is False); use --train-device cpu "
                              "or auto")
    n = int(index or 0)
    if n >= torch.cuda.device_count():
        raise PrunebenchError(f"--train-device {text}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s), numbered from 0; "
                              f"use --train-device cuda:0")
    return f"cuda:{n}"


def resolve_runtime(device: str = "auto", *, amp: str | None = None,
                    channels_last: bool = False, workers: int = 0,
                    deterministic: bool = False) -> TrainRuntime:
    """The :class:`TrainRuntime` of command-line values, checked against this machine."""
    resolved = parse_device(device)
    on_cuda = resolved.startswith("cuda")
    if amp is not None:
        if amp not in AMP_DTYPES:
            raise PrunebenchError(f"--amp {amp!r} is not a precision; use bf16 or fp16")
        if amp == "fp16" and not on_cuda:
            raise PrunebenchError("--amp fp16 needs a CUDA training device (loss scaling); "
                                  "use --amp bf16 on the CPU")
        if amp == "bf16" and on_cuda and not torch.cuda.is_bf16_supported():
            raise PrunebenchError(f"--amp bf16: {torch.cuda.get_device_name(resolved)} has no "
                                  "bfloat16 support; use --amp fp16")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise PrunebenchError(f"--workers {workers!r} must be a whole number >= 0; use e.g. "
                              "--workers 4")
    return TrainRuntime(device=resolved, requested=str(device), amp=amp,
                        channels_last=bool(channels_last), workers=workers,
                        pin_memory=on_cuda, deterministic=bool(deterministic))


def autocast(runtime: TrainRuntime) -> contextlib.AbstractContextManager[Any]:
    """Autocast to the runtime's AMP dtype on its device (a null context without AMP)."""
    if runtime.amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if runtime.is_cuda else "cpu",
                          dtype=AMP_DTYPES[runtime.amp])


def grad_scaler(runtime: TrainRuntime) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 autocast (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda") if runtime.amp == "fp16" else None


@contextlib.contextmanager
def determinism(runtime: TrainRuntime) -> Iterator[None]:
    """Deterministic kernels only while training when ``runtime.deterministic`` (restored
    afterwards); otherwise PyTorch's settings are left as they are."""
    if not runtime.deterministic:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:3]
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
