"""FLOP/MAC counting with ``torch.utils.flop_counter``, and the effective-MACs hook.

Units: a MAC is one multiply-accumulate; FLOPs = 2 x MACs for convolutions and linear layers
(PyTorch's FlopCounterMode counts FLOPs). Dynamic networks report what each input *actually*
computed through :func:`record_effective_macs` while an :class:`EffectiveMacsRecorder` is active.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunebench.harness.measure.stats import percentile

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
        self.calls = 0  # how many times a layer reported (0: a static network)
        self._current: torch.Tensor | None = None

    def begin_batch(self, batch_size: int) -> None:
        """Start accumulating a new batch of ``batch_size`` inputs."""
        self._flush()
        self._current = torch.zeros(batch_size, dtype=torch.float64)

    def add(self, macs: torch.Tensor | float) -> None:
        """Add MACs for the current batch (per-input tensor, or one figure for every input)."""
        if self._current is None:
            raise RuntimeError("record_effective_macs called outside a recorded batch")
        self.calls += 1
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


# --------------------------------------------------------------------------- counting
@dataclass(frozen=True)
class ComputeResult:
    """Compute of one forward pass of the given input (the whole batch).

    ``flops`` is what ``torch.utils.flop_counter.FlopCounterMode`` counts (convolutions, linear
    layers, matmuls, attention; 2 FLOPs per multiply-accumulate); ``macs = flops // 2``.
    Element-wise ops (BN, ReLU, pooling, additions) are not counted, as is conventional.
    """

    macs: int
    flops: int


@dataclass(frozen=True)
class EffectiveMacsStats:
    """Effective MACs per input example: what each input actually computed."""

    mean: float
    p50: float
    p90: float
    per_input: tuple[float, ...]
    dynamic: bool  # True when layers reported effective MACs (an input-dependent network)


def _counted(model: nn.Module, example_input: torch.Tensor) -> FlopCounterMode:
    """The counter after one eval-mode forward of ``example_input`` (training mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return counter


def count_macs(model: nn.Module, example_input: torch.Tensor) -> ComputeResult:
    """MACs and FLOPs of ``model(example_input)`` (the batch as given; use batch 1 per input)."""
    flops = int(_counted(model, example_input).get_total_flops())
    return ComputeResult(macs=flops // 2, flops=flops)


def module_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs each module computes itself in ``model(example_input)``, by module name.

    The same count as :func:`count_macs` (one ``FlopCounterMode`` forward, the batch as given:
    pass one input for per-input figures), split by where it happens: a module's entry is what
    it computes outside its submodules (a convolution or linear layer: all of its MACs; ``""``:
    the model's own forward). Modules that compute nothing are left out, so the values sum to
    ``count_macs(model, example_input).macs``.
    """
    counter = _counted(model, example_input)
    root = type(model).__name__  # FlopCounterMode names modules "<root class>.<module name>"
    inclusive: dict[str, int] = {}
    for key, by_op in counter.get_flop_counts().items():
        if key == root or key.startswith(root + "."):
            inclusive[key[len(root) + 1:]] = int(sum(by_op.values()))
    own: dict[str, int] = {}
    for name, mod in model.named_modules():
        prefix = name + "." if name else ""
        flops = inclusive.get(name, 0) - sum(inclusive.get(prefix + child, 0)
                                             for child, _ in mod.named_children())
        if flops:
            own[name] = flops // 2
    return own


def effective_macs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> EffectiveMacsStats:
    """Per-input effective MACs over real ``inputs`` (batches), with mean/p50/p90.

    Dynamic layers report what each input computed through :func:`record_effective_macs`. A
    network that reports nothing is static: every input costs :func:`count_macs` of one input.
    """
    if not inputs:
        raise ValueError("effective_macs needs at least one input batch")
    model.eval()
    with torch.inference_mode(), effective_macs_recorder() as rec:
        for x in inputs:
            rec.begin_batch(int(x.shape[0]))
            model(x)
            if not rec.calls:
                break  # nothing reported on a whole batch: a static network
    if rec.calls:
        per_input = rec.finish()
    else:
        one = float(count_macs(model, inputs[0][:1]).macs)
        per_input = [one] * sum(int(x.shape[0]) for x in inputs)
    s = sorted(per_input)
    return EffectiveMacsStats(mean=math.fsum(s) / len(s), p50=percentile(s, 50.0),
                              p90=percentile(s, 90.0), per_input=tuple(per_input),
                              dynamic=bool(rec.calls))
