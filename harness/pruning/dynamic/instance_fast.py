"""Instance-wise sparsity's prefix rule: the width of a basic block set by its feature norms.

``instance_sparsity`` with option ``rule=prefix`` (the default under ``exec_mode="fast"``) runs
each gated residual basic block as an :class:`InstanceWidthBlock`, a
:class:`~prunebench.harness.pruning.dynamic.fast_blocks.FastBasicBlock` (``antidote_fast``'s
BN-folded block with pre-packed widths) whose width is decided by the instance-wise rule instead
of a predictor:

1. the block's internal channels are reordered once by their mean RMS norm over calibration
   inputs (strongest first);
2. for each input, conv1 is computed at full width (the rule needs the feature map, as in the
   paper: features are computed, and what they would feed is skipped), then each channel's RMS
   norm ``||z_c||_2 / sqrt(HW)`` is compared with the block's threshold; the count ``k`` of
   channels that reach it (at least 1) is rounded up to one of the block's pre-packed widths;
3. conv2 reads only the first ``width`` channels of that order: one plain convolution with the
   packed weights, no gather.

So what is saved is conv2's input channels (at most half of a block's MACs), and an input keeps
how many channels its own features say, but always the strongest ones *on average*, not its
own. The threshold and widths are calibrated together
(:func:`~prunebench.harness.pruning.dynamic.fast_blocks.calibrate_widths`) so that the mean
packed width over calibration inputs is the block's ``keep``. ``masked`` and ``gathered`` run
the same rule (zeroing, per-input slices) as its references: the three give the same widths and
outputs (tested).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunebench.harness.measure.flops import record_effective_macs, recording_active
from prunebench.harness.pruning.dynamic.fast_blocks import FastBasicBlock, calibrate_widths


class InstanceWidthBlock(FastBasicBlock):
    """A BN-folded basic block whose conv2 reads a prefix whose width its conv1 features set."""

    def __init__(self, block: nn.Module, order: torch.Tensor, tau: float, widths: list[int],
                 mode: str) -> None:
        super().__init__(block, order, None, tau, widths, mode)
        # squared RMS threshold times HW is compared with each channel's sum of squares
        self.tau_sq = float(tau) ** 2

    def counts(self, h: torch.Tensor) -> list[int]:
        """Per input of ``h`` (B, C, H, W): channels whose RMS norm reaches the threshold.

        Row by row, so an input's count never depends on the batch it came in.
        """
        hw = h.shape[2] * h.shape[3]
        limit = self.tau_sq * hw
        if self._numpy_ok(h):
            return [int(np.count_nonzero(np.einsum("ij,ij->i", hi, hi) >= limit))
                    for hi in h.numpy().reshape(h.shape[0], h.shape[1], hw)]
        sq = h.detach().square().sum((2, 3))
        return [int((row >= limit).sum()) for row in sq]

    def _indices(self, h: torch.Tensor) -> torch.Tensor:
        """Width index per input (B,): the count (floored at 1) rounded up to a width."""
        return torch.tensor([self.lut[max(1, k)] for k in self.counts(h)], dtype=torch.long,
                            device=h.device)

    def _conv1(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(x, self.w1, self.b1, self.stride, 1))

    def _finish(self, x: torch.Tensor, h: torch.Tensor, j: int) -> torch.Tensor:
        """conv2 on the first ``widths[j]`` channels of ``h`` (packed weights), then the tail."""
        k = self.widths[j]
        y = F.conv2d(h[:, :k], getattr(self, f"pw2_{j}"), self.b2, 1, 1)
        sc = F.conv2d(x, self.ws, self.bs, self.stride) if self.has_shortcut else x
        return F.relu_(y.add_(sc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output; each input's conv2 reads the width its own conv1 features set."""
        h = self._conv1(x)
        if self.mode == "fast" and x.shape[0] == 1 and not recording_active():
            return self._finish(x, h, self.lut[max(1, self.counts(h)[0])])
        widx = self._indices(h)
        if recording_active():
            self._record(x, widx)
        if self.mode == "fast":
            groups = widx.unique().tolist()
            if len(groups) == 1:
                return self._finish(x, h, groups[0])
            out = None
            for j in groups:
                sel = (widx == j).nonzero().squeeze(1)
                part = self._finish(x.index_select(0, sel), h.index_select(0, sel), j)
                out = x.new_empty((x.shape[0], *part.shape[1:])) if out is None else out
                out.index_copy_(0, sel, part)
            return out
        k = self.widths_t[widx]
        sc = F.conv2d(x, self.ws, self.bs, self.stride) if self.has_shortcut else x
        if self.mode == "masked":
            ch = torch.arange(h.shape[1], device=h.device)
            h = h * (ch[None] < k[:, None]).to(h.dtype)[:, :, None, None]
            return F.relu(F.conv2d(h, self.w2, self.b2, 1, 1) + sc)
        outs = [F.conv2d(h[i:i + 1, :ki], self.w2[:, :ki], self.b2, 1, 1)  # gathered
                for i, ki in enumerate(k.tolist())]
        return F.relu(torch.cat(outs) + sc)

    def _record(self, x: torch.Tensor, widx: torch.Tensor) -> None:
        """conv1 at full width, the norms (one MAC per element read), conv2 at the width."""
        c_in, c_hid, c_out = self.w1.shape[1], self.w1.shape[0], self.w2.shape[0]
        hw = math.ceil(x.shape[2] / self.stride) * math.ceil(x.shape[3] / self.stride)
        fixed = c_hid * c_in * 9 * hw + c_hid * hw
        if self.has_shortcut:
            fixed += c_out * c_in * hw
        record_effective_macs(self.widths_t[widx].double() * c_out * 9 * hw + fixed)


def instance_width_block(block: nn.Module, norms: torch.Tensor, keep: float, n_widths: int,
                         round_to: int, mode: str) -> InstanceWidthBlock:
    """An :class:`InstanceWidthBlock` calibrated on ``norms`` (N, C): the RMS norms of the
    block's conv1-BN-ReLU output over calibration inputs; mean packed width / C ~ ``keep``."""
    order = norms.mean(0).argsort(descending=True)
    c = norms.shape[1]  # conv1's output channels
    tau, widths = calibrate_widths(norms[:, order], keep, n_widths, min(round_to, c))
    return InstanceWidthBlock(block, order, tau, widths, mode)
