"""The static *cut*: physically remove filters and return a smaller dense network.

Built on Torch-Pruning's ``DependencyGraph``: removing output channels of one layer also removes
the matching input channels of its consumers, the matching BatchNorm entries, and the channels of
every layer coupled with it through residual additions, concatenations or depthwise convolutions.
Such a set of coupled layers is one :class:`Group`; it shares one ratio and one set of removed
indices. The result has no masks or hooks: it is an ordinary ``nn.Module`` with smaller weights.

The network's outputs (the classifier's output channels) are never pruned, and the input of the
first convolution is never touched (only output channels are ever chosen for removal).

Pruned networks carry ``prunebench_arch`` (per-module shapes, JSON-able), from which
:func:`rebuild_pruned` recreates the architecture so a checkpoint is ``state_dict`` + arch, with
no pickled code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunebench.harness.errors import CheckpointError, PrunebenchError

ARCH_FORMAT = 1
_SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features",
                "num_features")


@dataclass(frozen=True)
class Group:
    """Layers whose output channels are coupled and must be pruned together.

    ``name`` is the first member's module name (``model.named_modules()`` order) and is the key a
    search uses; ``members`` are the conv/linear layers whose *filters* are removed, ``channels``
    their shared channel count, ``norms`` the BatchNorm layers pruned with them, and ``consumers``
    the layers whose *input* channels shrink.
    """

    name: str
    members: tuple[str, ...]
    channels: int
    norms: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()


class _Graph:
    """A traced dependency graph of ``model`` (traced in eval mode, training flag restored)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        self.model = model
        was_training = model.training
        with torch.enable_grad():
            self.dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, verbose=False)
        model.train(was_training)
        names = {m: n for n, m in model.named_modules()}
        order = {n: i for i, n in enumerate(names.values())}
        self.groups: list[Group] = []
        self.roots: dict[str, nn.Module] = {}
        for tp_group in self.dg.get_all_groups(ignored_layers=self._output_layers(),
                                               root_module_types=(nn.Conv2d, nn.Linear)):
            group = self._describe(tp_group, names, order)
            if group is not None:
                self.groups.append(group)
                self.roots[group.name] = model.get_submodule(group.name)
        self.groups.sort(key=lambda g: order[g.name])
        self.by_member = {m: g for g in self.groups for m in g.members}

    def _output_layers(self) -> list[nn.Module]:
        """Layers whose output channels are the network's output (never pruned)."""
        return [m for m, node in self.dg.module2node.items()
                if isinstance(m, nn.Module) and not node.outputs]

    def _describe(self, tp_group: Any, names: Mapping[nn.Module, str],
                  order: Mapping[str, int]) -> Group | None:
        members, norms, consumers = set(), set(), set()
        for dep, _ in tp_group:
            module = dep.target.module
            if module not in names:
                continue  # functional ops (add, flatten, ...) carry no weights
            is_out = self.dg.is_out_channel_pruning_fn(dep.handler)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                norms.add(names[module])
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and is_out:
                members.add(names[module])
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                consumers.add(names[module])
        if not members:
            return None
        srt = lambda s: tuple(sorted(s, key=order.__getitem__))  # noqa: E731
        members_t = srt(members)
        channels = _out_channels(self.model.get_submodule(members_t[0]))
        return Group(members_t[0], members_t, channels, srt(norms), srt(consumers - members))

    def prune(self, group: Group, idxs: Sequence[int]) -> None:
        """Remove output channels ``idxs`` of ``group`` (and everything coupled to them)."""
        root = self.roots[group.name]
        pruner = self.dg.get_pruner_of_module(root)
        self.dg.get_pruning_group(root, pruner.prune_out_channels, list(idxs)).prune()


def _out_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def coupled_groups(model: nn.Module, example_input: torch.Tensor) -> list[Group]:
    """The prunable groups of ``model``, in module order (one Optuna parameter each)."""
    return _Graph(model, example_input).groups


def keep_count(channels: int, ratio: float, round_to: int = 1, *, layer: str = "?") -> int:
    """Channels kept when ``ratio`` of ``channels`` is removed.

    Rounds ``channels * (1 - ratio)`` to the nearest allowed count: a multiple of ``round_to``, or
    ``channels`` itself (not pruning is always allowed). A result of 0 raises: removing every
    channel of a layer would disconnect the network.
    """
    if not 0.0 <= ratio < 1.0:
        raise PrunebenchError(f"pruning ratio {ratio!r} for {layer!r} is outside [0, 1); use "
                              "e.g. 0.5 to remove half of the filters")
    if round_to < 1:
        raise PrunebenchError(f"round_to {round_to!r} must be a positive integer (e.g. 8)")
    if ratio == 0.0:
        return channels
    target = channels * (1.0 - ratio)
    allowed = [k * round_to for k in range(channels // round_to + 1)] + [channels]
    keep = min(allowed, key=lambda k: (abs(k - target), -k))
    if keep == 0:
        raise PrunebenchError(
            f"ratio {ratio} would remove all {channels} channels of {layer!r} (round_to="
            f"{round_to}); use a ratio below {1 - min(round_to, channels) / channels / 2:.3g}")
    return keep


def resolve_ratios(groups: Sequence[Group], ratios: Mapping[str, float],
                   global_ratio: float | None) -> dict[str, float]:
    """Per-group ratio from per-layer ``ratios`` (any member's name) and ``global_ratio``.

    Unknown names and conflicting ratios for members of one group raise ``PrunebenchError``.
    """
    by_member = {m: g for g in groups for m in g.members}
    out: dict[str, float] = {}
    source: dict[str, str] = {}
    for name, ratio in ratios.items():
        group = by_member.get(name)
        if group is None:
            valid = ", ".join(g.name for g in groups)
            raise PrunebenchError(f"unknown prunable layer {name!r}; valid layer (group) names: "
                                  f"{valid}")
        if group.name in out and out[group.name] != float(ratio):
            raise PrunebenchError(
                f"layers {source[group.name]!r} and {name!r} are coupled (group {group.name!r}) "
                f"but got ratios {out[group.name]} and {ratio}; give one ratio per group")
        out[group.name], source[group.name] = float(ratio), name
    if global_ratio is not None:
        for g in groups:
            out.setdefault(g.name, float(global_ratio))
    return out


def cut_filters(model: nn.Module, example_input: torch.Tensor,
                prune_idxs: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` with the given output channels physically removed.

    ``prune_idxs`` maps a layer name (any member of a coupled group) to the channel indices to
    remove; coupled layers lose the same indices. ``model`` is not modified.
    """
    pruned = copy.deepcopy(model)
    graph = _Graph(pruned, example_input)
    per_group: dict[str, tuple[str, list[int]]] = {}
    for name, idxs in prune_idxs.items():
        group = graph.by_member.get(name)
        if group is None:
            valid = ", ".join(g.name for g in graph.groups)
            raise PrunebenchError(f"unknown prunable layer {name!r}; valid layer (group) names: "
                                  f"{valid}")
        clean = sorted({int(i) for i in idxs})
        if clean and (clean[0] < 0 or clean[-1] >= group.channels):
            raise PrunebenchError(f"channel index out of range for {name!r} (it has "
                                  f"{group.channels} channels): {clean[0]}..{clean[-1]}")
        if group.name in per_group and per_group[group.name][1] != clean:
            raise PrunebenchError(f"layers {per_group[group.name][0]!r} and {name!r} are coupled "
                                  f"(group {group.name!r}) but got different indices")
        if len(clean) >= group.channels:
            raise PrunebenchError(f"removing all {group.channels} channels of {name!r} would "
                                  "disconnect the network; keep at least one")
        per_group[group.name] = (name, clean)
    for group in graph.groups:
        if per_group.get(group.name, ("", []))[1]:
            graph.prune(group, per_group[group.name][1])
    del graph
    pruned.prunebench_arch = architecture(pruned)
    return pruned


def architecture(model: nn.Module) -> dict[str, Any]:
    """Per-module shapes of ``model`` (JSON-able): what :func:`rebuild_pruned` needs."""
    modules: dict[str, Any] = {}
    for name, mod in model.named_modules():
        tensors = {**dict(mod.named_parameters(recurse=False)),
                   **{k: v for k, v in mod.named_buffers(recurse=False) if v is not None}}
        if not tensors:
            continue
        modules[name] = {
            "attrs": {a: getattr(mod, a) for a in _SHAPE_ATTRS if hasattr(mod, a)},
            "shapes": {k: list(v.shape) for k, v in tensors.items()},
        }
    return {"format": ARCH_FORMAT, "modules": modules}


def rebuild_pruned(model_name: str, arch: Mapping[str, Any], num_classes: int,
                   in_channels: int) -> nn.Module:
    """The registered ``model_name`` reshaped to ``arch`` (weights uninitialised).

    Load the pruned checkpoint's ``state_dict`` into the result; nothing is unpickled.
    """
    from prunebench.harness.models import create_model

    if arch.get("format") != ARCH_FORMAT:
        raise CheckpointError(f"pruned architecture format {arch.get('format')!r} is not "
                              f"{ARCH_FORMAT}; re-create the checkpoint with this version")
    model = create_model(model_name, num_classes=num_classes, in_channels=in_channels)
    known = dict(model.named_modules())
    for name, rec in arch["modules"].items():
        mod = known.get(name)
        if mod is None:
            raise CheckpointError(f"pruned architecture names module {name!r} that model "
                                  f"{model_name!r} does not have; is the checkpoint for it?")
        for attr, value in rec["attrs"].items():
            setattr(mod, attr, value)
        for tname, shape in rec["shapes"].items():
            _reshape_tensor(mod, tname, shape, name)
    model.prunebench_arch = dict(arch)
    return model


def _reshape_tensor(mod: nn.Module, tname: str, shape: Sequence[int], where: str) -> None:
    if tname in mod._parameters and mod._parameters[tname] is not None:
        old = mod._parameters[tname]
        mod._parameters[tname] = nn.Parameter(torch.empty(shape, dtype=old.dtype),
                                              requires_grad=old.requires_grad)
    elif tname in mod._buffers and mod._buffers[tname] is not None:
        old = mod._buffers[tname]
        mod._buffers[tname] = torch.empty(shape, dtype=old.dtype)
    else:
        raise CheckpointError(f"pruned architecture has tensor {where}.{tname} that the model "
                              "lacks; is the checkpoint for this model?")
