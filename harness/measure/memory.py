"""Parameters, model size, and peak activation memory of a forward pass (bytes).

Peak activation memory is *measured* on CUDA (the caching allocator's peak minus what was
allocated before the pass). On CPU it is *computed*: a dispatch mode follows every tensor the
operators produce and, after each operator, adds up the bytes of the storages still alive, so
the figure is the largest live set at an operator boundary. Weights, buffers and the input are
not counted; scratch buffers inside one operator (e.g. oneDNN workspaces) are not seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass(frozen=True)
class MemoryResult:
    """Sizes in bytes; ``peak_method`` is ``measured`` (CUDA allocator) or ``computed`` (CPU)."""

    params: int
    model_size_bytes: int  # parameters + buffers, in their stored dtype
    peak_activation_bytes: int
    peak_method: str
    batch_size: int


def count_params(model: nn.Module) -> int:
    """Number of parameters (elements)."""
    return sum(p.numel() for p in model.parameters())


def model_size_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers."""
    return sum(t.numel() * t.element_size()
               for t in [*model.parameters(), *model.buffers()])


class LiveTensorTracker(TorchDispatchMode):
    """Follows storages produced by operators; ``peak_bytes`` is the largest live total."""

    def __init__(self, ignore: list[torch.Tensor]) -> None:
        super().__init__()
        self._ignore = {t.untyped_storage().data_ptr() for t in ignore}
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.live_bytes = 0
        self.peak_bytes = 0

    def _purge(self) -> None:
        for ptr, (ref, nbytes) in list(self._live.items()):
            if ref.expired():
                del self._live[ptr]
                self.live_bytes -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self._purge()
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                ptr = storage.data_ptr()
                if ptr and ptr not in self._ignore and ptr not in self._live:
                    self._live[ptr] = (StorageWeakRef(storage), storage.nbytes())
                    self.live_bytes += storage.nbytes()
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out


def peak_activation_bytes(model: nn.Module, example_input: torch.Tensor) -> tuple[int, str]:
    """Peak activation bytes of one forward pass of ``example_input`` and how it was obtained."""
    model.eval()
    if example_input.device.type == "cuda":
        device = example_input.device
        with torch.inference_mode():
            model(example_input)  # lazy cuDNN/cuBLAS workspaces are not activations
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            model(example_input)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
        return int(peak), "measured"
    ignore = [*model.parameters(), *model.buffers(), example_input]
    with torch.inference_mode():
        tracker = LiveTensorTracker(ignore)
        with tracker:
            out = model(example_input)
        del out
    return int(tracker.peak_bytes), "computed"


def measure_memory(model: nn.Module, example_input: torch.Tensor) -> MemoryResult:
    """Parameters, size and peak activation memory for a batch like ``example_input``."""
    peak, method = peak_activation_bytes(model, example_input)
    return MemoryResult(params=count_params(model), model_size_bytes=model_size_bytes(model),
                        peak_activation_bytes=peak, peak_method=method,
                        batch_size=int(example_input.shape[0]))
