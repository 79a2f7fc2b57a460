"""Instance-wise sparsity (C. Liu, Y. Wang, K. Han, C. Xu, C. Xu; IJCAI 2019): per-input
channel pruning by feature norm.

Training (``prunebench finetune --method instance_sparsity --feature-decay LAMBDA``) adds a
*feature decay* l2,1 penalty on the gated feature maps (``training.FeatureDecay``) so that, for
each input, many channels become nearly silent. At test time a channel of a gated feature map is
computed downstream only when its RMS norm for that input reaches the layer's threshold.

Layer selection: a layer is worth gating when its sparsity depends on the input. For each gated
site, each calibration (train) input's *sparsity* is the fraction of its channels whose RMS norm
is below the layer's reference threshold (the median channel norm over all calibration inputs,
i.e. the threshold of keep 0.5: fixed before any keep is chosen, so that a search can draw the
keeps of the selected layers); the layer's coefficient of variation is the std / mean of that
sparsity across inputs. With ``select=cv`` (default) the ``fraction`` of sites with the largest
one are gated, every other site runs dense; ``select=all`` gates every site. The search space
asks the same question through the pipeline (``pipeline.gated_layers(model, config, ctx)``), so
its keys are the selected layers. A layer named in ``keep`` is gated as asked (the search names
the selected ones only).

Two rules decide what an input keeps on a gated site (option ``rule``):

- ``exact`` (default in ``masked`` / ``gathered``): the channels whose RMS norm reaches the
  layer's threshold, the ``(1 - keep)`` quantile of channel norms over calibration inputs, and at
  least the input's strongest channel; the count varies per input. Any gated site.

Each threshold (and each prefix block) is calibrated in model order on the maps the gates before
it leave (:func:`norms_at` on the partly gated network), so a later gate keeps what it is asked
even though earlier gates have thinned its input.
- ``prefix`` (default in ``fast``; residual basic blocks only): the *number* of channels that
  reach the threshold sets a width, rounded up to one of ``widths`` pre-packed widths, and conv2
  reads that prefix of a calibrated channel order (``instance_fast.py``, on ``antidote_fast``'s
  ``FastBasicBlock``). Its ``masked`` and ``gathered`` modes are the fast mode's references.

Deviations from the paper are listed in ``docs/methods.md``.
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
from prunebench.harness.pruning.dynamic.attention_stats import site_attention
from prunebench.harness.pruning.dynamic.build import EXEC_MODES, build_gated, check_exec_mode
from prunebench.harness.pruning.dynamic.fast_blocks import FastBasicBlock
from prunebench.harness.pruning.dynamic.folding import fold_batchnorm
from prunebench.harness.pruning.dynamic.gates import DynamicNetwork, GateRule, channel_attention
from prunebench.harness.pruning.dynamic.instance_fast import instance_width_block
from prunebench.harness.pruning.dynamic.sites import (
    GatedSite,
    get_module,
    require_sites,
    resolve_keep,
    set_module,
)
from prunebench.harness.pruning.dynamic.structure import basic_parts
from prunebench.harness.pruning.options import Option, OptionSchema

CITATION = ("Chuanjian Liu, Yunhe Wang, Kai Han, Chunjing Xu, Chang Xu. Learning Instance-wise "
            "Sparsity for Accelerating Deep Models. IJCAI 2019")
# the smallest threshold: channels whose norm is exactly 0 for an input are never computed
SILENT = float(torch.finfo(torch.float32).tiny)
# the quantile of a layer's channel norms below which a channel counts as silent when its
# sparsity per input is measured for the layer selection (0.5: the threshold of keep 0.5)
REFERENCE_QUANTILE = 0.5


def sparsity_per_input(norms: torch.Tensor, quantile: float = REFERENCE_QUANTILE
                       ) -> torch.Tensor:
    """Each input's fraction of silent channels (N,): those whose norm (``norms``: (N, C)) is
    below the ``quantile`` of all of the layer's channel norms (at or below it when that is 0)."""
    tau = torch.quantile(norms.flatten().double(), quantile)
    silent = norms.double() < tau if tau > 0 else norms.double() <= 0
    return silent.double().mean(1)


def coefficient_of_variation(norms: torch.Tensor) -> float:
    """Std / mean across inputs of each input's sparsity (:func:`sparsity_per_input`); 0 when no
    input has a silent channel."""
    s = sparsity_per_input(norms)
    mean = float(s.mean())
    return float(s.std()) / mean if mean > 0 and len(s) > 1 else 0.0


def select_layers(norms: dict[str, torch.Tensor], fraction: float) -> list[str]:
    """The ``round(fraction * L)`` (at least one) layers with the largest coefficient of
    variation of their per-input sparsity: the most input-dependent layers (ties: model order)."""
    names = list(norms)
    ranked = sorted(names, key=lambda n: (-coefficient_of_variation(norms[n]), names.index(n)))
    return sorted(ranked[:max(1, round(len(ranked) * fraction))])


class _Seen(Exception):
    """Stops a calibration forward once the site's map has been seen."""


@torch.no_grad()
def norms_at(model: nn.Module, site: GatedSite, inputs: torch.Tensor,
             batch: int = 128) -> torch.Tensor:
    """Per-input channel RMS norms (N, C) of ``site``'s map in ``model`` (which may already
    gate earlier sites), on ``inputs``; each forward stops at the site."""
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.append(channel_attention(site.gated_map(out), 2.0))
        raise _Seen

    handle = get_module(model, site.gate).register_forward_hook(hook)
    was_training = model.training
    try:
        model.eval()
        for start in range(0, len(inputs), batch):
            try:
                model(inputs[start:start + batch])
            except _Seen:
                pass
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(seen)


class InstanceSparsity(PruningMethod):
    """Per-input channel gates with norm thresholds calibrated on training inputs."""

    info = MethodInfo("instance_sparsity", "dynamic",
                      "per-input channel pruning by feature-norm threshold on the layers whose "
                      "sparsity varies most across inputs (options: select, fraction, rule, "
                      "widths, round_to, calibration_samples)", CITATION)
    options = OptionSchema(
        Option("select", str, "cv", "cv: gate the fraction of layers whose per-input sparsity "
               "varies most (coefficient of variation); all: gate every layer",
               choices=("cv", "all")),
        Option("fraction", float, 0.5, "with select=cv, the fraction of gateable layers gated",
               min=0, max=1, min_exclusive=True),
        Option("rule", str, None, "exact: each input keeps its own channels above the threshold "
               "(default in masked/gathered); prefix: the count above it sets a pre-packed width "
               "(default in fast; residual basic blocks only)", choices=("exact", "prefix")),
        Option("widths", int, 4, "rule=prefix: pre-packed widths per block", min=1),
        Option("round_to", int, 4, "rule=prefix: widths are multiples of N channels", min=1),
        samples_option(256, minimum=2),
    )
    exec_modes = EXEC_MODES

    def _options(self, config: PruningConfig) -> dict:
        return {**self.options.defaults(), **self.options.parse(self.info.name, config.options)}

    def gated_layers(self, model: nn.Module, config: PruningConfig,
                     ctx: PruneContext) -> list[str]:
        """The layers the selection gates in ``model`` (``select``; calibrates on ``ctx``)."""
        opts = self._options(config)
        sites = require_sites(model, self.info.name)
        if opts["select"] == "all":
            return [s.name for s in sites]
        inputs, _ = calibration_inputs(ctx, opts["calibration_samples"], self.info.name)
        chosen = set(select_layers(site_attention(model, sites, inputs, power=2.0),
                                   opts["fraction"]))
        return [s.name for s in sites if s.name in chosen]

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """A gated copy of ``model``; thresholds set so each gated layer keeps ``keep`` on
        average. Gated: the selected layers at ``global_keep`` and the layers ``keep`` names."""
        opts = self._options(config)
        mode = check_exec_mode(config.exec_mode, self.info.name, self.exec_modes)
        rule = opts["rule"] or ("prefix" if mode == "fast" else "exact")
        if mode == "fast" and rule != "prefix":
            raise PrunebenchError(f"exec mode 'fast' of method {self.info.name!r} runs rule "
                                  "prefix; drop option rule=exact or use exec mode masked")
        sites = require_sites(model, self.info.name)
        keep = resolve_keep(config, sites)
        calib, norms, selected = "none", {}, []
        todo = [s for s in sites if keep[s.name] < 1.0]
        if todo:
            inputs, calib = calibration_inputs(ctx, opts["calibration_samples"], self.info.name)
            norms = site_attention(model, sites, inputs, power=2.0)
            selected = (list(norms) if opts["select"] == "all"
                        else select_layers(norms, opts["fraction"]))
        gated = [s for s in todo if s.name in config.keep or s.name in selected]
        info = {"method": self.info.name, "calibration": calib, "select": opts["select"],
                "fraction": opts["fraction"], "selected": sorted(selected), "rule": rule}
        if rule == "prefix":
            return self._prefix(model, sites, gated, keep, inputs if todo else None, mode, opts,
                                ctx, info)
        rules: dict[str, GateRule] = {}
        for s in gated:  # in model order, each on the maps the gates before it leave
            seen = norms[s.name] if not rules else norms_at(
                build_gated(model, rules, "masked", ctx.example_input).model, s, inputs)
            tau = float(torch.quantile(seen.flatten().double(), 1.0 - keep[s.name]))
            # a threshold of 0 (feature decay silences more than 1 - keep of the channels) would
            # keep every channel, silent ones included: drop exactly-silent channels instead,
            # which changes no output and costs nothing
            tau = max(tau, SILENT)
            rules[s.name] = GateRule("absolute", tau, 1.0, 2.0)
        return build_gated(model, rules, mode, ctx.example_input, info)

    def _prefix(self, model: nn.Module, sites: list[GatedSite], gated: list[GatedSite],
                keep: dict[str, float], inputs: torch.Tensor | None, mode: str, opts: dict,
                ctx: PruneContext, info: dict) -> nn.Module:
        """The BN-folded network with every basic block as a fast block (``instance_fast``),
        each gated block calibrated on the maps the blocks before it (already replaced) give."""
        blocks = [s.name.rpartition(".")[0] for s in sites]
        parts = {b: basic_parts(get_module(model, b)) for b in blocks}
        if len(parts) != len(blocks) or not all(
                parts[b] is not None and parts[b].conv1 is get_module(model, s.name)
                for s, b in zip(sites, blocks, strict=True)):
            raise PrunebenchError(f"rule prefix (and exec mode 'fast') of method "
                                  f"{self.info.name!r} needs a residual network of basic blocks "
                                  "(CIFAR or torchvision ResNets with basic blocks); use "
                                  "rule=exact with exec mode masked or gathered")
        base = copy.deepcopy(model).eval()
        per_layer = module_macs(base, ctx.example_input[:1])
        net = fold_batchnorm(base)
        names = {s.name for s in gated}
        block_macs, widths = 0.0, {}
        for s, b in zip(sites, blocks, strict=True):
            block = get_module(base, b)
            block_macs += sum(v for k, v in per_layer.items() if k.startswith(b + "."))
            if s.name in names:
                fast = instance_width_block(block, norms_at(net, s, inputs), keep[s.name],
                                            opts["widths"], opts["round_to"], mode)
            else:  # dense: the full width, no decision
                c = parts[b].conv1.out_channels
                fast = FastBasicBlock(block, torch.arange(c), None, 0.0, [c], mode)
            set_module(net, b, fast)
            widths[b] = fast.widths
        info.update(exec_mode=mode, gated=sorted(names), bn_folded=True,
                    dense_macs=sum(per_layer.values()), widths=widths)
        return DynamicNetwork(net, sum(per_layer.values()) - block_macs, info).eval()


register_method(InstanceSparsity())
