"""Batch-norm folding for inference: ``conv -> BN`` becomes one conv with a bias.

The fast dynamic execution folds BN into its convolutions; a fair speed comparison then needs a
dense (and static) reference that is folded the same way, which :func:`fold_batchnorm` gives.
Folding changes outputs only by float rounding (about 1e-6 relative).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def folded_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of the conv equal to ``bn(conv(x))`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return weight.contiguous(), ((bias - bn.running_mean) * scale + bn.bias).contiguous()


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv with bias equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True)
    w, b = folded_weights(conv, bn)
    fused.weight.data.copy_(w)
    fused.bias.data.copy_(b)
    return fused


def _fold_children(module: nn.Module) -> None:
    names = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        keys = list(names)
        for a, b in zip(keys, keys[1:], strict=False):
            if isinstance(names[a], nn.Conv2d) and isinstance(names[b], nn.BatchNorm2d):
                setattr(module, a, fold_conv_bn(names[a], names[b]))
                setattr(module, b, nn.Identity())
        return
    for name, child in names.items():
        bn_name = "bn" + name[len("conv"):] if name.startswith("conv") else None
        bn = names.get(bn_name) if bn_name else None
        if isinstance(child, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, name, fold_conv_bn(child, bn))
            setattr(module, bn_name, nn.Identity())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ``convN``/``bnN`` pair (attribute names) and
    every adjacent ``Conv2d, BatchNorm2d`` in an ``nn.Sequential`` folded into one conv."""
    folded = copy.deepcopy(model).eval()
    for m in list(folded.modules()):
        _fold_children(m)
    return folded
