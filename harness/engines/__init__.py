"""Execution engines: how a network is run when it is timed (see :mod:`.base`).

``ENGINES`` maps a profile's ``engine`` to an :class:`~.base.Engine`. :func:`lower` is what the
latency, energy and speedup instruments call on every network they time, dense included, so one
result never mixes engines or folding.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from prunebench.harness.engines.base import Engine, EngineRecord, is_dynamic, record_of
from prunebench.harness.engines.compile import CompileEngine
from prunebench.harness.engines.eager import EagerEngine
from prunebench.harness.engines.onnxruntime import OnnxRuntimeEngine
from prunebench.harness.engines.openvino import OpenVinoEngine
from prunebench.harness.engines.torchscript import TorchScriptEngine
from prunebench.harness.profiles import HardwareProfile
from prunebench.harness.registry import Registry

ENGINES: Registry[Engine] = Registry("engine")
for _engine in (EagerEngine(), TorchScriptEngine(), CompileEngine(), OnnxRuntimeEngine(),
                OpenVinoEngine()):
    ENGINES.add(_engine.name, _engine, preferred_alignment=_engine.preferred_alignment)

# A network is lowered once per (engine, profile settings): the dense reference of a search is
# timed against every trial, and exporting it each time would cost seconds a trial.
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, nn.Module]] = \
    weakref.WeakKeyDictionary()


def get_engine(name: str) -> Engine:
    """The registered engine ``name`` (an unknown name lists the registered ones)."""
    return ENGINES.get(name)


def lower(model: nn.Module, example: torch.Tensor, profile: HardwareProfile) -> nn.Module:
    """``model`` (placed) in the form ``profile.engine`` runs; already lowered ones pass."""
    if record_of(model) is not None:
        return model
    key = (profile.engine, profile.device, profile.dtype, profile.resolved_threads(),
           tuple(example.shape))
    done = _CACHE.setdefault(model, {})
    if key not in done:
        done[key] = get_engine(profile.engine).lower(model, example, profile)
    return done[key]


def check_dynamic_support(profile: HardwareProfile, method: str) -> None:
    """Refuse, before any work, a dynamic ``method`` on a profile whose engine cannot run it."""
    engine = get_engine(profile.engine)
    reason = engine.dynamic_reason(method, profile.default_batch_size)
    if reason is not None:
        from prunebench.harness.errors import PrunebenchError

        runs = [n for n in ENGINES.list() if get_engine(n).dynamic_reason(
            method, profile.default_batch_size) is None]
        raise PrunebenchError(
            f"profile {profile.name!r} runs networks with engine {engine.name!r}: {reason}; "
            f"use a profile whose engine runs {method} (engines: {', '.join(runs)}; "
            "e.g. cpu-1t)")


def usable_engines(profile: HardwareProfile) -> dict[str, str | None]:
    """Each engine -> ``None`` if it can run a dense network on ``profile`` here, else why not."""
    out: dict[str, str | None] = {}
    probe = nn.Sequential(nn.Conv2d(1, 1, 1))
    for name in ENGINES.list():
        try:
            out[name] = get_engine(name).supports(probe, profile)
        except ImportError as exc:
            out[name] = f"not installed ({exc.name})"
    return out


__all__ = ["ENGINES", "Engine", "EngineRecord", "check_dynamic_support", "get_engine",
           "is_dynamic", "lower", "record_of", "usable_engines"]
