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
    """Per-input channel attention (N, C) of each site's gated feature map on ``inputs``."""
    out: dict[str, list[torch.Tensor]] = {s.name: [] for s in sites}
    hooks = [get_module(model, s.gate).register_forward_hook(
        lambda m, i, o, n=s.name: out[n].append(channel_attention(o, power)))
        for s in sites]
    _run_hooked(model, inputs, batch, hooks)
    return {k: torch.cat(v) for k, v in out.items()}


@torch.no_grad()
def block_statistics(model: nn.Module, blocks: list[str], inputs: torch.Tensor,
                     batch: int = 128) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per basic block: (spatial mean of its input (N, C_in), exact attention of conv1-BN-ReLU
    (N, C_hidden)) over ``inputs``."""
    ins: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    atts: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    hooks = []
    for b in blocks:
        block = get_module(model, b)
        hooks.append(block.register_forward_pre_hook(
            lambda m, args, b=b: ins[b].append(args[0].mean((2, 3)))))
        hooks.append(block.relu1.register_forward_hook(
            lambda m, i, o, b=b: atts[b].append(channel_attention(o))))
    _run_hooked(model, inputs, batch, hooks)
    return {b: (torch.cat(ins[b]), torch.cat(atts[b])) for b in blocks}


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
