"""The dense reference: no pruning (the point every speedup is measured against)."""

from __future__ import annotations

import copy

from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.base import MethodInfo, PruneContext, PruningMethod, register_method
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.options import OptionSchema


class Dense(PruningMethod):
    """Returns an unmodified copy of the network."""

    info = MethodInfo("dense", "dense", "the unpruned network (reference point)", "-")
    options = OptionSchema()

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """A copy of ``model``; any ratio, keep or option in ``config`` is an error."""
        self.options.parse(self.info.name, config.options)
        if config.ratios or config.keep or config.global_ratio or config.global_keep:
            raise PrunebenchError("method 'dense' takes no ratios or keep-ratios; pick a pruning "
                                  "method (see `prunebench methods`)")
        return copy.deepcopy(model)


register_method(Dense())
