"""The method registry shared by static and dynamic pruning, and the context methods receive."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.options import OptionSchema
from prunebench.harness.registry import Registry

if TYPE_CHECKING:
    from prunebench.harness.datasets import DatasetSplits
    from prunebench.harness.profiles import HardwareProfile
    from prunebench.harness.train import Recipe


@dataclass(frozen=True)
class MethodInfo:
    """Frozen metadata of a pruning method."""

    name: str
    kind: str  # "static" (physically smaller network), "dynamic" (input-dependent) or "dense"
    description: str
    citation: str


@dataclass
class PruneContext:
    """What a method may use besides the model and the config.

    ``splits`` is ``None`` when only cost is measured (no data set); methods that need data must
    raise a ``PrunebenchError`` saying so. Methods read **train** (and val for their own
    decisions) only, never **test**. ``run_dir`` is where a method may log (e.g. AAP's rounds).
    """

    example_input: Any  # torch.Tensor of shape (1, C, H, W)
    splits: DatasetSplits | None = None
    recipe: Recipe | None = None
    profile: HardwareProfile | None = None
    run_dir: Path | None = None
    seed: int = 0
    progress: bool = True


class PruningMethod(abc.ABC):
    """A registered pruning method: ``apply`` returns the network to evaluate.

    Static methods return a physically smaller ``nn.Module`` with no masks left in it. Dynamic
    methods return a module whose forward decides per input what to compute and reports
    effective MACs through ``prunebench.harness.measure.flops.record_effective_macs``.
    ``options`` is the schema of the ``PruningConfig.options`` it takes (``OptionSchema()`` for
    none); ``apply`` parses ``config.options`` with it, and the command line and ``prunebench
    methods`` read it too. ``exec_modes`` lists the execution modes a dynamic method runs
    (``PruningConfig.exec_mode``; the first is the default), so a mode is checked before any
    work.
    """

    info: MethodInfo
    options: OptionSchema
    exec_modes: tuple[str, ...] = ()

    @abc.abstractmethod
    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """Prune (a copy of) ``model`` as ``config`` says; never modifies ``model`` in place."""

    def gated_layers(self, model: nn.Module, config: PruningConfig,
                     ctx: PruneContext) -> list[str] | None:
        """The keys of ``keep`` this dynamic method gates in ``model`` under ``config``'s
        options, when it chooses them itself (``instance_sparsity``'s layer selection); ``None``:
        every gated site (``harness.pruning.pipeline.gated_layers``)."""
        return None


METHODS: Registry[PruningMethod] = Registry("pruning method")


def register_method(method: PruningMethod) -> PruningMethod:
    """Add an instance to :data:`METHODS` under ``method.info.name`` with its metadata."""
    info = method.info
    if not isinstance(getattr(method, "options", None), OptionSchema):
        raise TypeError(f"pruning method {info.name!r} declares no `options: OptionSchema` "
                        "(use OptionSchema() for a method without options)")
    METHODS.add(info.name, method, kind=info.kind, description=info.description,
                citation=info.citation)
    return method
