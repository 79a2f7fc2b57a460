"""Recovery after the cut: fine-tuning, distillation from the dense network, iterative pruning.

Static methods prune in ``iterative_steps`` steps (1 = one-shot). Step ``k`` of ``K`` brings every
group to the channel count that ratio ``r * k / K`` of its *original* channels implies, and is
followed by ``bn_recalibrate`` batches of BatchNorm re-estimation (adaptive BN) and
``finetune_epochs`` epochs of fine-tuning on the **train** split (with knowledge
distillation from the dense network when ``kd`` is set), as in Li et al. 2017's
prune-and-retrain.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.base import PruneContext
from prunebench.harness.pruning.options import Option, OptionSchema
from prunebench.harness.pruning.static.cut import Group, coupled_groups, keep_count

# (model, per-group ratios relative to its current channels, global ratio) -> pruned model
PruneStep = Callable[[nn.Module, Mapping[str, float], float | None], nn.Module]


@dataclass(frozen=True)
class RecoveryOptions:
    """How a static method recovers accuracy (``PruningConfig.options`` keys of the same name)."""

    finetune_epochs: int = 0
    # None: the training recipe's own lr in a fresh cosine schedule (learning-rate rewinding,
    # Renda et al. 2020), which recovers far more in a few epochs than lr / 10 on small data.
    finetune_lr: float | None = None
    kd: bool = False
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    iterative_steps: int = 1
    # adaptive BN (Li et al. 2020, EagleEye): re-estimate BatchNorm statistics on this many
    # train batches right after each cut, before any fine-tuning (0: off)
    bn_recalibrate: int = 0


_DEFAULT = RecoveryOptions()
ROUND_TO = Option("round_to", int, 1, "keep channel counts multiples of N", min=1, example=8)
FINETUNE_EPOCHS = Option("finetune_epochs", int, _DEFAULT.finetune_epochs,
                         "fine-tuning epochs after the cut, on the train split", min=0, example=2)
FINETUNE_LR = Option("finetune_lr", float, _DEFAULT.finetune_lr,
                     "peak fine-tuning learning rate (default: the training recipe's lr, rewound)",
                     min=0, min_exclusive=True, example=0.01)
RECOVERY_OPTIONS = OptionSchema(
    FINETUNE_EPOCHS, FINETUNE_LR,
    Option("kd", bool, _DEFAULT.kd, "distil from the dense network while fine-tuning"),
    Option("kd_alpha", float, _DEFAULT.kd_alpha,
           "weight of the distillation loss (1 - kd_alpha weighs the cross-entropy)", min=0, max=1),
    Option("kd_temperature", float, _DEFAULT.kd_temperature, "distillation temperature", min=0,
           min_exclusive=True),
    Option("iterative_steps", int, _DEFAULT.iterative_steps,
           "prune in N steps, each followed by its recovery (1: one-shot)", min=1, example=3),
    Option("bn_recalibrate", int, _DEFAULT.bn_recalibrate,
           "adaptive BN: re-estimate BatchNorm statistics on N train batches after each cut "
           "(0: off)", min=0, example=16),
)
"""The recovery options of :class:`RecoveryOptions` (same names and defaults)."""


def prune_and_recover(model: nn.Module, ratios: Mapping[str, float], global_ratio: float | None,
                      ctx: PruneContext, prune_step: PruneStep, opts: RecoveryOptions,
                      round_to: int = 1) -> nn.Module:
    """Prune ``model`` to ``ratios`` / ``global_ratio`` in steps, fine-tuning after each.

    ``ratios`` are per group name (already resolved); ``model`` is not modified.
    """
    if opts.iterative_steps < 1:
        raise PrunebenchError(f"iterative_steps {opts.iterative_steps!r} must be >= 1")
    if opts.finetune_epochs and ctx.splits is None:
        raise PrunebenchError(f"finetune_epochs={opts.finetune_epochs} needs a data set; give "
                              "--dataset or set finetune_epochs to 0")
    if opts.bn_recalibrate and ctx.splits is None:
        raise PrunebenchError(f"bn_recalibrate={opts.bn_recalibrate} needs a data set; give "
                              "--dataset or set bn_recalibrate to 0")
    original = {g.name: g.channels for g in coupled_groups(model, ctx.example_input)}
    current = model
    steps = opts.iterative_steps
    for k in range(1, steps + 1):
        frac = k / steps
        groups = coupled_groups(current, ctx.example_input)
        step_ratios = {name: _step_ratio(original[name], r * frac, _channels(groups, name),
                                         round_to, name) for name, r in ratios.items()}
        step_global = None
        if global_ratio is not None:
            step_global = _step_global(groups, original, set(ratios), global_ratio * frac)
        current = prune_step(current, step_ratios, step_global)
        if opts.bn_recalibrate:
            from prunebench.harness.train import recalibrate_batchnorm

            recalibrate_batchnorm(current, ctx.splits, opts.bn_recalibrate, seed=ctx.seed)
        if opts.finetune_epochs:
            current = finetune(current, model if opts.kd else None, ctx, opts,
                               desc=f"finetune {k}/{steps}")
    return current


def _channels(groups: list[Group], name: str) -> int:
    return next(g.channels for g in groups if g.name == name)


def _step_ratio(c0: int, cum_ratio: float, current: int, round_to: int, name: str) -> float:
    """Ratio of the *current* channels that reaches ``cum_ratio`` of the original ``c0``."""
    target = keep_count(c0, cum_ratio, round_to, layer=name)
    return max(0.0, 1.0 - target / current)


def _step_global(groups: list[Group], original: Mapping[str, int], excluded: set[str],
                 cum_ratio: float) -> float:
    """The global ratio of the current channels that reaches ``cum_ratio`` of the original."""
    rest = [g for g in groups if g.name not in excluded]
    total0 = sum(original[g.name] for g in rest)
    total = sum(g.channels for g in rest)
    return max(0.0, 1.0 - total0 * (1.0 - cum_ratio) / total) if total else 0.0


def _recipe(ctx: PruneContext, epochs: int, lr: float | None) -> Any:
    from prunebench.harness.train import DEFAULT_RECIPE

    base = ctx.recipe or DEFAULT_RECIPE
    return dataclasses.replace(base, epochs=epochs, lr=lr if lr is not None else base.lr)


def finetune(model: nn.Module, teacher: nn.Module | None, ctx: PruneContext,
             opts: RecoveryOptions, *, desc: str = "finetune") -> nn.Module:
    """Fine-tune ``model`` in place for ``opts.finetune_epochs`` on the train split."""
    from prunebench.harness.train import train_model

    recipe = _recipe(ctx, opts.finetune_epochs, opts.finetune_lr)
    kd: dict[str, Any] = {}
    if teacher is not None:
        kd = {"teacher": copy.deepcopy(teacher).eval(), "kd_alpha": opts.kd_alpha,
              "kd_temperature": opts.kd_temperature}
    train_model(model, ctx.splits, recipe, progress=ctx.progress, desc=desc, **kd)
    return model.eval()


def finish_cut(pruned: nn.Module, ctx: PruneContext, opts: Any, *, desc: str) -> nn.Module:
    """After a one-shot cut: ``opts["finetune_epochs"]`` of fine-tuning (lr ``finetune_lr``, or
    the recipe's, rewound) and the ``prunebench_arch`` record; returns ``pruned`` in eval mode."""
    from prunebench.harness.pruning.static.cut import architecture

    if opts.get("finetune_epochs", 0):
        finetune(pruned, None, ctx, RecoveryOptions(
            finetune_epochs=opts["finetune_epochs"], finetune_lr=opts.get("finetune_lr")),
            desc=desc)
    if not hasattr(pruned, "prunebench_arch"):
        pruned.prunebench_arch = architecture(pruned)
    return pruned.eval()


def sparsity_train(model: nn.Module, ctx: PruneContext, epochs: int, lam: float,
                   lr: float | None = None) -> nn.Module:
    """Network slimming's sparsity phase: train a copy with an L1 penalty on BN scales."""
    from prunebench.harness.pruning.static.importance import slimming_loss_hook
    from prunebench.harness.train import train_model

    if ctx.splits is None:
        raise PrunebenchError(f"slimming_epochs={epochs} needs a data set; give --dataset or set "
                              "slimming_epochs to 0")
    trained = copy.deepcopy(model)
    train_model(trained, ctx.splits, _recipe(ctx, epochs, lr), loss_hook=slimming_loss_hook(lam),
                progress=ctx.progress, desc="slimming")
    return trained.eval()
