"""Pruning methods. Importing this package registers every method in ``METHODS``."""

from __future__ import annotations

import importlib

from harness.pruning.base import METHODS, MethodInfo, PruneContext, PruningMethod, get_method
from harness.pruning.config import DENSE, PruningConfig

# Method modules register themselves on import; each line adds one family.
_METHOD_MODULES = (
    "harness.pruning.dense",
    "harness.pruning.antidote",
    "harness.pruning.instance_sparsity",
    "harness.pruning.static_methods",
    "harness.pruning.aap",
    "harness.pruning.paam",
)
for _mod in _METHOD_MODULES:
    importlib.import_module(_mod)

__all__ = ["DENSE", "METHODS", "MethodInfo", "PruneContext", "PruningConfig", "PruningMethod",
           "get_method"]
