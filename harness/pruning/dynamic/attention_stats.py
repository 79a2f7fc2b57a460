"""Feature statistics of dynamic methods on their calibration inputs.

The inputs come from :func:`prunebench.harness.pruning.calibration.calibration_inputs` (the first
``calibration_samples`` train items, or seeded standard-normal images without a data set).
"""

from __future__ import annotations

import torch
from torch import nn

from prunebench.harness.pruning.dynamic.gates import channel_attention
from prunebench.harness.pruning.dynamic.sites import GatedSite, get_module


@torch.no_grad()
def site_attention(model: nn.Module, sites: list[GatedSite], inputs: torch.Tensor,
                   power: float = 1.0, batch: int = 128) -> dict[str, torch.Tensor]:
    """Per-input channel attention (N, C) of each site's gated feature map on ``inputs`` (an
    input site's map is its consumer's input)."""
    out: dict[str, list[torch.Tensor]] = {s.name: [] for s in sites}
    hooks = [get_module(model, s.consumer).register_forward_pre_hook(
        lambda m, args, s=s: out[s.name].append(channel_attention(args[0], power)))
        if s.is_input else get_module(model, s.gate).register_forward_hook(
        lambda m, i, o, s=s: out[s.name].append(channel_attention(s.gated_map(o), power)))
        for s in sites]
    _run_hooked(model, inputs, batch, hooks)
    return {k: torch.cat(v) for k, v in out.items()}


@torch.no_grad()
def block_statistics(model: nn.Module, blocks: dict[str, list[GatedSite]], inputs: torch.Tensor,
                     batch: int = 128) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
    """Per block (name -> its internal sites): (spatial mean of its input (N, C_in), the exact
    attention (N, C) of each site's gated map) over ``inputs``."""
    ins: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    atts: dict[str, list[list[torch.Tensor]]] = {b: [[] for _ in s] for b, s in blocks.items()}
    hooks = []
    for b, sites in blocks.items():
        hooks.append(get_module(model, b).register_forward_pre_hook(
            lambda m, args, b=b: ins[b].append(args[0].mean((2, 3)))))
        for i, site in enumerate(sites):
            hooks.append(get_module(model, site.gate).register_forward_hook(
                lambda m, args, o, out=atts[b][i], site=site:
                out.append(channel_attention(site.gated_map(o)))))
    _run_hooked(model, inputs, batch, hooks)
    return {b: (torch.cat(ins[b]), [torch.cat(a) for a in atts[b]]) for b in blocks}


def _run_hooked(model: nn.Module, inputs: torch.Tensor, batch: int, hooks: list) -> None:
    """Run ``inputs`` through ``model`` in eval mode, in batches; then remove ``hooks``."""
    was_training = model.training
    try:
        model.eval()
        for start in range(0, len(inputs), batch):
            model(inputs[start:start + batch])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
