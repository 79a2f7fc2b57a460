"""Where dynamic gates go and what they are asked to keep.

A *gated site* is a producer feature map (the output of a conv -> BN -> activation chain, keyed by
the producer conv's module name) whose channels are pruned per input, and the consumer
convolution that reads it. For CIFAR ResNets the producer is the first conv of each basic block:
its output channels are internal to the block, so pruning them needs no residual bookkeeping, and
the second conv's input channels follow. Plain chains (``test_convnet``, VGG ``nn.Sequential``
features: conv, BN, ReLU, [max-pool], conv) are gated the same way.

An *input site* (``inputs=True``; AntiDote's option ``inputs``) gates the input channels of each
residual block's first conv by the attention of the block input itself: ``gate`` is empty (the
consumer gates its own input) and ``name`` is the block's module name. Only that conv reads the
gated channels; the block's shortcut still adds the whole input. With both kinds, every conv of
every block computes only the input channels its input's attention keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.models import BasicBlock, TinyConvNet
from prunebench.harness.pruning.config import PruningConfig

_ACTS = (nn.ReLU, nn.ReLU6)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class GatedSite:
    """One gated feature map: ``name`` (producer conv, the config key), ``gate`` (the module whose
    output is pruned), ``consumer`` (the conv reading it) and its ``channels``. An input site has
    ``gate == ""``: the consumer gates its own input, and ``name`` is the block's name."""

    name: str
    gate: str
    consumer: str
    channels: int

    @property
    def is_input(self) -> bool:
        """True for an input site (the consumer conv's own input is gated)."""
        return not self.gate


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _sequential_sites(prefix: str, seq: nn.Sequential) -> list[GatedSite]:
    items = list(seq.named_children())
    sites, i = [], 0
    while i < len(items):
        name, m = items[i]
        j = i + 1
        if (isinstance(m, nn.Conv2d) and m.groups == 1 and j + 1 < len(items)
                and isinstance(items[j][1], nn.BatchNorm2d) and isinstance(items[j + 1][1], _ACTS)):
            j += 2
            if j < len(items) and isinstance(items[j][1], _POOLS):
                j += 1
            if j < len(items) and isinstance(items[j][1], nn.Conv2d) and items[j][1].groups == 1:
                sites.append(GatedSite(_join(prefix, name), _join(prefix, items[j - 1][0]),
                                       _join(prefix, items[j][0]), m.out_channels))
                i = j + 1  # sites stay disjoint: the consumer is not also a producer here
                continue
        i += 1
    return sites


def find_sites(model: nn.Module, inputs: bool = False) -> list[GatedSite]:
    """Every gated site of ``model`` in module order (empty when no supported pattern exists);
    with ``inputs``, each residual block's input site before its internal one."""
    sites: list[GatedSite] = []
    for prefix, m in model.named_modules():
        if isinstance(m, BasicBlock):
            if inputs:
                sites.append(GatedSite(prefix, "", _join(prefix, "conv1"), m.conv1.in_channels))
            sites.append(GatedSite(_join(prefix, "conv1"), _join(prefix, "relu1"),
                                   _join(prefix, "conv2"), m.conv1.out_channels))
        elif isinstance(m, TinyConvNet):
            sites.append(GatedSite(_join(prefix, "conv1"), _join(prefix, "relu1"),
                                   _join(prefix, "conv2"), m.conv1.out_channels))
            sites.append(GatedSite(_join(prefix, "conv2"), _join(prefix, "relu2"),
                                   _join(prefix, "conv3"), m.conv2.out_channels))
        elif type(m) is nn.Sequential:
            sites.extend(_sequential_sites(prefix, m))
    return sites


def gated_layers(model: nn.Module) -> list[str]:
    """Module names of the gated (producer) convolutions: the keys of ``PruningConfig.keep``."""
    return [s.name for s in find_sites(model)]


def require_sites(model: nn.Module, method: str, inputs: bool = False) -> list[GatedSite]:
    """The sites of ``model``, or an error when ``method`` has nothing to gate in it."""
    sites = find_sites(model, inputs)
    if not sites:
        raise PrunebenchError(
            f"method {method!r} found no gateable layer (conv-BN-ReLU feeding a conv) in "
            f"{type(model).__name__}; use a CIFAR ResNet, VGG-16-BN or a test_* model")
    return sites


def resolve_keep(config: PruningConfig, sites: list[GatedSite], *, default: float = 1.0,
                 upper: float | None = 1.0) -> dict[str, float]:
    """Per-site keep value: ``config.keep`` overrides ``config.global_keep`` overrides ``default``.

    Unknown layer names and values outside (0, ``upper``] raise, naming the value.
    """
    names = {s.name for s in sites}
    unknown = sorted(set(config.keep) - names)
    if unknown:
        raise PrunebenchError(
            f"unknown gated layer(s) {unknown} in keep; gated layers are: {sorted(names)}")
    out = {}
    for s in sites:
        value = config.keep.get(s.name, config.global_keep)
        value = default if value is None else float(value)
        if not (value > 0.0 and (upper is None or value <= upper)) or math.isnan(value):
            rng = f"(0, {upper}]" if upper is not None else "(0, inf)"
            raise PrunebenchError(f"keep value {value!r} for {s.name!r} is outside {rng}; use e.g. "
                                  "0.5 to compute half of the channels for each input")
        out[s.name] = value
    return out


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``."""
    return model.get_submodule(name)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
