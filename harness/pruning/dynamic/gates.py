"""Exact execution of per-input channel/column gates: ``masked`` (reference) and ``gathered``.

A :class:`Gate` wraps the producer's last module (the activation, or a pooling after it): it
computes each input's attention from the feature map it produced and decides which channels (and
which spatial columns of the consumer's output) are computed for that input. A
:class:`GatedConsumer` wraps the consumer convolution:

- ``masked`` zeroes pruned channels and columns and computes everything (correctness reference;
  its wall-clock time is the dense network's, never a speed claim);
- ``gathered`` runs each input on its own: weights sliced to its kept input channels, im2col
  columns gathered to its kept output positions and scattered back into a zero map. It equals
  ``masked`` to float rounding.

A site with a *follow* chain (MobileNetV2: the depthwise conv between the expand output and the
project conv) wraps each depthwise conv in a :class:`GatedDepthwise`: it computes only the kept
channels (``gathered``: per input, its kept channels' filters; ``masked``: all, zeroed after the
chain by the consumer, since a BN after it turns zeros into its bias).

Both report the MACs the rule keeps (identical in the two modes, since gathered computes exactly
that) plus the attention cost (one MAC per feature-map element read, per attention kind).
Gathers and scatters move data but multiply nothing, so they add no MACs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.harness.measure.flops import record_effective_macs, recording_active

EXACT_MODES = ("masked", "gathered")


@dataclass(frozen=True)
class GateRule:
    """How one gate decides. ``kind``: ``topk`` (keep ``ceil(value*C)`` highest-attention
    channels), ``relative`` (keep attention >= value x the input's largest attention) or
    ``absolute`` (keep attention >= value, and at least each input's strongest channel).
    ``columns``: fraction of output positions kept by
    column attention (1 = no column pruning). ``power``: p of the p-norm attention."""

    kind: str
    value: float
    columns: float = 1.0
    power: float = 1.0

    @property
    def passthrough(self) -> bool:
        """True when nothing can be pruned (keep everything, no attention computed)."""
        keeps_all = (self.value >= 1.0 if self.kind == "topk" else self.value <= 0.0)
        return keeps_all and self.columns >= 1.0


def channel_attention(z: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Per-input, per-channel p-norm mean over the spatial map: ``(mean |z|^p)^(1/p)``, (B, C)."""
    if power == 1.0:
        return z.abs().mean((2, 3))
    return z.abs().pow(power).mean((2, 3)).pow(1.0 / power)


def channel_mask(att: torch.Tensor, rule: GateRule) -> torch.Tensor:
    """Boolean (B, C) mask of kept channels for attention ``att`` under ``rule``."""
    if rule.kind == "topk":
        k = min(att.shape[1], max(1, math.ceil(rule.value * att.shape[1] - 1e-9)))
        idx = att.topk(k, dim=1).indices
        return torch.zeros_like(att, dtype=torch.bool).scatter_(1, idx, True)
    if rule.kind == "relative":
        return att >= rule.value * att.amax(1, keepdim=True)
    # absolute: an input whose every channel is below the threshold still keeps its strongest
    return (att >= rule.value).scatter_(1, att.argmax(1, keepdim=True), True)


def column_mask(z: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean (B, H*W) mask of the ``fraction`` spatial positions with highest channel-mean |z|."""
    att = z.abs().mean(1).flatten(1)
    k = min(att.shape[1], max(1, math.ceil(fraction * att.shape[1] - 1e-9)))
    return torch.zeros_like(att, dtype=torch.bool).scatter_(1, att.topk(k, dim=1).indices, True)


class _Decision:
    """What the gate decided for the current batch, read by its consumer."""

    channels: torch.Tensor | None = None
    columns: torch.Tensor | None = None


class Gate(nn.Module):
    """Wraps the producer's last module and decides per input what the consumer computes."""

    def __init__(self, inner: nn.Module, rule: GateRule, mode: str, decision: _Decision) -> None:
        super().__init__()
        self.inner, self.rule, self.mode, self.decision = inner, rule, mode, decision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Producer output, with pruned channels zeroed in ``masked`` mode."""
        z = self.inner(x)
        d = self.decision
        d.channels = d.columns = None
        if self.rule.passthrough:
            return z
        d.channels = channel_mask(channel_attention(z, self.rule.power), self.rule)
        overhead = z[0].numel()
        if self.rule.columns < 1.0:
            d.columns = column_mask(z, self.rule.columns)
            overhead += z[0].numel()
        if recording_active():
            record_effective_macs(float(overhead))
        if self.mode == "masked":
            return z * d.channels[:, :, None, None].to(z.dtype)
        return z  # gathered: the consumer reads only the kept channels


class GatedDepthwise(nn.Module):
    """Wraps a depthwise conv of a site's follow chain: computes only each input's kept
    channels (its MACs are recorded per input; pruned channels are zero in ``gathered``)."""

    def __init__(self, conv: nn.Conv2d, mode: str, decision: _Decision) -> None:
        super().__init__()
        self.conv, self.mode, self.decision = conv, mode, decision
        self.per_channel_macs = math.prod(conv.kernel_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The depthwise conv's output on each input's kept channels."""
        d, c = self.decision, self.conv
        if d.channels is None or self.mode == "masked":
            y = c(z)
        else:
            y = z.new_zeros(z.shape[0], c.out_channels,
                            *_out_size(c, z.shape[2], z.shape[3]))
            for i in range(z.shape[0]):
                idx = d.channels[i].nonzero().squeeze(1)
                bias = c.bias.index_select(0, idx) if c.bias is not None else None
                y[i:i + 1, idx] = F.conv2d(z[i:i + 1].index_select(1, idx),
                                           c.weight.index_select(0, idx), bias, c.stride,
                                           c.padding, c.dilation, len(idx))
        if recording_active():
            kept = (d.channels.sum(1).double() if d.channels is not None
                    else torch.full((z.shape[0],), float(c.out_channels), dtype=torch.float64))
            record_effective_macs(kept * y[0, 0].numel() * self.per_channel_macs)
        return y


def _out_size(c: nn.Conv2d, h: int, w: int) -> tuple[int, int]:
    return tuple((n + 2 * c.padding[a] - c.dilation[a] * (c.kernel_size[a] - 1) - 1)
                 // c.stride[a] + 1 for a, n in enumerate((h, w)))


class GatedConsumer(nn.Module):
    """Wraps the consumer conv: computes kept input channels (and kept output columns) per input.
    ``remask``: a follow chain ran between gate and consumer, so ``masked`` zeroes the pruned
    channels again (a BN in the chain turned them into its bias)."""

    def __init__(self, conv: nn.Conv2d, mode: str, decision: _Decision,
                 remask: bool = False) -> None:
        super().__init__()
        self.conv, self.mode, self.decision, self.remask = conv, mode, decision, remask
        self.per_channel_macs = conv.out_channels * math.prod(conv.kernel_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The consumer conv's output; each input's pruned output columns are exactly zero."""
        d = self.decision
        if d.channels is None:  # a pass-through gate: the consumer runs dense
            y = self.conv(z)
            if recording_active():
                record_effective_macs(float(z.shape[1] * y[0, 0].numel() * self.per_channel_macs))
            return y
        if self.mode == "masked":
            if self.remask:
                z = z * d.channels[:, :, None, None].to(z.dtype)
            y = self.conv(z)
            if d.columns is not None:
                y = y * d.columns.view(y.shape[0], 1, *y.shape[2:]).to(y.dtype)
        else:
            y = torch.cat([self._one(z[i:i + 1], i) for i in range(z.shape[0])])
        if recording_active():
            cols = (d.columns.sum(1) if d.columns is not None
                    else torch.full((z.shape[0],), y[0, 0].numel(), device=z.device))
            record_effective_macs(d.channels.sum(1).double() * cols.double()
                                  * self.per_channel_macs)
        return y

    def _one(self, zi: torch.Tensor, i: int) -> torch.Tensor:
        c = self.conv
        idx = self.decision.channels[i].nonzero().squeeze(1)
        w = c.weight.index_select(1, idx)
        cols = self.decision.columns
        if cols is None:
            return F.conv2d(zi.index_select(1, idx), w, c.bias, c.stride, c.padding, c.dilation)
        h_out, w_out = _out_size(c, zi.shape[2], zi.shape[3])
        pos = cols[i].nonzero().squeeze(1)
        patches = F.unfold(zi.index_select(1, idx), c.kernel_size, c.dilation, c.padding,
                           c.stride)[0].index_select(1, pos)
        vals = w.reshape(c.out_channels, -1) @ patches
        if c.bias is not None:
            vals = vals + c.bias[:, None]
        out = zi.new_zeros(c.out_channels, h_out * w_out)
        out[:, pos] = vals
        return out.view(1, c.out_channels, h_out, w_out)


class DynamicNetwork(nn.Module):
    """The gated network; reports the MACs of every ungated layer once per input per forward."""

    def __init__(self, model: nn.Module, ungated_macs: float, info: dict) -> None:
        super().__init__()
        self.model = model
        self.ungated_macs = float(ungated_macs)
        self.prunebench_dynamic = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the gated network on a batch."""
        if recording_active():
            record_effective_macs(self.ungated_macs)
        return self.model(x)
