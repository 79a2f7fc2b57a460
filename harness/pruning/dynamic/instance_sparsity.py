"""Instance-wise sparsity (C. Liu, Y. Wang, K. Han, C. Xu, C. Xu; IJCAI 2019): per-input
channel pruning by feature norm.

Training (``prunebench finetune --method instance_sparsity --feature-decay LAMBDA``) adds a
*feature decay* l2,1 penalty on the gated feature maps (``training.FeatureDecay``) so that, for
each input, many channels become nearly silent. At test time a channel of a gated feature map is
computed downstream only when its RMS norm for that input reaches the layer's threshold.

Amount: ``keep`` is the layer's mean kept fraction; the absolute threshold is the (1 - keep)
quantile of channel norms over calibration (train) inputs, so the number kept varies per input.
Layer selection (a deviation, ``docs/methods.md``): with ``global_keep`` only, the fraction
``options["select"]`` of gated layers whose *total feature norm per input* varies most across
inputs (coefficient of variation) are gated; the paper measures the variation of the features'
sparsity instead. Layers named in ``keep`` are always gated, so with per-layer keeps (every
search gives them) the selection does not run. The threshold rule can keep zero channels of a
layer for an input. There is no fast execution mode: ``masked`` / ``gathered`` only.
"""

from __future__ import annotations

import torch
from torch import nn

from prunebench.harness.pruning.base import MethodInfo, PruneContext, PruningMethod, register_method
from prunebench.harness.pruning.calibration import calibration_inputs, samples_option
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.dynamic.attention_stats import site_attention
from prunebench.harness.pruning.dynamic.build import build_gated, check_exec_mode
from prunebench.harness.pruning.dynamic.gates import EXACT_MODES, GateRule
from prunebench.harness.pruning.dynamic.sites import require_sites, resolve_keep
from prunebench.harness.pruning.options import Option, OptionSchema

CITATION = ("Chuanjian Liu, Yunhe Wang, Kai Han, Chunjing Xu, Chang Xu. Learning Instance-wise "
            "Sparsity for Accelerating Deep Models. IJCAI 2019")


def coefficient_of_variation(norms: torch.Tensor) -> float:
    """Std / mean across inputs of each input's total feature norm (``norms``: (N, C))."""
    total = norms.sum(1).double()
    return float(total.std() / total.mean().clamp_min(1e-12))


def select_layers(norms: dict[str, torch.Tensor], fraction: float) -> list[str]:
    """The ``round(fraction * L)`` (at least one) layers with the largest coefficient of
    variation of their feature norms across inputs: the most input-dependent layers."""
    ranked = sorted(norms, key=lambda n: coefficient_of_variation(norms[n]), reverse=True)
    return sorted(ranked[:max(1, round(len(ranked) * fraction))])


class InstanceSparsity(PruningMethod):
    """Per-input channel gates with norm thresholds calibrated on training inputs."""

    info = MethodInfo("instance_sparsity", "dynamic",
                      "per-input channel pruning by feature-norm threshold, layers selected by "
                      "coefficient of variation (options: select, calibration_samples)", CITATION)
    options = OptionSchema(
        Option("select", float, 0.5, "with global_keep, the fraction of gated layers gated (those "
               "whose feature norms vary most across inputs)", min=0, max=1, min_exclusive=True),
        samples_option(256, minimum=2),
    )
    exec_modes = EXACT_MODES

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """A gated copy of ``model``; thresholds set so each layer keeps ``keep`` on average."""
        opts = {**self.options.defaults(), **self.options.parse(self.info.name, config.options)}
        mode = check_exec_mode(config.exec_mode, self.info.name, self.exec_modes)
        sites = require_sites(model, self.info.name)
        keep = resolve_keep(config, sites)
        select, n = opts["select"], opts["calibration_samples"]
        todo = [s for s in sites if keep[s.name] < 1.0]
        calib, rules, chosen = "none", {}, []
        if todo:
            inputs, calib = calibration_inputs(ctx, n, self.info.name)
            norms = site_attention(model, todo, inputs, power=2.0)
            chosen = sorted(set(select_layers(norms, select)) | set(config.keep))
            for s in todo:
                if s.name in chosen:
                    tau = float(torch.quantile(norms[s.name].flatten().double(),
                                               1.0 - keep[s.name]))
                    rules[s.name] = GateRule("absolute", tau, 1.0, 2.0)
        return build_gated(model, rules, mode, ctx.example_input,
                           {"method": self.info.name, "calibration": calib,
                            "selected": chosen, "select": select})


register_method(InstanceSparsity())
