"""Fast dynamic execution of chain blocks: torchvision bottlenecks and MobileNetV2 inverted
residuals (``antidote_fast`` on networks other than basic-block ResNets).

A *chain block* (:class:`~.structure.BlockSpec`, read from the block's graph) is a sequence of
``conv -> BN [-> act]`` stages from the block input, with an optional residual add. Its gated
maps are the outputs of its inner ``groups == 1`` stages (a bottleneck's conv1 and conv2 outputs;
an inverted residual's expand output); a depthwise stage after a gated map computes the same
channels (its width follows), and the stage after reads only them.

The design is ``FastBasicBlock``'s (``fast_blocks.py``), with the decision of ``FastStage``:

1. each gated map's channels are reordered once by their calibrated mean AntiDote attention, so
   an input keeps a prefix of them;
2. one decision per block and input, from the block input: a linear predictor of the
   cost-weighted exact AntiDote demand (kept fraction) of its maps on the input's per-channel
   sums, compared with ``levels - 1`` thresholds, gives the input's *level*;
   :func:`~.fast_blocks.calibrate_stage` chooses thresholds (equally frequent levels) and each
   map's width per level so the mean MACs fraction is closest to the keep asked;
3. each level has pre-packed contiguous weights for every stage (BN folded), so running it is
   plain convolutions; batches are grouped by level.

``masked`` (full weights, pruned channels zeroed after every stage whose output is gated) and
``gathered`` (per-input slices of the full weights) execute the same rule as references. The
exported form (``export.py``) has one ``If`` branch per level. Stage decisions
(``decide='stage'``) and row bands (``rows``) are basic-block only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import record_effective_macs, recording_active
from prunebench.harness.pruning.dynamic.fast_blocks import (
    _NumpyDecision,
    calibrate_stage,
    exact_demand,
)
from prunebench.harness.pruning.dynamic.folding import folded_weights
from prunebench.harness.pruning.dynamic.structure import (
    BlockSpec,
    activate,
    basic_parts,
    enclosing_block,
)


def gated_stages(block: nn.Module, spec: BlockSpec) -> list[int]:
    """Indices of the stages whose output map is gateable: inner stages with ``groups == 1``
    whose map is read (through depthwise stages) by a ``groups == 1`` conv."""
    convs = [block.get_submodule(s.conv) for s in spec.stages]
    out = []
    for i, c in enumerate(convs[:-1]):
        j = i + 1  # past the depthwise stages that follow map i
        while j < len(convs) - 1 and convs[j].groups == convs[j].in_channels > 1:
            j += 1
        if c.groups == 1 and spec.stages[i].act is not None and convs[j].groups == 1:
            out.append(i)
    return out


class FastChainBlock(_NumpyDecision):
    """A BN-folded chain block whose gated maps' widths are set per input by one level decision.

    ``gated``: stage indices whose output is gated; ``orders[g]`` the channel order of map ``g``;
    ``predictor`` ``(pw (C_in,), p0)`` and ``thresholds`` (``levels - 1``) the decision (``None``:
    one level, no decision); ``widths[g][level]`` each gated map's width.
    """

    def __init__(self, block: nn.Module, spec: BlockSpec, gated: list[int],
                 orders: list[torch.Tensor], predictor: tuple | None, thresholds: list[float],
                 widths: list[list[int]], mode: str) -> None:
        super().__init__()
        self.mode, self.levels = mode, len(widths[0]) if widths else 1
        self.widths = [list(w) for w in widths]
        self.geometry: list[tuple] = []  # (stride, padding, dilation, groups>1, kernel, act)
        source: list[int | None] = []  # per stage: which gated map its output is (or None)
        ws, bs = [], []
        for i, st in enumerate(spec.stages):
            conv = block.get_submodule(st.conv)
            w, b = folded_weights(conv, block.get_submodule(st.bn))
            depthwise = conv.groups > 1
            src = (gated.index(i) if i in gated else
                   source[-1] if depthwise and source else None)
            if not _rebuildable(conv):
                raise PrunebenchError(f"stage {st.conv!r} of {type(block).__name__} is a grouped "
                                      "(not depthwise) or non-zero-padded conv; fast_units "
                                      "leaves such blocks dense")
            prev = source[-1] if source else None
            if src is not None:
                w, b = w[orders[src]], b[orders[src]]
            if prev is not None and not depthwise:
                w = w[:, orders[prev]]
            ws.append(w.contiguous())
            bs.append(b.contiguous())
            source.append(src)
            self.geometry.append((conv.stride, conv.padding, conv.dilation, depthwise,
                                  conv.kernel_size, st.act))
        self.source = source
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            self.register_parameter(f"w{i}", nn.Parameter(w, requires_grad=False))
            self.register_parameter(f"b{i}", nn.Parameter(b, requires_grad=False))
        self.residual = spec.shortcut is not None
        self.projection = bool(spec.shortcut)
        if self.projection:
            sc = block.get_submodule(spec.shortcut[0])
            wsc, bsc = folded_weights(sc, block.get_submodule(spec.shortcut[1]))
            self.register_parameter("ws", nn.Parameter(wsc, requires_grad=False))
            self.register_parameter("bs", nn.Parameter(bsc, requires_grad=False))
            if sc.groups != 1 or not _rebuildable(sc):
                raise PrunebenchError(f"shortcut {spec.shortcut[0]!r} of "
                                      f"{type(block).__name__} is a grouped conv")
            self.sc_geometry = (sc.stride, sc.padding, sc.dilation)
        self.final_act = spec.final_act
        self.predict = predictor is not None and self.levels > 1
        if predictor is not None:
            self.register_buffer("pw", predictor[0].reshape(-1).contiguous())
            self.register_buffer("thr", (torch.tensor(thresholds, dtype=torch.float32)
                                         - predictor[1].reshape(())).contiguous())
        self._packed: list[list[tuple[str, str]]] = []
        for lv in range(self.levels):
            names = []
            for i in range(len(ws)):
                w, b = self._slice(i, lv, ws[i], bs[i])
                self.register_buffer(f"p{lv}_w{i}", w.contiguous())
                self.register_buffer(f"p{lv}_b{i}", b.contiguous())
                names.append((f"p{lv}_w{i}", f"p{lv}_b{i}"))
            self._packed.append(names)

    # ------------------------------------------------------------------------ widths
    def _slice(self, i: int, lv: int, w: torch.Tensor, b: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        src = self.source[i]
        k_out = self.widths[src][lv] if src is not None else w.shape[0]
        if self.geometry[i][3]:  # depthwise: its width is its input's
            return w[:k_out], b[:k_out]
        prev = self.source[i - 1] if i > 0 else None
        k_in = self.widths[prev][lv] if prev is not None else w.shape[1]
        return w[:k_out, :k_in], b[:k_out]

    def _conv(self, i: int, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        stride, padding, dilation, depthwise, _, act = self.geometry[i]
        y = F.conv2d(y, w, b, stride, padding, dilation, w.shape[0] if depthwise else 1)
        return activate(y, act)

    def _tail(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.residual:
            y = y + (F.conv2d(x, self.ws, self.bs, *self.sc_geometry) if self.projection else x)
        return activate(y, self.final_act)

    # ------------------------------------------------------------------------ decision
    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Level per input (B,), row by row (an input's level never depends on its batch)."""
        if not self.predict:
            return torch.zeros(x.shape[0], dtype=torch.long)
        return self._level_counts(x).cpu()

    # ------------------------------------------------------------------------ execution
    def run_level(self, x: torch.Tensor, lv: int) -> torch.Tensor:
        """The block on ``x`` at ``level`` with the packed weights (every input of ``x``)."""
        table = self._cached()
        if "runs" not in table:
            table["runs"] = [[(getattr(self, a), getattr(self, b)) for a, b in names]
                             for names in self._packed]
        y = x
        for i, (w, b) in enumerate(table["runs"][lv]):
            y = self._conv(i, y, w, b)
        return self._tail(x, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output; each input computes its level's widths."""
        if self.mode == "fast" and x.shape[0] == 1 and not recording_active():
            if not self.predict:  # one level: nothing to decide
                return self.run_level(x, 0)
            lv = (self._np_count(x.numpy()[0], x.shape[2] * x.shape[3])
                  if self._numpy_ok(x) else int(self._levels(x)[0]))
            return self.run_level(x, lv)
        level = self._levels(x)
        if recording_active():
            self._record(x, level)
        if self.mode == "masked":
            return self._masked(x, level)
        if self.mode == "gathered":
            return torch.cat([self._sliced(x[i:i + 1], int(lv)) for i, lv in
                              enumerate(level.tolist())])
        groups = level.unique().tolist()
        if len(groups) == 1:
            return self.run_level(x, groups[0])
        out = None
        for lv in groups:
            sel = (level == lv).nonzero().squeeze(1).to(x.device)
            part = self.run_level(x.index_select(0, sel), lv)
            out = part.new_empty((x.shape[0], *part.shape[1:])) if out is None else out
            out.index_copy_(0, sel, part)
        return out

    def _masked(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        y = x
        for i in range(len(self.geometry)):
            w = getattr(self, f"w{i}")
            y = self._conv(i, y, w, getattr(self, f"b{i}"))
            src = self.source[i]
            if src is not None:
                k = torch.tensor(self.widths[src], device=y.device)[level.to(y.device)]
                ch = torch.arange(y.shape[1], device=y.device)
                y = y * (ch[None] < k[:, None]).to(y.dtype)[:, :, None, None]
        return self._tail(x, y)

    def _sliced(self, x: torch.Tensor, lv: int) -> torch.Tensor:
        y = x
        for i in range(len(self.geometry)):
            w, b = self._slice(i, lv, getattr(self, f"w{i}"), getattr(self, f"b{i}"))
            y = self._conv(i, y, w, b)
        return self._tail(x, y)

    def _record(self, x: torch.Tensor, level: torch.Tensor) -> None:
        """Per input: every stage at its level's widths, the shortcut, the decision."""
        per_level = []
        for lv in range(self.levels):
            h, w_ = x.shape[2], x.shape[3]
            total = 0.0
            for i, (stride, padding, dilation, _dw, kernel, _) in \
                    enumerate(self.geometry):
                h = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
                w_ = (w_ + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
                wt, _ = self._slice(i, lv, getattr(self, f"w{i}"), getattr(self, f"b{i}"))
                total += wt.shape[0] * wt.shape[1] * math.prod(kernel) * h * w_
            if self.projection:
                total += self.ws.shape[0] * self.ws[0].numel() * h * w_
            if self.predict:
                total += self.pw.numel() * (x.shape[2] * x.shape[3] + 1)
            per_level.append(total)
        record_effective_macs(torch.tensor(per_level, dtype=torch.float64)[level.cpu()])


class FastUnit:
    """A block ``antidote_fast`` runs fast: its ``path``, ``spec``, ``kind`` (``basic``:
    :class:`~.fast_blocks.FastBasicBlock`; ``chain``: :class:`FastChainBlock`), its gated
    stage indices and its sites (in stage order)."""

    def __init__(self, path: str, spec: BlockSpec, kind: str, stages: list[int],
                 sites: list) -> None:
        self.path, self.spec, self.kind, self.stages, self.sites = path, spec, kind, stages, sites

    def conv_name(self, i: int) -> str:
        """Full module name of stage ``i``'s conv."""
        return f"{self.path}.{self.spec.stages[i].conv}" if self.path else \
            self.spec.stages[i].conv


def _rebuildable(conv: nn.Conv2d) -> bool:
    """A conv :class:`FastChainBlock` computes as it is: dense or depthwise (one filter per
    channel), zero padding."""
    return conv.padding_mode == "zeros" and (conv.groups == 1 or (
        conv.groups == conv.in_channels == conv.out_channels))


def fast_units(model: nn.Module, sites: list) -> dict[str, FastUnit]:
    """The blocks of ``model`` that hold sites ``antidote_fast`` can run fast, by path, each
    with the sites it gates (a site outside any block, e.g. a plain chain's, is left out)."""
    units: dict[str, FastUnit] = {}
    memo: dict = {}
    for s in sites:
        if s.is_input:
            continue
        found = enclosing_block(model, [s.name, s.consumer, *s.follow], memo)
        if found is None:
            continue
        path, spec = found
        if path not in units:
            block = model.get_submodule(path) if path else model
            if basic_parts(block, spec) is not None:
                units[path] = FastUnit(path, spec, "basic", [0], [])
            elif all(_rebuildable(block.get_submodule(n)) for n in
                     [st.conv for st in spec.stages] + list(spec.shortcut or ())[:1]):
                units[path] = FastUnit(path, spec, "chain", gated_stages(block, spec), [])
            else:  # a grouped (not depthwise) or padded-otherwise conv: left dense
                units[path] = FastUnit(path, spec, "chain", [], [])
        unit = units[path]
        idx = [i for i in unit.stages if unit.conv_name(i) == s.name]
        if idx:
            unit.sites.append((idx[0], s))
    out = {}
    for path, unit in units.items():
        if unit.sites:
            unit.sites = [s for _, s in sorted(unit.sites, key=lambda t: t[0])]
            unit.stages = [i for i in unit.stages if unit.conv_name(i) in
                           {s.name for s in unit.sites}]
            out[path] = unit
    return out


@torch.no_grad()
def chain_block(block: nn.Module, unit: FastUnit, keep: dict[str, float],
                stats: tuple | None, per_layer: dict[str, float], n_levels: int, round_to: int,
                mode: str) -> FastChainBlock:
    """A calibrated :class:`FastChainBlock` for ``unit`` (``stats``: the block input's spatial
    means and each site's exact attention on calibration inputs; ``None`` when every site keeps
    1.0: one full-width level, no decision)."""
    convs = [block.get_submodule(s.conv) for s in unit.spec.stages]
    channels = [convs[i].out_channels for i in unit.stages]
    if stats is None:
        return FastChainBlock(block, unit.spec, unit.stages, [torch.arange(c) for c in channels],
                              None, [], [[c] for c in channels], mode)
    a, atts = stats
    demand, cost, orders = [], [], []
    for i, site, att, c in zip(unit.stages, unit.sites, atts, channels, strict=True):
        d, order = exact_demand(att, keep[site.name])
        demand.append(d)
        orders.append(order)
        # MACs that scale with this map's width: its producer, the depthwise stages that
        # follow it and the conv that reads it (a bottleneck's conv2 counts for both maps)
        j, macs = i + 1, per_layer.get(unit.conv_name(i), 0.0)
        while convs[j].groups > 1:
            macs += per_layer.get(unit.conv_name(j), 0.0)
            j += 1
        cost.append((macs + per_layer.get(unit.conv_name(j), 0.0)) / c)
    total = sum(c * m for c, m in zip(channels, cost, strict=True))
    target = sum(keep[s.name] * c * m for s, c, m in zip(unit.sites, channels, cost, strict=True))
    predictor, thresholds, widths = calibrate_stage(a, demand, channels, cost, target / total,
                                                    n_levels, round_to)
    if all(len(set(w)) == 1 for w in widths):  # one width per map at every level: no decision
        return FastChainBlock(block, unit.spec, unit.stages, orders, None, [],
                              [w[:1] for w in widths], mode)
    return FastChainBlock(block, unit.spec, unit.stages, orders, predictor, thresholds, widths,
                          mode)
