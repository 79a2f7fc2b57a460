"""The one record a configuration's evaluation produces (units in field names)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """Everything measured for one (workload, pruning config, hardware profile).

    Units are in the field names. ``None`` means "not measured" (for example no accuracy when no
    data set was given), never zero. ``energy_method`` is one of ``rapl``, ``nvml``,
    ``nvml-sampled``, ``modelled`` or ``none``; a ``modelled`` number is never a measured one.
    """

    # what was evaluated
    model: str
    dataset: str | None
    method: str
    config: dict[str, Any]
    config_key: str
    # where and how
    profile: str
    fingerprint: str
    device: str
    dtype: str
    batch_size: int
    threads: int
    torch_version: str
    forced: bool = False
    # how the timed network ran (harness.engines): dense and pruned alike in one result
    engine: str = "eager"
    engine_version: str | None = None
    # the timing ran without its core to itself (CPU/wall below 0.95 after one re-timing on a
    # one-thread profile), or its speedup beat the MAC-ideal by more than its CI
    timing_disturbed: bool = False
    timing_cpu_wall_ratio: float | None = None
    # accuracy
    accuracy_top1: float | None = None
    accuracy_top5: float | None = None
    accuracy_split: str | None = None
    accuracy_n: int | None = None
    # latency of one batch of ``batch_size`` inputs, wall-clock
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_n: int | None = None
    latency_ci_rel: float | None = None
    speedup_vs_dense: float | None = None
    speedup_spread: float | None = None
    # energy
    energy_mj_per_inference: float | None = None
    energy_method: str = "none"
    idle_power_w: float | None = None
    # compute (MACs = multiply-accumulates; FLOPs = 2 x MACs for conv/linear). ``macs`` is per
    # input: the static count, or for a dynamic network the mean of the inputs' effective MACs
    # (rounded); the p50/p90 of the inputs' effective MACs show their spread
    macs: int | None = None
    flops: int | None = None
    effective_macs_p50: float | None = None
    effective_macs_p90: float | None = None
    # memory
    params: int | None = None
    model_size_bytes: int | None = None
    peak_memory_bytes: int | None = None
    peak_memory_method: str | None = None
    # provenance
    environment: dict[str, Any] = field(default_factory=dict)
    latency_samples_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (non-finite floats become ``None``)."""
        out = dataclasses.asdict(self)
        out["latency_samples_ms"] = list(self.latency_samples_ms)
        return _finite(out)

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_row(self) -> dict[str, Any]:
        """A flat dict for one DataFrame row: nested values as JSON strings, samples dropped."""
        row = self.to_dict()
        row.pop("latency_samples_ms")
        row["config"] = json.dumps(row["config"], sort_keys=True)
        row["environment"] = json.dumps(row["environment"], sort_keys=True)
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict` (and of :meth:`to_row`); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for key in ("config", "environment"):
            if isinstance(kw.get(key), str):
                kw[key] = json.loads(kw[key])
        kw["latency_samples_ms"] = tuple(kw.get("latency_samples_ms") or ())
        return cls(**kw)

    def replace(self, **changes: Any) -> Measurement:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
