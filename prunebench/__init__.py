"""prunebench: which pruning wins on your hardware, in real milliseconds and joules.

The public API (everything else is internal and may move)::

    import prunebench as pb

    m = pb.evaluate("resnet20", pb.PruningConfig(method="l1", global_ratio=0.5),
                    dataset="digits", profile="cpu-1t")
    print(m.latency_p50_ms, m.accuracy_top1, m.macs)   # a Measurement
    run = pb.run_search(model="resnet20", dataset="digits", profile="cpu-1t",
                        space="static", method="l1", budget_ms=2.0, trials=20)
    report = pb.compare([run.run_dir], budget_ms=2.0)  # the report folder

- :func:`create_model`, :func:`load_dataset`, :func:`load_profile`: the registries' front doors;
- :func:`evaluate`: one configuration -> one :class:`Measurement` (``.to_dict()``, ``.to_row()``);
- :func:`run_search`: an Optuna search run (what ``prunebench search`` does), returning its
  results; :func:`compare`: run folders -> a report folder (``prunebench compare``).

Names load lazily, so ``import prunebench`` stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("prunebench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from prunebench.harness.evaluate import PreparedWorkload, Workload
    from prunebench.harness.measurement import Measurement
    from prunebench.harness.profiles import HardwareProfile
    from prunebench.harness.pruning.config import PruningConfig

# public name -> "module:attribute", imported on first use
_LAZY = {
    "create_model": "prunebench.harness.models:create_model",
    "load_dataset": "prunebench.harness.datasets:load_dataset",
    "load_profile": "prunebench.harness.profiles:load_profile",
    "Measurement": "prunebench.harness.measurement:Measurement",
    "PruningConfig": "prunebench.harness.pruning.config:PruningConfig",
    "PrunebenchError": "prunebench.harness.errors:PrunebenchError",
    "run_search": "prunebench.search.runs:run_search",
    "compare": "prunebench.search.runs:compare",
}

__all__ = ["__version__", "evaluate", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'prunebench' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def evaluate(model: str | Workload | PreparedWorkload,
             config: PruningConfig | dict[str, Any] | None = None, *,
             dataset: str | None = None, profile: str | Path | HardwareProfile = "cpu-1t",
             checkpoint: str | Path | None = None, data_dir: str | Path | None = None,
             split: str = "val", seed: int = 0, speedup_vs_dense: bool = False,
             force: bool = False, progress: bool = True) -> Measurement:
    """Measure one configuration of a network on a hardware profile.

    ``model`` is a registered model name (with ``dataset`` for accuracy; without it only cost
    is measured), or a ``Workload`` / prepared workload to reuse across calls. ``config`` is a
    :class:`PruningConfig` or its dict (``None``: the dense network). The base network is
    ``checkpoint`` or the cached base trained on ``dataset`` (trained once if missing).
    Latency is per batch of the profile's batch size, in ms; see :class:`Measurement`.
    """
    from prunebench.harness import evaluate as ev
    from prunebench.harness.pruning.config import DENSE, PruningConfig

    if isinstance(config, dict):
        config = PruningConfig.from_dict(config)
    prepared = model
    if isinstance(model, str):
        model = ev.Workload(model=model, dataset=dataset, data_dir=data_dir,
                            checkpoint=checkpoint, seed=seed)
    if isinstance(model, ev.Workload):
        prepared = ev.prepare(model, progress=progress)
    return ev.evaluate(prepared, config or DENSE, profile, split=split, force=force,
                       speedup_vs_dense=speedup_vs_dense, progress=progress)
