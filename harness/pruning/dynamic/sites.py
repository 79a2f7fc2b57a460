"""Where dynamic gates go and what they are asked to keep.

A *gated site* is a producer feature map (the output of a conv -> BN -> activation chain, keyed by
the producer conv's module name) whose channels are pruned per input, and the consumer
convolution that reads it. Sites are read from the module graph (``structure.py``, ``torch.fx``),
not from a list of classes: any conv -> BN -> ReLU/ReLU6 (-> pool) whose output has exactly one
reader, a ``groups == 1`` convolution, is one; a map that also feeds a residual add or a second
branch never is. So a CIFAR or torchvision ResNet basic block has one site (conv1's output, read by
conv2), a bottleneck two (conv1's and conv2's outputs), a plain chain (``test_convnet``, VGG
features) one per conv whose map feeds the next conv, and a MobileNetV2 inverted residual one at
its expand output: the depthwise conv after it is channel-wise, so it is in the site's ``follow``
chain and computes only the kept channels, and the project conv is the consumer.

A site's ``gate`` is the module whose output is the gated map: the activation (or a pool after
it), or the BN when the activation is shared (torchvision's blocks call one ``relu`` module
several times) or functional; ``act`` then names the activation the gate applies itself (the
network's own activation after it changes nothing: ReLU and ReLU6 are idempotent).

An *input site* (``inputs=True``; AntiDote's option ``inputs``) gates the input channels of each
residual block's first conv by the attention of the block input itself: ``gate`` is empty (the
consumer gates its own input) and ``name`` is the block's module name. Only that conv reads the
gated channels; the block's shortcut still adds the whole input. With both kinds, every conv of
every block computes only the input channels its input's attention keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.dynamic.structure import (
    _join,
    activate,
    enclosing_block,
    graph_sites,
)


@dataclass(frozen=True)
class GatedSite:
    """One gated feature map: ``name`` (producer conv, the config key), ``gate`` (the module whose
    output is pruned), ``consumer`` (the conv reading it) and its ``channels``. An input site has
    ``gate == ""``: the consumer gates its own input, and ``name`` is the block's name.
    ``follow``: depthwise convs between gate and consumer that compute only the kept channels;
    ``act``: the activation the gate applies (``""``: the gate's output is already activated)."""

    name: str
    gate: str
    consumer: str
    channels: int
    follow: tuple[str, ...] = ()
    act: str = ""

    @property
    def is_input(self) -> bool:
        """True for an input site (the consumer conv's own input is gated)."""
        return not self.gate

    def gated_map(self, gate_output: torch.Tensor) -> torch.Tensor:
        """The gated feature map, from what the ``gate`` module returns."""
        return activate(gate_output, self.act or None)


def find_sites(model: nn.Module, inputs: bool = False) -> list[GatedSite]:
    """Every gated site of ``model`` in graph order (empty when no supported pattern exists);
    with ``inputs``, each residual block's input site before its first internal one."""
    sites: list[GatedSite] = []
    blocks_done: set[str] = set()
    memo: dict = {}
    for raw in graph_sites(model):
        if inputs:
            found = enclosing_block(model, [raw.producer, raw.consumer, *raw.follow], memo)
            if found is not None and found[1].shortcut is not None and found[0] not in \
                    blocks_done:
                path, spec = found
                blocks_done.add(path)
                first = model.get_submodule(_join(path, spec.stages[0].conv))
                if first.groups == 1:
                    sites.append(GatedSite(path, "", _join(path, spec.stages[0].conv),
                                           first.in_channels))
        sites.append(GatedSite(raw.producer, raw.gate, raw.consumer, raw.channels, raw.follow,
                               raw.act))
    return sites


def gated_layers(model: nn.Module) -> list[str]:
    """Module names of the gated (producer) convolutions: the keys of ``PruningConfig.keep``."""
    return [s.name for s in find_sites(model)]


def require_sites(model: nn.Module, method: str, inputs: bool = False) -> list[GatedSite]:
    """The sites of ``model``, or an error when ``method`` has nothing to gate in it."""
    sites = find_sites(model, inputs)
    if not sites:
        raise PrunebenchError(
            f"method {method!r} found no gateable layer in {type(model).__name__}: no conv-BN-"
            "ReLU/ReLU6 output is read by exactly one conv (docs/methods.md lists the supported "
            "architectures)")
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
