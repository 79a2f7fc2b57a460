"""AntiDote (Yu et al., DATE 2020): attention-based dynamic feature-map pruning.

The attention formulas below are a *reconstruction*: the paper's exact channel and column
attention formulas were not available to us, so these follow its description (attention from
the magnitude of the activations), not its equations (``docs/methods.md``).

For each input, the feature map a gated layer produces gets a *channel attention* (the p-norm
mean of |activation| over each channel's spatial map) and a *column attention* (the mean
|activation| over channels at each spatial position). Channels below the layer's keep-ratio
(top-k) or relative threshold are not consumed by the next convolution for that input, and
with ``options["columns"]`` only that fraction of the consumer's output positions (highest
column attention) is computed.
AntiDote's training phase, targeted dropout, lives in ``training.py``
(``prunebench finetune``).

The exact rule needs each input's full gated feature map before it can decide, so the gated conv
itself is always computed and only the consumer is pruned. By default the gates sit on each
residual block's internal feature map (the second conv's input); ``options["inputs"] = 1`` also
gates each block's input (the first conv's input channels, by the block input's own attention),
as AntiDote prunes the input feature map of every layer: the same keep-ratio then removes about
twice the MACs. ``antidote_fast`` is a separate method
(its own accuracy): it predicts a per-input width from the block input and runs BN-folded,
pre-packed widths (``dynamic/fast_blocks.py``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import module_macs
from prunebench.harness.pruning.base import MethodInfo, PruneContext, PruningMethod, register_method
from prunebench.harness.pruning.calibration import calibration_inputs, samples_option
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.dynamic.attention_stats import block_statistics
from prunebench.harness.pruning.dynamic.build import EXEC_MODES, build_gated, check_exec_mode
from prunebench.harness.pruning.dynamic.fast_blocks import (
    FastBasicBlock,
    FastStage,
    calibrate_stage,
    calibrate_widths,
    exact_demand,
    fit_predictor,
)
from prunebench.harness.pruning.dynamic.fast_chain import FastUnit, chain_block, fast_units
from prunebench.harness.pruning.dynamic.folding import fold_batchnorm
from prunebench.harness.pruning.dynamic.gates import EXACT_MODES, DynamicNetwork, GateRule
from prunebench.harness.pruning.dynamic.sites import (
    get_module,
    require_sites,
    resolve_keep,
    set_module,
)
from prunebench.harness.pruning.dynamic.structure import BlockSpec, basic_parts
from prunebench.harness.pruning.options import Option, OptionSchema

ANTIDOTE_CITATION = ("Yu, Liu, Wang, Wang, Chen. AntiDote: Attention-based Dynamic Optimization "
                     "for Neural Network Runtime Efficiency. DATE 2020")


class AntiDote(PruningMethod):
    """AntiDote's exact per-input rule, executed ``masked`` or ``gathered``."""

    info = MethodInfo("antidote", "dynamic",
                      "per-input channel/column attention gates on each block's internal "
                      "feature map, and with inputs=1 on each block's input (exact rule; "
                      "options: rule=ratio|threshold, columns, p, inputs); the attention "
                      "formulas are a reconstruction of the paper's description "
                      "(docs/methods.md)", ANTIDOTE_CITATION)
    options = OptionSchema(
        Option("rule", str, "ratio", "ratio: each input keeps its ceil(keep*C) highest-attention "
               "channels; threshold: channels whose attention is at least (1 - keep) x the "
               "input's largest", choices=("ratio", "threshold")),
        Option("columns", float, 1.0, "fraction of the consumer's output positions computed "
               "(highest column attention)", min=0, max=1, min_exclusive=True, example=0.5),
        Option("p", float, 1.0, "channel attention is the p-norm mean of |activation| (1: mean "
               "|activation|)", min=0, min_exclusive=True),
        Option("inputs", int, 0, "1 also gates each residual block's input channels", min=0,
               max=1, example=1),
    )
    exec_modes = EXACT_MODES

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """A gated copy of ``model``. Rule ``ratio``: each input keeps its ``ceil(keep*C)``
        highest-attention channels. Rule ``threshold``: a channel is kept when its attention is
        at least ``(1 - keep)`` x the input's largest (so keep 1.0 keeps all in both rules)."""
        opts = {**self.options.defaults(), **self.options.parse(self.info.name, config.options)}
        mode = check_exec_mode(config.exec_mode, self.info.name, self.exec_modes)
        rule, power, inputs, columns = opts["rule"], opts["p"], opts["inputs"], opts["columns"]
        sites = require_sites(model, self.info.name, inputs=bool(inputs))
        keep = resolve_keep(config, sites)
        kind = "topk" if rule == "ratio" else "relative"
        rules = {s.name: GateRule(kind, keep[s.name] if kind == "topk" else 1.0 - keep[s.name],
                                  1.0 if s.is_input else columns, power) for s in sites}
        return build_gated(model, rules, mode, ctx.example_input,
                           {"method": self.info.name, "rule": rule, "columns": columns,
                            "inputs": bool(inputs)})


class AntiDoteFast(PruningMethod):
    """AntiDote-style dynamic width per input, built for speed (see ``dynamic/fast_blocks.py``)."""

    info = MethodInfo("antidote_fast", "dynamic",
                      "AntiDote-style per-input width of each residual block's internal channels, "
                      "predicted from the block input; channels in calibrated attention order, "
                      "BN folded, pre-packed widths (options: widths, round_to, "
                      "calibration_samples)", ANTIDOTE_CITATION + " (fast execution variant)")
    options = OptionSchema(
        Option("widths", int, 4, "pre-packed widths per block", min=1),
        Option("round_to", int, 4, "widths are multiples of N channels", min=1),
        Option("rows", float, 1.0, "structured spatial pruning: the fraction of each block's "
               "output rows its residual branch computes, one contiguous band per input where "
               "the block input's row energy is largest (1: off)", min=0, max=1,
               min_exclusive=True),
        Option("decide", str, "block", "where the width is decided: per block (each block's "
               "own predictor) or per stage (one decision at the stage input sets the widths of "
               "all its blocks: one branch per stage in an exported graph)",
               choices=("block", "stage")),
        samples_option(512),
    )
    exec_modes = EXEC_MODES

    def _units(self, model: nn.Module) -> dict[str, FastUnit]:
        units = fast_units(model, require_sites(model, self.info.name))
        if not units:
            raise PrunebenchError(
                f"method {self.info.name!r} found no block it runs fast in "
                f"{type(model).__name__}: it needs residual basic blocks, bottlenecks or "
                "inverted residuals whose internal maps are gateable; use 'antidote'")
        return units

    def gated_layers(self, model: nn.Module, config: PruningConfig,
                     ctx: PruneContext) -> list[str]:
        """The sites inside the blocks it runs fast (a plain chain's sites are not)."""
        return [s.name for u in self._units(model).values() for s in u.sites]

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """A BN-folded copy of ``model`` whose blocks choose their width per input."""
        opts = {**self.options.defaults(), **self.options.parse(self.info.name, config.options)}
        mode = check_exec_mode(config.exec_mode, self.info.name, self.exec_modes)
        units = self._units(model)
        sites = [s for u in units.values() for s in u.sites]
        chains = sorted(p for p, u in units.items() if u.kind == "chain")
        if chains and (opts["decide"] == "stage" or opts["rows"] < 1.0):
            raise PrunebenchError(
                f"options decide='stage' and rows of method {self.info.name!r} run on residual "
                f"basic blocks only; {chains[0]!r} is a {len(units[chains[0]].spec.stages)}-conv "
                "block: use decide='block' and rows=1")
        keep = resolve_keep(config, sites)
        n_widths, round_to = opts["widths"], opts["round_to"]
        base = copy.deepcopy(model).eval()
        blocks = list(units)
        keep_of = {b: min(keep[s.name] for s in units[b].sites) for b in blocks}
        stages = _stages(model, blocks) if opts["decide"] == "stage" else {}
        stages = {p: bs for p, bs in stages.items() if any(keep_of[b] < 1.0 for b in bs)}
        need = sorted({b for b in blocks if keep_of[b] < 1.0} | {b for bs in stages.values()
                                                                  for b in bs})
        calib = "none"
        stats = {}
        if need:
            inputs, calib = calibration_inputs(ctx, opts["calibration_samples"], self.info.name)
            stats = block_statistics(base, {b: units[b].sites for b in need}, inputs)
        per_layer = module_macs(base, ctx.example_input[:1])
        net = fold_batchnorm(base)
        block_macs = 0.0
        for b in blocks:
            block_macs += sum(v for k, v in per_layer.items() if k.startswith(b + "."))
            if any(b in bs for bs in stages.values()):
                continue
            block = get_module(base, b)
            if units[b].kind == "chain":
                fast = chain_block(block, units[b], keep, stats.get(b), per_layer, n_widths,
                                   round_to, mode)
            else:
                fast = self._fast_block(block, units[b].spec, keep_of[b], stats.get(b),
                                        n_widths, round_to, mode)
            set_module(net, b, fast)
        for path, bs in stages.items():
            set_module(net, path, self._fast_stage(base, units, bs, keep_of, stats, per_layer,
                                                   n_widths, round_to, mode))
        if opts["rows"] < 1.0:
            for m in net.modules():
                if isinstance(m, FastBasicBlock):
                    m.set_rows(opts["rows"])
        info = {"method": self.info.name, "exec_mode": mode, "gated": [s.name for s in sites],
                "calibration": calib, "bn_folded": True, "dense_macs": sum(per_layer.values()),
                "decide": opts["decide"], "stages": sorted(stages), "rows": opts["rows"],
                "widths": {b: get_module(net, b).widths for b in blocks}}
        return DynamicNetwork(net, sum(per_layer.values()) - block_macs, info).eval()

    @staticmethod
    def _fast_block(block: nn.Module, spec: BlockSpec, keep: float, stats: tuple | None,
                    n_widths: int, round_to: int, mode: str) -> FastBasicBlock:
        c = basic_parts(block, spec).conv1.out_channels
        if stats is None:  # keep 1.0: the full width, no predictor
            return FastBasicBlock(block, torch.arange(c), None, 0.0, [c], mode, spec)
        a, (s,) = stats
        order = s.mean(0).argsort(descending=True)
        predictor = fit_predictor(a, s)
        scores = (a @ predictor[0].T + predictor[1])[:, order]
        tau, widths = calibrate_widths(scores, keep, n_widths, min(round_to, c))
        return FastBasicBlock(block, order, predictor, tau, widths, mode, spec)

    @staticmethod
    def _fast_stage(base: nn.Module, units: dict[str, FastUnit], names: list[str],
                    keep: dict[str, float], stats: dict, per_layer: dict[str, float],
                    n_levels: int, round_to: int, mode: str) -> FastStage:
        """The blocks ``names`` (one stage) deciding once, at the stage input."""
        demand, channels, cost, orders = [], [], [], []
        for b in names:
            c = basic_parts(get_module(base, b), units[b].spec).conv1.out_channels
            d, order = exact_demand(stats[b][1][0], keep[b])
            demand.append(d)
            orders.append(order)
            channels.append(c)
            cost.append((per_layer[units[b].conv_name(0)] + per_layer[units[b].conv_name(1)])
                        / c)
        total = sum(c * m for c, m in zip(channels, cost, strict=True))
        stage_keep = sum(keep[b] * c * m for b, c, m in zip(names, channels, cost, strict=True))
        predictor, thresholds, widths = calibrate_stage(
            stats[names[0]][0], demand, channels, cost, stage_keep / total, n_levels, round_to)
        blocks = [FastBasicBlock(get_module(base, b), order, None, 0.0, w, mode, units[b].spec)
                  for b, order, w in zip(names, orders, widths, strict=True)]
        return FastStage(blocks, predictor, thresholds, mode)


def _stages(model: nn.Module, blocks: list[str]) -> dict[str, list[str]]:
    """Blocks grouped by the ``nn.Sequential`` that holds them (``layer1.0``, ``layer1.1`` ->
    ``layer1``); a block held by anything else cannot share a stage decision."""
    out: dict[str, list[str]] = {}
    for b in blocks:
        out.setdefault(b.rpartition(".")[0], []).append(b)
    for path, names in out.items():
        parent = get_module(model, path) if path else model
        if not isinstance(parent, nn.Sequential) or len(parent) != len(names):
            raise PrunebenchError(
                f"option decide='stage' needs each stage to be an nn.Sequential of basic blocks; "
                f"{path or 'the model'!r} is not: use decide='block'")
    return out


register_method(AntiDote())
register_method(AntiDoteFast())
