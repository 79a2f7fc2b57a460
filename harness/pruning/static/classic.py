"""Registered static filter-pruning methods: one criterion each, the shared cut and recovery.

``l1`` (Li et al. 2017), ``bn_scale`` (network slimming, Liu et al. 2017), ``fpgm`` (He et al.
2019) and ``random`` (seeded sanity baseline). All take the amount from ``PruningConfig.ratios``
(per layer or coupled group) and ``global_ratio``, and these ``options``:

``round_to`` (keep channel counts multiples of N, default 1), ``allocation`` (``local`` or
``global``), ``finetune_epochs``, ``finetune_lr``, ``kd``, ``kd_alpha``, ``kd_temperature``,
``iterative_steps``, ``bn_recalibrate`` (adaptive BN: re-estimate BatchNorm statistics on N
train batches after each cut); ``bn_scale`` also ``slimming_epochs`` and ``slimming_lambda``
(sparsity training before the cut). Types, defaults and ranges are the schemas below
(``STATIC_OPTIONS``, ``SLIMMING_OPTIONS``); any other option is an error naming the allowed ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.base import MethodInfo, PruneContext, PruningMethod, register_method
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.options import Option, OptionSchema
from prunebench.harness.pruning.static.cut import coupled_groups, cut_filters, resolve_ratios
from prunebench.harness.pruning.static.importance import (
    ALLOCATIONS,
    score_groups,
    select_prune_idxs,
)
from prunebench.harness.pruning.static.recovery import (
    RECOVERY_OPTIONS,
    ROUND_TO,
    RecoveryOptions,
    prune_and_recover,
    sparsity_train,
)

STATIC_OPTIONS = OptionSchema(
    ROUND_TO,
    Option("allocation", str, "local", "local: every group loses its own ratio; global: one "
           "ratio ranked across all groups", choices=ALLOCATIONS),
) + RECOVERY_OPTIONS
SLIMMING_OPTIONS = OptionSchema(
    Option("slimming_epochs", int, 0, "L1-sparsity training of the BatchNorm scales before the "
           "cut (0: off)", min=0, example=2),
    Option("slimming_lambda", float, 1e-4, "weight of the sparsity penalty per BatchNorm scale",
           min=0),
)


def prune_by_criterion(model: nn.Module, example_input: torch.Tensor, criterion: str,
                       ratios: Mapping[str, float], global_ratio: float | None = None, *,
                       allocation: str = "local", round_to: int = 1, seed: int = 0) -> nn.Module:
    """One-shot cut of a copy of ``model``: score with ``criterion``, remove the lowest.

    ``ratios`` may name any member of a coupled group; the result carries ``prunebench_arch``.
    """
    groups = coupled_groups(model, example_input)
    per_group = resolve_ratios(groups, ratios, None if allocation == "global" else global_ratio)
    scores = score_groups(model, groups, criterion, seed)
    idxs = select_prune_idxs(groups, scores, per_group, allocation=allocation,
                             global_ratio=global_ratio, round_to=round_to)
    return cut_filters(model, example_input, idxs)


class StaticFilterPruning(PruningMethod):
    """Score filters with one criterion, cut them physically, then recover."""

    def __init__(self, info: MethodInfo, criterion: str, extra: OptionSchema | None = None
                 ) -> None:
        self.info = info
        self.criterion = criterion
        self.options = STATIC_OPTIONS + extra if extra is not None else STATIC_OPTIONS

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """A pruned, recovered copy of ``model``; ``model`` is not modified."""
        name = self.info.name
        if config.keep or config.global_keep is not None or config.exec_mode:
            raise PrunebenchError(f"static method {name!r} takes ratios, not keep-ratios or an "
                                  "execution mode; use a dynamic method for those")
        if not config.ratios and config.global_ratio is None:
            raise PrunebenchError(f"method {name!r} needs a ratio: give --ratio R (global) or "
                                  "per-layer ratios")
        opts = {**self.options.defaults(), **self.options.parse(name, config.options)}
        allocation, round_to = opts["allocation"], opts["round_to"]
        recovery = RecoveryOptions(**{f.name: opts[f.name]
                                      for f in dataclasses.fields(RecoveryOptions)})
        if opts.get("slimming_epochs"):
            model = sparsity_train(model, ctx, opts["slimming_epochs"], opts["slimming_lambda"])
        groups = coupled_groups(model, ctx.example_input)
        ratios = resolve_ratios(groups, config.ratios,
                                None if allocation == "global" else config.global_ratio)
        global_ratio = config.global_ratio if allocation == "global" else None

        def step(current: nn.Module, step_ratios: Mapping[str, float],
                 step_global: float | None) -> nn.Module:
            return prune_by_criterion(current, ctx.example_input, self.criterion, step_ratios,
                                      step_global, allocation=allocation, round_to=round_to,
                                      seed=ctx.seed)

        pruned = prune_and_recover(model, ratios, global_ratio, ctx, step, recovery, round_to)
        return pruned.eval()


def _register(name: str, description: str, citation: str, extra: OptionSchema | None = None
              ) -> None:
    register_method(StaticFilterPruning(MethodInfo(name, "static", description, citation),
                                        criterion=name, extra=extra))


_register("l1", "remove filters with the smallest L1 norm",
          "Li et al. 2017, Pruning Filters for Efficient ConvNets (ICLR)")
_register("bn_scale", "network slimming: remove channels with the smallest BatchNorm scale "
          "(optional L1-sparsity training first)",
          "Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming "
          "(ICCV)", SLIMMING_OPTIONS)
_register("fpgm", "remove filters nearest the layer's geometric median (most redundant)",
          "He et al. 2019, Filter Pruning via Geometric Median (CVPR)")
_register("random", "remove randomly chosen filters (seeded; sanity baseline)",
          "uniform random filter choice, seeded by PruneContext.seed")
