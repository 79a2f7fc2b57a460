"""AAP: Automatic Attention Pruning (Zhao, Jain, Zhao; AISTATS 2023).

*Importance*: the activation-based attention of a filter, from its post-activation output ``A``
over a calibration set drawn from the **train** split (never test): as the paper, ``|A|`` is
first averaged over the calibration images, then raised to ``p``, then averaged over positions
(``harness.pruning.static.attention_scores.filter_attention``). The tensor used is the one the
next layers actually read (the input of the group's consumer layers), so for a residual stage it
is the activation after the addition; a consumer that reads a globally pooled vector (the
classifier) sees the spatial mean, one position.

*Amount*: one global threshold ``T`` (in units of the dense network's median filter score) scaled
per coupled group by that group's share of the network's weights (or MACs, ``share=macs``),
normalised so that a group with the average share gets exactly ``T``. Filters whose score is below
their group's threshold are cut physically (``harness.pruning.static.cut.cut_filters``). The paper's
rule can empty a layer; here a group whose every filter falls below the threshold keeps its
highest-scored filter (a stated bound, logged per round as ``kept_one``).

*Policy*: rounds of prune-then-fine-tune (``round_epochs`` each,
1 by default), raising ``T`` by ``step`` while the target holds; when it fails, the last good
network is restored and the step halved (a reset); as the paper, the run stops at the
``max_resets``-th (3rd) reset in a row after a good round, and otherwise after ``max_rounds``,
when ``step < min_step`` or when nothing is left to prune.
Targets (``options["target"]``): ``accuracy-loss=X`` (val top-1 loss at most X points),
``params=Y`` / ``macs=Y`` (a count, or a fraction of dense when at most 1) and ``latency-ms=Z``
(p50 on ``ctx.profile`` at the profile's batch size, batch 1 on ``cpu-1t``: the dense p50,
measured first, divided by the candidate's speedup over dense from interleaved rounds, so machine
drift between rounds cancels). Every round is logged
to ``ctx.run_dir/aap_rounds.{jsonl,csv}`` when a run folder is given.

Options (``AAP.options``): ``target``; ``p`` (1), ``share`` (``params`` | ``macs``), ``step``
(0.25) and ``min_step`` (step / 8) in units of the dense median score, ``max_rounds`` (8 trained
rounds; rounds that prune nothing or repeat a tried cut train nothing and are not counted),
``max_resets`` (3; a repeated cut counts as the reset it repeats),
``round_epochs`` (1), ``finetune_lr`` (recipe lr, rewound), ``calibration_samples`` (512, the
first N train items: ``harness.pruning.calibration``), ``guard`` (5): with a resource target,
a round whose val top-1 falls more than ``guard`` points below dense is rejected like a failed
accuracy round (restore, halve the step), so a noisy or unreachable limit never drives the
network to chance accuracy; if no round met the limit within the guard, the run fails naming the
best value reached. A latency target's candidates are re-measured before one is returned (timing
is noisy). With ``ratios`` / ``global_ratio`` instead of a target, the attention scores choose the
filters and the ratios the amount (``round_to``, ``finetune_epochs`` apply), as for the other
static methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.base import MethodInfo, PruneContext, PruningMethod, register_method
from prunebench.harness.pruning.calibration import calibration_set
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.static.aap_policy import AAP_OPTIONS, AapSettings, run_policy
from prunebench.harness.pruning.static.attention_scores import filter_attention, ratio_prune_idxs
from prunebench.harness.pruning.static.targets import uses_ratios


# ----------------------------------------------------------------------------- method
class AAP(PruningMethod):
    """Automatic Attention Pruning: adaptive, target-driven activation-attention pruning."""

    info = MethodInfo(
        "aap", "static",
        "activation-attention filter scores, one global threshold scaled by each layer's weight "
        "share, adaptive prune/fine-tune rounds to an accuracy, memory or latency target",
        "Zhao, Jain, Zhao 2023, Automatic Attention Pruning: Improving and Automating Model "
        "Pruning using Attentions (AISTATS)")
    options = AAP_OPTIONS

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """The network the adaptive policy stopped at (a pruned copy; ``model`` is untouched).

        With ``ratios`` / ``global_ratio`` instead of a target, AAP's attention scores choose
        the filters and the ratios the amount (one cut, ``finetune_epochs`` after it).
        """
        opts = self.options.parse(self.info.name, config.options)
        if uses_ratios(self.info.name, config, opts, "target",
                       "--target accuracy-loss=0.5, params=0.5 or latency-ms=1.2"):
            return self._ratio_cut(model, config, opts, ctx)
        for key in ("round_to", "finetune_epochs"):
            if key in opts:
                raise PrunebenchError(f"AAP option {key} applies to ratios only; with a target "
                                      "use round_epochs")
        return run_policy(model, AapSettings.from_options(opts), ctx)

    def _ratio_cut(self, model: nn.Module, config: PruningConfig, opts: Mapping[str, Any],
                   ctx: PruneContext) -> nn.Module:
        from prunebench.harness.pruning.static.cut import coupled_groups, cut_filters
        from prunebench.harness.pruning.static.recovery import finish_cut

        opts = {**self.options.defaults(), **opts}
        x = ctx.example_input
        groups = coupled_groups(model, x)
        calib = calibration_set(ctx, opts["calibration_samples"], self.info.name)
        scores = filter_attention(model, groups, calib, opts["p"])
        idxs = ratio_prune_idxs(model, x, scores, config.ratios, config.global_ratio,
                                opts["round_to"])
        return finish_cut(cut_filters(model, x, idxs), ctx, opts, desc="aap finetune")


register_method(AAP())
