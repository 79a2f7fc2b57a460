"""Pruning methods. Importing this package registers every method in ``METHODS``."""

from __future__ import annotations

import importlib

from prunebench.harness.pruning.base import METHODS, MethodInfo, PruneContext, PruningMethod
from prunebench.harness.pruning.config import DENSE, PruningConfig
from prunebench.harness.pruning.dynamic.attention_stats import site_attention
from prunebench.harness.pruning.dynamic.build import check_exec_mode
from prunebench.harness.pruning.dynamic.training import finetune_dynamic, parse_targeted_dropout

# Method modules register themselves on import; each line adds one family.
_METHOD_MODULES = (
    "prunebench.harness.pruning.dense",
    "prunebench.harness.pruning.dynamic.antidote",
    "prunebench.harness.pruning.dynamic.instance_sparsity",
    "prunebench.harness.pruning.static.classic",
    "prunebench.harness.pruning.static.aap",
    "prunebench.harness.pruning.static.paam",
)
for _mod in _METHOD_MODULES:
    importlib.import_module(_mod)


def get_method(name: str) -> PruningMethod:
    """The registered method ``name`` (an unknown name raises, listing the registered ones).

    This package is the registry's loader: importing it imports every method module above.
    Method modules import :mod:`harness.pruning.base` (``register_method``), never this package.
    """
    return METHODS.get(name)


# the front door for callers outside the package (the search, the CLI): these names, and
# harness.pruning.pipeline for building networks
__all__ = ["DENSE", "METHODS", "MethodInfo", "PruneContext", "PruningConfig", "PruningMethod",
           "check_exec_mode", "finetune_dynamic", "get_method", "parse_targeted_dropout",
           "site_attention"]
