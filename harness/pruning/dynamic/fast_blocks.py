"""Fast dynamic execution for residual basic blocks (the ``antidote_fast`` method's engine).

Design (measured in ``benchmarks/bench_dynamic.py``): eager per-input gathers cost about what they
save at batch 1, so the fast path avoids every per-input gather.

1. **Static order, dynamic width.** Each block's internal channels are reordered once by their
   calibrated mean AntiDote attention (mean |activation| after conv1-BN-ReLU over calibration
   inputs), so an input's decision is only *how many* channels ``k`` to compute: the first ``k``.
2. **Cheap decision from the block input.** A linear score predictor on the block input's
   per-channel spatial mean (C_in adds per position + a C_in x C_hidden product) is fitted by
   ridge regression to the exact attention; ``k`` = number of channels whose predicted attention
   reaches a per-block threshold, calibrated so the mean kept fraction matches the keep-ratio.
   It is evaluated as ``P @ sum >= (tau - p0) * HW`` (no division, no bias add). On CPU it runs
   in NumPy on a zero-copy view of the activation, which needs fewer operator dispatches than
   the PyTorch form (``benchmarks/bench_dynamic.py`` measures what the decisions still cost,
   with its decisions-replayed diagnostic). The channel sums are one matrix-vector product
   per input; under a profile NumPy's BLAS runs on the profile's threads
   (:func:`harness.profiles.applied`): its own 2-thread pool made 1-thread timings erratic.
   Every mode and batch size uses the same row-wise form, so an input's width never depends
   on the mode or its batch.
   A block whose calibration yields a single width skips the decision (its answer is fixed).
3. **A few discrete widths.** ``k`` is rounded up to one of ``widths`` (default 4) per-block widths
   (multiples of ``round_to``); each width has pre-packed contiguous copies of conv1's first ``k``
   filters and conv2's first ``k`` input channels, so running a width is two plain convolutions.
4. **BN folded** into every conv (inference only). Compare against a dense network folded the
   same way (:func:`prunebench.harness.pruning.dynamic.folding.fold_batchnorm`) for a fair speedup.
5. **Batches** are grouped by width (at most ``widths`` groups per block): each input computes
   exactly its own width, so batch composition never changes an input's answer.

Because it keeps a prefix in a static order chosen by a predictor, ``antidote_fast`` keeps other
channels than AntiDote's exact rule: it is its own method with its own accuracy. Its ``masked``
and ``gathered`` modes execute the same rule (zeroing / per-input slices) as references.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import record_effective_macs, recording_active
from prunebench.harness.pruning.dynamic.folding import folded_weights
from prunebench.harness.pruning.dynamic.structure import BlockSpec, basic_parts


@torch.no_grad()
def fit_predictor(a: torch.Tensor, s: torch.Tensor, ridge: float = 1e-3
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge least squares ``s ~ a @ P.T + p0``; returns ``(P, p0)`` (float32)."""
    a64, s64 = a.double(), s.double()
    x = torch.cat([a64, torch.ones(len(a64), 1, dtype=torch.float64)], 1)
    gram = x.T @ x
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64)
    sol = torch.linalg.solve(gram, x.T @ s64)
    return sol[:-1].T.float().contiguous(), sol[-1].float().contiguous()


def _widths_for(k_raw: torch.Tensor, n_widths: int, round_to: int, c: int) -> list[int]:
    qs = torch.quantile(k_raw.double(), torch.linspace(1 / n_widths, 1, n_widths,
                                                       dtype=torch.float64))
    ws = {min(c, max(round_to, math.ceil(float(q) / round_to) * round_to)) for q in qs}
    return sorted(ws)


def _quantise(k_raw: torch.Tensor, widths: list[int]) -> torch.Tensor:
    wt = torch.tensor(widths)
    return wt[torch.searchsorted(wt, k_raw).clamp_(max=len(widths) - 1)]


@torch.no_grad()
def calibrate_widths(scores: torch.Tensor, keep: float, n_widths: int, round_to: int
                     ) -> tuple[float, list[int]]:
    """Threshold and widths so that the mean quantised width / C is closest to ``keep``."""
    c = scores.shape[1]
    best: tuple[float, float, list[int]] | None = None
    for tau in torch.quantile(scores.flatten().double(), torch.linspace(0, 1, 201,
                                                                          dtype=torch.float64)):
        k_raw = (scores >= tau).sum(1).clamp(min=1)
        widths = _widths_for(k_raw, n_widths, round_to, c)
        err = abs(_quantise(k_raw, widths).double().mean().item() / c - keep)
        if best is None or err < best[0]:
            best = (err, float(tau), widths)
    assert best is not None
    return best[1], best[2]


class _NumpyDecision(nn.Module):
    """A decision ``count(pw @ channel_sums >= thr * hw)`` taken in NumPy on a zero-copy view of
    the input (fewer operator dispatches than PyTorch at batch 1), with its constants per spatial
    size kept as plain references in ``_cache``: ``nn.Module`` attribute lookups and rebuilding
    them per call were a large share of a batch-1 decision. The cache is forgotten whenever the
    weights may have changed: ``.to()`` and friends, ``load_state_dict``, copies and pickling
    (NumPy views would not share a copy's memory)."""

    _cache: dict | None = None

    def _cached(self) -> dict:
        if self._cache is None:
            self._cache = {}
        return self._cache

    def _np_count(self, xi: np.ndarray, hw: int) -> int:
        """One input's (C, H, W) count: channel sums by one matrix-vector product."""
        table = self._cached()
        if hw not in table:
            table[hw] = (self.pw.numpy(), self.thr.numpy() * hw, np.ones(hw, dtype=np.float32))
        pw, thr, ones = table[hw]
        return int(np.count_nonzero(pw @ (xi.reshape(xi.shape[0], hw) @ ones) >= thr))

    @staticmethod
    def _numpy_ok(x: torch.Tensor) -> bool:
        return x.is_cpu and x.dtype == torch.float32 and not x.requires_grad

    def _level_counts(self, x: torch.Tensor) -> torch.Tensor:
        """Per input (B,), row by row: how many thresholds its one score (``pw`` of shape
        (C_in,)) reaches, i.e. its level (an input's level never depends on its batch)."""
        hw = x.shape[2] * x.shape[3]
        if self._numpy_ok(x):
            return torch.tensor([self._np_count(xi, hw) for xi in x.numpy()])
        s = x.detach().sum((2, 3)) @ self.pw
        return (s[:, None] >= self.thr * hw).sum(1)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> nn.Module:
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


class FastBasicBlock(_NumpyDecision):
    """A BN-folded basic block whose internal width is chosen per input (see module doc).
    ``block`` is any module that computes a residual basic block (CIFAR's or torchvision's,
    recognised from its graph: :func:`~.structure.basic_parts`)."""

    def __init__(self, block: nn.Module, order: torch.Tensor, predictor: tuple | None,
                 tau: float, widths: list[int], mode: str, spec: BlockSpec | None = None) -> None:
        super().__init__()
        parts = basic_parts(block, spec)  # spec: the block's chain when already read
        if parts is None:
            raise PrunebenchError(f"{type(block).__name__} does not compute a residual basic "
                                  "block (3x3 conv-BN-ReLU, 3x3 conv-BN, add, ReLU)")
        w1, b1 = folded_weights(parts.conv1, parts.bn1)
        w2, b2 = folded_weights(parts.conv2, parts.bn2)
        self._weight("w1", w1[order].contiguous())
        self._weight("b1", b1[order].contiguous())
        self._weight("w2", w2[:, order].contiguous())
        self._weight("b2", b2)
        self.stride = parts.conv1.stride[0]
        self.has_shortcut = parts.shortcut is not None
        if self.has_shortcut:
            ws, bs = folded_weights(*parts.shortcut)
            self._weight("ws", ws)
            self._weight("bs", bs)
        # a single width needs no decision: every input computes it
        self.predict = predictor is not None and len(widths) > 1
        if predictor is not None:
            self._weight("pw", predictor[0][order].contiguous())
            self._weight("pb", predictor[1][order].contiguous())
            self.register_buffer("thr", (float(tau) - self.pb).contiguous())
        self.tau, self.widths, self.mode = float(tau), list(widths), mode
        self.register_buffer("widths_t", torch.tensor(self.widths))
        # width index for every raw count 0..C (counts below 1 use the smallest width)
        self.lut = [next((j for j, w in enumerate(widths) if w >= k), len(widths) - 1)
                    for k in range(w1.shape[0] + 1)]
        self._packed = []
        for j, k in enumerate(self.widths):  # pre-packed contiguous copies per width
            self.register_buffer(f"pw1_{j}", self.w1[:k].clone())
            self.register_buffer(f"pb1_{j}", self.b1[:k].clone())
            self.register_buffer(f"pw2_{j}", self.w2[:, :k].contiguous())
            self._packed.append((f"pw1_{j}", f"pb1_{j}", f"pw2_{j}"))

    def _weight(self, name: str, value: torch.Tensor) -> None:
        """A frozen parameter: counted in ``params`` like the dense network's weights (the
        per-width packed copies and derived thresholds stay buffers)."""
        self.register_parameter(name, nn.Parameter(value, requires_grad=False))

    def _hot_refs(self) -> dict:
        """What the per-input path reads, as plain references (``_NumpyDecision``'s cache):
        each width's packed weights under ``"runs"``."""
        table = self._cached()
        if "runs" not in table:
            table["runs"] = [tuple(getattr(self, n) for n in names) for names in self._packed]
        return table

    def _counts(self, x: torch.Tensor) -> list[int]:
        """Raw kept-channel count per input: predicted scores at or above the threshold.

        Row by row (one matrix-vector product per input), so an input's count never depends on
        the batch it came in.
        """
        hw = x.shape[2] * x.shape[3]
        if self._numpy_ok(x):
            return [self._np_count(xi, hw) for xi in x.numpy()]
        s = F.linear(x.detach().sum((2, 3)), self.pw)
        return (s >= self.thr * hw).sum(1).tolist()

    def width_index(self, x: torch.Tensor) -> int:
        """Index into ``widths`` of the width a single input (batch of one) computes."""
        if not self.predict:
            return 0
        if not self._numpy_ok(x):
            return self.lut[self._counts(x)[0]]
        return self.lut[self._np_count(x.numpy()[0], x.shape[2] * x.shape[3])]

    def _choose(self, x: torch.Tensor) -> torch.Tensor:
        """Width index per input (B,)."""
        if not self.predict:
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return torch.tensor([self.lut[k] for k in self._counts(x)], dtype=torch.long,
                            device=x.device)

    def _tail(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sc = F.conv2d(x, self.ws, self.bs, self.stride) if self.has_shortcut else x
        return F.relu_(y.add_(sc))

    def _run_width(self, x: torch.Tensor, j: int) -> torch.Tensor:
        if self.rows < 1.0:
            bands = self._bands(x).tolist()
            if len(bands) == 1:
                return self._run_band(x, j, bands[0])
            return torch.cat([self._run_band(x[i:i + 1], j, r0) for i, r0 in enumerate(bands)])
        w1, b1, w2 = self._hot_refs()["runs"][j]
        h = F.relu_(F.conv2d(x, w1, b1, self.stride, 1))
        return self._tail(x, F.conv2d(h, w2, self.b2, 1, 1))

    # ------------------------------------------------------------ structured spatial pruning
    rows = 1.0  # fraction of output rows the residual branch computes (1.0: all, no decision)

    def set_rows(self, fraction: float) -> None:
        """Compute the residual branch on one contiguous band of ``fraction`` of the output rows
        per input, placed where the block input's row energy (sum of |x| over channels and
        columns) is largest; elsewhere the block passes its shortcut (as AntiDote's pruned
        columns do). Executed as contiguous slices, never a gather."""
        self.rows = float(fraction)

    def _band_rows(self, x: torch.Tensor) -> tuple[int, int]:
        """(output rows, rows kept) for input ``x``."""
        ho = math.ceil(x.shape[2] / self.stride)
        return ho, max(1, min(ho, round(self.rows * ho)))

    def _bands(self, x: torch.Tensor) -> torch.Tensor:
        """First kept output row per input (B,): the window of rows with the most energy."""
        ho, r = self._band_rows(x)
        e = x.detach().abs().sum((1, 3))  # (B, H)
        if self.stride > 1:
            e = F.avg_pool1d(e[:, None], self.stride, self.stride, ceil_mode=True)[:, 0]
        cs = F.pad(e.cumsum(1), (1, 0))
        return (cs[:, r:] - cs[:, :ho - r + 1]).argmax(1)

    def _run_band(self, x: torch.Tensor, j: int, r0: int) -> torch.Tensor:
        """One input at width ``j``, residual branch on output rows ``[r0, r0 + R)`` only."""
        w1, b1, w2 = self._hot_refs()["runs"][j]
        ho, r = self._band_rows(x)
        a, b = max(r0 - 1, 0), min(r0 + r + 1, ho)  # conv1 rows conv2 reads
        s = self.stride
        xp = F.pad(x, (0, 0, 1, 1))  # the rows' zero padding, explicit; columns by conv
        h = F.relu_(F.conv2d(xp[:, :, s * a:s * (b - 1) + 3], w1, b1, s, (0, 1)))
        h = F.pad(h, (0, 0, a - (r0 - 1), (r0 + r + 1) - b))
        y = F.conv2d(h, w2, self.b2, 1, (0, 1))
        sc = F.conv2d(x, self.ws, self.bs, s) if self.has_shortcut else x
        out = F.relu(sc)
        out[:, :, r0:r0 + r] = F.relu_(y.add_(sc[:, :, r0:r0 + r]))
        return out

    def _row_mask(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, 1, Ho, 1) mask of each input's kept output rows (the masked reference)."""
        _, r = self._band_rows(x)
        rows = torch.arange(like.shape[2], device=like.device)
        r0 = self._bands(x).to(like.device)[:, None]
        return ((rows[None] >= r0) & (rows[None] < r0 + r)).to(like.dtype)[:, None, :, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output; each input computes its own width of internal channels."""
        if self.mode == "fast" and x.shape[0] == 1 and not recording_active():
            # batch 1: the fewest possible operator dispatches to decide
            return self._run_width(x, self.width_index(x))
        return self.run_indexed(x, self._choose(x))

    def run_indexed(self, x: torch.Tensor, widx: torch.Tensor) -> torch.Tensor:
        """Block output when input ``i`` computes width ``widths[widx[i]]`` (recorded)."""
        if recording_active():
            self._record(x, widx)
        if self.mode == "fast" and self.rows < 1.0:  # each input its own band
            return torch.cat([self._run_width(x[i:i + 1], int(widx[i]))
                              for i in range(x.shape[0])])
        if self.mode == "fast":
            groups = widx.unique().tolist()
            if len(groups) == 1:  # one width for the whole batch: no gather, no scatter
                return self._run_width(x, groups[0])
            out = None
            for j in groups:
                sel = (widx == j).nonzero().squeeze(1)
                part = self._run_width(x.index_select(0, sel), j)
                out = x.new_empty((x.shape[0], *part.shape[1:])) if out is None else out
                out.index_copy_(0, sel, part)
            return out
        k = self.widths_t[widx]
        if self.mode == "masked":
            h = F.relu(F.conv2d(x, self.w1, self.b1, self.stride, 1))
            ch = torch.arange(h.shape[1], device=h.device)
            h = h * (ch[None] < k[:, None]).to(h.dtype)[:, :, None, None]
            return self._tail(x, self._rows_only(x, F.conv2d(h, self.w2, self.b2, 1, 1)))
        outs = []
        for i, ki in enumerate(k.tolist()):  # gathered: per-input slices, no packing
            xi = x[i:i + 1]
            h = F.relu(F.conv2d(xi, self.w1[:ki], self.b1[:ki], self.stride, 1))
            outs.append(self._tail(xi, self._rows_only(
                xi, F.conv2d(h, self.w2[:, :ki], self.b2, 1, 1))))
        return torch.cat(outs)

    def _rows_only(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The residual branch ``y`` zeroed outside each input's band (reference modes)."""
        return y if self.rows >= 1.0 else y * self._row_mask(x, y)

    def _record(self, x: torch.Tensor, widx: torch.Tensor) -> None:
        c_in, c_out = self.w1.shape[1], self.w2.shape[0]
        hw = math.ceil(x.shape[2] / self.stride) * math.ceil(x.shape[3] / self.stride)
        per_channel = (c_in + c_out) * 9 * hw
        fixed = c_out * c_in * hw if self.has_shortcut else 0.0
        if self.predict:
            fixed += c_in * x.shape[2] * x.shape[3] + c_in * self.w1.shape[0]
        if self.rows >= 1.0:
            record_effective_macs(self.widths_t[widx].double() * per_channel + fixed)
            return
        ho, r = self._band_rows(x)
        r0 = self._bands(x)
        conv1_rows = (torch.clamp(r0 + r + 1, max=ho) - torch.clamp(r0 - 1, min=0)).double()
        k = self.widths_t[widx].double()
        record_effective_macs(k * 9 * hw / ho * (c_in * conv1_rows + c_out * r)
                              + fixed + c_in * x.shape[2] * x.shape[3])


@torch.no_grad()
def calibrate_stage(stage_in: torch.Tensor, demand: list[torch.Tensor], channels: list[int],
                    cost: list[float], keep: float, n_levels: int, round_to: int
                    ) -> tuple[tuple[torch.Tensor, torch.Tensor], list[float], list[list[int]]]:
    """One decision for a run of blocks (a stage): ``(predictor, thresholds, widths)``.

    ``stage_in`` (N, C_in): the stage input's per-channel spatial mean over calibration inputs;
    ``demand[b]`` (N,): block ``b``'s exact AntiDote kept fraction per input; ``channels[b]`` and
    ``cost[b]`` its internal width and MACs per internal channel. The predictor maps the stage
    input to the cost-weighted mean demand; inputs are split into ``n_levels`` equally frequent
    levels by thresholds on it; level ``l`` gives block ``b`` the width of its mean demand over
    that level's calibration inputs, scaled by one factor chosen so the mean MACs fraction is
    closest to ``keep``. Widths never shrink as the level rises.
    """
    w = torch.tensor([c * m for c, m in zip(channels, cost, strict=True)], dtype=torch.float64)
    target = (torch.stack(demand, 1).double() * w).sum(1) / w.sum()
    predictor = fit_predictor(stage_in, target[:, None].float())
    pred = (stage_in @ predictor[0].T + predictor[1])[:, 0].double()
    qs = torch.linspace(0, 1, n_levels + 1, dtype=torch.float64)[1:-1]
    thresholds = torch.quantile(pred, qs).tolist() if n_levels > 1 else []
    level = (pred[:, None] >= torch.tensor(thresholds, dtype=torch.float64)).sum(1)
    mean_demand = torch.stack([
        torch.stack([d.double()[level == lv].mean() if (level == lv).any() else d.double().max()
                     for lv in range(n_levels)]).cummax(0).values
        for d in demand])  # (blocks, levels)
    share = torch.bincount(level, minlength=n_levels).double() / len(level)
    best: tuple[float, list[list[int]]] | None = None
    for scale in torch.linspace(0.25, 4.0, 301, dtype=torch.float64).tolist():
        widths = [[min(c, max(min(round_to, c), math.ceil(scale * float(f) * c / round_to)
                              * round_to)) for f in row]
                  for row, c in zip(mean_demand, channels, strict=True)]
        frac = float(sum(share[lv] * sum(wb[lv] * m for wb, m in zip(widths, cost, strict=True))
                         for lv in range(n_levels)) / w.sum())
        if best is None or abs(frac - keep) < best[0]:
            best = (abs(frac - keep), widths)
    assert best is not None
    return predictor, thresholds, best[1]


def exact_demand(att: torch.Tensor, keep: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per calibration input, the kept fraction of a map's channels under the exact AntiDote
    rule at ``keep`` (one threshold over all of ``att`` (N, C), at least one channel), and the
    channel order by mean attention; ``keep >= 1``: everything kept, the order unchanged."""
    c = att.shape[1]
    if keep < 1.0:
        tau = torch.quantile(att.flatten().double(), 1.0 - keep).float()
        return ((att >= tau).sum(1).clamp(min=1).double() / c,
                att.mean(0).argsort(descending=True))
    return torch.ones(len(att), dtype=torch.float64), torch.arange(c)


class FastStage(_NumpyDecision, nn.Sequential):
    """Consecutive fast blocks that share one decision, taken once at the stage input.

    The stage input's per-channel sums go through one linear predictor (one score) and
    ``len(thresholds)`` comparisons give the input's *level*; block ``b`` then computes its
    ``widths[level]``. In an exported graph this is one branch per stage instead of one per
    block (``harness/pruning/dynamic/export.py``; the cost of each is measured in
    ``benchmarks/bench_dynamic.py``). The blocks keep their names (``layer1.0`` ...).
    """

    def __init__(self, blocks: list[FastBasicBlock], predictor: tuple[torch.Tensor, torch.Tensor],
                 thresholds: list[float], mode: str) -> None:
        super().__init__(*blocks)
        self.register_buffer("pw", predictor[0][0].contiguous())
        self.register_buffer("thr", (torch.tensor(thresholds) - predictor[1][0]).contiguous())
        self.mode, self.levels = mode, len(thresholds) + 1

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Level per input (B,), row by row as :meth:`FastBasicBlock._counts`."""
        return self._level_counts(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stage output; each input's level sets the width of every block."""
        if self.mode == "fast" and x.shape[0] == 1 and not recording_active():
            j = (self._np_count(x.numpy()[0], x.shape[2] * x.shape[3])
                 if FastBasicBlock._numpy_ok(x) else int(self._levels(x)[0]))
            for block in self:
                x = block._run_width(x, j)
            return x
        level = self._levels(x).to(x.device)
        if recording_active():
            record_effective_macs(torch.full((x.shape[0],), float(
                self.pw.numel() * (x.shape[2] * x.shape[3] + 1)), dtype=torch.float64))
        if self.mode != "fast" or recording_active():
            for block in self:
                x = block.run_indexed(x, level)
            return x
        groups = level.unique().tolist()
        if len(groups) == 1:
            for block in self:
                x = block._run_width(x, groups[0])
            return x
        out = None
        for j in groups:
            sel = (level == j).nonzero().squeeze(1)
            part = x.index_select(0, sel)
            for block in self:
                part = block._run_width(part, j)
            out = part.new_empty((x.shape[0], *part.shape[1:])) if out is None else out
            out.index_copy_(0, sel, part)
        return out
