"""The engine interface: how a network is run when it is timed.

An engine *lowers* a placed network (eval mode, on the profile's device and dtype) into the form
its runtime executes: ``eager`` folds every adjacent conv/BN pair and runs PyTorch eager;
``torchscript`` traces and freezes; ``compile`` is ``torch.compile``; ``onnxruntime`` and
``openvino`` export the network and run it in those runtimes. Dense, static and dynamic networks
of one result go through the same engine with the same folding, so a speedup is only ever
engine-for-engine.

A lowered network is an ``nn.Module`` taking and returning tensors, so the latency, energy and
speedup instruments time it like any other; it carries ``prunebench_engine`` (name, version,
``max_abs_diff`` against eager on real inputs).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError

if TYPE_CHECKING:
    from prunebench.harness.profiles import HardwareProfile

# Largest |lowered - eager| accepted, relative to max(1, max |eager output|), per profile dtype:
# float32 runtimes reorder sums and fold BN (about 1e-6 here); half precision rounds at 1e-3.
TOLERANCE = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 1e-1}


@dataclass(frozen=True)
class EngineRecord:
    """What a lowered network records about how it runs."""

    name: str
    version: str
    folding: str  # what was folded before timing, e.g. "conv+bn"
    max_abs_diff: float | None  # against eager on real inputs (None: not checked)
    preferred_alignment: int = 1  # the channel multiple its kernels prefer

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``Measurement.environment``."""
        return {"engine": self.name, "engine_version": self.version,
                "engine_folding": self.folding, "engine_max_abs_diff": self.max_abs_diff,
                "engine_preferred_alignment": self.preferred_alignment}


@dataclass(frozen=True)
class OpProfile:
    """Where a lowered network's time goes, from the engine's own profiler: milliseconds per
    run by operator type (``tool`` names the profiler; ``runs`` how many runs it averaged)."""

    tool: str
    ms_per_run: dict[str, float]
    runs: int
    # container nodes (ONNX Runtime's If) whose time includes their branches' nodes, which are
    # counted in ``ms_per_run`` themselves: shown apart, never summed
    inclusive: dict[str, float] = field(default_factory=dict)

    def top(self, n: int = 6) -> dict[str, float]:
        """The ``n`` costliest operator types (ms per run, rounded), the rest as ``"other"``."""
        ranked = sorted(self.ms_per_run.items(), key=lambda kv: -kv[1])
        out = {k: round(v, 4) for k, v in ranked[:n]}
        rest = sum(v for _, v in ranked[n:])
        if rest:
            out["other"] = round(rest, 4)
        return out

    def to_dict(self, n: int = 6) -> dict[str, Any]:
        """Plain dict for benchmark output."""
        return {"tool": self.tool, "runs": self.runs,
                "total_ms": round(sum(self.ms_per_run.values()), 4), "ms_per_run": self.top(n),
                **({"inclusive_ms_per_run": {k: round(v, 4) for k, v in self.inclusive.items()}}
                   if self.inclusive else {})}


class Engine(abc.ABC):
    """A registered execution engine (``ENGINES`` in :mod:`harness.engines`)."""

    name: str
    # channel-count multiple its kernels prefer (recorded per profile; a search may align to it)
    preferred_alignment: int = 1
    # the dynamic methods it runs ("*": every one); checked before anything is built
    dynamic_methods: tuple[str, ...] = ()
    # the largest batch it runs a dynamic network at (None: any)
    dynamic_max_batch: int | None = None

    def dynamic_reason(self, method: str, batch_size: int) -> str | None:
        """``None`` when this engine runs dynamic ``method`` at ``batch_size``, else why not."""
        if "*" not in self.dynamic_methods and method not in self.dynamic_methods:
            if not self.dynamic_methods:
                return "it cannot run input-dependent networks"
            return (f"of the input-dependent methods it runs only "
                    f"{', '.join(self.dynamic_methods)} (exec_mode 'fast'), not {method}")
        if self.dynamic_max_batch is not None and batch_size > self.dynamic_max_batch:
            return (f"its exported graph decides once per call, so it runs dynamic networks at "
                    f"batch {self.dynamic_max_batch} only (batch {batch_size} asked)")
        return None

    @abc.abstractmethod
    def version(self) -> str:
        """The runtime's version string (recorded in every Measurement)."""

    def supports(self, model: nn.Module, profile: HardwareProfile) -> str | None:
        """``None`` when this engine can run ``model`` on ``profile``, else the reason."""
        return None

    @abc.abstractmethod
    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        """The runnable form of ``model`` (placed, eval mode) for inputs like ``example``."""

    folding = "conv+bn"

    def op_profile(self, model: nn.Module, example: torch.Tensor, profile: HardwareProfile,
                   runs: int = 50) -> OpProfile:
        """Where the lowered network's time goes, by operator type. PyTorch engines: the
        PyTorch profiler's self CPU time per ``aten``/``prim`` op over ``runs`` runs (after
        ``runs // 5`` warm-up runs)."""
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        lowered = self.lower(model, example, profile)
        with torch.inference_mode():
            for _ in range(max(1, runs // 5)):
                lowered(example)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(runs):
                    lowered(example)
        by_op = {e.key: e.self_cpu_time_total / 1e3 / runs for e in prof.key_averages()
                 if e.self_cpu_time_total > 0}
        return OpProfile("torch.profiler (self CPU time)", by_op, runs)

    def lower(self, model: nn.Module, example: torch.Tensor, profile: HardwareProfile,
              check_inputs: list[torch.Tensor] | None = None) -> nn.Module:
        """Lower ``model``, check it against eager on ``check_inputs`` (default ``example``) and
        tag it; a network the engine cannot run, or one whose outputs differ beyond
        :data:`TOLERANCE`, is refused with one line naming the engine and an alternative."""
        reason = self.supports(model, profile)
        if reason is not None:
            raise PrunebenchError(f"engine {self.name!r} cannot run this network: {reason}; "
                                  "use a profile with engine = \"eager\" (e.g. cpu-1t)")
        lowered = self._lower(model, example, profile)
        diff = max_abs_diff(model, lowered, check_inputs or [example])
        limit = TOLERANCE.get(profile.dtype, 1e-3)
        if diff["scaled"] > limit:
            raise PrunebenchError(
                f"engine {self.name!r} computes outputs {diff['abs']:.3g} away from eager "
                f"(relative {diff['scaled']:.3g} > tolerance {limit:g}); its lowering of this "
                "network is wrong: use engine \"eager\" and report the network")
        lowered.prunebench_engine = EngineRecord(self.name, self.version(), self.folding,
                                                 diff["abs"], self.preferred_alignment)
        return lowered


@torch.inference_mode()
def max_abs_diff(reference: nn.Module, lowered: nn.Module,
                 inputs: list[torch.Tensor]) -> dict[str, float]:
    """Largest |lowered(x) - reference(x)| over ``inputs`` (and scaled by the output size)."""
    worst, scale = 0.0, 1.0
    for x in inputs:
        ref = reference(x).float()
        out = lowered(x).float()
        worst = max(worst, float((out - ref).abs().max()))
        scale = max(scale, float(ref.abs().max()))
    return {"abs": worst, "scaled": worst / scale}


def record_of(model: nn.Module) -> EngineRecord | None:
    """The :class:`EngineRecord` of a lowered network, or ``None``."""
    return getattr(model, "prunebench_engine", None)


def is_dynamic(model: nn.Module) -> str | None:
    """The dynamic method's name when ``model`` decides per input, else ``None``."""
    info = getattr(model, "prunebench_dynamic", None)
    if info is None:
        return None
    return str(info.get("method", "dynamic")) if isinstance(info, dict) else "dynamic"
