"""The one way a network is built from a :class:`PruningConfig`: cut -> recovery -> gating.

A config names up to three stages, run in this order on a copy of the dense network:

1. **static** -- a physically smaller network: the config's own ``method`` when it is a static
   method, or ``static_method`` (with ``ratios`` / ``global_ratio`` / ``static_options``) under a
   dynamic ``method`` (a *hybrid* network). A static method's own recovery
   (``options["finetune_epochs"]``, ``kd``, ``iterative_steps``...) runs inside this stage.
2. **recovery** -- ``finetune_epochs`` epochs of plain fine-tuning on the train split, with the
   recipe's lr in a fresh cosine schedule (learning-rate rewinding, as the static recovery does),
   so that searched and swept points of one plot recover alike. ``epoch_callback`` sees the
   network after each epoch (the search reports validation accuracy per epoch from it).
3. **dynamic** -- the dynamic ``method`` with ``keep`` / ``global_keep`` / ``exec_mode`` /
   ``options`` gates the network per input.

``harness.evaluate`` and the search build every network through :func:`build`, so any recorded
config rebuilds the network it names (``prunebench measure --from RUN_DIR --trial N``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning import get_method
from prunebench.harness.pruning.base import METHODS, PruneContext
from prunebench.harness.pruning.config import PruningConfig

EpochCallback = Callable[[int, nn.Module], None]


@dataclass(frozen=True)
class Stages:
    """The stages a config describes; ``None`` where a stage is absent.

    ``static`` is the first stage: a static method, or ``dense`` (a checked copy) for a dense
    config.
    """

    static: PruningConfig | None
    finetune_epochs: int
    dynamic: PruningConfig | None


def method_kind(name: str) -> str:
    """``static``, ``dynamic`` or ``dense`` for a registered method (unknown names list all)."""
    get_method(name)
    return str(METHODS.metadata(name)["kind"])


def stages(config: PruningConfig) -> Stages:
    """Split ``config`` into its stages; a config no stage can run is an error naming why."""
    kind = method_kind(config.method)
    epochs = config.finetune_epochs
    if kind != "dynamic" and config.static_method is not None:
        raise PrunebenchError(f"static_method {config.static_method!r} is only for a hybrid "
                              f"network under a dynamic method; {config.method!r} is {kind}")
    if kind in ("static", "dense"):
        return Stages(dataclasses.replace(config, finetune_epochs=0), epochs, None)
    static = None
    if config.static_method is not None:
        if method_kind(config.static_method) != "static":
            raise PrunebenchError(f"static_method {config.static_method!r} is not a static "
                                  "method; see `prunebench methods`")
        static = PruningConfig(method=config.static_method, ratios=config.ratios,
                               global_ratio=config.global_ratio, options=config.static_options)
    elif config.ratios or config.global_ratio is not None:
        raise PrunebenchError(f"dynamic method {config.method!r} takes keep-ratios; ratios "
                              "belong to a static stage: set static_method (e.g. 'l1')")
    dynamic = PruningConfig(method=config.method, keep=config.keep,
                            global_keep=config.global_keep, exec_mode=config.exec_mode,
                            options=config.options)
    return Stages(static, epochs, dynamic)


def build(base: nn.Module, config: PruningConfig, ctx: PruneContext, *,
          epoch_callback: EpochCallback | None = None) -> nn.Module:
    """The network ``config`` describes, built from ``base`` (not modified), in eval mode."""
    plan = stages(config)
    model = base
    if plan.static is not None:
        model = get_method(plan.static.method).apply(model, plan.static, ctx)
    if plan.finetune_epochs:
        model = finetune(model if model is not base else copy.deepcopy(base),
                         plan.finetune_epochs, ctx, epoch_callback)
    if plan.dynamic is not None:
        model = get_method(plan.dynamic.method).apply(model, plan.dynamic, ctx)
    return model.eval()


def finetune(model: nn.Module, epochs: int, ctx: PruneContext,
             epoch_callback: EpochCallback | None = None) -> nn.Module:
    """The recovery stage: ``epochs`` of fine-tuning ``model`` in place on the train split."""
    from prunebench.harness.train import DEFAULT_RECIPE, train_model

    if ctx.splits is None:
        raise PrunebenchError(f"finetune_epochs={epochs} needs a data set; give --dataset or "
                              "fine-tune 0 epochs")
    recipe = dataclasses.replace(ctx.recipe or DEFAULT_RECIPE, epochs=epochs)
    train_model(model, ctx.splits, recipe, epoch_callback=epoch_callback,
                progress=ctx.progress, desc="fine-tune")
    return model.eval()


def layer_groups(model: nn.Module, example_input: Any) -> list[Any]:
    """The coupled layer groups a static stage cuts (``Group``: ``name``, ``channels``,
    ``members``), in module order; what cost models of a cut count."""
    from prunebench.harness.pruning.static.cut import coupled_groups

    return coupled_groups(model, example_input)


def kept_channels(channels: int, ratio: float, round_to: int = 1, *, layer: str = "?") -> int:
    """Channels a static cut keeps of ``channels`` at ``ratio`` (rounded to ``round_to``)."""
    from prunebench.harness.pruning.static.cut import keep_count

    return keep_count(channels, ratio, round_to, layer=layer)


def gate_sites(model: nn.Module, inputs: bool = False) -> list[Any]:
    """Every gated site of ``model`` (``GatedSite``) in graph order; with ``inputs``, each
    residual block's input site too (AntiDote's ``inputs=1``)."""
    from prunebench.harness.pruning.dynamic.sites import find_sites

    return find_sites(model, inputs=inputs)


def prunable_groups(model: nn.Module, example_input: Any) -> list[str]:
    """Names of the coupled layer groups a static stage can cut (the keys of ``ratios``)."""
    return [g.name for g in layer_groups(model, example_input)]


def gated_layers(model: nn.Module, config: PruningConfig | None = None,
                 ctx: PruneContext | None = None) -> list[str]:
    """Names of the layers a dynamic stage gates (the keys of ``keep``): every gated site, or,
    with a dynamic ``config``, those its method gates under its options (``instance_sparsity``
    selects layers on ``ctx``'s calibration inputs, which ``config`` then needs)."""
    from prunebench.harness.pruning.dynamic.build import gated_layers as layers

    if config is None:
        return list(layers(model))
    if method_kind(config.method) != "dynamic":
        raise PrunebenchError(f"method {config.method!r} gates no layers; give a dynamic "
                              "method (see `prunebench methods`)")
    if ctx is None:
        raise TypeError("gated_layers(model, config) needs ctx, the PruneContext the "
                        "dynamic stage will be built with")
    chosen = get_method(config.method).gated_layers(model, config, ctx)
    return list(layers(model)) if chosen is None else list(chosen)
