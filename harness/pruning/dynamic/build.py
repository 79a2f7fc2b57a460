"""Dynamic (input-dependent) pruning: attention gates on feature maps and how they execute.

Public entry points for the search and the methods:

- :func:`gated_layers` -- the module names a dynamic config may key (``PruningConfig.keep``);
- :func:`build_gated` -- a copy of a network with a :class:`~harness.pruning.dynamic.gates.Gate` on
  every gated site, executed ``masked`` (reference) or ``gathered`` (exact per-input execution);
- the methods themselves live in ``antidote.py`` (AntiDote, its fast variant, targeted dropout)
  and ``instance_sparsity.py`` (Liu et al. 2019); the fast execution design in
  ``fast_blocks.py``.

Every dynamic network reports each input's effective MACs through
``harness.measure.flops.record_effective_macs``: the ungated layers once, each consumer what it
computed for that input, each gate its attention cost.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import module_macs
from prunebench.harness.pruning.dynamic.gates import (
    EXACT_MODES,
    DynamicNetwork,
    Gate,
    GatedConsumer,
    GatedDepthwise,
    GateRule,
    _Decision,
)
from prunebench.harness.pruning.dynamic.sites import (
    GatedSite,
    find_sites,
    gated_layers,
    get_module,
    set_module,
)

__all__ = ["EXEC_MODES", "GateRule", "build_gated", "check_exec_mode", "find_sites",
           "gated_layers"]

EXEC_MODES = ("masked", "gathered", "fast")
_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def check_exec_mode(mode: str | None, method: str, allowed: tuple[str, ...]) -> str:
    """``mode`` (default ``masked``) if ``method`` supports it, else an error naming the fix."""
    mode = mode or "masked"
    if mode not in allowed:
        hint = (" (AntiDote's exact rule needs each input's full feature map to decide; "
                "use method 'antidote_fast' for the speed-oriented variant)"
                if mode == "fast" and method == "antidote" else "")
        raise PrunebenchError(f"exec mode {mode!r} is not available for method {method!r}; "
                              f"use one of {list(allowed)}{hint}")
    return mode


@torch.no_grad()
def _check_columns(model: nn.Module, site: GatedSite, example_input: torch.Tensor) -> None:
    """Column gating maps feature-map positions to consumer output positions one to one."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [get_module(model, n).register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[2:])))
        for n in (site.gate, site.consumer)]
    try:
        model.eval()
        model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
    if shapes[site.gate] != shapes[site.consumer]:
        raise PrunebenchError(
            f"column pruning needs {site.consumer!r} to keep the spatial size of {site.gate!r} "
            f"({shapes[site.gate]} -> {shapes[site.consumer]}); drop options['columns'] for it")


def build_gated(model: nn.Module, rules: dict[str, GateRule], mode: str,
                example_input: torch.Tensor, info: dict | None = None) -> DynamicNetwork:
    """A gated copy of ``model``: one gate per site named in ``rules`` (others stay dense).

    ``mode`` is ``masked`` or ``gathered``; the two give the same outputs and effective MACs.
    """
    if mode not in EXACT_MODES:
        raise PrunebenchError(f"exec mode {mode!r} is not an exact mode; use one of "
                              f"{list(EXACT_MODES)}")
    sites = {s.name: s for s in find_sites(model, inputs=True)}
    unknown = sorted(set(rules) - set(sites))
    if unknown:
        raise PrunebenchError(f"unknown gated layer(s) {unknown}; gated layers are: "
                              f"{sorted(sites)}")
    net = copy.deepcopy(model).eval()
    per_layer = module_macs(net, example_input[:1])
    ungated = sum(per_layer.values())
    for name, rule in rules.items():
        site = sites[name]
        if rule.columns < 1.0:
            if site.is_input:
                raise PrunebenchError(f"column pruning is not available for the input site "
                                      f"{name!r}; gate columns on internal sites only")
            _check_columns(net, site, example_input)
        decision = _Decision()
        consumer = GatedConsumer(get_module(net, site.consumer), mode, decision,
                                 remask=bool(site.follow))
        if site.is_input:  # the consumer's own input: the gate runs just before it
            consumer = nn.Sequential(Gate(nn.Identity(), rule, mode, decision), consumer)
        else:
            inner = get_module(net, site.gate)
            if site.act:  # the gate is the BN: it applies the (shared) activation itself
                inner = nn.Sequential(inner, _ACTIVATIONS[site.act]())
            set_module(net, site.gate, Gate(inner, rule, mode, decision))
        for name in site.follow:
            set_module(net, name, GatedDepthwise(get_module(net, name), mode, decision))
            ungated -= per_layer[name]
        set_module(net, site.consumer, consumer)
        ungated -= per_layer[site.consumer]
    meta = {"exec_mode": mode, "gated": sorted(rules),
            "dense_macs": sum(per_layer.values()), **(info or {})}
    return DynamicNetwork(net, ungated, meta).eval()
