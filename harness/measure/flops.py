"""FLOP/MAC counting with ``torch.utils.flop_counter``, and the effective-MACs hook.

Units: a MAC is one multiply-accumulate; FLOPs = 2 x MACs for convolutions and linear layers
(PyTorch's FlopCounterMode counts FLOPs). Dynamic networks report what each input *actually*
computed through :func:`record_effective_macs` while an :class:`EffectiveMacsRecorder` is active.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

_ACTIVE: contextvars.ContextVar[EffectiveMacsRecorder | None] = contextvars.ContextVar(
    "prunebench_effective_macs", default=None
)


class EffectiveMacsRecorder:
    """Accumulates per-input effective MACs reported by dynamic layers during forward passes.

    Each forward pass of a batch of ``B`` inputs adds one value per input; layers call
    :func:`record_effective_macs` with a length-``B`` tensor (or a float for all inputs).
    """

    def __init__(self) -> None:
        self.per_input: list[float] = []
        self._current: torch.Tensor | None = None

    def begin_batch(self, batch_size: int) -> None:
        """Start accumulating a new batch of ``batch_size`` inputs."""
        self._flush()
        self._current = torch.zeros(batch_size, dtype=torch.float64)

    def add(self, macs: torch.Tensor | float) -> None:
        """Add MACs for the current batch (per-input tensor, or one figure for every input)."""
        if self._current is None:
            raise RuntimeError("record_effective_macs called outside a recorded batch")
        if isinstance(macs, torch.Tensor):
            self._current += macs.detach().to("cpu", torch.float64).reshape(-1)
        else:
            self._current += float(macs)

    def _flush(self) -> None:
        if self._current is not None:
            self.per_input.extend(self._current.tolist())
            self._current = None

    def finish(self) -> list[float]:
        """Close the last batch; returns every input's effective MACs."""
        self._flush()
        return self.per_input


@contextlib.contextmanager
def effective_macs_recorder() -> Iterator[EffectiveMacsRecorder]:
    """Activate a recorder; dynamic layers report into it while the block runs."""
    rec = EffectiveMacsRecorder()
    token = _ACTIVE.set(rec)
    try:
        yield rec
    finally:
        rec.finish()
        _ACTIVE.reset(token)


def record_effective_macs(macs: torch.Tensor | float) -> None:
    """Called by dynamic layers: add MACs computed for each input of the current batch.

    A no-op when no recorder is active, so timing runs pay nothing for it but one lookup.
    """
    rec = _ACTIVE.get()
    if rec is not None:
        rec.add(macs)


def recording_active() -> bool:
    """Whether an effective-MACs recorder is listening (layers may skip bookkeeping if not)."""
    return _ACTIVE.get() is not None
